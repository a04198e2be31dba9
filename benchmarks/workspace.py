"""The dataset workspace: moving to the next image (D) with and without the background encode, and
the whole set's COCO export, polygons against RLE.

- D -> the next image clickable: the handler that D runs (`on_step`), from the key's event to the
  view the page paints (the image and its layers built), in this process. With the background: the
  set's other images were encoded ahead (the default); without: the same engine with no background
  encoder, so D encodes. Each round is a fresh set of 3 photos (pixels changed a little, so no
  cache hit), interleaved.
- export: 100 images of 1200x800 with 10 objects each (ellipses and rings of random sizes, the shape
  of real objects' masks, not a random model's noise): COCO instances JSON with RLE and with
  polygons, time to build and bytes.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from benchmarks.report import Row
from sam_demo.demo.handlers import DemoContext
from sam_demo.demo.workspace import BackgroundEncoder
from sam_demo.demo.workspace_handlers import on_add_images, on_step
from sam_demo.engine.utils.coco import coco_annotation
from tests.support.photos import photo


def workspace_rows(engine, rounds: int) -> list[Row]:
    return [bench_next_image(engine, rounds), *bench_set_export()]


def bench_next_image(engine, rounds: int) -> Row:
    ahead, waiting = [], []
    with tempfile.TemporaryDirectory() as folder:
        for i in range(rounds):
            for background, times in ((True, ahead), (False, waiting)):
                paths = []
                for k, name in enumerate(("rocket.jpg", "chelsea.png", "coffee.png")):
                    rgb = photo(1200, 800, name).copy()
                    rgb[0, 0] = (i, int(background), k)  # a new image each time: no cache hit
                    path = Path(folder) / f"{i}-{int(background)}-{k}.png"
                    Image.fromarray(rgb).save(path)
                    paths.append(str(path))
                ctx = DemoContext(engine, background=BackgroundEncoder(engine, pause_s=0.01) if background else None)
                session = on_add_images(ctx, paths, None)[0]
                if background:
                    while not ctx.background.idle():
                        time.sleep(0.05)
                start = time.perf_counter()
                on_step(ctx, 1, session)
                times.append((time.perf_counter() - start) * 1000)
    return Row("D -> next image clickable, 1200x800 (background encode vs none)", "ms", ahead, waiting)


def _object_masks(rng: np.random.Generator, hw=(800, 1200), count: int = 10) -> list[np.ndarray]:
    masks = []
    for _ in range(count):
        mask = np.zeros(hw, np.uint8)
        center = (int(rng.integers(100, hw[1] - 100)), int(rng.integers(100, hw[0] - 100)))
        axes = (int(rng.integers(20, 250)), int(rng.integers(20, 250)))
        cv2.ellipse(mask, center, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        if rng.random() < 0.3:  # a hole
            cv2.ellipse(mask, center, (axes[0] // 3, axes[1] // 3), 0, 0, 360, 0, -1)
        masks.append(mask.astype(bool))
    return masks


def bench_set_export(images: int = 100) -> list[Row]:
    rng = np.random.default_rng(0)
    sets = [_object_masks(rng) for _ in range(images)]
    rows = []
    for polygons in (False, True):
        start = time.perf_counter()
        annotations = [
            coco_annotation(mask, len(sets) * i + k, i + 1, 1, polygons)
            for i, masks in enumerate(sets)
            for k, mask in enumerate(masks)
        ]
        text = json.dumps({"images": [], "annotations": annotations, "categories": []})
        seconds = time.perf_counter() - start
        kind = "polygons" if polygons else "RLE"
        rows.append(
            Row(
                f"COCO export, {images} images x 10 objects, {kind}",
                "s",
                [seconds],
                None,
                note=f"{len(text) / 1e6:.2f} MB",
            )
        )
    return rows
