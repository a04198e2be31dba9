"""Fixtures: a small random SAM saved with save_pretrained and loaded through load_engine.

No test downloads anything. The checkpoint's weights are re-initialised so that masks depend
on the prompt, and that is asserted, or every equivalence test would pass vacuously.
"""

from __future__ import annotations

import csv
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import SamModel, SamProcessor

from sam_demo import EngineConfig, load_engine
from sam_demo.engine.random_sam import check_prompt_dependence, write_random_checkpoint
from tests.support.photos import asset, b64_png
from tests.support.requests import BATCH_HEADER
from tests.support.servers import RunningServer

torch.set_flush_denormal(True)
# OpenVINO's converted encoders (see modeling/openvino_encoder.py) go to a folder of this run's, for
# this process and the servers it starts, never to the user's cache.
os.environ.setdefault("SAM_DEMO_CACHE", tempfile.mkdtemp(prefix="sam-demo-tests-"))


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    return write_random_checkpoint(tmp_path_factory.mktemp("checkpoint") / "sam-tiny-random", arch="tiny", seed=0)


@pytest.fixture(scope="session")
def engine(checkpoint):
    engine = load_engine(EngineConfig(model=str(checkpoint), device="cpu", dtype="float32", exact=True))
    assert engine.info.random_weights
    assert check_prompt_dependence(engine.model) > 0.05
    return engine


@pytest.fixture(scope="session")
def reference_model(checkpoint):
    return SamModel.from_pretrained(checkpoint).eval(), SamProcessor.from_pretrained(checkpoint)


@pytest.fixture(scope="session")
def landscape() -> np.ndarray:
    return asset("chelsea.png")  # 451x300


@pytest.fixture(scope="session")
def server(engine):
    from sam_demo.app import build_app
    from sam_demo.endpoint.settings import ServerConfig

    with RunningServer(build_app(engine, ServerConfig(max_body_bytes=8 << 20))) as running:
        yield running


@pytest.fixture(scope="session")
def job(tmp_path_factory):
    folder = tmp_path_factory.mktemp("job")
    cat, cup = b64_png(asset("chelsea.png")), b64_png(asset("coffee.png"))
    rows_a = [
        [cat, "", "[[10, 10, 300, 250]]", "", "False"],
        [cup, "[[[100, 100]], [[300, 200]]]", "", "[[1], [1]]", "True"],
        [cat, "[[[1, 1]], [[2, 2], [3, 3]]]", "", "", "False"],  # ragged groups
        [cat, "[[[200, 150], [320, 90]]]", "", "[[1, 0]]", "False"],  # same image as row 0
    ]
    rows_b = [["@@@", "[[[1, 1]]]", "", "", "False"], [cup, "", "[[50, 50, 500, 390]]", "", "True"]]
    for name, rows in (("a.csv", rows_a), ("b.csv", rows_b)):
        with open(folder / name, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(BATCH_HEADER)
            writer.writerows(rows)
    (folder / "notes.txt").write_text("not a csv")
    return folder, rows_a + rows_b
