"""Precompute: encode a folder of images, or a batch CSV's images, into the embedding store.

    python -m sam_demo.precompute IMAGES_DIR_OR_CSV --embedding-store DIR [--model --device --dtype] [--engine ray]

Each image is encoded once into the store (see engine/embedding_store.py); every server, batch job
or Serve replica given the same store, model and plan then answers its first click at click speed.
Resumable: an image whose entry is already stored (and valid) is skipped, so a run stopped by Ctrl-C
goes on where it stopped. A bad image is reported and the run goes on.

A folder is searched recursively for image files (by suffix; symlinked folders are not entered).
A CSV is a batch job's: its `image` column's base64 or URL images (see job.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from sam_demo.batch.job import read_rows
from sam_demo.endpoint.fetch import FetchPolicy
from sam_demo.endpoint.wire import EndpointRow, RequestError
from sam_demo.engine.utils.files import IMAGE_SUFFIXES, image_files

if TYPE_CHECKING:
    from sam_demo.engine.sam_engine import SamEngine

__all__ = [
    "precompute_image",
    "precompute_items",
    "printable",
    "read_image_file",
    "run_local",
    "run_precompute",
]

MAX_FILE_BYTES = 256 << 20  # an image file larger than this is refused before it is read


def precompute_items(source: Path) -> list[dict]:
    """The images under `source`, as JSON-able items {"name", "path"} (an image file),
    {"name", "cell"} (a CSV's image cell) or {"name", "problem"} (a CSV row that cannot be read).
    Raises ValueError when `source` is neither a folder nor a .csv file, or holds no image."""
    if source.is_dir():
        items = [{"name": str(path.relative_to(source)), "path": str(path)} for path in image_files(source)]
        if not items:
            raise ValueError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) under {source}")
        return items
    if source.is_file() and source.suffix.lower() == ".csv":
        items = []
        for row in read_rows(source):
            name = f"{row.file} row {row.row}"
            if row.values is None:
                items.append({"name": name, "problem": row.problem})
            else:
                items.append({"name": name, "cell": row.values["image"].strip()})
        if not items:
            raise ValueError(f"{source} has no data rows")
        return items
    if not source.exists():
        raise ValueError(f"{source} does not exist")
    raise ValueError(f"{source} is neither a folder of images nor a batch .csv file")


def precompute_image(item: dict, engine: SamEngine, policy: FetchPolicy) -> dict:
    """Encode one item's image into the store: {"name", "status"}, status "encoded" or "stored"
    (its entry was there already), or {"name", "status": "error", "error"}. Never raises for a bad image."""
    from sam_demo.endpoint.scoring import load_row_image
    from sam_demo.engine.utils.images import decode_image_bytes, to_rgb_array

    out = {"name": item["name"]}
    try:
        if "problem" in item:
            raise ValueError(item["problem"])
        if "path" in item:
            data = read_image_file(item["path"])
            rgb = to_rgb_array(decode_image_bytes(data, engine.max_pixels), engine.max_pixels)
        else:
            rgb = load_row_image(EndpointRow(item["cell"], None, None, None, False), 0, engine, policy)
        embedding, computed = engine.embed_with_status(rgb)
        if not engine.store.contains(embedding.key):
            why = engine.store.stats().disabled_reason or "its entry does not fit --embedding-store-gb, or was evicted"
            raise RuntimeError(f"encoded, but not stored: {why}")
        out["status"] = "encoded" if computed and not embedding.from_store else "stored"
    except RequestError as exc:
        out |= {"status": "error", "error": exc.message}
    except (OSError, ValueError, RuntimeError) as exc:
        out |= {"status": "error", "error": str(exc) or type(exc).__name__}
    return out


def read_image_file(path: str) -> bytes:
    """An image file's bytes, at most MAX_FILE_BYTES; ValueError for anything but a regular file
    (a FIFO, a device: never read) or a larger one."""
    from sam_demo.engine.utils.files import read_regular

    return read_regular(path, MAX_FILE_BYTES)


def printable(name: str) -> str:
    """A name as it may be printed on one line: control characters escaped."""
    return name if name.isprintable() else name.encode("unicode_escape").decode("ascii")


def run_local(items: list[dict], engine: SamEngine, policy: FetchPolicy) -> Iterator[dict]:
    """Precompute in this process; stops (ValueError) once the store has turned off (a full disk,
    say), as nothing more could be stored."""
    for item in items:
        yield precompute_image(item, engine, policy)
        if not engine.store.enabled:
            raise ValueError(f"the embedding store turned off: {engine.store.stats().disabled_reason}")


def run_precompute(items: list[dict], results_for, progress: bool = True) -> dict:
    """Run `results_for(items)` (one result per item, in order) with a progress bar; each error is
    printed as it comes. Returns the counts: images, encoded, stored (skipped), errors."""
    import sys

    from tqdm import tqdm

    counts = {"images": len(items), "encoded": 0, "stored": 0, "error": 0}
    with tqdm(total=len(items), unit="image", disable=not progress, desc="encoding into the store") as bar:
        for result in results_for(items):
            counts[result["status"]] += 1
            if result["status"] == "error":
                tqdm.write(f"{printable(result['name'])}: {printable(result['error'])}", file=sys.stderr)
            bar.update(1)
            bar.set_postfix(encoded=counts["encoded"], skipped=counts["stored"], errors=counts["error"], refresh=False)
    return counts
