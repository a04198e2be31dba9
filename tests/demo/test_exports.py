"""The demo's downloads read back by real readers: cut-outs (zip and union) against the exported masks;
saved files read back, hostile ones refused with what was wrong."""

from __future__ import annotations

import base64
import contextlib
import html
import io
import json
import re
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from sam_demo.demo.exports import _shown_masks, cutout_alpha, saved_objects
from sam_demo.demo.handlers import on_image, on_load_saved, on_new_object, on_prompt
from sam_demo.demo.session import FixedMask, SavedObject
from sam_demo.engine.utils.polygons import polygons_to_mask
from tests.support.demo import CAT, box, events, export, panels, point, stored
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
        assert names == ["object/object_01.png", "object/object_02.png"]  # unnamed, no category: "object"
        for name, mask in zip(names, masks):
            png = Image.open(io.BytesIO(archive.read(name)))
            assert png.mode == "RGBA"
            alpha, (y0, x0) = placed(png, mask.shape, mask)
            h, w = png.size[1], png.size[0]
            assert np.array_equal(np.asarray(png)[..., :3], rgb[y0 : y0 + h, x0 : x0 + w])  # the original pixels
            rows, cols = np.flatnonzero(alpha.any(1)), np.flatnonzero(alpha.any(0))
            assert (rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1) == (h, w), "cropped to where the alpha is set"
            assert ((alpha > 0) & (alpha < 255)).any(), "the edge is antialiased from the logits"


def test_cutout_folders_are_the_categories_made_safe_and_never_merged(ctx, dataset):
    session, _ = dataset
    session = stored(ctx, session)
    session.set_categories(["cat", "cup", "../a b", "<b>x</b>", "a/b", "a_b", "..."])
    for k, category in enumerate(["../a b", "a/b", "a_b"]):
        session.set_category(k, category)
    with zipfile.ZipFile(io.BytesIO(export(ctx, session, "cutouts.zip"))) as archive:
        names = archive.namelist()
    assert names == ["a_b/object_01_left.png", "a_b_2/object_02_a-b.png", "a_b_3/object_03_a_b.png"]
    assert all(not n.startswith(("/", ".")) and ".." not in n for n in names)


def test_the_label_image_numbers_each_object_as_the_masks_zip_does(ctx, dataset):
    session, masks = dataset
    labels = np.asarray(Image.open(io.BytesIO(export(ctx, session, "label-image.png"))))
    assert labels.dtype == np.uint8 and labels.shape == (300, 451)
    expected = np.zeros((300, 451), np.uint8)
    for k, mask in enumerate(masks, start=1):
        expected[mask] = k  # a later object over an earlier one
    np.testing.assert_array_equal(labels, expected)
    assert set(np.unique(labels)) <= {0, 1, 2, 3} and (labels == 3).any()


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
    # 16 MB of empty lists in a key nobody reads: 240 MB once parsed; 64 MB of them was 1.2 GB
    "a score of 400 digits": (lambda s: _first_mask(s).update(iou_score=10**400), "a finite number"),
    "a request of fewer rows than the response": (
        lambda s: (s["request"]["input_data"]["data"].pop(), s["request"]["input_data"]["index"].pop()),
        "its request and its response have 1 and 2 rows",
    ),
    "4 M lists": (
        lambda s: s.update(padding=[[]] * 4_000_001),
        "JSON lists and objects, more than the 4,000,000 that load",
    ),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_a_hostile_saved_file_is_refused_saying_why(ctx, two_objects, case):
    saved = _saved(ctx, two_objects)
    change, says = HOSTILE[case]
    changed = change(saved)
    data = changed if isinstance(changed, bytes) else json.dumps(saved).encode()
    with pytest.raises(ValueError, match=re.escape(says)):
        saved_objects(data, (300, 451))


def test_brackets_inside_a_saved_files_text_are_not_counted_as_lists(ctx, two_objects):
    saved = _saved(ctx, two_objects)
    saved["note"] = "[{" * 2_000_001  # over the bound of lists and objects, if the text's brackets counted
    assert len(saved_objects(json.dumps(saved).encode(), (300, 451)).objects) == 2


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


def test_download_json_keeps_the_objects_categories_and_the_category_list(ctx, two_objects, tmp_path):
    history = [
        CLICK,
        BOX,
        {"type": "categories", "names": ["saucer", "cup", "spoon"]},
        {"type": "category", "object": 0, "category": "cup"},
        {"type": "category", "object": 1, "category": "saucer"},
    ]
    session = on_prompt(ctx, events(two_objects, *history), two_objects).state
    path = tmp_path / "saved.json"
    path.write_bytes(export(ctx, session, "sam-endpoint.json"))
    loaded = stored(ctx, on_load_saved(ctx, str(path), on_image(ctx, CAT).state).state)
    assert loaded.categories == ("saucer", "cup", "spoon"), "the list, in its order, unused names too"
    assert [o.category for o in loaded.objects if o.has_prompts] == ["cup", "saucer"]


def _shape_masks() -> list[np.ndarray]:
    """A ring and two parts with holes (one holding an island) on the 451x300 photo."""
    ring, parts = np.zeros((300, 451), np.uint8), np.zeros((300, 451), np.uint8)
    cv2.circle(ring, (110, 150), 90, 1, -1)
    cv2.circle(ring, (110, 150), 40, 0, -1)
    parts[40:260, 230:300] = 1
    parts[90:140, 250:280] = 0
    cv2.ellipse(parts, (380, 150), (50, 110), 15, 0, 360, 1, -1)
    cv2.circle(parts, (380, 150), 25, 0, -1)
    cv2.circle(parts, (380, 150), 10, 1, -1)
    return [ring.astype(bool), parts.astype(bool)]


@pytest.fixture()
def dataset(ctx, uploaded):
    """Categories cat and cup; a loaded ring (cat, named "left"), loaded parts with holes (cup), and
    a click (cat): the session and its shown masks."""
    session = stored(ctx, on_prompt(ctx, events(uploaded), uploaded).state)
    session.set_categories(["cat", "cup"])
    ring, parts = (FixedMask.of(m, 0.9, "Loaded mask") for m in _shape_masks())
    session.add_saved(ctx.engine, [SavedObject(ring, "left"), SavedObject(parts)])
    session.set_category(0, "cat")
    session.set_category(1, "cup")
    history = [CLICK, {"type": "category", "object": 2, "category": "cat"}]
    session = on_prompt(ctx, events(session, *history), session).state
    masks = [m for m, _, _ in _shown_masks(stored(ctx, session))]
    return session, masks


def test_coco_polygons_and_rle_read_back_by_pycocotools(ctx, dataset, tmp_path):
    session, masks = dataset
    for kind in ("coco.json", "coco-polygons.json"):
        coco = COCO(export(ctx, session, kind, tmp_path))
        assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == ["cat", "cup"]
        anns = coco.loadAnns(coco.getAnnIds())
        assert [a["category_id"] for a in anns] == [1, 2, 1] and anns[0]["name"] == "left"
        assert coco.loadImgs(1)[0] == {"id": 1, "file_name": "chelsea.png", "width": 451, "height": 300}
        for ann, mask in zip(anns, masks):
            drawn = coco.annToMask(ann).astype(bool)
            if kind == "coco.json":
                assert np.array_equal(drawn, mask), "RLE is exact"
            elif ann["id"] < 3:  # the shapes; the random model's click is noise, pixel-thin in places
                assert isinstance(ann["segmentation"], list) and (drawn & mask).sum() / (drawn | mask).sum() >= 0.98
            assert ann["area"] == int(mask.sum()) and ann["bbox"] == list(coco.annToRLE(ann) and ann["bbox"])
        # The export scored against itself: every object found, AP 1.0.
        results = coco.loadRes([{**a, "score": 1.0} for a in anns])
        evaluation = COCOeval(coco, results, "segm")
        with contextlib.redirect_stdout(io.StringIO()):
            evaluation.evaluate(), evaluation.accumulate(), evaluation.summarize()
        assert evaluation.stats[0] == pytest.approx(1.0)


def test_a_yolo_download_loads_back_into_its_image_and_names_what_it_lacks(ctx, dataset, tmp_path):
    session, masks = dataset
    path = tmp_path / "chelsea.yolo-seg.zip"
    path.write_bytes(export(ctx, session, "yolo-seg.zip"))
    view = on_load_saved(ctx, str(path), on_image(ctx, CAT).state)
    assert "Loaded from chelsea.yolo-seg.zip: 3 fixed masks." in panels(view)["status"]
    loaded = stored(ctx, view.state)
    assert loaded.categories == ("cat", "cup") and [o.category for o in loaded.objects[:3]] == ["cat", "cup", "cat"]
    shown = [layer.source.mask for layer in loaded.shown()]
    assert all((a & b).sum() / (a | b).sum() > 0.98 for a, b in zip(shown[:2], masks[:2])), "polygons: near the masks"
    other = tmp_path / "rocket.png"
    Image.open(CAT).save(other)
    refused = on_load_saved(ctx, str(path), on_image(ctx, str(other)).state)
    assert "labels.zip" not in panels(refused)["status"]
    assert "it holds chelsea.yolo-seg.zip: labels/chelsea.txt, but no rocket.txt for this image" in html.unescape(
        panels(refused)["status"]
    )


def test_yolo_segmentation_labels_read_back_by_an_independent_reader(ctx, dataset):
    session, masks = dataset
    with zipfile.ZipFile(io.BytesIO(export(ctx, session, "yolo-seg.zip"))) as archive:
        assert sorted(archive.namelist()) == ["data.yaml", "images/chelsea.png", "labels/chelsea.txt"]
        data = archive.read("data.yaml").decode()
        assert archive.read("images/chelsea.png") == Path(CAT).read_bytes()
        lines = archive.read("labels/chelsea.txt").decode().splitlines()
    names = dict(re.findall(r'^\s+(\d+): "(.*)"$', data, re.M))
    assert names == {"0": "cat", "1": "cup"} and "train: images" in data and "val: images" in data
    assert len(lines) == 3
    coco = json.loads(export(ctx, session, "coco-polygons.json"))
    for line, mask, ann in zip(lines, masks, coco["annotations"]):
        values = line.split()
        assert int(values[0]) == ann["category_id"] - 1 and len(values) % 2 == 1 and len(values) >= 7
        xy = np.array(values[1:], float).reshape(-1, 2)
        assert (xy >= 0).all() and (xy <= 1).all()
        drawn = polygons_to_mask([xy * [451, 300]], (300, 451))
        # One polygon per object, drawing what COCO's polygons per part draw. The random model's click is
        # noise, thousands of parts of a few pixels, some of whose simplified outlines overlap (their union
        # and the joined polygon's even-odd fill then differ there); the shapes' do not.
        parts = [np.array(p).reshape(-1, 2) for p in ann["segmentation"]]
        differ = (drawn != polygons_to_mask(parts, (300, 451))).mean()
        if ann["id"] < 3:
            assert differ < 1e-4 and (drawn & mask).sum() / (drawn | mask).sum() >= 0.98  # (rounding: 6 decimals)
        else:
            assert differ < 0.01


def test_a_coco_export_loads_back_with_its_categories_names_and_masks(ctx, dataset, tmp_path):
    session, masks = dataset
    for kind in ("coco.json", "coco-polygons.json"):
        path = export(ctx, session, kind, tmp_path)
        view = on_load_saved(ctx, path, on_image(ctx, CAT).state)
        loaded = stored(ctx, view.state)
        assert loaded.categories == ("cat", "cup")
        objects = loaded.objects[:3]
        assert [(o.category, o.name) for o in objects] == [("cat", "left"), ("cup", ""), ("cat", "")]
        shown = [layer.source.mask for layer in loaded.shown()]
        if kind == "coco.json":  # RLE: exact, and the click's prompts remake its mask: it can be refined
            assert all(np.array_equal(a, b) for a, b in zip(shown, masks))
            assert objects[2].points == ((200.0, 150.0, 1),) and objects[2].fixed is None
            assert "1 object to refine; 2 fixed masks" in panels(view)["status"]
        else:  # polygons: within a pixel of the edges, so no prompts to refine
            assert all((a & b).sum() / (a | b).sum() > 0.98 for a, b in zip(shown[:2], masks[:2]))
            assert all(o.fixed is not None for o in objects)


# (what is wrong in the third annotation, the prompts and the score it loads with)
LENIENT = {
    "points as an object": (lambda a: a.update(prompts={"input_points": {"a": 1}}), None, None),
    "labels as an object": (lambda a: a["prompts"].update(input_labels={"a": 1}), None, None),
    "a score of 400 digits": (lambda a: a.update(predicted_iou=10**400), ((200.0, 150.0, 1),), 1.0),
}


@pytest.mark.parametrize("case", LENIENT)
def test_a_coco_annotations_unusable_prompts_or_score_are_dropped_and_its_mask_loads(ctx, dataset, case):
    session, masks = dataset
    change, points, score = LENIENT[case]
    coco = json.loads(export(ctx, session, "coco.json"))
    change(coco["annotations"][2])
    loaded = saved_objects(json.dumps(coco).encode(), (300, 451), image_name="chelsea.png").objects
    assert len(loaded) == 3 and np.array_equal(loaded[2].mask.mask, masks[2])
    assert (loaded[2].prompts and loaded[2].prompts.points) == points
    if score is not None:
        assert loaded[2].mask.score == score


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (lambda c: c["images"].append({**c["images"][0], "id": 2, "file_name": "b.png"}), "none of them 'other.png'"),
        (lambda c: c["images"][0].update(width=600), "it annotates a 600x300 image, but this one is 451x300"),
        (lambda c: c["annotations"][0].update(category_id=9), "annotation 1 names category 9"),
        (lambda c: c["annotations"][0].update(category_id=[1]), "annotation 1 names category [1]"),
        (lambda c: c["annotations"][0].update(category_id=10**400), "annotation 1 names category 1000"),
        (
            lambda c: c["annotations"][1].update(segmentation={"size": [3, 3], "counts": "x"}),
            "annotation 2's segmentation",
        ),
        (lambda c: c["annotations"][1].update(segmentation=[[1, "a", 3, 4, 5, 6]]), "annotation 2's segmentation"),
        (  # runs that stop short: pycocotools would leave the rest of the mask unwritten
            lambda c: c["annotations"][1].update(segmentation={"size": [300, 451], "counts": [3, 2]}),
            "annotation 2's segmentation is not polygons or an RLE of this 451x300 image: its runs add up to 5 "
            "pixels, not the 135,300 of its size",
        ),
        (
            lambda c: c["annotations"][1].update(segmentation={"size": [300, 451], "counts": "0d"}),
            "451x300 image: its counts end in the middle of a value",
        ),
        (  # uncompressed runs pycocotools takes as uint32: OverflowError and a traceback
            lambda c: c["annotations"][1].update(segmentation={"size": [300, 451], "counts": [-5, 135305]}),
            "451x300 image: its counts hold a negative run",
        ),
        (  # pycocotools casts the vertices to int: a NaN or a far vertex crashed the server (segfault)
            lambda c: c["annotations"][1].update(segmentation=[[0, 0, 10, float("nan"), 10, 10]]),
            "451x300 image: its polygon 1 holds a number that is not finite (NaN or infinity)",
        ),
        (
            lambda c: c["annotations"][1].update(segmentation=[[0, 0, 1e18, 0, 1e18, 1e18]]),
            "451x300 image: its polygon 1 has a point at (1e+18, 0), more than an image's size outside it",
        ),
        (lambda c: c["annotations"][1].update(segmentation=[[0, 0, 10**400, 0, 5, 5]]), "annotation 2's segmentation"),
        (  # 50,000 vertices zig-zagging across it: pycocotools' memory grows with the outline (21 GB seen)
            lambda c: c["annotations"][1].update(
                segmentation=[[v for i in range(50_000) for v in (451.0 * (i % 2), i * 300 / 50_000)]]
            ),
            "451x300 image: its polygons are 22,550,000 pixels long in all: one file's are drawn up to 20,000,000",
        ),
        (lambda c: c.update(images={}), '"images", "annotations" and "categories" are lists'),
    ],
)
def test_a_coco_file_that_does_not_fit_says_why(ctx, dataset, change, says):
    session, _ = dataset
    coco = json.loads(export(ctx, session, "coco.json"))
    change(coco)
    with pytest.raises(ValueError, match=re.escape(says)):
        saved_objects(json.dumps(coco).encode(), (300, 451), image_name="other.png")


def detections() -> dict:
    """A COCO detection file for the cat photo: boxes, no segmentation."""
    return {
        "images": [{"id": 7, "file_name": "chelsea.png", "width": 451, "height": 300}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 3, "bbox": [40, 20, 200, 180], "name": "left"},
            {"id": 2, "image_id": 7, "category_id": 5, "bbox": [250, 60, 200, 239.5]},  # to the edge
        ],
        "categories": [{"id": 3, "name": "cat"}, {"id": 5, "name": "cup"}],
    }


def predictor_box_mask(ctx, box_xyxy) -> np.ndarray:
    from sam_demo import SamPredictor

    predictor = SamPredictor(ctx.engine)
    predictor.set_image(np.asarray(Image.open(CAT).convert("RGB")))
    masks, _, _ = predictor.predict(box=np.array(box_xyxy, float), multimask_output=False)
    return masks[0]


@pytest.mark.parametrize("kind", ["coco", "yolo"])
def test_imported_boxes_become_objects_segmented_from_them(ctx, uploaded, tmp_path, kind):
    boxes = [(40, 20, 240, 200), (250, 60, 450, 299.5)]
    if kind == "coco":
        path = tmp_path / "detections.json"
        path.write_text(json.dumps(detections()))
        expected = [("cat", "left"), ("cup", "")]
    else:  # class 0 is the session's first category; class 1 is past its list
        uploaded = stored(ctx, uploaded)
        uploaded.set_categories(["cat"])
        lines = [
            f"{k} {(x0 + x1) / 902} {(y0 + y1) / 600} {(x1 - x0) / 451} {(y1 - y0) / 300}"
            for k, (x0, y0, x1, y1) in enumerate(boxes)
        ]
        path = tmp_path / "chelsea.txt"
        path.write_text("\n".join(lines) + "\n")
        expected = [("cat", ""), ("class 1", "")]
    view = on_load_saved(ctx, str(path), uploaded)
    session = stored(ctx, view.state)
    assert "2 objects to refine" in panels(view)["status"]
    objects = [o for o in session.objects if o.has_prompts]
    assert [(o.category, o.name) for o in objects] == expected
    for obj, layer, box_xyxy in zip(objects, session.shown(), boxes):
        assert obj.box_xyxy == pytest.approx(box_xyxy, abs=1e-6) and not obj.points
        assert np.array_equal(layer.source.mask, predictor_box_mask(ctx, obj.box_xyxy))
    assert on_prompt(ctx, json.dumps({"token": session.token, "events": [{"type": "undo"}]}), session)
    coco = json.loads(export(ctx, session, "coco.json"))
    assert [a["prompts"]["input_boxes"] for a in coco["annotations"]] == [
        [list(b)] for b in [o.box_xyxy for o in objects]
    ]


def test_one_box_of_two_classes_is_two_objects_and_loading_it_again_adds_none(ctx, uploaded, tmp_path):
    path = tmp_path / "chelsea.txt"
    path.write_text("0 0.5 0.5 0.4 0.4\n1 0.5 0.5 0.4 0.4\n")  # a multi-label detection: same box, two classes
    once = on_load_saved(ctx, str(path), uploaded)
    assert "2 objects to refine" in panels(once)["status"]
    assert [o.category for o in stored(ctx, once.state).objects if o.has_prompts] == ["class 0", "class 1"]
    twice = on_load_saved(ctx, str(path), once.state)
    assert len([o for o in stored(ctx, twice.state).objects if o.has_prompts]) == 2


def test_yolo_polygons_load_as_fixed_masks(ctx, uploaded, tmp_path):
    path = tmp_path / "chelsea.txt"
    path.write_text("0 0.1 0.1 0.5 0.1 0.5 0.6 0.1 0.6\n")
    session = stored(ctx, on_load_saved(ctx, str(path), uploaded).state)
    (layer,) = session.shown()
    assert isinstance(layer.source, FixedMask) and layer.category == "class 0"
    mask = layer.source.mask
    assert mask[100, 100] and not mask[250, 400] and abs(int(mask.sum()) - 180 * 150) < 600


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("0 0.5 0.5 0.2\n", "line 1 has 4 numbers: a YOLO line is 'class cx cy w h'"),
        (
            "0 0.5 0.5 0.2 0.2\n0 0.95 0.5 0.3 0.2\n",
            "line 2's box [360.8, 120, 496.1, 180] is outside this 451x300 image",
        ),
        ("0 0.5 0.5 0.2 0.2\n\nx 1 2 3 4\n", "line 3 is not 'class cx cy w h'"),
        ("-1 0.5 0.5 0.2 0.2\n", "line 1: class -1"),
        ("0 0.5 0.5 0 0.2\n", "line 1: the box has no size"),
        ("0 0.5 0.5 1e308 1e308\n", "line 1: the box's centre and size are not fractions of the image"),
        ("0 0.1 0.1 1.5 0.1 0.5 0.6\n", "line 1: the polygon leaves the image"),
        ("0 1e999 0.5 0.2 0.2\n", "line 1: class 0 or its numbers are not usable"),
        ("0 inf 0.5 0.2 0.2\n", "line 1 is not 'class cx cy w h'"),
        ("1_0 0.5 0.5 0.2 0.2\n", "line 1 is not 'class cx cy w h'"),
        ("9" * 5000 + " 0.5 0.5 0.2 0.2\n", "line 1 is not 'class cx cy w h'"),  # not int()'s 4,300-digit message
        (  # zig-zagging across the image: pycocotools' memory grows with the outline's length
            ("0 " + " ".join(f"{i % 2} {i / 30000:.6f}" for i in range(30000)) + "\n") * 2,
            "line 2: its polygons are 13,530,000 pixels long in all: one file's are drawn up to 20,000,000, of which "
            "6,470,000 are left; simplify them",
        ),
        ("0 0,5 0.5 0.2 0.2\n", "line 1 is not 'class cx cy w h'"),
        ("0 0.5 0.5 0.2 0.2\n" * 501, "at most 500 load at once"),
    ],
)
def test_a_yolo_file_that_does_not_fit_says_which_line_and_adds_nothing(ctx, uploaded, tmp_path, content, says):
    path = tmp_path / "labels.txt"
    path.write_text(content)
    view = on_load_saved(ctx, str(path), uploaded)
    status = html.unescape(panels(view)["status"])
    assert says in status and "labels.txt was not loaded" in status
    assert not stored(ctx, view.state).shown()


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (
            lambda a: a.update(bbox=[400, 200, 100, 100]),
            "annotation 1's box [400, 200, 500, 300] is outside this 451x300",
        ),
        (lambda a: a.update(bbox=[1, 2, 0, 5]), "annotation 1 has no segmentation and its bbox [1, 2, 0, 5] is not"),
        (lambda a: a.update(bbox="1 2 3 4"), "annotation 1 has no segmentation"),
        (lambda a: a.update(bbox=[10**400, 2, 3, 4]), "annotation 1 has no segmentation"),  # past floats' range
        (lambda a: a.update(category_id=4), "annotation 1 names category 4"),
    ],
)
def test_a_coco_detection_that_does_not_fit_says_why_and_adds_nothing(ctx, uploaded, tmp_path, change, says):
    coco = detections()
    change(coco["annotations"][0])
    path = tmp_path / "detections.json"
    path.write_text(json.dumps(coco))
    view = on_load_saved(ctx, str(path), uploaded)
    assert says in html.unescape(panels(view)["status"])
    assert not stored(ctx, view.state).shown()
