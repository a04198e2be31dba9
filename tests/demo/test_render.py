"""What the page draws, checked as data: a palette of 20 colours, readable score tags placed on their
objects, only the edited object's prompts, and a thumbnail of each candidate's own mask."""

from __future__ import annotations

import base64
import html
import io
import itertools
import json
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from sam_demo.demo.handlers import on_new_object, on_prompt
from sam_demo.demo.render import THUMB_FILL_ALPHA, _anchor, candidates_html, tag_ink, thumbnail_png, view_json
from sam_demo.demo.session import PALETTE
from sam_demo.engine.utils.transforms import logits_to_size
from tests.support.demo import candidate, events, panels, point, stored


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


class Candidates(HTMLParser):
    """The candidates panel as data: per button its attributes, its image's attributes and its text."""

    def __init__(self, markup: str):
        super().__init__()
        self.buttons, self.heading, self._in = [], "", None
        self.feed(markup)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "button":
            self.buttons.append({"attrs": attrs, "img": None, "text": ""})
            self._in = "button"
        elif tag == "img":
            self.buttons[-1]["img"] = attrs
        elif tag == "p":
            self._in = "p"

    def handle_endtag(self, tag):
        self._in = None if tag in ("button", "p") else self._in

    def handle_data(self, data):
        if self._in == "button":
            self.buttons[-1]["text"] += data
        elif self._in == "p":
            self.heading += data


def decode_png_uri(uri: str) -> Image.Image:
    assert uri.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))


NAME = '<img src=x onerror="alert(1)"> & cat'


def test_candidates_show_a_thumbnail_of_each_candidates_own_mask(ctx, uploaded):
    clicks = [point(200, 150), candidate(2), {"type": "rename", "object": 0, "name": NAME}]
    view = on_prompt(ctx, events(uploaded, *clicks), uploaded)
    session = stored(ctx, view.state)
    result, layer = session.results[session.active], session.edited_layer()
    assert result.chosen == 2 and len(result.scores) == 3
    markup = panels(view)["candidates"]
    assert markup == candidates_html(session)
    assert NAME not in markup and html.escape(NAME) in markup, "the name is text, never HTML"
    panel = Candidates(markup)
    assert NAME in panel.heading
    assert [b["attrs"]["data-candidate"] for b in panel.buttons] == ["0", "1", "2"]
    assert [b["attrs"]["aria-pressed"] for b in panel.buttons] == ["false", "false", "true"]
    masks = []
    for k, button in enumerate(panel.buttons):
        img = button["img"]
        assert img["alt"] == f"Candidate {k + 1} mask"
        assert f"IoU {min(max(float(result.scores[k]), 0), 1):.2f}" in button["text"]
        thumb = decode_png_uri(img["src"])
        assert thumb.size == (96, 64), "the photo's aspect (451x300), 96 px on its long side"
        assert (img["width"], img["height"]) == ("96", "64")
        rgba = np.asarray(thumb.convert("RGBA"))
        expected = logits_to_size(result.low_res[k], result.geometry, (64, 96))
        assert expected.any() and not expected.all(), "a mask with an edge, or the check says little"
        np.testing.assert_array_equal(rgba[..., 3] > 0, expected > 0)
        assert {tuple(c) for c in rgba[rgba[..., 3] > 0][:, :3]} == {layer.rgb}, "in the object's colour"
        assert set(np.unique(rgba[..., 3])) <= {0, THUMB_FILL_ALPHA, 255}, "fill, outline and a transparent ground"
        masks.append(expected)
    assert any((a != b).any() for a, b in itertools.combinations(masks, 2)), "the candidates differ"
    assert "best" in panel.buttons[int(np.argmax(result.scores))]["text"]

    # Another object's candidates are in its own colour; a second click leaves one mask and no candidates.
    session = on_new_object(ctx, view.state).state
    view = on_prompt(ctx, events(session, *clicks, {"type": "new"}, point(300, 100)), session)
    rgba = np.asarray(decode_png_uri(Candidates(panels(view)["candidates"]).buttons[0]["img"]["src"]).convert("RGBA"))
    assert {tuple(c) for c in rgba[rgba[..., 3] > 0][:, :3]} == {PALETTE[1]}
    view = on_prompt(ctx, events(session, *clicks, {"type": "new"}, point(300, 100), point(320, 120)), session)
    assert panels(view)["candidates"] == ""


def test_a_thumbnail_is_the_mask_filled_with_an_outline_on_its_own_edge():
    rgba = np.asarray(Image.open(io.BytesIO(thumbnail_png(RING, (10, 20, 30)))).convert("RGBA"))
    assert rgba.shape == (60, 60, 4)
    np.testing.assert_array_equal(rgba[..., 3] > 0, RING > 0)  # nothing outside the mask is coloured
    assert (rgba[RING > 0][:, :3] == (10, 20, 30)).all()
    assert rgba[10, 30, 3] == rgba[49, 30, 3] == rgba[19, 30, 3] == rgba[30, 40, 3] == 255, "outer and inner edges"
    assert rgba[15, 30, 3] == THUMB_FILL_ALPHA, "the inside is a lighter fill"


def test_a_long_name_is_cut_on_its_score_tag_and_whole_in_the_list(ctx, uploaded):
    name = "a" * 80
    view = on_prompt(ctx, events(uploaded, point(200, 150), {"type": "rename", "object": 0, "name": name}), uploaded)
    (tag,) = json.loads(view.prompter["view"])["tags"]
    assert tag[2].startswith("a" * 23 + "…") and len(tag[2].split(" IoU")[0]) == 24
    assert name in panels(view)["legend"]
