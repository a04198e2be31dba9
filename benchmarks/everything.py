"""Segment everything from the cached embedding, against transformers' pipeline("mask-generation")."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.report import Row, run_python
from sam_demo.engine.automatic_mask_generator import EverythingConfig, generate
from sam_demo.engine.config import EngineConfig
from sam_demo.engine.loading import load_engine
from sam_demo.engine.utils.amg import point_grid
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


def matmul_gflops(dtype: torch.dtype, side: int = 2048, rounds: int = 5) -> float:
    """This machine's matmul throughput in `dtype`: the best of `rounds` square products, GFLOP/s."""
    a, b = torch.randn(side, side).to(dtype), torch.randn(side, side).to(dtype)
    torch.mm(a, b)
    best = min(_timed(lambda: torch.mm(a, b)) for _ in range(rounds))
    return 2 * side**3 / best / 1e9


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def prompt_gflop(engine, image, config: EverythingConfig) -> float:
    """GFLOP per prompt of segment everything as it runs on `engine`: the matmuls of its decoder
    calls (the rest has none), counted by torch's FLOP counter over a small grid of the same image,
    here in this thread (the IoU filter decides which heads run)."""
    side = 6
    embedding = engine.embed(image)
    points = point_grid(side) * np.array(embedding.geometry.original_hw[::-1])
    per_call = engine.plan.everything_batch
    with FlopCounterMode(display=False) as counter:
        for start in range(0, len(points), per_call):
            engine.decode_candidates(embedding, points[start : start + per_call], config.pred_iou_thresh)
    return counter.get_total_flops() / side**2 / 1e9


def everything_rows(engine, path: str, pipeline_python: str | None, side: int) -> list[Row]:
    """Segment everything: against transformers' pipeline; in the fast mode also against the exact
    mode in this process (the path a CPU without native bf16 took before the fast mode), with the
    distance to the FLOP limit (FLOPs per prompt over the machine's matmul throughput)."""
    image = photo(1800, 1200)
    rows = [bench_everything(engine, path, pipeline_python, 1, side)]
    if engine.exact:
        return rows
    config = EverythingConfig(points_per_side=side)
    exact = load_engine(EngineConfig(model=path, device=engine.info.device, dtype="float32", exact=True))
    exact.embed(image)
    start = time.perf_counter()
    generate(exact, image, config)
    before = (time.perf_counter() - start) * 1000
    ours = rows[0].ours
    gflop = prompt_gflop(engine, image, config)
    throughput = matmul_gflops(getattr(torch, engine.plan.decoder_compute))
    limit = gflop * side**2 / throughput * 1000
    note = (
        f"naive: the exact mode (float32) in this process; {gflop:.2f} GFLOP per prompt on the path shipped "
        f"(torch's FLOP counter), matmuls here {throughput:.0f} GFLOP/s ({engine.plan.decoder_compute}): "
        f"a {limit:.0f} ms limit, {min(ours) / limit:.1f}x of it"
    )
    rows.append(Row(f"segment everything, {side}x{side} grid, fast vs exact mode", "ms", ours, [before], note=note))
    return rows


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
