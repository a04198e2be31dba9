"""What the page draws, checked as data: a palette of 20 colours, readable score tags placed on their
objects, and only the edited object's prompts."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from sam_demo.demo.handlers import on_new_object, on_prompt
from sam_demo.demo.render import _anchor, tag_ink, view_json
from sam_demo.demo.session import PALETTE
from tests.support.demo import events, point, stored


def contrast(a: tuple[int, int, int], b: tuple[int, int, int]) -> float:
    """WCAG 2 contrast ratio, written out here (not the code under test)."""

    def lum(rgb):
        c = [v / 255 for v in rgb]
        c = [x / 12.92 if x <= 0.04045 else ((x + 0.055) / 1.055) ** 2.4 for x in c]
        return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2]

    hi, lo = sorted((lum(a), lum(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def test_the_palette_has_twenty_distinct_colours():
    assert len(PALETTE) >= 20 and len(set(PALETTE)) == len(PALETTE)
    closest = min(np.linalg.norm(np.subtract(a, b)) for a, b in itertools.combinations(PALETTE, 2))
    assert closest > 40, f"two colours are only {closest:.0f} apart in RGB"


@pytest.mark.parametrize("rgb", PALETTE)
def test_tag_text_is_readable_on_every_colour(rgb):
    ink = tuple(int(tag_ink(rgb)[i : i + 2], 16) for i in (1, 3, 5))
    other = (255, 255, 255) if ink == (0, 0, 0) else (0, 0, 0)
    assert contrast(rgb, ink) >= contrast(rgb, other) and contrast(rgb, ink) >= 4.5


RING = np.zeros((60, 60), np.uint8)
RING[10:50, 10:50] = 1
RING[20:40, 20:40] = 0  # a square ring: its centre and its box's corner lie off the object
ELL = np.zeros((60, 60), np.uint8)
ELL[5:55, 5:15] = 1
ELL[45:55, 5:55] = 1  # an L: its centroid lies off it


@pytest.mark.parametrize("mask", [RING, ELL], ids=["ring", "L"])
def test_score_tags_are_anchored_on_the_object(mask):
    x, y = _anchor(mask, 1.0, 1.0)
    assert mask[int(y), int(x)] == 1
    ys, xs = np.nonzero(np.pad(mask, 1) == 0)  # the background, the frame around the image included
    assert np.hypot(xs - 1 - x, ys - 1 - y).min() >= 4, "well inside the object (its bands are 10 px wide)"
    assert _anchor(np.zeros((8, 8), np.uint8), 1.0, 1.0) is None
    assert _anchor(mask, 2.0, 3.0) == (round(x * 2.0, 1), round(y * 3.0, 1))


def test_only_the_edited_objects_prompts_are_drawn(ctx, uploaded):
    session = on_prompt(ctx, events(uploaded, point(200, 150)), uploaded).state
    session = on_new_object(ctx, session).state
    session = on_prompt(ctx, events(session, point(200, 150), point(300, 100, 0)), session).state
    view = json.loads(view_json(stored(ctx, session), "status"))
    assert [p[:3] for p in view["points"]] == [[300.0, 100.0, 0]]
    assert len(view["tags"]) == 2, "every object keeps its score tag"
