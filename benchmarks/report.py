"""The benchmarks' shared parts: a result row (ours vs the naive baseline, p50/p95), the machine,
timing, fresh interpreters, and the printed and written report."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

REPOSITORY = Path(__file__).resolve().parent.parent


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


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def run_python(code: str, python: str = sys.executable) -> str:
    """Run `code` in a fresh interpreter (from the repository root); its stdout, or RuntimeError with its stderr."""
    done = subprocess.run([python, "-c", code], capture_output=True, text=True, cwd=REPOSITORY)
    if done.returncode != 0:
        raise RuntimeError(f"{python} failed:\n{done.stderr[-2000:]}")
    return done.stdout


def write_report(label: str, info: dict, rows: list[Row], out: Path) -> None:
    """Print the table (ours beside the naive baseline) and write it as JSON to `out`."""
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
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"written to {out}")
