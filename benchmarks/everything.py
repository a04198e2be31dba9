"""Segment everything from the cached embedding, against transformers' pipeline("mask-generation")."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from benchmarks.report import Row, run_python
from sam_demo.engine.automatic_mask_generator import EverythingConfig, generate
from tests.support.photos import photo

PIPELINE = """
import json, time, torch
torch.set_flush_denormal(True); torch.set_num_threads({threads})
from PIL import Image
from transformers import SamModel, pipeline
from transformers.models.sam import SamImageProcessorPil
generator = pipeline("mask-generation", model=SamModel.from_pretrained({path!r}),
                     image_processor=SamImageProcessorPil.from_pretrained({path!r}), device="cpu")
image = Image.open({image!r}).convert("RGB")
times = []
for _ in range({rounds}):
    start = time.perf_counter(); out = generator(image, points_per_batch=64, points_per_crop={side})
    times.append(time.perf_counter() - start)
print(json.dumps({{"times": times, "masks": len(out["masks"]), "torch": torch.__version__}}))
"""


def bench_everything(engine, path: str, pipeline_python: str | None, rounds: int, side: int) -> Row:
    """Segment everything (side x side grid) from the cached embedding, against transformers' pipeline.

    The pipeline needs torchvision, which does not install beside this project's torch, so it runs
    in `pipeline_python` (another interpreter, same weights, image and thread count) and times
    itself there, its own encode included.
    """
    image = photo(1800, 1200)
    engine.embed(image)
    name = f"segment everything, {side}x{side} grid"
    ours, found = [], 0
    for _ in range(rounds):
        start = time.perf_counter()
        found = len(generate(engine, image, EverythingConfig(points_per_side=side)))
        ours.append((time.perf_counter() - start) * 1000)
    if not pipeline_python:
        return Row(
            name,
            "ms",
            ours,
            None,
            note=f"{found} masks; pipeline not run: give --pipeline-python (a Python with torchvision)",
        )
    with tempfile.TemporaryDirectory() as tmp:
        image_path = Path(tmp) / "photo.png"
        Image.fromarray(image).save(image_path)
        code = PIPELINE.format(
            path=path, image=str(image_path), rounds=rounds, threads=torch.get_num_threads(), side=side
        )
        result = json.loads(run_python(code, pipeline_python).strip().splitlines()[-1])
    note = (
        f"ours from the cached embedding, {found} masks; pipeline incl. its encode, {result['masks']} masks, "
        f"torch {result['torch']} in {pipeline_python}"
    )
    return Row(name, "ms", ours, [t * 1000 for t in result["times"]], note=note)
