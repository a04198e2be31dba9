"""Cold start: a fresh process from start to the first mask, the model already on disk, against the naive recipe."""

from __future__ import annotations

import time

import torch

from benchmarks.report import Row, run_python

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


def bench_cold_start(path: str, device: torch.device) -> Row:
    def run(code: str) -> float:
        start = time.perf_counter()
        run_python(code.format(path=path, device=str(device)))
        return time.perf_counter() - start

    return Row("cold start to first mask", "s", [run(COLD_OURS)], [run(COLD_NAIVE)], note="process start included")
