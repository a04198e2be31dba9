"""Benchmark sam-demo against the naive transformers recipe, run in the same process.

    python -m sam_demo.bench --quick                      # tiny random SAM, < 2 minutes on 2 cores
    python -m sam_demo.bench --arch large                 # random ViT-L (offline stand-in for sam-vit-large)
    python -m sam_demo.bench --model facebook/sam-vit-large

Rows (each: ours, naive, ratio; p50 and p95 over interleaved runs):
- click: cached embedding -> three full-resolution boolean masks on a 1800x1200 photo. Naive:
  SamProcessor(images=..., input_points=...) per click + SamModel(image_embeddings=...) + post_process_masks.
- encode: a new image -> its embedding, ours in the default dtype, naive fp32 (processor + get_image_embeddings).
- segment everything: a 32x32 point grid (8x8 with --quick) from the cached embedding, against transformers'
  pipeline("mask-generation") with its own encode (run by --pipeline-python, as it needs torchvision).
- batch: images/s on an endpoint batch CSV of distinct images, against a plain loop over the naive recipe.
- cold start: a fresh process from start to the first mask, model already on disk.
- memory (not with --quick): peak RSS with the model loaded and 32 images cached.
`--ui` and `--ui-memory` time and weigh the web demo in Chromium (bench_ui.py); `--hostile` weighs
single hostile or heavy /score requests (bench_server.py).
Both sides flush denormals and use the same threads. The table is printed and written as JSON.
"""

from __future__ import annotations

import argparse
import base64
import csv
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .cli import add_engine_flags, engine_config

ASSETS = Path(__file__).resolve().parent.parent / "assets"


@dataclass
class Row:
    name: str
    unit: str
    ours: list[float]
    naive: list[float] | None
    higher_is_better: bool = False
    note: str = ""

    def stat(self, values: list[float] | None, q: float) -> float | None:
        return None if not values else float(np.percentile(values, q))

    def as_dict(self) -> dict:
        p50, n50 = self.stat(self.ours, 50), self.stat(self.naive, 50)
        ratio = None
        if p50 and n50:
            ratio = p50 / n50 if self.higher_is_better else n50 / p50
        return {
            "name": self.name,
            "unit": self.unit,
            "ours_p50": p50,
            "ours_p95": self.stat(self.ours, 95),
            "naive_p50": n50,
            "naive_p95": self.stat(self.naive, 95),
            "speedup": ratio,
            "runs": len(self.ours),
            "note": self.note,
        }


def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def photo(width: int, height: int, name: str = "rocket.jpg") -> np.ndarray:
    return np.asarray(Image.open(ASSETS / name).convert("RGB").resize((width, height), Image.BILINEAR))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


class Naive:
    """The transformers reference recipe, as its docs show it."""

    def __init__(self, path: str, device: torch.device):
        from transformers import SamModel, SamProcessor

        self.processor = SamProcessor.from_pretrained(path)
        self.model = SamModel.from_pretrained(path).to(device).eval()
        self.device = device

    @torch.inference_mode()
    def embed(self, image: np.ndarray) -> torch.Tensor:
        pixel_values = self.processor(images=image, return_tensors="pt")["pixel_values"].to(self.device)
        return self.model.get_image_embeddings(pixel_values)

    @torch.inference_mode()
    def click(self, image: np.ndarray, embeddings: torch.Tensor, xy) -> torch.Tensor:
        inputs = self.processor(images=image, input_points=[[[list(xy)]]], return_tensors="pt")
        out = self.model(
            image_embeddings=embeddings,
            input_points=inputs["input_points"].to(self.device),
            input_labels=torch.ones((1, 1, 1), dtype=torch.int64, device=self.device),
        )
        return self.processor.post_process_masks(
            out.pred_masks.cpu(), inputs["original_sizes"], inputs["reshaped_input_sizes"]
        )[0]

    @torch.inference_mode()
    def full(self, image: Image.Image, box) -> tuple:
        inputs = self.processor(images=image, input_boxes=[[list(box)]], return_tensors="pt").to(self.device)
        out = self.model(
            **{k: v for k, v in inputs.items() if k not in ("original_sizes", "reshaped_input_sizes")},
            multimask_output=False,
        )
        masks = self.processor.post_process_masks(
            out.pred_masks.cpu(), inputs["original_sizes"].cpu(), inputs["reshaped_input_sizes"].cpu()
        )[0]
        return masks, out.iou_scores


def bench_click(engine, naive: Naive, rounds: int) -> Row:
    image = photo(1800, 1200)
    embedding = engine.embed(image)
    reference = naive.embed(image)
    rng = np.random.default_rng(0)
    clicks = rng.uniform([0, 0], [1800, 1200], size=(rounds + 3, 2))
    ours, base = [], []
    for i, xy in enumerate(clicks):
        t_naive = timed(partial(naive.click, image, reference, xy), engine.device)
        t_ours = timed(partial(engine.decode, embedding, xy[None, None], np.ones((1, 1), np.int64)), engine.device)
        if i >= 3:  # warm-up
            base.append(t_naive * 1000)
            ours.append(t_ours * 1000)
    return Row("click, 3 masks at 1800x1200", "ms", ours, base)


def bench_encode(engine, naive: Naive, rounds: int) -> Row:
    images = [photo(1800, 1200, name) for name in ("rocket.jpg", "chelsea.png", "coffee.png", "astronaut.png")]
    ours, base = [], []
    for i in range(rounds + 1):
        image = images[i % len(images)]
        engine.cache.clear()
        t_ours = timed(partial(engine.embed, image), engine.device)
        t_naive = timed(partial(naive.embed, image), engine.device)
        if i >= 1:
            ours.append(t_ours * 1000)
            base.append(t_naive * 1000)
    return Row(f"encode ({engine.info.dtype} vs float32)", "ms", ours, base)


def write_csv_job(folder: Path, count: int) -> tuple[Path, list[tuple[Image.Image, list]]]:
    """A batch CSV with `count` distinct 800x600 images (crops of the example photos), one box each."""
    names = sorted(p.name for p in ASSETS.iterdir() if p.suffix in (".png", ".jpg"))
    rows, items = [], []
    for i in range(count):
        source = Image.open(ASSETS / names[i % len(names)]).convert("RGB").resize((1000, 750))
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
    from .batch import run_job, run_local
    from .endpoint import response_row
    from .fetch import FetchPolicy

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


COLD_OURS = """
import time, numpy as np; t = time.perf_counter()
from sam_demo import load_predictor
p = load_predictor({path!r}, device={device!r})
p.set_image(np.zeros((1200, 1800, 3), np.uint8)); p.predict(np.array([[900, 600]]), np.array([1]))
print(time.perf_counter() - t)
"""
COLD_NAIVE = """
import time, numpy as np; t = time.perf_counter()
import torch; torch.set_flush_denormal(True)
from transformers import SamModel, SamProcessor
proc = SamProcessor.from_pretrained({path!r}); model = SamModel.from_pretrained({path!r}).to({device!r}).eval()
with torch.inference_mode():
    inputs = proc(images=np.zeros((1200, 1800, 3), np.uint8), input_points=[[[[900, 600]]]], return_tensors="pt").to({device!r})
    out = model(**{{k: v for k, v in inputs.items() if k not in ("original_sizes", "reshaped_input_sizes")}})
    proc.post_process_masks(out.pred_masks.cpu(), inputs["original_sizes"].cpu(), inputs["reshaped_input_sizes"].cpu())
print(time.perf_counter() - t)
"""


def run_python(code: str, python: str = sys.executable) -> str:
    """Run `code` in a fresh interpreter (from the repository root); its stdout, or RuntimeError with its stderr."""
    done = subprocess.run(
        [python, "-c", code], capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent
    )
    if done.returncode != 0:
        raise RuntimeError(f"{python} failed:\n{done.stderr[-2000:]}")
    return done.stdout


def bench_cold_start(path: str, device: torch.device) -> Row:
    def run(code: str) -> float:
        start = time.perf_counter()
        run_python(code.format(path=path, device=str(device)))
        return time.perf_counter() - start

    return Row("cold start to first mask", "s", [run(COLD_OURS)], [run(COLD_NAIVE)], note="process start included")


MEMORY = """
import resource, numpy as np
from PIL import Image
from sam_demo import EngineConfig, load_engine
engine = load_engine(EngineConfig(model={path!r}, device="cpu", cache_bytes=2 << 30))
base = np.asarray(Image.open({asset!r}).convert("RGB").resize((1800, 1200)))
for i in range(32):
    engine.embed(np.roll(base, i * 13, axis=1))
assert engine.cache_stats().entries == 32
try:  # VmHWM is this process's own peak; Linux's ru_maxrss also counts the parent that forked it
    print(int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) / 1024)
except OSError:
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def bench_memory(path: str) -> Row:
    peak = run_python(MEMORY.format(path=path, asset=str(ASSETS / "rocket.jpg"))).split()[-1]
    return Row("peak RSS, model + 32 cached images", "MiB", [float(peak)], None)


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
    from .everything import EverythingConfig, generate

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


def agreement(engine, path: str) -> str:
    """Mean mask IoU of the engine's default dtype against fp32, over clicks on one photo."""
    if engine.info.dtype == "float32":
        return "default dtype is float32: exact"
    from .loading import EngineConfig, load_engine

    exact = load_engine(EngineConfig(model=path, device=engine.info.device, dtype="float32"))
    image = photo(1800, 1200)
    fast, ref = engine.embed(image), exact.embed(image)
    ious = []
    for xy in np.random.default_rng(1).uniform([0, 0], [1800, 1200], size=(10, 2)):
        a = engine.decode(fast, xy[None, None], np.ones((1, 1), np.int64)).masks[0]
        b = exact.decode(ref, xy[None, None], np.ones((1, 1), np.int64)).masks[0]
        ious += [np.logical_and(x, y).sum() / max(1, np.logical_or(x, y).sum()) for x, y in zip(a, b)]
    return f"{engine.info.dtype} vs float32 masks: mean IoU {np.mean(ious):.3f}, min {np.min(ious):.3f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny random SAM, few rounds (a smoke test)")
    add_engine_flags(parser)
    parser.add_argument("--arch", default=None, help="random-weight ViT size when no --model: tiny, base, large, huge")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=None, help="timed clicks (encodes use a fifth, at least 3)")
    parser.add_argument(
        "--pipeline-python",
        default=os.environ.get("SAM_PIPELINE_PYTHON"),
        help="a Python with torchvision to time transformers' mask-generation pipeline "
        "(default: $SAM_PIPELINE_PYTHON); without it the everything row has no baseline",
    )
    parser.add_argument(
        "--ui", action="store_true", help="only the web demo's rows, timed in headless Chromium (default arch: base)"
    )
    parser.add_argument(
        "--ui-app",
        type=Path,
        default=None,
        help="with --ui: serve this checkout's app.py instead (e.g. a git worktree of an older commit)",
    )
    parser.add_argument(
        "--hostile", action="store_true", help="only the server's peak memory per hostile or heavy /score request"
    )
    parser.add_argument(
        "--ui-memory",
        action="store_true",
        help="only the web demo's server memory per open session (12 MP photo, ten objects)",
    )
    parser.add_argument(
        "--serve",
        action="store_true",
        help="only the endpoint on Ray Serve: 1 and 2 replicas, image-affine vs Serve's default router",
    )
    parser.add_argument("--out", type=Path, default=Path("bench-results/bench.json"))
    args = parser.parse_args(argv)

    from .checkpoints import write_random_checkpoint
    from .loading import load_engine

    torch.set_flush_denormal(True)
    if args.threads:
        torch.set_num_threads(args.threads)
    rounds = args.rounds or (30 if args.quick else 100)
    tmp = tempfile.TemporaryDirectory()
    if args.model:
        path, label = args.model, args.model
    else:
        light = args.quick or args.ui_memory or args.hostile
        arch = args.arch or ("tiny" if light else "base" if args.ui or args.serve else "large")
        path = str(write_random_checkpoint(Path(tmp.name) / f"sam-{arch}-random", arch=arch))
        label = f"random-weight SAM ({arch} ViT)"
    if args.serve:
        from .bench_serve import serve_rows

        rows = serve_rows(path, args.dtype, requests=40 if args.quick else 100, images=4 if args.quick else 10)
        info = {"model": label, "device": "cpu", "dtype": args.dtype or "default", **machine(), "accuracy": "-"}
    elif args.ui or args.ui_memory or args.hostile:
        from .bench_server import request_memory
        from .bench_ui import bench_ui, session_memory

        if args.hostile:
            rows = request_memory(path, args.dtype, app=args.ui_app)
        elif args.ui_memory:
            rows = session_memory(path, args.dtype, sessions=2 if args.quick else 4, app=args.ui_app)
        else:
            rows = bench_ui(path, args.dtype, args.rounds or (8 if args.quick else 30), app=args.ui_app)
        info = {"model": label, "device": "cpu", "dtype": args.dtype or "default", **machine(), "accuracy": "-"}
    else:
        engine = load_engine(engine_config(args, model=path))
        naive = Naive(path, engine.device)
        rows = [
            bench_click(engine, naive, rounds),
            bench_encode(engine, naive, max(3, rounds // 20 if args.quick else 3)),
        ]
        rows.append(bench_everything(engine, path, args.pipeline_python, 1, 8 if args.quick else 32))
        rows.append(bench_batch(engine, naive, 20))
        rows.append(bench_cold_start(path, engine.device))
        if not args.quick and engine.device.type == "cpu":
            rows.append(bench_memory(path))
        info = {
            "model": label,
            "device": engine.info.device,
            "dtype": engine.info.dtype,
            **machine(),
            "accuracy": agreement(engine, path),
        }
    report = {"machine": info, "rows": [r.as_dict() for r in rows]}

    print(
        f"\nsam-demo benchmark - {label} on {info['device']} ({info['dtype']}); {info['cpu']}, "
        f"{info['threads']} threads{', ' + info['gpu'] if 'gpu' in info else ''}"
    )
    print(f"{'':46} {'ours p50':>10} {'ours p95':>10} {'naive p50':>10} {'naive p95':>10} {'speedup':>8}")
    fmt = lambda v: "-" if v is None else f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"  # noqa: E731
    for row in report["rows"]:
        name = f"{row['name']} [{row['unit']}]"
        speed = "-" if row["speedup"] is None else f"{row['speedup']:.1f}x"
        print(
            f"{name:46} {fmt(row['ours_p50']):>10} {fmt(row['ours_p95']):>10} {fmt(row['naive_p50']):>10} "
            f"{fmt(row['naive_p95']):>10} {speed:>8}"
        )
    for row in report["rows"]:
        if row["note"]:
            print(f"{row['name']}: {row['note']}")
    print(f"accuracy: {info['accuracy']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
