"""The SAM engine, a library: load a checkpoint, embed an image once, decode each prompt from it.

- `config.py`: `EngineConfig` (torch-free); `plan.py`: the execution plan chosen at load;
  `loading.py`: a checkpoint (hub id or folder) into a `SamEngine`;
- `sam_engine.py`: `SamEngine` (cached `embed`, per-prompt `decode`), `ImageEmbedding`, `Prediction`;
- `predictor.py`: `SamPredictor`, segment-anything's predictor contract on top of the engine;
- `automatic_mask_generator.py`: segment everything (its helpers in `utils/amg.py`);
- `random_sam.py`: random-weight checkpoints for tests and offline runs;
- `modeling/`: the decoders and the ViT's attention; `utils/`: geometry and transforms, the cache,
  images, prompt rules, COCO encoding, the C heap.

May import: torch, transformers and the numeric stack; never the endpoint, the demo, batch or
serve. `config.py`, `utils/geometry.py`, `utils/prompts.py`, `utils/images.py` and
`utils/cache.py` import no torch. The names below are imported on first use.
"""

from importlib import import_module

_MODULE_OF = {
    "AutoMask": "automatic_mask_generator",
    "EngineConfig": "config",
    "EverythingConfig": "automatic_mask_generator",
    "ImageEmbedding": "sam_engine",
    "ModelLoadError": "loading",
    "Prediction": "sam_engine",
    "PromptError": "utils.prompts",
    "SamEngine": "sam_engine",
    "SamPredictor": "predictor",
    "generate": "automatic_mask_generator",
    "load_engine": "loading",
    "load_predictor": "predictor",
}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    if name in _MODULE_OF:
        return getattr(import_module(f".{_MODULE_OF[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
