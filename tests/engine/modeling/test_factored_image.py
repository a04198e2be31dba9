"""The fast decoder's factored image tokens (float32) against the same decoder with them materialised."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import SamModel, SamProcessor

from sam_demo import EngineConfig, load_engine
from sam_demo.engine.modeling.factored_image import FactoredImage
from sam_demo.engine.sam_engine import PROJECTIONS_BYTES
from tests.support.reference import with_affine_layer_norms

# (points_xy (G, N, 2), labels (G, N), boxes_xyxy (G, 4)) in the 451x300 photo's pixels
PROMPTS = {
    "click": ([[[200.0, 150.0]]], [[1]], None),
    "clicks, one negative": ([[[120.0, 80.0], [300.0, 200.0], [60.0, 250.0]]], [[1, 0, 1]], None),
    "box": (None, None, [[40.0, 30.0, 380.0, 260.0]]),
    "a box and seven points": (
        [[[30.0 + 40 * k, 20.0 + 25 * k] for k in range(7)]],
        [[1, 0, 1, 1, 0, 1, 1]],
        [[10.0, 10.0, 440.0, 290.0]],
    ),
    "three groups": ([[[50.0, 50.0]], [[225.0, 150.0]], [[400.0, 250.0]]], [[1], [1], [1]], None),
}


@pytest.fixture(scope="module")
def affine_norms_checkpoint(checkpoint, tmp_path_factory):
    """The tests' checkpoint with its decoder's layer norms made affine (`with_affine_layer_norms`)."""
    folder = tmp_path_factory.mktemp("affine-norms")
    with_affine_layer_norms(SamModel.from_pretrained(checkpoint)).save_pretrained(folder)
    SamProcessor.from_pretrained(checkpoint).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module", params=["unit layer norms", "affine layer norms"])
def fast_fp32(request, checkpoint, affine_norms_checkpoint):
    model = checkpoint if request.param == "unit layer norms" else affine_norms_checkpoint
    return load_engine(EngineConfig(model=str(model), device="cpu", dtype="float32"))


def transform(engine, embedding, points, labels, boxes, factored: bool = True):
    geometry = embedding.geometry
    decoder = engine.decoder
    sparse = decoder.prompt_embeddings(
        None if points is None else engine._tensor(geometry.coords_to_model(points)[None]),
        None if labels is None else torch.from_numpy(labels[None]),
        None if boxes is None else engine._tensor(geometry.boxes_to_model(boxes)[None]),
    )
    projections = decoder.project(embedding.decoder_cache) if factored else None
    with torch.inference_mode():
        return decoder._transform(embedding.decoder_cache, sparse, True, projections)


@pytest.fixture
def materialised(fast_fp32, monkeypatch):
    """Run a call with the engine's tokens materialised (no per-image parts given to the decoder)."""

    def run(call, *args, **kwargs):
        with monkeypatch.context() as patch:
            patch.setattr(fast_fp32, "_image_projections", lambda embedding: None)
            return call(*args, **kwargs)

    return run


@pytest.mark.parametrize("name", PROMPTS)
def test_the_factored_tokens_give_the_materialised_ones_results(fast_fp32, landscape, name, materialised):
    points, labels, boxes = (None if v is None else np.asarray(v) for v in PROMPTS[name])
    embedding = fast_fp32.embed(landscape)
    tokens, keys = transform(fast_fp32, embedding, points, labels, boxes)
    dense_tokens, dense_keys = transform(fast_fp32, embedding, points, labels, boxes, factored=False)
    assert isinstance(keys, FactoredImage) and isinstance(dense_keys, torch.Tensor)
    assert torch.allclose(tokens, dense_tokens, atol=2e-5)
    # the image tokens themselves, put together: scale * X_2 + coef @ basis, through the head's first convolution
    decoder = fast_fp32.decoder
    weight, bias = decoder._projections.conv1
    side = decoder.embedding_hw[0]
    with torch.inference_mode():
        full = keys.conv1(decoder._projections, (side, side), side)
        reference = torch.addmm(bias, dense_keys.flatten(0, 1), weight)
    assert torch.allclose(full, reference, atol=5e-5 * reference.abs().max())
    a = fast_fp32.decode(embedding, points, labels, boxes)
    b = materialised(fast_fp32.decode, embedding, points, labels, boxes)
    assert np.abs(a.low_res_logits - b.low_res_logits).max() < 1e-4
    assert np.abs(a.iou_scores - b.iou_scores).max() < 1e-5


def test_segment_everythings_candidates_are_the_same_factored(fast_fp32, landscape, materialised):
    embedding = fast_fp32.embed(landscape)
    points = np.array([[50.0, 40.0], [225.0, 150.0], [400.0, 260.0], [10.0, 290.0]])
    ours = fast_fp32.decode_candidates(embedding, points, 0.0)
    dense = materialised(fast_fp32.decode_candidates, embedding, points, 0.0)
    assert len(ours[0]) and all(torch.equal(a, b) for a, b in zip(ours[:2], dense[:2]))
    assert torch.allclose(ours[2], dense[2], atol=1e-4) and torch.allclose(ours[3], dense[3], atol=1e-5)


def test_only_float32_keeps_the_tokens_factored_and_only_for_the_last_images(checkpoint, fast_fp32, landscape):
    assert fast_fp32.decoder.factored
    bf16 = load_engine(EngineConfig(model=str(checkpoint), device="cpu", dtype="bfloat16"))
    assert not bf16.decoder.factored and bf16._image_projections(bf16.embed(landscape)) is None
    # the per-image parts (~20 MB in float32) are not held with the cached embeddings, only for the
    # images decoded last, within their own bound
    click = np.array([[[100.0, 100.0]]]), np.ones((1, 1), np.int64)
    photos = [landscape, landscape[::-1].copy(), landscape[:, ::-1].copy(), landscape[::2].copy()]
    for photo in photos:
        fast_fp32.decode(fast_fp32.embed(photo), *click)
    parts = fast_fp32._projections.stats()
    assert parts.entries == 2 and parts.bytes <= PROJECTIONS_BYTES and parts.bytes > (32 << 20)
    assert fast_fp32.embed(photos[0]).nbytes < (16 << 20)
    # an object of many points runs the usual order: its low-rank parts would be as wide as the tokens
    many = np.array([[[10.0 + 20 * k, 10.0 + 13 * k] for k in range(16)]])
    _, keys = transform(fast_fp32, fast_fp32.embed(landscape), many, np.ones((1, 16), np.int64), None)
    assert isinstance(keys, torch.Tensor)
