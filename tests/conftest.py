"""Fixtures: a small random SAM saved with save_pretrained and loaded through load_engine.

No test downloads anything. The checkpoint's weights are re-initialised so that masks depend
on the prompt, and that is asserted, or every equivalence test would pass vacuously.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import SamModel, SamProcessor

from sam_demo import EngineConfig, load_engine
from sam_demo.checkpoints import check_prompt_dependence, write_random_checkpoint

ASSETS = Path(__file__).resolve().parent.parent / "assets"

torch.set_flush_denormal(True)


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    return write_random_checkpoint(tmp_path_factory.mktemp("checkpoint") / "sam-tiny-random", arch="tiny", seed=0)


@pytest.fixture(scope="session")
def engine(checkpoint):
    engine = load_engine(EngineConfig(model=str(checkpoint), device="cpu", dtype="float32"))
    assert engine.info.random_weights
    assert check_prompt_dependence(engine.model) > 0.05
    return engine


@pytest.fixture(scope="session")
def reference_model(checkpoint):
    return SamModel.from_pretrained(checkpoint).eval(), SamProcessor.from_pretrained(checkpoint)


def asset(name: str) -> np.ndarray:
    return np.asarray(Image.open(ASSETS / name).convert("RGB"))


@pytest.fixture(scope="session")
def landscape() -> np.ndarray:
    return asset("chelsea.png")  # 451x300
