"""sam-demo: an interactive Segment Anything demo and a local twin of the Azure ML SAM endpoint.

The package holds five products, one subpackage each, plus the composition root:

- `engine/`: the SAM library (load, embed once, decode per prompt, segment everything);
- `endpoint/`: the Azure ML endpoint twin (wire format, scoring, the HTTP layer of `/score`);
- `demo/`: the Gradio web demo;
- `batch/`: the endpoint's batch CSV jobs, locally or on Ray Data;
- `serve/`: the endpoint on Ray Serve;
- `app.py`: the one-process app (the demo and `/score` on one port); `flags.py`: the shared flags.

Imports run downwards only (pyproject's import-linter contracts, checked in CI): app, then demo,
batch and serve (independent of one another), then flags, then endpoint, then engine.

The names below are imported on first use (PEP 562), so that `python -m sam_demo.batch` and the
other commands start without torch and can handle Ctrl-C from their first moment.

Importing the package shortens how long torch's OpenMP threads spin once a parallel region ends
(`GOMP_SPINCOUNT`, read when torch first loads, so set here before any module imports it): see
`OPENMP_SPIN_COUNT`. An explicit `GOMP_SPINCOUNT` or `OMP_WAIT_POLICY` in the environment wins.
"""

import os
from importlib import import_module

# libgomp's default is 300,000 pauses: milliseconds on recent x86 cores, during which torch's idle
# threads keep the cores that OpenCV's resize of a click's masks (2.9 -> 1.7 ms for three 1800x1200
# masks on a 2-core AMD EPYC), other users' encodes and the server's own threads want next. 30,000
# still spans the gaps between a decode's few hundred small torch ops (10,000 and 30,000 left the
# transformer's time as it was there; 1,000 slowed it by a tenth).
OPENMP_SPIN_COUNT = "30000"
if "OMP_WAIT_POLICY" not in os.environ:
    os.environ.setdefault("GOMP_SPINCOUNT", OPENMP_SPIN_COUNT)

__all__ = [
    "EngineConfig",
    "ImageEmbedding",
    "ModelLoadError",
    "Prediction",
    "PromptError",
    "SamEngine",
    "SamPredictor",
    "load_engine",
    "load_predictor",
]


def __getattr__(name: str):
    if name in __all__:  # the engine's public names (sam_demo.engine imports each on first use)
        return getattr(import_module(".engine", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
