"""Boxes -> masks in bulk: a COCO detection file or YOLO detection labels, segmented by SAM from each box.

    python -m sam_demo.batch --boxes COCO_JSON_OR_YOLO_DIR --images DIR OUT.json [--polygons] [--engine ray]

Each box becomes one COCO instance annotation: its mask (one mask per box, as `/score` gives for a
box with multimask_output false), its category, the box as the prompt, and SAM's predicted IoU.
The whole input is checked before anything runs: a category id off the list, a box outside its
image, a YOLO line with the wrong count of numbers each stop the command with a message naming the
file and the line (or the annotation), and nothing is written.

Resumable: each image's result is appended to OUT's progress file (OUT + ".progress.jsonl") as it
is done; a run again skips the images already there, then writes OUT whole (temp file + rename).
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sam_demo.batch.job import append_records, done_keys
from sam_demo.batch.precompute import printable, read_image_file
from sam_demo.endpoint.fetch import FetchPolicy
from sam_demo.engine.utils.files import image_files
from sam_demo.engine.utils.geometry import box_within
from sam_demo.engine.utils.prompts import finite_numbers
from sam_demo.engine.utils.yolo import names_from_classes_txt, names_from_data_yaml

if TYPE_CHECKING:
    from sam_demo.engine.sam_engine import SamEngine

__all__ = ["BoxSet", "read_boxes", "run_boxes", "segment_image_boxes", "write_coco"]

MAX_LABEL_BYTES = 1 << 30  # a COCO detection file larger than this is refused before it is read
MAX_PROBLEMS = 20  # problems listed in one message
DECODE_BOXES = 8  # boxes decoded per call, as /score does in the fast mode


@dataclass(frozen=True)
class BoxSet:
    """What the command segments: the categories, and per matched image its boxes.

    categories: [{"id", "name"}] as the output's COCO categories.
    items: one JSON-able dict per image: {"image": file name, "path", "image_id", "boxes": [[x0, y0,
      x1, y1] in pixels, or "boxes_cxcywh_norm": [[cx, cy, w, h] in [0, 1]] for YOLO], "category_ids",
      "sources": [where each box came from: "file:line" or "annotations[k]"]}.
    unmatched: labelled images with no file among the images, by name.
    """

    categories: list[dict]
    items: list[dict]
    unmatched: list[str]


class BoxFileError(ValueError):
    """The boxes cannot be used as given; the message lists each problem with its file and line."""

    def __init__(self, problems: list[str]):
        shown = problems[:MAX_PROBLEMS]
        more = f"\n... and {len(problems) - MAX_PROBLEMS} more" if len(problems) > MAX_PROBLEMS else ""
        super().__init__("the boxes were not used (nothing written):\n" + "\n".join(shown) + more)


def read_boxes(boxes: Path, images: Path) -> BoxSet:
    """Read and check a COCO detection JSON or a folder of YOLO detection .txt files, matched by file
    name (COCO's `file_name`'s base name; YOLO's stem) to the images under `images`.

    Raises BoxFileError listing every problem, or ValueError for a missing input."""
    if not images.is_dir():
        raise ValueError(f"--images {images} is not a folder of images")
    files: dict[str, Path] = {}
    for path in image_files(images):
        files.setdefault(path.name, path)  # by name: the first found in name order
    if boxes.is_dir():
        return _read_yolo(boxes, files)
    if boxes.is_file():
        return _read_coco(boxes, files)
    raise ValueError(f"--boxes {boxes} does not exist (give a COCO .json file or a folder of YOLO .txt files)")


def _read_coco(path: Path, files: dict[str, Path]) -> BoxSet:
    if path.stat().st_size > MAX_LABEL_BYTES:
        raise ValueError(f"{path.name} is over {MAX_LABEL_BYTES >> 30} GB")
    try:
        body = json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path.name} is not JSON: {exc}") from None
    if not isinstance(body, dict) or not all(isinstance(body.get(k), list) for k in ("images", "annotations")):
        raise ValueError(f"{path.name} is not a COCO file: it needs 'images' and 'annotations' lists")
    problems: list[str] = []
    categories = _coco_categories(body.get("categories"), path.name, problems)
    images: dict[int, dict] = {}
    for k, image in enumerate(body["images"]):
        if not isinstance(image, dict) or not _is_int(image.get("id")) or not isinstance(image.get("file_name"), str):
            problems.append(f"{path.name}: images[{k}]: needs an integer 'id' and a 'file_name'")
            continue
        images[image["id"]] = image
    boxes: dict[int, list] = {image_id: [] for image_id in images}
    known = {c["id"] for c in categories}
    for k, ann in enumerate(body["annotations"]):
        where = f"{path.name}: annotations[{k}]" + (
            f" (id {ann['id']})" if isinstance(ann, dict) and "id" in ann else ""
        )
        if not isinstance(ann, dict):
            problems.append(f"{where}: not an object")
            continue
        if ann.get("image_id") not in images:
            problems.append(f"{where}: image_id {ann.get('image_id')!r} is not among the images")
            continue
        if ann.get("category_id") not in known:
            problems.append(
                f"{where}: category_id {ann.get('category_id')!r} is not among the categories {sorted(known)}"
            )
            continue
        box = ann.get("bbox")
        if not finite_numbers(box, 4) or box[2] <= 0 or box[3] <= 0:
            problems.append(f"{where}: bbox {box!r} is not [x, y, width, height] with a positive size")
            continue
        x, y, w, h = (float(v) for v in box)
        image = images[ann["image_id"]]
        size = (image.get("width"), image.get("height"))
        if all(_is_int(v) and v > 0 for v in size) and box_within((x, y, x + w, y + h), size[::-1]) is None:
            problems.append(f"{where}: bbox {box} is outside its {size[0]}x{size[1]} image")
            continue
        boxes[ann["image_id"]].append(([x, y, x + w, y + h], ann["category_id"], where.split(": ", 1)[1]))
    if problems:
        raise BoxFileError(problems)
    items, unmatched = [], []
    for image_id, image in images.items():
        name = Path(image["file_name"]).name
        if name not in files:
            unmatched.append(name)
            continue
        found = boxes[image_id]
        items.append(
            {
                "image": name,
                "path": str(files[name]),
                "image_id": image_id,
                "boxes": [b for b, _, _ in found],
                "category_ids": [c for _, c, _ in found],
                "sources": [s for _, _, s in found],
            }
        )
    return BoxSet(categories, items, unmatched)


def _coco_categories(given, file: str, problems: list[str]) -> list[dict]:
    if not isinstance(given, list) or not given:
        problems.append(f"{file}: 'categories' must be a non-empty list of {{'id', 'name'}}")
        return []
    categories = []
    for k, category in enumerate(given):
        if (
            not isinstance(category, dict)
            or not _is_int(category.get("id"))
            or not isinstance(category.get("name"), str)
        ):
            problems.append(f"{file}: categories[{k}]: needs an integer 'id' and a 'name'")
            continue
        categories.append({"id": category["id"], "name": category["name"]})
    return categories


def _read_yolo(folder: Path, files: dict[str, Path]) -> BoxSet:
    names = _yolo_names(folder)
    stems: dict[str, Path] = {}
    for path in files.values():
        stems.setdefault(path.stem, path)
    problems: list[str] = []
    items, unmatched, top_class = [], [], -1
    labels = sorted(p for p in folder.glob("*.txt") if p.name != "classes.txt")
    if not labels:
        raise ValueError(f"--boxes {folder} has no YOLO .txt label files")
    for label in labels:
        boxes, classes, sources = [], [], []
        try:
            text = label.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(f"{label.name}: cannot be read ({exc})")
            continue
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            where = f"{label.name}:{number}"
            values = line.split()
            if len(values) not in (5, 6):
                problems.append(
                    f"{where}: {len(values)} numbers; a YOLO detection line is 'class cx cy w h' "
                    "(and an optional confidence)"
                )
                continue
            try:
                cls, box = int(values[0]), [float(v) for v in values[1:5]]
            except ValueError:
                problems.append(f"{where}: {line.strip()[:80]!r} is not 'class cx cy w h' numbers")
                continue
            cx, cy, w, h = box
            if cls < 0 or (names and cls >= len(names)):
                problems.append(f"{where}: class {cls} is not among the {len(names)} names (0-{len(names) - 1})")
                continue
            if not all(math.isfinite(v) for v in box) or w <= 0 or h <= 0:
                problems.append(f"{where}: the box {box} has no positive size")
                continue
            if box_within((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), (1, 1), tolerance=1e-3) is None:
                problems.append(f"{where}: the box {box} is outside the image (YOLO boxes are in [0, 1])")
                continue
            boxes.append(box)
            classes.append(cls)
            sources.append(where)
            top_class = max(top_class, cls)
        if label.stem not in stems:
            unmatched.append(label.stem)
            continue
        path = stems[label.stem]
        items.append(
            {
                "image": path.name,
                "path": str(path),
                "image_id": len(items) + 1,
                "boxes_cxcywh_norm": boxes,
                "category_ids": [c + 1 for c in classes],
                "sources": sources,
            }
        )
    if problems:
        raise BoxFileError(problems)
    names = names or [f"class {k}" for k in range(top_class + 1)]
    return BoxSet([{"id": k + 1, "name": name} for k, name in enumerate(names)], items, unmatched)


def _yolo_names(folder: Path) -> list[str]:
    """The class names: data.yaml's `names` or classes.txt, in the folder or its parent; [] if there
    are none."""
    for place in (folder, folder.parent):
        for file, read in (("data.yaml", names_from_data_yaml), ("classes.txt", names_from_classes_txt)):
            if (place / file).is_file():
                try:
                    return read((place / file).read_text(encoding="utf-8"), str(place / file))
                except UnicodeDecodeError as exc:
                    raise ValueError(f"{place / file} cannot be read: {exc}") from None
    return []


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def segment_image_boxes(item: dict, engine: SamEngine, policy: FetchPolicy, polygons: bool = False) -> dict:
    """One image's annotations: {"image", "image_id", "width", "height", "annotations"} (ids from 1
    within the image), or {"image", "error"}. Never raises for a bad image."""
    import numpy as np

    from sam_demo.engine.utils.coco import coco_annotation
    from sam_demo.engine.utils.images import decode_image_bytes, to_rgb_array

    out = {"image": item["image"], "image_id": item["image_id"]}
    try:
        rgb = to_rgb_array(decode_image_bytes(read_image_file(item["path"]), engine.max_pixels), engine.max_pixels)
        h, w = rgb.shape[:2]
        embedding = engine.embed(rgb)
        del rgb
        boxes = _pixel_boxes(item, (w, h))
        annotations = []
        for start in range(0, len(boxes), DECODE_BOXES):
            chunk = boxes[start : start + DECODE_BOXES]
            prediction = engine.decode(
                embedding, boxes_xyxy=np.asarray(chunk, np.float64), multimask_output=False, full_frame=False
            )
            for k, (mask, score) in enumerate(zip(prediction.masks[:, 0], prediction.iou_scores[:, 0])):
                j = start + k
                x0, y0, x1, y1 = chunk[k]
                annotations.append(
                    coco_annotation(
                        mask,
                        j + 1,
                        item["image_id"],
                        item["category_ids"][j],
                        polygons,
                        predicted_iou=float(score),
                        prompts={"box_xywh": [x0, y0, x1 - x0, y1 - y0]},
                        source=item["sources"][j],
                    )
                )
        out |= {"width": w, "height": h, "annotations": annotations}
    except (OSError, ValueError, RuntimeError) as exc:
        out["error"] = str(exc) or type(exc).__name__
    return out


def _pixel_boxes(item: dict, size_wh: tuple[int, int]) -> list[list[float]]:
    """The item's boxes as [x0, y0, x1, y1] in pixels, clipped to the image."""
    w, h = size_wh
    if "boxes" in item:
        boxes = item["boxes"]
    else:
        boxes = [
            [(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h]
            for cx, cy, bw, bh in item["boxes_cxcywh_norm"]
        ]
    clipped = []
    for box in boxes:
        inside = box_within(box, (h, w))
        if inside is None:
            raise ValueError(f"a box {list(box)} is outside the {w}x{h} image")
        clipped.append(list(inside))
    return clipped


def run_local(items: list[dict], engine: SamEngine, policy: FetchPolicy, polygons: bool) -> Iterator[dict]:
    for item in items:
        yield segment_image_boxes(item, engine, policy, polygons)


def progress_path(output: Path) -> Path:
    return output.with_name(output.name + ".progress.jsonl")


def run_boxes(box_set: BoxSet, output: Path, results_for, progress: bool = True) -> dict:
    """Segment every image not yet in OUT's progress file (appending each result as it is done), then
    write OUT. Returns the counts: images, done before, segmented, errors, annotations."""
    from tqdm import tqdm

    progress_file = progress_path(output)
    done, dropped = done_keys(progress_file, key=lambda record: record["image"])
    if dropped:
        print(f"{progress_file}: {dropped} cut-short lines dropped; their images are segmented again", file=sys.stderr)
    todo = [item for item in box_set.items if item["image"] not in done]
    for record in append_records(progress_file, results_for(todo), len(todo), "image", "boxes -> masks", progress):
        if "error" in record:
            tqdm.write(f"{printable(record['image'])}: {printable(record['error'])}", file=sys.stderr)
    counts = write_coco(box_set, progress_file, output)
    return {"images": len(box_set.items), "done before": len(box_set.items) - len(todo), **counts}


def write_coco(box_set: BoxSet, progress_file: Path, output: Path) -> dict:
    """OUT as COCO instances JSON from the progress file's records of `box_set`'s images: images with
    their real names and sizes, the categories, and annotations numbered from 1 across the set."""
    wanted = {item["image"] for item in box_set.items}
    records = {}
    with open(progress_file, encoding="utf-8") as source:
        for line in source:
            record = json.loads(line)
            if record["image"] in wanted:
                records[record["image"]] = record
    images, annotations, errors = [], [], 0
    for item in box_set.items:
        record = records[item["image"]]
        if "error" in record:
            errors += 1
            continue
        images.append(
            {"id": item["image_id"], "file_name": item["image"], "width": record["width"], "height": record["height"]}
        )
        for annotation in record["annotations"]:
            annotations.append({**annotation, "id": len(annotations) + 1})
    coco = {"images": images, "annotations": annotations, "categories": box_set.categories}
    tmp = output.with_name(f".{output.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(coco), encoding="utf-8")
    os.replace(tmp, output)
    return {"errors": errors, "annotations": len(annotations)}
