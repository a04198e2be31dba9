"""Memory: peak RSS of a process with the model loaded and 32 images' embeddings cached."""

from __future__ import annotations

from benchmarks.report import Row, run_python
from tests.support.photos import PHOTOS

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
    peak = run_python(MEMORY.format(path=path, asset=str(PHOTOS / "rocket.jpg"))).split()[-1]
    return Row("peak RSS, model + 32 cached images", "MiB", [float(peak)], None)
