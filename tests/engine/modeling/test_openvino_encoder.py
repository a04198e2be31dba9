"""The image encoder on OpenVINO: the embeddings of torch's fp32 ViT to float rounding, masks within a
pixel, converted once per checkpoint and read back from disk after that; a damaged cache is remade."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from sam_demo import EngineConfig, load_engine
from sam_demo.engine.modeling.openvino_encoder import OpenVinoEncoder
from sam_demo.engine.random_sam import write_random_checkpoint
from tests.engine.test_sam_engine import PROMPTS, off_the_edge

pytest.importorskip("openvino")


@pytest.fixture(scope="module")
def openvino_engine(checkpoint, tmp_path_factory):
    cache = tmp_path_factory.mktemp("openvino-cache")
    engine = load_engine(EngineConfig(model=str(checkpoint), device="cpu", dtype="float32", encoder_cache=str(cache)))
    assert engine.plan.encoder == "openvino" and isinstance(engine._vit, OpenVinoEncoder)
    return engine


def test_the_embeddings_are_torchs_fp32_ones_to_float_rounding(engine, openvino_engine, landscape):
    ours, reference = openvino_engine.embed(landscape).features, engine.embed(landscape).features
    assert ours.dtype == torch.float32 and ours.shape == reference.shape == (1, 256, 64, 64)
    assert (ours - reference).abs().max() < 1e-4 * reference.abs().max()
    assert torch.nn.functional.cosine_similarity(ours.flatten(), reference.flatten(), dim=0) > 0.999999


@pytest.mark.parametrize("name", PROMPTS)
def test_the_masks_are_within_a_pixel_of_the_exact_modes(engine, openvino_engine, landscape, name):
    points, labels, boxes = (None if v is None else np.asarray(v) for v in PROMPTS[name])
    exact = engine.decode(engine.embed(landscape), points, labels, boxes)
    ours = openvino_engine.decode(openvino_engine.embed(landscape), points, labels, boxes)
    for a, b in zip(ours.masks.reshape(-1, *landscape.shape[:2]), exact.masks.reshape(-1, *landscape.shape[:2])):
        assert off_the_edge(a, b) == 0


def test_it_is_converted_once_then_read_from_disk_and_a_damaged_copy_is_converted_again(
    checkpoint, tmp_path, monkeypatch, caplog
):
    config = EngineConfig(model=str(checkpoint), device="cpu", dtype="float32", encoder_cache=str(tmp_path))
    first = load_engine(config)
    saved = first._vit.path
    assert saved.is_relative_to(tmp_path) and saved.exists() and saved.with_suffix(".bin").exists()
    converted = []
    real = OpenVinoEncoder._convert
    monkeypatch.setattr(OpenVinoEncoder, "_convert", staticmethod(lambda *a: converted.append(1) or real(*a)))
    load_engine(config)
    assert converted == [], "read from disk"
    saved.write_text("<not an OpenVINO model>")
    with caplog.at_level(logging.WARNING, logger="sam_demo"):
        again = load_engine(config)
    assert converted == [1] and "could not be read" in caplog.text and again._vit.path == saved
    pixels = torch.rand(1, 3, 1024, 1024)
    assert torch.equal(again._vit(pixels), first._vit(pixels))


def test_another_checkpoint_has_another_key(tmp_path, checkpoint):
    other = write_random_checkpoint(tmp_path / "other", arch="tiny", seed=1)
    load = lambda path: load_engine(  # noqa: E731
        EngineConfig(model=str(path), device="cpu", dtype="float32", encoder_cache=str(tmp_path / "cache"))
    )
    assert load(checkpoint)._vit.path != load(other)._vit.path


def test_an_unwritable_cache_runs_from_memory(checkpoint, tmp_path, caplog):
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    with caplog.at_level(logging.WARNING, logger="sam_demo"):
        engine = load_engine(
            EngineConfig(model=str(checkpoint), device="cpu", dtype="float32", encoder_cache=str(blocked))
        )
    assert engine.plan.encoder == "openvino" and "could not be saved" in caplog.text
    assert engine.embed(np.zeros((64, 64, 3), np.uint8)).features.shape == (1, 256, 64, 64)
