"""A set's downloads, streamed (sam_demo/demo/set_exports.py): made one image at a time as they are
read, an image that cannot be exported named while the rest is, the polygon tolerance taken from the
link, and the endpoint JSON of each image."""

from __future__ import annotations

import io
import json
import zipfile

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from sam_demo.demo.exports import ExportOptions, endpoint_export
from sam_demo.demo.session import FixedMask, SavedObject
from sam_demo.demo.set_exports import SET_EXPORT_KINDS, set_export_chunks
from sam_demo.demo.workspace import remade, set_images
from tests.support.demo import stored
from tests.support.workspace import set_client, two_labelled


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


@pytest.mark.parametrize("kind", sorted(SET_EXPORT_KINDS))
def test_a_sets_download_remakes_each_image_only_when_its_turn_comes(wctx, photos, kind):
    one, two = two_labelled(wctx, photos)
    images = set_images(wctx.workspaces, wctx.sessions, two)
    made = []

    def remake(session):
        made.append(session.name)
        return remade(wctx.engine, session)

    chunks = set_export_chunks(kind, images, remake, ExportOptions(wctx.engine.max_pixels))
    first = next(chunks)
    assert len(made) <= 1, "the first chunk goes out before the second image's masks are made"
    body = first + b"".join(chunks)
    assert made == ["1-rocket.png", "2-coffee.png"], "each labelled image once, in order; the unlabelled never"
    if kind.endswith(".zip"):
        assert zipfile.ZipFile(io.BytesIO(body)).testzip() is None
    else:
        assert len(json.loads(body)["annotations"]) == 2


@pytest.mark.parametrize("kind", sorted(SET_EXPORT_KINDS))
def test_an_image_that_cannot_be_exported_is_named_and_the_rest_are_exported(wctx, photos, tmp_path, kind):
    one, two = two_labelled(wctx, photos)
    images = set_images(wctx.workspaces, wctx.sessions, two)

    def remake(session):
        if session.name == "1-rocket.png":
            raise RuntimeError("the encoder ran out of memory")
        return remade(wctx.engine, session)

    body = b"".join(set_export_chunks(kind, images, remake, ExportOptions(wctx.engine.max_pixels)))
    problem = "1-rocket.png: the encoder ran out of memory"
    if kind.endswith(".json"):
        (tmp_path / "set.json").write_bytes(body)
        coco = COCO(str(tmp_path / "set.json"))
        assert [a["image_id"] for a in coco.loadAnns(coco.getAnnIds())] == [2]
        assert json.loads(body)["problems"] == [problem]
    else:
        archive = zipfile.ZipFile(io.BytesIO(body))
        assert problem in archive.read("problems.txt").decode()
        assert not [n for n in archive.namelist() if "1-rocket" in n and not n.startswith("images/")]
        assert any("2-coffee" in n for n in archive.namelist())


def test_the_sets_endpoint_json_is_each_images_download_json_and_names_those_without_prompts(wctx, photos):
    one, two = two_labelled(wctx, photos)
    loaded = stored(wctx, one).fork()  # the first image: a loaded mask only, no prompts to replay
    loaded.start_over()
    mask = np.zeros(loaded.size_hw, bool)
    mask[10:50, 20:90] = True
    loaded.add_saved(wctx.engine, [SavedObject(FixedMask.of(mask, 0.9, "Loaded mask"), "dish")])
    wctx.sessions.put(loaded)
    answer = set_client(wctx).get(f"/sam-demo/export-set/{two.token}/sam-endpoint.zip")
    assert answer.status_code == 200 and 'filename="images.sam-endpoint.zip"' in answer.headers["content-disposition"]
    archive = zipfile.ZipFile(io.BytesIO(answer.content))
    assert sorted(archive.namelist()) == ["2-coffee.json", "problems.txt"]
    assert json.loads(archive.read("2-coffee.json")) == json.loads(json.dumps(endpoint_export(stored(wctx, two))))
    assert "1-rocket.png: Download JSON replays prompts" in archive.read("problems.txt").decode()


def _ring(size_hw) -> np.ndarray:
    """A ring with an island in its hole, and a second part: what polygons must keep."""
    mask = np.zeros(size_hw, np.uint8)
    cv2.circle(mask, (110, 120), 90, 1, -1)
    cv2.circle(mask, (110, 120), 40, 0, -1)
    cv2.circle(mask, (110, 120), 15, 1, -1)
    cv2.ellipse(mask, (260, 120), (40, 90), 20, 0, 360, 1, -1)
    return mask.astype(bool)


def test_the_polygon_tolerance_of_the_link_shapes_coco_and_yolo_outlines(wctx, photos):
    """Checked on a loaded ring (the random model's masks are speckles of single pixels, whose
    corner-to-corner touches no polygon of pixel edges draws exactly)."""
    one, two = two_labelled(wctx, photos)
    state = stored(wctx, two)
    ring = _ring(state.size_hw)
    state.add_saved(wctx.engine, [SavedObject(FixedMask.of(ring, 1.0, "Loaded mask"), "ring")])
    wctx.sessions.put(state)
    client = set_client(wctx)
    h, w = ring.shape

    def drawn(tolerance, path="export-set"):
        answer = client.get(f"/sam-demo/{path}/{two.token}/coco-polygons.json", params={"tolerance": tolerance})
        assert answer.status_code == 200, answer.text
        (ring_annotation,) = [a for a in json.loads(answer.content)["annotations"] if a.get("name") == "ring"]
        polygons = ring_annotation["segmentation"]
        mask = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polygons, h, w))).astype(bool)
        return mask, sum(len(p) for p in polygons)

    (exact, n0), (default, n1), (coarse, n4) = drawn("0"), drawn(""), drawn("4")
    assert np.array_equal(exact, ring) and np.array_equal(drawn("0", "export")[0], ring)
    assert 0.98 <= _iou(default, ring) < 1 and _iou(coarse, ring) < _iou(default, ring)
    assert n0 > n1 > n4, "the larger the tolerance, the fewer the vertices"

    def yolo_numbers(tolerance):
        answer = client.get(f"/sam-demo/export-set/{two.token}/yolo-seg.zip", params={"tolerance": tolerance})
        return len(zipfile.ZipFile(io.BytesIO(answer.content)).read("labels/2-coffee.txt").split())

    assert yolo_numbers("0") > yolo_numbers("1") > yolo_numbers("4")


@pytest.mark.parametrize("tolerance", ["-1", "10.5", "nan", "inf", "two", "1e999", "1_0", " 1", "\u0661"])
@pytest.mark.parametrize("path", ["export-set", "export"])
def test_a_tolerance_that_is_not_0_to_10_pixels_is_refused_with_what_to_give(wctx, photos, tolerance, path):
    one, two = two_labelled(wctx, photos)
    answer = set_client(wctx).get(f"/sam-demo/{path}/{two.token}/coco-polygons.json", params={"tolerance": tolerance})
    assert answer.status_code == 400
    assert "the polygon tolerance is a number of pixels from 0 to 10" in answer.json()["error"]
