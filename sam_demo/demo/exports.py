"""Exports of a session: endpoint JSON (request + response), PNG masks (zip), COCO, and cut-outs.

The endpoint export holds one request row per object, each with the uploaded file as
base64 and that object's prompts, so posting `request` to `/score` (ours or Azure's)
reproduces `response`, mask for mask. A cut-out is an object's pixels as an RGBA PNG cropped to
its box, alpha from its mask, the edge antialiased from SAM's logits.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from sam_demo.demo.session import MAX_NAME_CHARS, MAX_POINTS_PER_OBJECT, FixedMask, ObjectPrompts, SavedObject, Session
from sam_demo.endpoint.wire import (
    EndpointRow,
    RequestLimits,
    build_request,
    count_containers,
    decode_mask_entry,
    parse_request,
    response_entries,
    response_row,
)
from sam_demo.engine.utils.coco import (
    InvalidRle,
    OutlineBudget,
    check_polygons,
    check_rle,
    coco_annotation,
    decode_rle,
)
from sam_demo.engine.utils.geometry import EDGE_TOLERANCE_PX, box_within
from sam_demo.engine.utils.polygons import (
    DEFAULT_TOLERANCE,
    MAX_TOLERANCE,
    joined_polygon,
    mask_polygons,
    polygons_to_mask,
)
from sam_demo.engine.utils.prompts import BOX_REACH, finite_number, finite_numbers


def endpoint_export(session: Session) -> dict:
    """{"request": ..., "response": ..., "shown": [...], "categories": [...]} for every object with a prompt.

    shown[i] names the mask on screen for request row i: its prediction and mask index in the
    response (the chosen multimask candidate), with its predicted IoU, the object's number, name,
    category and whether it is hidden; "categories" is the session's category list, in order.
    """
    results = session.finished_results()
    if not results and session.shown():
        raise ValueError(
            "Download JSON replays prompts, and loaded or automatic masks have none: click on the image "
            "to add an object, or download the masks, COCO JSON or cut-outs"
        )
    if not results:
        raise ValueError(NOTHING_YET)
    image_b64 = base64.b64encode(session.image_bytes).decode("ascii")
    rows = [dict(image=image_b64, **r.prompts.endpoint_columns()) for _, r in results]
    response = [response_row(r.masks[None], r.scores[None]) for _, r in results]
    shown = [
        {
            "row": k,
            "prediction": 0,
            "mask": r.chosen,
            "iou_score": r.score,
            "object": i + 1,
            "name": r.prompts.name,
            "category": r.prompts.category,
            "hidden": r.prompts.hidden,
        }
        for k, (i, r) in enumerate(results)
    ]
    return {
        "request": build_request(rows),
        "response": response,
        "shown": shown,
        "categories": list(session.categories),
    }


NOTHING_YET = "nothing to export yet: click on the image to segment an object"
MAX_CUTOUT_PIXELS = 400_000_000  # all cut-outs of one download together (their crops' areas)


def _shown_masks(session: Session) -> list[tuple[np.ndarray, float, dict | None]]:
    """(mask, predicted IoU, prompts or None) for every shown object, in display order."""
    out = []
    for layer in session.shown():
        prompts = None
        if layer.prompts is not None and layer.prompts.has_prompts:
            cols = layer.prompts.endpoint_columns()
            prompts = {k: cols[k] for k in ("input_points", "input_labels", "input_boxes")}
        out.append((layer.source.mask, layer.source.score, prompts))
    return out


def _names(session: Session) -> list[str]:
    """What names each shown object's files, in `_shown_masks`' order: its name, else its category, else ""."""
    return [layer.prompts.name or layer.category if layer.prompts is not None else "" for layer in session.shown()]


def _file_name(number: int, name: str) -> str:
    """object_NN.png, or object_NN_<name>.png with the name's letters, digits, '.', '_' and '-' only
    (never a path: no separators, no leading dots)."""
    slug = re.sub(r"[^\w.-]+", "-", name).strip("-.")[:40]
    return f"object_{number:02d}{'_' + slug if slug else ''}.png"


@dataclass(frozen=True)
class ExportOptions:
    """How a download is made: the pixels a photo is read at (the engine's bound) and, for polygon
    outlines (COCO polygons, YOLO), how far in pixels a simplified outline may stray from the mask."""

    max_pixels: int = 0
    tolerance: float = DEFAULT_TOLERANCE


def parse_tolerance(text: str | None) -> float:
    """A polygon tolerance given as text (a query's `tolerance`): DEFAULT_TOLERANCE when not given;
    ValueError saying what to give for one that is not a number of pixels from 0 to MAX_TOLERANCE."""
    if text is None or text == "":
        return DEFAULT_TOLERANCE
    value = float(text) if _DECIMAL.fullmatch(text) else math.nan
    if not 0 <= value <= MAX_TOLERANCE:
        raise ValueError(f"the polygon tolerance is a number of pixels from 0 to {MAX_TOLERANCE:g}, not {text[:20]!r}")
    return value


# Numbers as files and links write them: ASCII digits, a point, an exponent (Python's int() and
# float() would also take "1_0", " 1" and other scripts' digits).
# A YOLO class has at most 9 digits (Python's int() refuses 4,300 and more, in its own words).
_INTEGER = re.compile(r"[+-]?[0-9]{1,9}")
_DECIMAL = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")


class _Sink:
    """A stream that keeps what is written until drained. zipfile cannot seek in it, so it writes
    each entry's sizes after its data (a data descriptor): a zip goes out entry by entry."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def drain(self) -> bytes:
        out = b"".join(self._parts)
        self._parts.clear()
        return out


def zip_chunks(entries: Iterable[tuple[str, bytes]], compression: int = zipfile.ZIP_STORED) -> Iterator[bytes]:
    """A zip of (member name, bytes) entries, made as it is read: one chunk per entry, then the
    central directory. Only one entry's bytes are held at a time."""
    sink = _Sink()
    with zipfile.ZipFile(sink, "w", compression) as archive:
        for name, data in entries:
            archive.writestr(name, data)
            yield sink.drain()
    yield sink.drain()


def _zip(entries: Iterable[tuple[str, bytes]], compression: int = zipfile.ZIP_STORED) -> bytes:
    return b"".join(zip_chunks(entries, compression))


def mask_entries(session: Session) -> Iterator[tuple[str, bytes]]:
    """object_NN.png for each shown object: 8-bit grayscale, the image's size, 0 background / 255 object."""
    for i, ((mask, _, _), name) in enumerate(zip(_shown_masks(session), _names(session))):
        ok, png = cv2.imencode(".png", mask.astype(np.uint8) * 255)
        yield _file_name(i + 1, name), png.tobytes()


def masks_zip(session: Session) -> bytes:
    """A zip of `mask_entries` (PNGs are compressed already: stored as they are)."""
    _require_objects(session)
    return _zip(mask_entries(session))


def label_image_png(session: Session) -> bytes:
    """One indexed label image of the image's size: 0 background, k where object k is (numbered as
    masks.zip's object_NN.png), a later object over an earlier one where they overlap (as drawn on
    screen). 8-bit grayscale for up to 255 objects, else 16-bit."""
    _require_objects(session)
    shown = _shown_masks(session)
    labels = np.zeros(session.size_hw, np.uint8 if len(shown) <= 255 else np.uint16)
    for k, (mask, _, _) in enumerate(shown, start=1):
        labels[mask] = k
    ok, png = cv2.imencode(".png", labels)
    return png.tobytes()


def classes(session: Session) -> list[str]:
    """The dataset's classes, in order (COCO's category ids from 1, YOLO's from 0): the category
    list, then any other label an exported object has (`Session.export_labels`: read without
    decoding, so a set's classes are known before its images' masks are made again)."""
    return list(dict.fromkeys([*session.categories, *session.export_labels()]))


def coco_export(session: Session, polygons: bool = False, tolerance: float = DEFAULT_TOLERANCE) -> dict:
    """COCO instances dict: one image, the classes as categories, one annotation per object with its
    segmentation as RLE (exact) or polygons (within `tolerance` px), bbox (XYWH), area, and as extra
    fields its predicted IoU, the prompts that produced it and its name (if it has one)."""
    _require_objects(session)
    h, w = session.size_hw
    names = classes(session)
    annotations = []
    for i, ((mask, score, prompts), layer) in enumerate(zip(_shown_masks(session), session.shown())):
        given = {"name": layer.prompts.name} if layer.prompts is not None and layer.prompts.name else {}
        category = names.index(layer.label) + 1
        annotation = coco_annotation(
            mask, i + 1, 1, category, polygons, tolerance, predicted_iou=score, prompts=prompts, **given
        )
        if annotation["segmentation"]:  # an empty mask has no polygon: no annotation COCO readers take
            annotations.append(annotation)
    return {
        "images": [{"id": 1, "file_name": session.name, "width": w, "height": h}],
        "annotations": annotations,
        "categories": [{"id": k + 1, "name": name} for k, name in enumerate(names)],
    }


def yolo_export(session: Session, options: ExportOptions) -> bytes:
    """A YOLO segmentation dataset as a zip: data.yaml (the classes), images/<file> (the uploaded
    file) and labels/<stem>.txt, a line per object: its class and one polygon, x and y over the
    image's width and height. An object of several parts or with holes is one polygon whose parts
    and holes are joined by cuts of zero width (`utils/polygons.py`)."""
    _require_objects(session)
    names = classes(session)
    (file,) = file_names([session.name])
    entries = [yolo_yaml(names), *yolo_entries(file, session.image_bytes, session, names, options.tolerance)]
    return _zip(entries, zipfile.ZIP_DEFLATED)


def yolo_yaml(names: list[str]) -> tuple[str, bytes]:
    """data.yaml of a YOLO dataset with these class names (images and labels beside it)."""
    yaml = "path: .\ntrain: images\nval: images\nnames:\n" + "".join(
        f"  {k}: {json.dumps(name, ensure_ascii=False)}\n" for k, name in enumerate(names)
    )
    return "data.yaml", yaml.encode()


def yolo_entries(
    file: str, data: bytes, session: Session | None, names: list[str], tolerance: float = DEFAULT_TOLERANCE
) -> list[tuple[str, bytes]]:
    """An image's two members of a YOLO zip: images/<file> and labels/<stem>.txt (empty for an
    image without objects: `session` None or showing none)."""
    lines = []
    if session is not None:
        h, w = session.size_hw
        for (mask, _, _), layer in zip(_shown_masks(session), session.shown()):
            polygon = joined_polygon(mask_polygons(mask, tolerance))
            if len(polygon):
                xy = " ".join(f"{x / w:.6f} {y / h:.6f}" for x, y in polygon)
                lines.append(f"{names.index(layer.label)} {xy}")
    text = "\n".join(lines) + "\n" if lines else ""
    return [(f"images/{file}", data), (f"labels/{Path(file).stem}.txt", text.encode())]


def file_names(names: list[str]) -> list[str]:
    """The images' file names in a download: made safe (`_safe_file_name`) and unique by stem, any
    case (images/a.png and a.jpg would share labels/a.txt): a second "a" becomes "a_2". One naming
    for every download of a set, so its YOLO, masks and cut-outs name an image alike."""
    used: set[str] = set()
    out = []
    for name in names:
        name = _safe_file_name(name)
        stem, suffix, k = Path(name).stem, Path(name).suffix, 1
        while Path(name).stem.lower() in used:
            k += 1
            name = f"{stem}_{k}{suffix}"
        used.add(Path(name).stem.lower())
        out.append(name)
    return out


def _safe_file_name(name: str) -> str:
    """A file name of letters, digits, '.', '_' and '-' only, never a path or hidden ("image.png" if
    none is left); a long one is shortened in its stem, keeping its suffix."""
    cleaned = re.sub(r"[^\w.-]+", "_", Path(name).name).strip("._")
    stem, suffix = Path(cleaned).stem, Path(cleaned).suffix[:10]
    return (stem[:100] + suffix) if stem else "image.png"


def cutout_alpha(mask: np.ndarray, logits: np.ndarray | None = None, rows_per_strip: int = 256) -> np.ndarray:
    """(H, W) uint8 alpha for an (H, W) bool mask: 255 inside, 0 outside, and with its (H, W) float
    logits a one-pixel antialiased edge (the logit over its gradient: about the distance to the
    logit's zero in pixels). Always >= 128 exactly where `mask` is set, so the alpha thresholds to
    the mask. Worked in strips of rows (each with a row of its neighbours, so the gradient is the
    whole image's), so a large photo's float temporaries stay small."""
    alpha = mask.astype(np.uint8) * 255
    h, w = mask.shape
    if logits is None or h < 2 or w < 2:
        return alpha
    for y0 in range(0, h, rows_per_strip):
        y1 = min(h, y0 + rows_per_strip)
        a, b = max(0, y0 - 1), min(h, y1 + 1)
        gy, gx = np.gradient(logits[a:b])
        inner = slice(y0 - a, y0 - a + (y1 - y0))
        strip = logits[y0:y1] / np.maximum(np.hypot(gx[inner], gy[inner]), 1e-6)
        soft = np.rint(np.clip(0.5 + strip, 0.0, 1.0) * 255)
        alpha[y0:y1] = np.where(mask[y0:y1], np.maximum(soft, 128), np.minimum(soft, 127))
    return alpha


def _cutout_alphas(session: Session) -> Iterator[np.ndarray]:
    """Every shown object's alpha (as `_shown_masks` orders them), one at a time: a large photo's
    full-size alphas and logits are never all held at once. A fixed mask has no logits: no soft edge."""
    for layer in session.shown():
        if isinstance(layer.source, FixedMask):
            yield cutout_alpha(layer.source.mask)
        else:
            logits = layer.source.logits
            yield cutout_alpha(logits > 0, logits)


def _require_objects(session: Session) -> None:
    """ValueError (what to do) when the session shows no mask to export."""
    if not session.shown():
        raise ValueError(NOTHING_YET)


def _crop(alpha: np.ndarray) -> tuple[slice, slice]:
    """The rows and columns where `alpha` is not 0 (a non-empty alpha)."""
    rows, cols = np.flatnonzero(alpha.any(1)), np.flatnonzero(alpha.any(0))
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def _rgba_png(rgb: np.ndarray, alpha: np.ndarray, crop: tuple[slice, slice]) -> bytes:
    """An RGBA PNG of `rgb` (H, W, 3) with `alpha` (H, W), cropped to `crop`."""
    rgba = np.dstack([rgb[crop], alpha[crop]])
    ok, png = cv2.imencode(".png", cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
    return png.tobytes()


def label_folders(labels: list[str]) -> dict[str, str]:
    """Each label's folder in a cut-outs zip (a label: an object's category, else name, else
    "object"): a safe folder name (letters, digits, '.', '_', '-'; never a path or hidden); two
    labels that clean to the same folder get "_2", "_3", ... in the order they are listed."""
    folders: dict[str, str] = {}
    for label in labels:
        base = re.sub(r"[^\w.-]+", "_", label).strip("._")[:60] or "object"
        folder, n = base, 1
        while folder in folders.values():
            n += 1
            folder = f"{base}_{n}"
        folders[label] = folder
    return folders


def cutouts_zip(session: Session, options: ExportOptions) -> bytes:
    """A zip of <label>/object_NN.png: each object's RGBA cut-out, cropped to its box, in a folder
    per category (see `label_folders`; numbered as masks.zip)."""
    _require_objects(session)
    return _zip(cutout_entries(session, options.max_pixels, label_folders(classes(session))))


def cutout_entries(
    session: Session, max_pixels: int, folders: dict[str, str], prefix: str = ""
) -> list[tuple[str, bytes]]:
    """An image's cut-outs, <label folder>/<prefix>object_NN.png, each object's RGBA crop (an empty
    mask has none). ValueError past MAX_CUTOUT_PIXELS of crops in all, before any is made."""
    rgb = session.pixels(max_pixels)
    out, total = [], 0
    for i, (alpha, name, layer) in enumerate(zip(_cutout_alphas(session), _names(session), session.shown())):
        if not alpha.any():
            continue
        rows, cols = crop = _crop(alpha)
        total += (rows.stop - rows.start) * (cols.stop - cols.start)
        if total > MAX_CUTOUT_PIXELS:
            raise ValueError(
                f"its cut-outs would hold over {MAX_CUTOUT_PIXELS // 1_000_000} megapixels; download the "
                "cut-out of all objects (one PNG) or the masks instead"
            )
        out.append((f"{folders[layer.label]}/{prefix}{_file_name(i + 1, name)}", _rgba_png(rgb, alpha, crop)))
    return out


def cutout_union_png(session: Session, options: ExportOptions) -> bytes:
    """One RGBA cut-out of every object together (alpha: the largest of theirs), cropped to them."""
    _require_objects(session)
    union = None
    for alpha in _cutout_alphas(session):
        union = alpha if union is None else np.maximum(union, alpha, out=union)
    if not union.any():
        raise ValueError("every object's mask is empty: there is nothing to cut out; refine the objects first")
    return _rgba_png(session.pixels(options.max_pixels), union, _crop(union))


MIN_BOX_PX = 1.0  # a box from a file narrower or lower than this in the image is no box to segment
MAX_SAVED_OBJECTS = 500  # objects one saved file may add (each with prompts is decoded again to check it)
# Lists and objects one saved file may hold, parsed (~60 bytes each): a COCO detection file of 64 MB
# holds ~1.6 M (two an annotation); 64 MB of "[]," would be 21 M of them, 1.2 GB.
MAX_SAVED_CONTAINERS = 4_000_000
MAX_SAVED_PIXELS = 2_000_000_000  # mask pixels one load may decode (objects x image pixels), one mask at a time
# What a saved Download JSON's request may hold: an object a row, one prompt group each.
SAVED_LIMITS = RequestLimits(max_rows=MAX_SAVED_OBJECTS, max_groups=1, max_points=MAX_POINTS_PER_OBJECT)


@dataclass(frozen=True)
class SavedFile:
    """A saved JSON's objects, and whether it was saved for other pixels than the image's (then
    its objects come without prompts: they would not remake its masks here)."""

    objects: list[SavedObject]
    other_image: bool = False
    categories: tuple[str, ...] = ()  # the file's category list, in its order (COCO's, or Download JSON's)


def parse_saved_json(data: bytes) -> object:
    """A saved file's JSON, its lists and objects counted before it is parsed (`MAX_SAVED_CONTAINERS`).
    Raises ValueError saying what is wrong with it."""
    containers = count_containers(data, MAX_SAVED_CONTAINERS)
    if containers > MAX_SAVED_CONTAINERS:
        raise ValueError(
            f"the file holds {containers:,} JSON lists and objects, more than the {MAX_SAVED_CONTAINERS:,} that "
            "load at once; a file that Download JSON or a COCO export wrote holds far fewer"
        )
    try:
        return json.loads(data)
    except UnicodeDecodeError:
        raise ValueError("the file is not JSON: it is not even UTF-8 text") from None
    except RecursionError:
        raise ValueError("the file is not a saved JSON: it is nested far too deeply") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"the file is not JSON: {exc}") from None


def saved_objects(
    data: bytes, image_hw: tuple[int, int], image_bytes: bytes | None = None, image_name: str = ""
) -> SavedFile:
    """The objects of a saved JSON: our Download JSON, a COCO instances file, or a bare endpoint
    response in either spelling.

    From our export, the masks on screen (`shown`) with their names, visibility and the prompts that
    made them (its request's rows), unless its image is not `image_bytes`; from a COCO file, the
    annotations of its image called `image_name` (or of its only image) with their categories, names
    and prompts (COCO exports' extra fields); from a bare response, the best-scoring mask of each
    prediction, unnamed and without prompts. Masks are decoded one at a time into RLE, after the
    count and size checks. Raises ValueError, saying what to load instead, for a file that is none of
    these, too large, or of masks of another size than the image's.
    """
    body = parse_saved_json(data)
    if isinstance(body, dict) and {"images", "annotations", "categories"} <= body.keys():
        return coco_objects(body, image_hw, image_name)
    ours = isinstance(body, dict) and "response" in body and "request" in body
    try:
        rows = response_entries(body["response"] if ours else body)
    except ValueError as exc:
        raise ValueError(
            f"it is not a file that Download JSON wrote, nor an endpoint response ({exc}); load one of those"
        ) from None
    shown = body.get("shown") if ours else None
    requests, other_image = None, False
    if shown:
        picked = _shown_entries(rows, shown)
        try:
            requests = parse_request(body["request"], SAVED_LIMITS)
        except ValueError as exc:
            raise ValueError(
                f"its request is not one that Download JSON writes ({exc}); load the file as it was saved"
            ) from None
        if len(requests) != len(rows):
            raise ValueError(
                f"its request and its response have {len(requests)} and {len(rows)} rows; Download JSON writes "
                "a request row for each response row: load the file as it was saved"
            )
        if image_bytes is not None and requests:
            other_image = requests[0].is_url or _b64(requests[0].image) != image_bytes
    else:
        picked = [(max(p, key=lambda m: m["iou_score"]), {}) for row in rows for p in row if p]
    _check_count(len(picked), image_hw)
    objects = []
    for entry, show in picked:
        decoded = decode_mask_entry(entry, image_hw)
        prompts = None if requests is None or other_image else _prompts(requests[show["row"]], show)
        name, category = (_text_field(show, key) for key in ("name", "category"))
        fixed = FixedMask.of(decoded.mask, decoded.iou_score, "Loaded mask")
        objects.append(SavedObject(fixed, name, prompts, show.get("hidden") is True, category))
    listed = body.get("categories") if ours else None
    listed = [c[:MAX_NAME_CHARS] for c in listed if isinstance(c, str)] if isinstance(listed, list) else []
    return SavedFile(objects, other_image, tuple(listed))


def _text_field(entry: dict, key: str) -> str:
    """A text field of a saved entry ("" if missing or not text), cut to a name's length."""
    value = entry.get(key)
    return value[:MAX_NAME_CHARS] if isinstance(value, str) else ""


def _check_count(count: int, image_hw: tuple[int, int]) -> None:
    """ValueError past the objects or mask pixels one load may take."""
    h, w = image_hw
    if count > MAX_SAVED_OBJECTS:
        raise ValueError(f"it holds {count:,} objects; at most {MAX_SAVED_OBJECTS} load at once")
    if count * h * w > MAX_SAVED_PIXELS:
        most = MAX_SAVED_PIXELS // (h * w)
        raise ValueError(f"it holds {count} masks of this {w}x{h} image; at most {most} of this size load at once")


def coco_objects(body: dict, image_hw: tuple[int, int], image_name: str) -> SavedFile:
    """A COCO instances file's objects for one image: the image called `image_name` (or its only
    image), checked against `image_hw` (see `saved_objects`). Raises ValueError saying why not."""
    images, annotations, categories = body["images"], body["annotations"], body["categories"]
    if not all(isinstance(v, list) for v in (images, annotations, categories)):
        raise ValueError('a COCO file\'s "images", "annotations" and "categories" are lists')
    try:
        names = {int(c["id"]): str(c["name"]) for c in categories}
        image = next((i for i in images if i.get("file_name") == image_name), images[0] if len(images) == 1 else None)
    except (KeyError, TypeError, ValueError, AttributeError):
        raise ValueError(
            'a COCO file\'s categories are {"id", "name"} and its images {"id", "file_name", ...}'
        ) from None
    if image is None:
        listed = ", ".join(str(i.get("file_name"))[:60] for i in images[:5] if isinstance(i, dict))
        raise ValueError(
            f"it annotates {len(images)} images ({listed}{', ...' if len(images) > 5 else ''}), "
            f"none of them {image_name[:60]!r}; upload the image it names"
        )
    h, w = image_hw
    if (image.get("height"), image.get("width")) != (h, w):
        raise ValueError(
            f"it annotates a {image.get('width')}x{image.get('height')} image, but this one is {w}x{h}; "
            "upload the image it was made for"
        )
    mine = [a for a in annotations if isinstance(a, dict) and a.get("image_id") == image.get("id")]
    _check_count(len(mine), image_hw)
    objects, outline = [], OutlineBudget()
    for k, annotation in enumerate(mine):
        if not finite_number(annotation.get("category_id")) or annotation["category_id"] not in names:
            raise ValueError(
                f"annotation {k + 1} names category {annotation.get('category_id')!r:.20}, which the file does not list"
            )
        name = str(annotation.get("name") or "")[:MAX_NAME_CHARS]
        category = names[annotation["category_id"]][:MAX_NAME_CHARS]
        if not annotation.get("segmentation"):  # a detection: its box, segmented here
            box = _coco_box(annotation.get("bbox"), image_hw, k)
            objects.append(SavedObject(None, name, ObjectPrompts(box_xyxy=box), category=category))
            continue
        mask = _coco_mask(annotation.get("segmentation"), image_hw, k, outline)
        score = annotation.get("predicted_iou")
        score = float(score) if finite_number(score) else 1.0
        prompts = _coco_prompts(annotation.get("prompts"))
        objects.append(SavedObject(FixedMask.of(mask, score, "Loaded mask"), name, prompts, category=category))
    return SavedFile(objects, categories=tuple(n[:MAX_NAME_CHARS] for n in names.values()))


def _coco_box(bbox, image_hw: tuple[int, int], k: int) -> tuple[float, float, float, float]:
    """A COCO detection's bbox (XYWH) as an XYXY box within the image; ValueError naming annotation k
    for one that is not 4 numbers of positive size inside the image (a pixel of rounding is clipped)."""
    if not finite_numbers(bbox, 4) or bbox[2] <= 0 or bbox[3] <= 0:
        raise ValueError(f"annotation {k + 1} has no segmentation and its bbox {str(bbox)[:60]} is not [x, y, w, h]")
    return _box_in_image(
        (bbox[0], bbox[1], bbox[0] + bbox[2], bbox[1] + bbox[3]), image_hw, f"annotation {k + 1}'s box"
    )


def _box_in_image(box_xyxy, image_hw: tuple[int, int], what: str) -> tuple[float, float, float, float]:
    """The box clipped to the image (`geometry.box_within`); ValueError naming `what` if it is off it."""
    clipped = box_within(box_xyxy, image_hw)
    x0, y0, x1, y1 = (float(v) for v in box_xyxy)
    if clipped is None:
        raise ValueError(f"{what} [{x0:g}, {y0:g}, {x1:g}, {y1:g}] is outside this {image_hw[1]}x{image_hw[0]} image")
    if clipped[2] - clipped[0] < MIN_BOX_PX or clipped[3] - clipped[1] < MIN_BOX_PX:
        raise ValueError(
            f"{what} [{x0:g}, {y0:g}, {x1:g}, {y1:g}] is under {MIN_BOX_PX:g} px wide or high in the image"
        )
    return clipped


def yolo_objects(text: str, image_hw: tuple[int, int], categories: tuple[str, ...]) -> SavedFile:
    """A YOLO label file's objects for this image: `class cx cy w h` lines (a detection box, an
    optional confidence after it) segmented here from the box, and `class x1 y1 x2 y2 ...` lines
    (segmentation polygons) as fixed masks; coordinates over the image's width and height. Class k
    is the k-th of `categories`, or "class k" past them. ValueError naming the line for one that is
    neither, off the image, or of a negative class; nothing is added then."""
    h, w = image_hw
    objects, names, outline = [], list(categories), OutlineBudget()
    lines = [(number, line.split()) for number, line in enumerate(text.splitlines(), start=1) if line.strip()]
    _check_count(len(lines), image_hw)
    for number, values in lines:
        where = f"line {number}"
        if not _INTEGER.fullmatch(values[0]) or not all(map(_DECIMAL.fullmatch, values[1:])):
            raise ValueError(f"{where} is not 'class cx cy w h' or 'class x1 y1 x2 y2 ...' numbers")
        cls, numbers = int(values[0]), [float(v) for v in values[1:]]
        if cls < 0 or not all(map(math.isfinite, numbers)):
            raise ValueError(f"{where}: class {cls} or its numbers are not usable")
        category = names[cls] if cls < len(names) else f"class {cls}"
        if len(numbers) in (4, 5):  # a detection box, maybe with its confidence
            cx, cy, bw, bh = numbers[:4]
            if bw <= 0 or bh <= 0:
                raise ValueError(f"{where}: the box has no size")
            if max(abs(cx), abs(cy), bw, bh) > BOX_REACH:
                raise ValueError(
                    f"{where}: the box's centre and size are not fractions of the image (YOLO's are 0 to 1)"
                )
            box = ((cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h)
            prompts = ObjectPrompts(box_xyxy=_box_in_image(box, image_hw, f"{where}'s box"))
            objects.append(SavedObject(None, "", prompts, category=category))
        elif len(numbers) >= 6 and len(numbers) % 2 == 0:  # a segmentation polygon
            xy = np.asarray(numbers).reshape(-1, 2) * [w, h]
            if (xy < -EDGE_TOLERANCE_PX).any() or (xy > [w + EDGE_TOLERANCE_PX, h + EDGE_TOLERANCE_PX]).any():
                raise ValueError(f"{where}: the polygon leaves the image (YOLO coordinates are in [0, 1])")
            xy = np.clip(xy, 0, [w, h])  # a tool's pixel of rounding forgiven
            try:
                check_polygons([xy.ravel()], image_hw, outline)
            except InvalidRle as exc:
                raise ValueError(f"{where}: {exc}") from None
            mask = polygons_to_mask([xy], image_hw)
            if not mask.any():
                raise ValueError(f"{where}: the polygon covers no pixel of the image")
            objects.append(SavedObject(FixedMask.of(mask, 1.0, "Loaded mask"), "", None, category=category))
        else:
            raise ValueError(
                f"{where} has {len(values)} numbers: a YOLO line is 'class cx cy w h' (a box) or "
                "'class x1 y1 x2 y2 x3 y3 ...' (a polygon)"
            )
    return SavedFile(objects)


def yolo_dataset_objects(
    text: str, image_hw: tuple[int, int], names: list[str] | None, listed: tuple[str, ...]
) -> SavedFile:
    """`yolo_objects` of a dataset's label file: with its class names (`names`, from its data.yaml or
    classes.txt), which then join the category list, else with the image's category list `listed`."""
    if names is None:
        return yolo_objects(text, image_hw, listed)
    categories = tuple(n[:MAX_NAME_CHARS] for n in names)
    return replace(yolo_objects(text, image_hw, categories), categories=categories)


def _coco_mask(segmentation, image_hw: tuple[int, int], k: int, outline: OutlineBudget) -> np.ndarray:
    """A COCO segmentation (polygons, or RLE compressed or not) as an (H, W) bool mask; polygons use
    up the file's `outline`."""
    h, w = image_hw
    why = ""
    try:
        if isinstance(segmentation, list):  # polygons: lists of x, y
            polygons = [[float(v) for v in p] for p in segmentation if len(p) >= 6]
            check_polygons(polygons, image_hw, outline)
            rles = mask_utils.frPyObjects(polygons, h, w)
            rle = mask_utils.merge(rles) if rles else None
        elif isinstance(segmentation, dict) and list(segmentation.get("size", [])) == [h, w]:
            counts = segmentation["counts"]
            check_rle({"size": [h, w], "counts": counts})  # the file's runs, compressed or not
            rle = (
                mask_utils.frPyObjects(segmentation, h, w)
                if isinstance(counts, list)
                else {"size": [h, w], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
            )
        else:
            rle = None
        mask = None if rle is None else decode_rle(rle)
    except (TypeError, ValueError, KeyError, AttributeError, UnicodeEncodeError, OverflowError) as error:
        mask, why = None, f": {error}" if isinstance(error, InvalidRle) else ""
    if mask is None or mask.shape != (h, w):
        raise ValueError(f"annotation {k + 1}'s segmentation is not polygons or an RLE of this {w}x{h} image{why}")
    return mask


def _coco_prompts(given) -> ObjectPrompts | None:
    """The prompts a COCO export keeps beside an annotation ({"input_points": [[[x, y], ...]],
    "input_labels": [[...]], "input_boxes": [[x0, y0, x1, y1]]}), or None."""
    if not isinstance(given, dict):
        return None
    try:
        points, labels, boxes = given.get("input_points"), given.get("input_labels"), given.get("input_boxes")
        xy = [] if not points else [(float(x), float(y)) for x, y in points[0]]
        labels = [1] * len(xy) if not labels else [int(v) for v in labels[0]]
        box = None if not boxes else tuple(float(v) for v in boxes[0])
    except (TypeError, ValueError, OverflowError, KeyError, IndexError, AttributeError):
        return None
    numbers = [v for point in xy for v in point] + list(box or ())
    if len(labels) != len(xy) or len(box or (0,) * 4) != 4 or len(xy) > MAX_POINTS_PER_OBJECT:
        return None
    if not (xy or box) or not all(map(math.isfinite, numbers)):
        return None
    return ObjectPrompts(points=tuple((x, y, int(label == 1)) for (x, y), label in zip(xy, labels)), box_xyxy=box)


def _shown_entries(rows: list, shown) -> list[tuple[dict, dict]]:
    """(mask entry, shown entry) for each entry of our export's `shown` list; ValueError unless each
    names a row, prediction and mask of the response by whole numbers from 0."""
    bad = ValueError(
        'the saved JSON\'s "shown" list names masks its request and response do not have; '
        "load the file as Download JSON wrote it"
    )
    if not isinstance(shown, list) or len(shown) > MAX_SAVED_OBJECTS:
        if isinstance(shown, list):
            raise ValueError(f"it holds {len(shown):,} objects; at most {MAX_SAVED_OBJECTS} load at once")
        raise bad
    picked = []
    for entry in shown:
        at = [entry.get(k) if isinstance(entry, dict) else None for k in ("row", "prediction", "mask")]
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in at):
            raise bad
        row, prediction, mask = at
        try:
            picked.append((rows[row][prediction][mask], entry))
        except IndexError:
            raise bad from None
    return picked


def _b64(text: str) -> bytes | None:
    """A request row's base64 image as bytes (None if it is not base64)."""
    try:
        return base64.b64decode(text, validate=False)
    except (ValueError, binascii.Error):
        return None


def _prompts(row: EndpointRow, entry: dict) -> ObjectPrompts | None:
    """The prompts of `entry`'s prediction in a request row, with the chosen candidate; None when
    the row holds more than one prompt group per prediction (not a row that Download JSON wrote)."""
    if row.groups != 1:
        return None
    points = ()
    if row.points_xy is not None:
        labels = row.labels[0] if row.labels is not None else np.ones(len(row.points_xy[0]), np.int64)
        points = tuple((float(x), float(y), int(label)) for (x, y), label in zip(row.points_xy[0], labels))
    box = None if row.boxes_xyxy is None else tuple(float(v) for v in row.boxes_xyxy[0])
    prompts = ObjectPrompts(points=points, box_xyxy=box)
    if prompts.multimask != row.multimask_output:
        return None
    return replace(prompts, candidate=int(entry["mask"]) if prompts.multimask else None)
