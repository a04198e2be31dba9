"""What a web-demo session keeps in memory, and the one budget over all sessions.

A session keeps its file, its prompts and each object's low-res logits: not the pixels, not
full-size masks, not the embedding (the engine's cache has it). Past the store's budget the least
recently used sessions lose their logits, then their place in the store; their next click gives
the same masks as before.
"""

from __future__ import annotations

import gc
import json
import types

import numpy as np
import pytest
import torch
from PIL import Image

from sam_demo import SamPredictor
from sam_demo.demo.handlers import DemoContext, on_image, on_new_object, on_prompt
from sam_demo.demo.session_store import SessionStore
from tests.support.photos import PHOTOS

CAT = str(PHOTOS / "chelsea.png")  # 451x300
COFFEE = str(PHOTOS / "coffee.png")
# A lone click on a 4:3 photo: three candidates' low-res logits over the image (1024x768 of the
# 1024x1024 model frame: 196 of the 256 rows, whole image tokens of 4 rows each) and scores.
LOGITS_PER_CLICK_4_3 = 3 * 196 * 256 * 4 + 3 * 4


def click(ctx, session, *points_xy):
    """Every click on this image so far (the page's events are cumulative), one positive point each."""
    events = [{"type": "point", "x": x, "y": y, "label": 1} for x, y in points_xy]
    return on_prompt(ctx, json.dumps({"token": session.token, "events": events}), session).state


def predictor_masks(engine, path, points_xy) -> np.ndarray:
    predictor = SamPredictor(engine)
    predictor.set_image(np.asarray(Image.open(path).convert("RGB")))
    return predictor.predict(
        np.array(points_xy, dtype=float), np.ones(len(points_xy), dtype=int), multimask_output=len(points_xy) == 1
    )[0]


def held_bytes(*roots) -> int:
    """Bytes of the arrays, tensors and bytes objects reachable from `roots` (each counted once)."""
    seen, total, todo = set(), 0, list(roots)
    while todo:
        obj = todo.pop()
        if id(obj) in seen or isinstance(obj, (type, types.ModuleType, types.FunctionType, str)):
            continue
        seen.add(id(obj))
        if isinstance(obj, np.ndarray):
            total += obj.nbytes if obj.base is None or not isinstance(obj.base, np.ndarray) else 0
        elif isinstance(obj, torch.Tensor):
            total += obj.untyped_storage().nbytes()
        elif isinstance(obj, (bytes, bytearray)):
            total += len(obj)
        todo.extend(gc.get_referents(obj))
    return total


def test_a_12_megapixel_photo_with_ten_objects_keeps_only_compact_state(engine, tmp_path):
    photo = tmp_path / "photo.jpg"
    Image.open(CAT).convert("RGB").resize((4000, 3000)).save(photo, quality=90)
    ctx = DemoContext(engine, SessionStore())
    session = on_image(ctx, str(photo)).state
    clicks = []
    for k in range(10):
        clicks.append((300 + 340 * k, 400 + 220 * k))
        session = click(ctx, session, *clicks)
        session = on_new_object(ctx, session).state
    stored = ctx.sessions.get(session.token)
    compact = photo.stat().st_size + 10 * LOGITS_PER_CLICK_4_3
    assert len(stored.results) == 10 and stored.nbytes == compact == ctx.sessions.stats().bytes
    # What the store and Gradio's state hold, all told. The old session held the pixels (36 MB)
    # and every candidate at full size (10 x 3 x 12 MB).
    held = held_bytes(stored, ctx.sessions.view(stored), session)
    assert compact <= held < compact + (1 << 20), f"{held / 2**20:.1f} MiB held for {compact / 2**20:.1f} MiB of state"
    assert held_bytes(session) < photo.stat().st_size + (64 << 10), "Gradio's copy holds the file and the prompts"


def test_past_the_budget_old_sessions_go_light_and_their_next_click_gives_the_same_masks(engine):
    ctx = DemoContext(engine, SessionStore())
    first = click(ctx, on_image(ctx, CAT).state, (200, 150))
    before = ctx.sessions.get(first.token).results[0].masks
    # Room for both files, and for one session's logits.
    ctx.sessions.budget_bytes = ctx.sessions.get(first.token).nbytes + (PHOTOS / "coffee.png").stat().st_size + 1000

    second = click(ctx, on_image(ctx, COFFEE).state, (300, 200))
    stats = ctx.sessions.stats()
    assert stats.lightened == 1 and stats.light == 1 and stats.bytes <= stats.budget_bytes
    assert ctx.sessions.get(first.token).results == {} and ctx.sessions.get(second.token).results
    engine.cache.clear()  # the embedding went too: the next click encodes the image again
    misses = engine.cache_stats().misses

    first = on_new_object(ctx, first).state  # any edit remakes the masks
    assert np.array_equal(ctx.sessions.get(first.token).results[0].masks, before)
    assert engine.cache_stats().misses == misses + 1
    click(ctx, first, (200, 150), (100, 100))
    assert np.array_equal(ctx.sessions.get(first.token).results[1].masks, predictor_masks(engine, CAT, [(100, 100)]))


def test_a_session_forgotten_to_fit_the_budget_resumes_from_gradios_state(engine):
    ctx = DemoContext(engine, SessionStore(budget_bytes=1))  # no room even for one session's file
    first = click(ctx, on_image(ctx, CAT).state, (200, 150))
    click(ctx, on_image(ctx, COFFEE).state, (300, 200))
    assert ctx.sessions.get(first.token) is None and ctx.sessions.stats().forgotten >= 1
    resumed = click(ctx, first, (200, 150), (120, 80))
    assert resumed.objects[0].points == ((200.0, 150.0, 1), (120.0, 80.0, 1))
    masks = ctx.sessions.get(first.token).results[0].masks
    assert np.array_equal(masks, predictor_masks(engine, CAT, [(200, 150), (120, 80)]))


@pytest.mark.parametrize("size_hw", [(300, 451), (3000, 4000)])
def test_fixed_masks_are_kept_as_rle_and_decode_exactly(size_hw):
    from sam_demo.demo.session import FixedMask

    h, w = size_hw
    yy, xx = np.mgrid[:h, :w]
    mask = (xx - w / 2) ** 2 / (w / 3) ** 2 + (yy - h / 2) ** 2 / (h / 3) ** 2 < 1
    fixed = FixedMask.of(mask, 0.9, "Auto mask")
    assert np.array_equal(fixed.mask, mask) and fixed.area == int(mask.sum())
    assert fixed.nbytes < h * 8, "an ellipse costs a few bytes per column, not a byte per pixel"
