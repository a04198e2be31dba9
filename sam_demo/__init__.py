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
"""

from importlib import import_module

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
