"""sam-demo: an interactive Segment Anything demo and a local twin of the Azure ML SAM endpoint."""

from .engine import ImageEmbedding, Prediction, PromptError, SamEngine
from .loading import EngineConfig, ModelLoadError, load_engine
from .predictor import SamPredictor, load_predictor

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
