"""The demo's downloads read back by real readers: cut-outs (zip and union) against the exported masks;
saved files read back, hostile ones refused with what was wrong."""

from __future__ import annotations

import base64
import io
import json
import re
import zipfile

import numpy as np
import pytest
from PIL import Image

from sam_demo.demo.exports import cutout_alpha, saved_objects
from sam_demo.demo.handlers import on_image, on_load_saved, on_new_object, on_prompt
from tests.support.demo import CAT, box, events, export, point
from tests.support.photos import PHOTOS as PHOTOS_DIR

# Two objects on the 451x300 photo: a click, then (a new object) a box.
CLICK, BOX = point(200, 150), box(260, 40, 430, 250)


@pytest.fixture()
def two_objects(ctx, uploaded):
    session = on_prompt(ctx, events(uploaded, CLICK), uploaded).state
    session = on_new_object(ctx, session).state
    return on_prompt(ctx, events(session, CLICK, BOX), session).state


def exported_masks(ctx, session) -> list[np.ndarray]:
    with zipfile.ZipFile(io.BytesIO(export(ctx, session, "masks.zip"))) as archive:
        return [np.asarray(Image.open(io.BytesIO(archive.read(n)))) > 127 for n in sorted(archive.namelist())]


def placed(png: Image.Image, mask_shape: tuple[int, int], mask: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """The cut-out's alpha put back at its place in the image: its offset is the mask's top-left corner
    less what the antialiased edge adds (found by matching, and checked by the caller)."""
    alpha = np.asarray(png)[..., 3]
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    for dy in (0, 1):
        for dx in (0, 1):
            y0, x0 = rows[0] - dy, cols[0] - dx
            full = np.zeros(mask_shape, np.uint8)
            if y0 < 0 or x0 < 0 or y0 + alpha.shape[0] > mask_shape[0] or x0 + alpha.shape[1] > mask_shape[1]:
                continue
            full[y0 : y0 + alpha.shape[0], x0 : x0 + alpha.shape[1]] = alpha
            if np.array_equal(full >= 128, mask):
                return full, (y0, x0)
    raise AssertionError("the cut-out's alpha does not threshold to the exported mask at any offset")


def test_each_cutout_is_the_objects_pixels_with_the_exported_mask_as_alpha(ctx, two_objects):
    masks = exported_masks(ctx, two_objects)
    rgb = np.asarray(Image.open(CAT).convert("RGB"))
    with zipfile.ZipFile(io.BytesIO(export(ctx, two_objects, "cutouts.zip"))) as archive:
        names = sorted(archive.namelist())
        assert names == ["object_01.png", "object_02.png"]
        for name, mask in zip(names, masks):
            png = Image.open(io.BytesIO(archive.read(name)))
            assert png.mode == "RGBA"
            alpha, (y0, x0) = placed(png, mask.shape, mask)
            h, w = png.size[1], png.size[0]
            assert np.array_equal(np.asarray(png)[..., :3], rgb[y0 : y0 + h, x0 : x0 + w])  # the original pixels
            rows, cols = np.flatnonzero(alpha.any(1)), np.flatnonzero(alpha.any(0))
            assert (rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1) == (h, w), "cropped to where the alpha is set"
            assert ((alpha > 0) & (alpha < 255)).any(), "the edge is antialiased from the logits"


def test_the_union_cutout_holds_every_object(ctx, two_objects):
    masks = exported_masks(ctx, two_objects)
    union = np.logical_or.reduce(masks)
    png = Image.open(io.BytesIO(export(ctx, two_objects, "cutout.png")))
    assert png.mode == "RGBA"
    placed(png, union.shape, union)


def test_cutouts_before_any_object_say_what_to_do(ctx, uploaded):
    for kind in ("cutouts.zip", "cutout.png"):
        with pytest.raises(ValueError, match="nothing to export yet: click on the image"):
            export(ctx, uploaded, kind)


@pytest.mark.parametrize("hard", [True, False])
def test_the_alpha_thresholds_to_the_mask_exactly(hard):
    yy, xx = np.mgrid[0:64, 0:64]
    logits = 10.0 - np.hypot(yy - 30.3, xx - 31.7)  # a disc of radius 10, logit 0 on its edge
    logits[30, 20] = 0.0  # exactly on the threshold: not in the mask
    mask = logits > 0
    alpha = cutout_alpha(mask) if hard else cutout_alpha(mask, logits)
    assert alpha.dtype == np.uint8 and np.array_equal(alpha >= 128, mask)
    if hard:
        assert set(np.unique(alpha)) == {0, 255}
    else:  # the edge ramps over about a pixel: full inside, none a pixel out
        assert alpha[30, 31] == 255 and alpha[30, 43] == 0 and 0 < alpha[30, 42] < 255
        assert np.array_equal(cutout_alpha(mask, logits, rows_per_strip=7), alpha), "strips give the whole's alpha"


def test_cutouts_past_their_pixel_bound_are_refused_with_what_to_do(ctx, two_objects, monkeypatch):
    from sam_demo.demo import exports

    monkeypatch.setattr(exports, "MAX_CUTOUT_PIXELS", 1000)
    with pytest.raises(ValueError, match="over 0 megapixels; download the cut-out of all objects"):
        export(ctx, two_objects, "cutouts.zip")


def _saved(ctx, session) -> dict:
    return json.loads(export(ctx, session, "sam-endpoint.json"))


def _bomb_png() -> str:
    """A 1-bit PNG of 30000x30000 (900 megapixels, a few kB): far past what Pillow opens."""
    buffer = io.BytesIO()
    Image.new("1", (30000, 30000)).save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _first_mask(saved: dict) -> dict:
    """The response's entry of the mask shown for the first object."""
    shown = saved["shown"][0]
    return saved["response"][shown["row"]]["response"]["predictions"][shown["prediction"]]["masks_per_prediction"][
        shown["mask"]
    ]


# (what to do to our export of two objects, what the refusal says)
HOSTILE = {
    "a PNG, not JSON": (lambda s: (PHOTOS_DIR / "chelsea.png").read_bytes(), "not even UTF-8"),
    "nested deeply": (lambda s: ("[" * 100_000 + "]" * 100_000).encode(), "nested far too deeply"),
    "a negative mask index": (lambda s: s["shown"][0].update(mask=-1), '"shown" list names masks'),
    "a negative row": (lambda s: s["shown"][0].update(row=-2), '"shown" list names masks'),
    "a boolean row": (lambda s: s["shown"][1].update(row=True), '"shown" list names masks'),
    "a row past the end": (lambda s: s["shown"][0].update(row=9), '"shown" list names masks'),
    "a NaN score": (lambda s: _first_mask(s).update(iou_score=float("nan")), "a finite number"),
    "a score as text": (lambda s: _first_mask(s).update(iou_score="0.9"), "a finite number"),
    "a decompression bomb": (lambda s: _first_mask(s).update(encoded_binary_mask=_bomb_png()), "far larger"),
    "a mask that is not a PNG": (lambda s: _first_mask(s).update(encoded_binary_mask="aGVsbG8="), "not a readable PNG"),
    "501 objects": (lambda s: s.update(shown=s["shown"] * 251), "at most 500 load at once"),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_a_hostile_saved_file_is_refused_saying_why(ctx, two_objects, case):
    saved = _saved(ctx, two_objects)
    change, says = HOSTILE[case]
    changed = change(saved)
    data = changed if isinstance(changed, bytes) else json.dumps(saved).encode()
    with pytest.raises(ValueError, match=re.escape(says)):
        saved_objects(data, (300, 451))


def test_a_saved_file_too_large_for_the_image_is_refused_before_any_mask_is_decoded(ctx, two_objects, monkeypatch):
    import sam_demo.demo.exports as exports

    decoded = []
    monkeypatch.setattr(exports, "decode_mask_entry", lambda *a: decoded.append(a) or pytest.fail("decoded"))
    monkeypatch.setattr(exports, "MAX_SAVED_PIXELS", 451 * 300 * 2 - 1)  # room for one mask of this image and a half
    with pytest.raises(ValueError, match="it holds 2 masks of this 451x300 image; at most 1 of this size load at once"):
        saved_objects(json.dumps(_saved(ctx, two_objects)).encode(), (300, 451))
    assert decoded == []


def test_a_saved_file_keeps_hidden_objects_hidden_and_drops_prompts_for_another_image(ctx, two_objects, tmp_path):
    history = [CLICK, BOX, {"type": "visibility", "object": 1, "hidden": True}]
    session = on_prompt(ctx, events(two_objects, *history), two_objects).state
    saved = export(ctx, session, "sam-endpoint.json")
    same = saved_objects(saved, (300, 451), session.image_bytes)
    assert not same.other_image and [o.hidden for o in same.objects] == [False, True]
    assert all(o.prompts is not None for o in same.objects)
    flipped = io.BytesIO()
    Image.open(CAT).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(flipped, "PNG")
    other = saved_objects(saved, (300, 451), flipped.getvalue())
    assert other.other_image and all(o.prompts is None for o in other.objects), "its prompts would not remake its masks"
    path = tmp_path / "saved.json"
    path.write_bytes(saved)
    fresh = on_image(ctx, CAT).state
    loaded = on_load_saved(ctx, str(path), fresh).state
    assert [o.hidden for o in loaded.objects] == [False, True, False]
