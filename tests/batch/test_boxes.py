"""Boxes -> masks (`python -m sam_demo.batch --boxes ... --images ... OUT`): COCO and YOLO detection
boxes segmented, the output read by pycocotools and equal to /score's masks for the same boxes; bad
box files refused naming the file and line, with nothing written; resume."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from sam_demo.batch.boxes import BoxFileError, progress_path, read_boxes, run_boxes, run_local
from sam_demo.endpoint.fetch import FetchPolicy
from sam_demo.endpoint.wire import read_response
from tests.support.photos import asset, b64_png
from tests.support.requests import score_body
from tests.support.servers import REPOSITORY

# file -> (W, H) crop of a bundled photo, and its boxes [x, y, w, h] with their category ids
IMAGES = {
    "cat.png": ("chelsea.png", [([40, 20, 200, 180], 1), ([250, 60, 150, 200], 2)]),
    "cup.jpg": ("coffee.png", [([100, 30, 280, 260], 2)]),
    "rocket.png": ("rocket.jpg", [([0, 0, 120, 200], 1), ([130, 10, 170, 280], 1), ([5, 5, 60, 60], 2)]),
}
NAMES = ["thing", "stuff"]


@pytest.fixture
def dataset(tmp_path) -> Path:
    """images/ (the photos, plus one the labels do not name), coco.json and yolo/ (data.yaml)."""
    images = tmp_path / "images"
    images.mkdir()
    coco = {"images": [], "annotations": [], "categories": [{"id": k + 1, "name": n} for k, n in enumerate(NAMES)]}
    (tmp_path / "yolo").mkdir()
    for image_id, (name, (source, boxes)) in enumerate(IMAGES.items(), start=1):
        rgb = asset(source)[:300, :400]
        Image.fromarray(rgb).save(images / name, quality=95)
        coco["images"].append({"id": image_id, "file_name": f"some/where/{name}", "width": 400, "height": 300})
        lines = []
        for box, category in boxes:
            coco["annotations"].append(
                {"id": len(coco["annotations"]) + 1, "image_id": image_id, "category_id": category, "bbox": box}
            )
            x, y, w, h = box
            lines.append(f"{category - 1} {(x + w / 2) / 400} {(y + h / 2) / 300} {w / 400} {h / 300}")
        (tmp_path / "yolo" / f"{Path(name).stem}.txt").write_text("\n".join(lines) + "\n")
    Image.fromarray(asset("astronaut.png")[:100, :100]).save(images / "unlabelled.png")
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    (tmp_path / "yolo" / "data.yaml").write_text("names:\n  0: thing\n  1: stuff\n")
    return tmp_path


def score_masks(server, name: str, boxes_xywh: list) -> list:
    """/score's masks and scores for the image's boxes (one row, multimask_output false)."""
    rgb = np.asarray(Image.open(Path(name)).convert("RGB"))
    boxes = [[x, y, x + w, y + h] for x, y, w, h in boxes_xywh]
    answer = httpx.post(f"{server.url}/score", content=score_body(b64_png(rgb), boxes=json.dumps(boxes)), timeout=120)
    assert answer.status_code == 200, answer.text
    return [prediction[0] for prediction in read_response(answer.json())[0]]


@pytest.mark.parametrize("source", ["coco.json", "yolo"])
def test_boxes_become_the_masks_score_gives_for_them_in_a_coco_file_pycocotools_reads(engine, server, dataset, source):
    box_set = read_boxes(dataset / source, dataset / "images")
    assert box_set.unmatched == [] and len(box_set.items) == 3
    output = dataset / "out.json"
    counts = run_boxes(box_set, output, lambda todo: run_local(todo, engine, FetchPolicy(), False), progress=False)
    assert counts == {"images": 3, "done before": 0, "errors": 0, "annotations": 6}

    coco = COCO(str(output))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == NAMES
    for image in coco.loadImgs(coco.getImgIds()):
        _, boxes = IMAGES[image["file_name"]]
        assert (image["width"], image["height"]) == (400, 300)
        annotations = coco.loadAnns(coco.getAnnIds(imgIds=image["id"]))
        assert [a["category_id"] for a in annotations] == [c for _, c in boxes]
        expected = score_masks(server, dataset / "images" / image["file_name"], [b for b, _ in boxes])
        for annotation, scored, (box, _) in zip(annotations, expected, boxes):
            np.testing.assert_array_equal(coco.annToMask(annotation).astype(bool), scored.mask)
            assert annotation["predicted_iou"] == pytest.approx(scored.iou_score, abs=1e-6)
            assert annotation["prompts"]["box_xywh"] == pytest.approx(box, abs=1e-6) and annotation["iscrowd"] == 0
    assert len({a["id"] for a in coco.dataset["annotations"]}) == 6


def test_the_command_writes_polygons_resumes_and_names_unmatched_images(checkpoint, dataset):
    coco = json.loads((dataset / "coco.json").read_text())
    coco["images"].append({"id": 9, "file_name": "missing.png", "width": 10, "height": 10})
    (dataset / "coco.json").write_text(json.dumps(coco))
    output = dataset / "out" / "masks.json"
    command = [sys.executable, "-m", "sam_demo.batch", "--boxes", str(dataset / "coco.json")]
    command += ["--images", str(dataset / "images"), str(output), "--polygons", "--no-progress"]
    command += ["--model", str(checkpoint), "--dtype", "float32"]
    done = subprocess.run(command, cwd=REPOSITORY, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "1 labelled images are not under" in done.stderr and "missing.png" in done.stderr
    assert "3 images (0 done before, 0 could not be read): 6 masks written" in done.stdout
    written = COCO(str(output))
    assert all(isinstance(a["segmentation"], list) for a in written.dataset["annotations"])
    assert len(progress_path(output).read_text().splitlines()) == 3
    again = subprocess.run(command, cwd=REPOSITORY, capture_output=True, text=True, timeout=300)
    assert "3 images (3 done before" in again.stdout and json.loads(output.read_text()) == written.dataset


def break_coco(field: str, value):
    def edit(dataset: Path) -> str:
        coco = json.loads((dataset / "coco.json").read_text())
        coco["annotations"][2][field] = value
        (dataset / "coco.json").write_text(json.dumps(coco))
        return "coco.json"

    return edit


def break_yolo(line: str):
    def edit(dataset: Path) -> str:
        with open(dataset / "yolo" / "cup.txt", "a") as handle:
            handle.write(line + "\n")
        return "yolo"

    return edit


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            break_coco("category_id", 7),
            "coco.json: annotations[2] (id 3): category_id 7 is not among the categories [1, 2]",
        ),
        (
            break_coco("bbox", [300, 200, 200, 200]),
            "coco.json: annotations[2] (id 3): bbox [300, 200, 200, 200] is outside its 400x300 image",
        ),
        (break_coco("bbox", [1, 1, 0, 5]), "is not [x, y, width, height] with a positive size"),
        (break_coco("bbox", "1,2,3,4"), "is not [x, y, width, height]"),
        (break_coco("bbox", [10**400, 1, 2, 3]), "is not [x, y, width, height]"),  # past floats' range
        (break_coco("image_id", 42), "image_id 42 is not among the images"),
        (break_yolo("1 0.5 0.5 0.2"), "cup.txt:2: 4 numbers; a YOLO detection line is 'class cx cy w h'"),
        (break_yolo("5 0.5 0.5 0.2 0.2"), "cup.txt:2: class 5 is not among the 2 names (0-1)"),
        (break_yolo("0 0.95 0.5 0.3 0.2"), "cup.txt:2: the box [0.95, 0.5, 0.3, 0.2] is outside the image"),
        (break_yolo("x 0.5 0.5 0.2 0.2"), "cup.txt:2: 'x 0.5 0.5 0.2 0.2' is not 'class cx cy w h' numbers"),
        (break_yolo("0 nan 0.5 0.2 0.2"), "cup.txt:2: the box"),
    ],
)
def test_a_bad_box_file_names_the_file_and_line_and_nothing_is_written(checkpoint, dataset, edit, message):
    source = edit(dataset)
    with pytest.raises(BoxFileError, match="nothing written") as raised:
        read_boxes(dataset / source, dataset / "images")
    assert message in str(raised.value)
    output = dataset / "out.json"
    command = [sys.executable, "-m", "sam_demo.batch", "--boxes", str(dataset / source), "--images"]
    command += [str(dataset / "images"), str(output), "--model", str(checkpoint), "--no-progress"]
    done = subprocess.run(command, cwd=REPOSITORY, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr
    assert not output.exists() and not progress_path(output).exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--boxes", "B", "OUT"], "give --images DIR and one output path"),
        (["--boxes", "B", "--images", "I", "IN", "OUT"], "give --images DIR and one output path"),
        (["IN", "OUT", "--polygons"], "--images and --polygons go with --boxes"),
    ],
)
def test_the_command_says_how_to_call_it(argv, message):
    done = subprocess.run(
        [sys.executable, "-m", "sam_demo.batch", *argv], cwd=REPOSITORY, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2 and message in done.stderr


def test_names_from_classes_txt_or_none_and_a_folder_without_labels(dataset):
    (dataset / "yolo" / "data.yaml").unlink()
    assert [c["name"] for c in read_boxes(dataset / "yolo", dataset / "images").categories] == ["class 0", "class 1"]
    (dataset / "yolo" / "classes.txt").write_text("cat\n<b>dog</b>/..\n")
    assert [c["name"] for c in read_boxes(dataset / "yolo", dataset / "images").categories] == ["cat", "<b>dog</b>/.."]
    (dataset / "empty").mkdir()
    with pytest.raises(ValueError, match="no YOLO .txt label files"):
        read_boxes(dataset / "empty", dataset / "images")
    with pytest.raises(ValueError, match="not a folder of images"):
        read_boxes(dataset / "yolo", dataset / "nowhere")
