"""Batch: images/s on an endpoint batch CSV of distinct images, against a plain loop over the naive recipe."""

from __future__ import annotations

import base64
import csv
import io
import json
import tempfile
import time
from pathlib import Path

from PIL import Image

from benchmarks.naive import Naive
from benchmarks.report import Row
from sam_demo.batch.job import run_job, run_local
from sam_demo.endpoint.fetch import FetchPolicy
from sam_demo.endpoint.wire import response_row
from tests.support.photos import PHOTOS


def write_csv_job(folder: Path, count: int) -> tuple[Path, list[tuple[Image.Image, list]]]:
    """A batch CSV with `count` distinct 800x600 images (crops of the example photos), one box each."""
    names = sorted(p.name for p in PHOTOS.iterdir() if p.suffix in (".png", ".jpg"))
    rows, items = [], []
    for i in range(count):
        source = Image.open(PHOTOS / names[i % len(names)]).convert("RGB").resize((1000, 750))
        crop = source.crop((i * 7 % 200, i * 5 % 150, i * 7 % 200 + 800, i * 5 % 150 + 600))
        buffer = io.BytesIO()
        crop.save(buffer, "JPEG", quality=92)
        box = [100, 80, 600, 500]
        rows.append([base64.b64encode(buffer.getvalue()).decode(), "", json.dumps([box]), "", "False"])
        items.append((buffer.getvalue(), box))
    path = folder / "job.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "input_points", "input_boxes", "input_labels", "multimask_output"])
        writer.writerows(rows)
    return path, items


def bench_batch(engine, naive: Naive, count: int) -> Row:
    with tempfile.TemporaryDirectory() as tmp:
        job, items = write_csv_job(Path(tmp), count)
        engine.cache.clear()
        start = time.perf_counter()
        run_job(job, Path(tmp) / "out.jsonl", lambda rows: run_local(rows, engine, FetchPolicy()), progress=False)
        ours = count / (time.perf_counter() - start)
        start = time.perf_counter()
        for data, box in items:
            masks, scores = naive.full(Image.open(io.BytesIO(data)).convert("RGB"), box)
            json.dumps(response_row(masks.numpy(), scores[0].float().cpu().numpy()))
        base = count / (time.perf_counter() - start)
    return Row(f"batch CSV, {count} distinct images", "images/s", [ours], [base], higher_is_better=True)
