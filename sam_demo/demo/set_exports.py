"""Downloads of a whole set of images, streamed: each is made as it is sent, one image at a time.

An image's masks are made again (`remake`: its session forked and decoded, the embedding found in
the cache or the store) only when its turn comes, and let go after it, so a set of a hundred
labelled photos never holds more than one photo's masks. The set's classes are read first, from its
sessions without decoding (`Session.export_labels`), so COCO's categories and YOLO's data.yaml come
before any image.

An image that cannot be exported (its masks cannot be made again, its cut-outs are too large, or it
has only loaded masks for the endpoint JSON) is left out and named: in a zip, in problems.txt, its
last member; in COCO, in a "problems" list after the annotations. The rest of the set is exported.

    coco.json, coco-polygons.json   COCO instances of every image (unlabelled ones too)
    yolo-seg.zip                    data.yaml, images/<file>, labels/<stem>.txt
    masks.zip                       masks/<stem>/object_NN.png and label_images/<stem>.png
    cutouts.zip                     <category>/<stem>_object_NN.png
    sam-endpoint.zip                <stem>.json: the endpoint request and response of each image
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from sam_demo.demo.exports import (
    ExportOptions,
    classes,
    coco_export,
    cutout_entries,
    endpoint_export,
    file_names,
    label_folders,
    label_image_png,
    mask_entries,
    yolo_entries,
    yolo_yaml,
    zip_chunks,
)
from sam_demo.demo.session import Session

__all__ = ["SET_EXPORT_KINDS", "SetImage", "set_classes", "set_export_chunks"]

T = TypeVar("T")
Remake = Callable[[Session], Session]  # a session (maybe light) -> its full state, masks made


@dataclass(frozen=True)
class SetImage:
    """One image of a set as its downloads see it: file name, (H, W), the file, and its latest
    session (None: never opened; maybe light, its masks not made)."""

    name: str
    size_hw: tuple[int, int]
    data: bytes
    state: Session | None


def _labelled(session: Session | None) -> bool:
    """Whether an image of a set has an object to export."""
    return session is not None and bool(session.export_labels())


def set_classes(sessions: list[Session | None]) -> list[str]:
    """A set's classes: each labelled image's (`classes`), in the order they first come."""
    return list(dict.fromkeys(name for session in sessions if _labelled(session) for name in classes(session)))


def _each_labelled(
    images: list[SetImage], remake: Remake, problems: list[str], work: Callable[[int, str, Session], T]
) -> Iterator[T]:
    """work(index, download file name, full session) of each labelled image, in order; an image
    whose masks or work fail (ValueError, RuntimeError) is named in `problems` and skipped."""
    for k, (file, image) in enumerate(zip(file_names([i.name for i in images]), images)):
        if not _labelled(image.state):
            continue
        try:
            done = work(k, file, remake(image.state))
        except (ValueError, RuntimeError) as exc:
            problems.append(f"{image.name}: {exc}")
            continue
        yield done


def _problems_entry(problems: list[str]) -> list[tuple[str, bytes]]:
    text = "These images are not in this download:\n" + "".join(f"- {p}\n" for p in problems)
    return [("problems.txt", text.encode())] if problems else []


def coco_chunks(images: list[SetImage], remake: Remake, options: ExportOptions, polygons: bool) -> Iterator[bytes]:
    """COCO instances of the set: every image (ids from 1), the set's classes as categories, each
    image's objects as `coco_export` makes them, ids numbered across the set."""
    names = set_classes([i.state for i in images])
    head = {
        "images": [
            {"id": k, "file_name": i.name, "width": i.size_hw[1], "height": i.size_hw[0]}
            for k, i in enumerate(images, start=1)
        ],
        "categories": [{"id": k + 1, "name": n} for k, n in enumerate(names)],
    }
    yield json.dumps(head)[:-1].encode() + b', "annotations": ['

    def annotations(k: int, _: str, session: Session) -> list[dict]:
        one = coco_export(session, polygons, options.tolerance)
        local = {c["id"]: names.index(c["name"]) + 1 for c in one["categories"]}
        return [{**a, "image_id": k + 1, "category_id": local[a["category_id"]]} for a in one["annotations"]]

    problems: list[str] = []
    count = 0
    for found in _each_labelled(images, remake, problems, annotations):
        for annotation in found:
            count += 1
            yield (b", " if count > 1 else b"") + json.dumps({**annotation, "id": count}).encode()
    yield b"]" + (b', "problems": ' + json.dumps(problems).encode() if problems else b"") + b"}"


def _zip_of(
    images: list[SetImage],
    remake: Remake,
    work: Callable[[int, str, Session], list[tuple[str, bytes]]],
    first: list[tuple[str, bytes]] = (),
    compression: int = zipfile.ZIP_STORED,
) -> Iterator[bytes]:
    """A zip of `first`, then each labelled image's entries (`work`), then problems.txt if any."""
    problems: list[str] = []

    def entries():
        yield from first
        for found in _each_labelled(images, remake, problems, work):
            yield from found
        yield from _problems_entry(problems)

    return zip_chunks(entries(), compression)


def yolo_chunks(images: list[SetImage], remake: Remake, options: ExportOptions) -> Iterator[bytes]:
    """The YOLO segmentation zip of the set: data.yaml, every image's file and its labels (an
    image without objects gets an empty labels file)."""
    names = set_classes([i.state for i in images])
    unlabelled = [
        entry
        for file, image in zip(file_names([i.name for i in images]), images)
        if not _labelled(image.state)
        for entry in yolo_entries(file, image.data, None, names)
    ]

    def labels(k: int, file: str, session: Session) -> list[tuple[str, bytes]]:
        return yolo_entries(file, images[k].data, session, names, options.tolerance)

    return _zip_of(images, remake, labels, [yolo_yaml(names), *unlabelled], zipfile.ZIP_DEFLATED)


def masks_chunks(images: list[SetImage], remake: Remake, options: ExportOptions) -> Iterator[bytes]:
    """The set's masks: masks/<stem>/object_NN.png (as masks.zip) and label_images/<stem>.png (as the
    label image) of each image with objects."""

    def masks(k: int, file: str, session: Session) -> list[tuple[str, bytes]]:
        stem = Path(file).stem
        one = [(f"masks/{stem}/{name}", png) for name, png in mask_entries(session)]
        return [*one, (f"label_images/{stem}.png", label_image_png(session))]

    return _zip_of(images, remake, masks)


def cutouts_chunks(images: list[SetImage], remake: Remake, options: ExportOptions) -> Iterator[bytes]:
    """The set's cut-outs: <category>/<image stem>_object_NN.png, a folder per category across the set."""
    folders = label_folders(set_classes([i.state for i in images]))

    def cutouts(k: int, file: str, session: Session) -> list[tuple[str, bytes]]:
        return cutout_entries(session, options.max_pixels, folders, Path(file).stem + "_")

    return _zip_of(images, remake, cutouts)


def endpoint_chunks(images: list[SetImage], remake: Remake, options: ExportOptions) -> Iterator[bytes]:
    """<stem>.json of each labelled image: its Download JSON (`endpoint_export`: the endpoint request
    and response); an image with loaded masks only (no prompts to replay) is named in problems.txt."""

    def endpoint(k: int, file: str, session: Session) -> list[tuple[str, bytes]]:
        return [(f"{Path(file).stem}.json", json.dumps(endpoint_export(session)).encode())]

    return _zip_of(images, remake, endpoint, compression=zipfile.ZIP_DEFLATED)


# kind -> (media type, chunks(images, remake, options)): what /sam-demo/export-set/{token}/{kind} sends
SET_EXPORT_KINDS: dict[str, tuple[str, Callable[[list[SetImage], Remake, ExportOptions], Iterator[bytes]]]] = {
    "coco.json": ("application/json", lambda i, r, o: coco_chunks(i, r, o, polygons=False)),
    "coco-polygons.json": ("application/json", lambda i, r, o: coco_chunks(i, r, o, polygons=True)),
    "yolo-seg.zip": ("application/zip", yolo_chunks),
    "masks.zip": ("application/zip", masks_chunks),
    "cutouts.zip": ("application/zip", cutouts_chunks),
    "sam-endpoint.zip": ("application/zip", endpoint_chunks),
}


def set_export_chunks(kind: str, images: list[SetImage], remake: Remake, options: ExportOptions) -> Iterator[bytes]:
    """The download `kind` of the set, as chunks; ValueError naming the kinds for an unknown one."""
    if kind not in SET_EXPORT_KINDS:
        raise ValueError(f"unknown export {kind!r}; one of {', '.join(SET_EXPORT_KINDS)}")
    return SET_EXPORT_KINDS[kind][1](images, remake, options)
