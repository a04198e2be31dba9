"""sam-demo: an interactive Segment Anything demo and a local twin of the Azure ML SAM endpoint.

The names below are imported on first use (PEP 562), so that `python -m sam_demo.batch` and the
other commands start without torch and can handle Ctrl-C from their first moment.
"""

from importlib import import_module

_MODULE_OF = {
    "EngineConfig": "loading",
    "ImageEmbedding": "engine",
    "ModelLoadError": "loading",
    "Prediction": "engine",
    "PromptError": "prompts",
    "SamEngine": "engine",
    "SamPredictor": "predictor",
    "load_engine": "loading",
    "load_predictor": "predictor",
}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    if name in _MODULE_OF:
        return getattr(import_module(f".{_MODULE_OF[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
