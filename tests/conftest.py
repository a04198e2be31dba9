"""Fixtures: a small random SAM saved with save_pretrained and loaded through load_engine.

No test downloads anything. The checkpoint's weights are re-initialised so that masks depend
on the prompt, and that is asserted, or every equivalence test would pass vacuously.
"""

from __future__ import annotations

import base64
import csv
import io
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


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RunningServer:
    """Serve an ASGI app with uvicorn in a thread on 127.0.0.1 (for HTTP and browser tests)."""

    def __init__(self, app):
        import threading

        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", timeout_graceful_shutdown=1)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        import time

        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="session")
def server(engine):
    from sam_demo.server import ServerConfig, build_app

    with RunningServer(build_app(engine, ServerConfig(max_body_bytes=8 << 20))) as running:
        yield running


BATCH_HEADER = ["image", "input_points", "input_boxes", "input_labels", "multimask_output"]


def b64_png(rgb: np.ndarray) -> str:
    """Base64 of a PNG of an (H, W, 3) uint8 array, as endpoint requests carry images."""
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


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
