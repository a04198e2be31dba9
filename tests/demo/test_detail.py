"""The zoomed-in region's layers at screen resolution: the full-resolution mask, sampled, never blurred."""

from __future__ import annotations

import base64
import io
import json

import cv2
import numpy as np
import pytest
from PIL import Image

from sam_demo.demo.detail import (
    MAX_DETAIL_PIXELS,
    detail_layers,
    photo_jpeg,
    region_mask,
    sample_indices,
)
from sam_demo.demo.handlers import on_image, on_load_saved, on_prompt
from tests.support.demo import box, events, export, point, stored
from tests.support.photos import PHOTOS

WIDE = str(PHOTOS / "rocket.jpg")


def _png(uri: str) -> np.ndarray:
    return np.array(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))))


@pytest.mark.parametrize(
    ("start", "stop", "count", "size", "expected"),
    [
        (0, 4, 4, 10, [0, 1, 2, 3]),  # one output pixel per original pixel
        (2, 4, 8, 10, [2, 2, 2, 2, 3, 3, 3, 3]),  # 4x zoom: each original pixel four times
        (0, 10, 5, 10, [1, 3, 5, 7, 9]),  # zoomed out: the pixel under each centre
        (9.5, 10, 2, 10, [9, 9]),  # the last half pixel
    ],
)
def test_sample_indices_take_the_pixel_under_each_output_centre(start, stop, count, size, expected):
    assert sample_indices(start, stop, count, size).tolist() == expected


def test_a_region_of_a_prompted_mask_is_the_full_resolution_mask_under_each_screen_pixel(ctx):
    session = on_image(ctx, WIDE).state
    h, w = session.size_hw
    session = on_prompt(ctx, events(session, point(w * 0.4, h * 0.5), point(w * 0.6, h * 0.4)), session).state
    result = stored(ctx, session).results[0]
    full, logits = result.mask, result.logits
    assert full.any() and not full.all()
    for x0, y0, x1, y1, out_w, out_h in [(0, 0, w, h, w, h), (w * 0.3, h * 0.2, w * 0.55, h * 0.45, 900, 700)]:
        rows, cols = sample_indices(y0, y1, out_h, h), sample_indices(x0, x1, out_w, w)
        got = region_mask(result, rows, cols).astype(bool)
        want = full[np.ix_(rows, cols)]
        # Equal but where a logit is within float rounding of 0 (the same two bilinear resizes).
        differ = got != want
        assert differ.mean() < 1e-4
        assert np.all(np.abs(logits[np.ix_(rows, cols)][differ]) < 1e-3)


def test_a_region_of_a_loaded_mask_is_its_pixels(ctx, uploaded, tmp_path):
    session = on_prompt(ctx, events(uploaded, box(40, 30, 300, 250)), uploaded).state
    response = tmp_path / "response.json"  # a bare endpoint response: masks without prompts
    response.write_text(json.dumps(json.loads(export(ctx, session, "sam-endpoint.json"))["response"]))
    session = on_image(ctx, str(PHOTOS / "chelsea.png")).state
    session = on_load_saved(ctx, str(response), session).state
    fixed = stored(ctx, session).objects[0].fixed
    assert fixed is not None
    rows, cols = sample_indices(10, 200, 760, 300), sample_indices(20, 400, 1520, 451)
    assert np.array_equal(region_mask(fixed, rows, cols).astype(bool), fixed.mask[np.ix_(rows, cols)])


def test_detail_layers_draw_the_named_shown_layers_at_the_asked_size(ctx, uploaded):
    session = on_prompt(ctx, events(uploaded, point(200, 150)), uploaded).state
    view = json.loads(on_prompt(ctx, events(uploaded, point(200, 150)), session).prompter["view"])
    key = view["active"]
    layers = detail_layers(stored(ctx, session), (100, 50, 250, 200), (600, 600), [key, "no-such-layer"])
    assert list(layers) == [key]
    index = _png(layers[key])
    assert index.shape == (600, 600)
    result = stored(ctx, session).results[0]
    mask = region_mask(result, sample_indices(50, 200, 600, 300), sample_indices(100, 250, 600, 451))
    # The fill is the mask; the outline (index 2, the edited object's) is its edge, two screen pixels either side.
    assert mask.any() and np.all(index[mask > 0] > 0) and np.all(mask[index == 1] == 1)
    assert np.array_equal(
        index == 2, cv2.morphologyEx(mask, cv2.MORPH_GRADIENT, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))) > 0
    )


@pytest.mark.parametrize(
    ("region", "size", "message"),
    [
        ((0, 0, 500, 100), (100, 100), "within the 451x300 image"),
        ((50, 50, 50, 60), (100, 100), "x0 < x1"),
        ((0, 0, float("nan"), 100), (100, 100), "within"),
        ((0, 0, 100, 100), (0, 100), "the size must be 1 to 4096 pixels a side"),  # not "at most" only
        ((0, 0, 100, 100), (-5, 5), "the size must be 1 to 4096 pixels a side"),
        ((0, 0, 100, 100), (5000, 10), "1 to 4096"),
        ((0, 0, 100, 100), (3000, 3000), f"{MAX_DETAIL_PIXELS:,}"),
    ],
)
def test_detail_layers_refuse_regions_and_sizes_out_of_bounds(ctx, uploaded, region, size, message):
    with pytest.raises(ValueError, match=message):
        detail_layers(stored(ctx, uploaded), region, size, [])


def test_the_zoom_photo_is_the_image_at_full_resolution_or_downscaled_to_the_cap():
    rgb = np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8)
    assert Image.open(io.BytesIO(photo_jpeg(rgb))).size == (400, 300)
    assert Image.open(io.BytesIO(photo_jpeg(rgb, max_pixels=30_000))).size == (200, 150)
