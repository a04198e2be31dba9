"""The execution plan: one read tells what runs, and every decision reaches the code.

Runs every plan this machine can run (CPU: exact float32, and bfloat16) through a freshly loaded
engine. A plan whose decoder, attention, upscaler, casts or batch size did not reach the engine
fails here; the exact plan must also equal the transformers recipe.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from sam_demo import EngineConfig, load_engine
from sam_demo.engine.modeling.decoder import CachedDecoder
from sam_demo.engine.modeling.fast_decoder import FastDecoder
from sam_demo.engine.modeling.openvino_encoder import OpenVinoEncoder, openvino_available
from sam_demo.engine.modeling.vision_attention import _blocked_forward, _folded_forward
from sam_demo.engine.plan import ExecutionPlan
from tests.support.reference import mask_iou, reference_predict

DECODERS = {"exact": CachedDecoder, "fast": FastDecoder}
ATTENTION = {"folded": _folded_forward, "blocked": _blocked_forward}


# (dtype, exact, encoder): the exact mode, the fast mode in float32 (every CPU) with torch's ViT and
# with OpenVINO's (its default there, where the package is installed), and in bfloat16.
MODES = [
    ("float32", True, None),
    ("float32", False, "torch"),
    ("float32", False, "openvino"),
    ("bfloat16", False, None),
]


@pytest.fixture(
    scope="module", params=MODES, ids=["exact-float32", "fast-float32", "fast-float32-openvino", "fast-bfloat16"]
)
def planned(request, checkpoint):
    dtype, exact, encoder = request.param
    if encoder == "openvino":
        pytest.importorskip("openvino")
    return load_engine(EngineConfig(model=str(checkpoint), device="cpu", dtype=dtype, exact=exact, encoder=encoder))


def test_every_decision_of_the_plan_reaches_the_engine(planned, checkpoint, request):
    plan = planned.plan
    sdpa = planned.model.config._attn_implementation == "sdpa"
    dtype, exact, encoder = request.node.callspec.params["planned"]
    assert (
        plan == ExecutionPlan.choose("cpu", dtype, sdpa, exact, encoder, openvino_available(), torch.get_num_threads())
        and plan.exact == exact
    )
    assert type(planned.decoder) is DECODERS[plan.decoder]
    assert planned.decoder.dtype == getattr(torch, plan.decoder_compute)
    encoder, model = planned.model.vision_encoder, planned.model
    assert model.prompt_encoder.point_embed[0].weight.dtype == getattr(torch, plan.prompt_encoder)
    assert model.mask_decoder.iou_token.weight.dtype == getattr(torch, plan.prompt_encoder)
    if plan.encoder == "openvino":  # OpenVINO runs the ViT, whose torch weights are dropped
        assert isinstance(planned._vit, OpenVinoEncoder) and encoder.patch_embed.projection.weight.is_meta
        assert planned.plan.describe().startswith("cpu: ViT on OpenVINO computing in float32")
        return
    assert encoder.patch_embed.projection.weight.dtype == getattr(torch, plan.vit_weights)
    patched = [getattr(layer.attn.forward, "__func__", None) for layer in encoder.layers]
    if plan.attention == "transformers":
        assert not any(f in ATTENTION.values() for f in patched)
    else:
        assert ATTENTION[plan.attention] in patched
    assert planned.exact == plan.exact and planned.exact_upscale == (plan.upscaler == "torch")
    assert planned._coord_dtype == getattr(torch, plan.coordinates)
    assert plan.describe().startswith("cpu:")
    # segment everything: the fast mode's calls of 2 prompts side by side, one per torch thread, each
    # on one; the exact mode's one at a time on every thread (its sums depend on the thread count)
    workers = 1 if exact else torch.get_num_threads()
    assert (plan.everything_batch, plan.everything_workers) == ((1, 1) if exact else (2, workers))
    assert (planned._everything_pool is None) == (workers == 1)


def test_each_plan_segments_as_the_reference_recipe_does(planned, reference_model, landscape):
    model, processor = reference_model
    points, labels = np.array([[[200.0, 150.0]]]), np.array([[1]])
    ours = planned.decode(planned.embed(landscape), points, labels, multimask_output=True)
    masks, scores, _ = reference_predict(model, processor, landscape, points=points, labels=labels)
    if planned.plan.exact:
        assert np.array_equal(ours.masks, masks) and np.array_equal(ours.iou_scores, scores)
    elif planned.info.dtype == "float32":  # the fast mode in float32: within a pixel (tests/engine/test_sam_engine.py)
        assert np.mean([mask_iou(a, b) for a, b in zip(ours.masks[0], masks[0])]) > 0.99
    else:  # reduced precision: close (random test weights are far more sensitive than real ones)
        assert np.mean([mask_iou(a, b) for a, b in zip(ours.masks[0], masks[0])]) > 0.8


def test_gpu_plans_cast_the_whole_model_and_batch_segment_everything():
    plan = ExecutionPlan.choose("cuda", "bfloat16", sdpa=True)
    assert (plan.vit_weights, plan.prompt_encoder, plan.decoder, plan.attention) == ("bfloat16",) * 2 + (
        "fast",
        "blocked",
    )
    assert (plan.everything_batch, plan.everything_workers) == (64, 1) and not plan.exact
    assert ExecutionPlan.choose("cuda", "float32", sdpa=True, threads=8).everything_workers == 1
    assert ExecutionPlan.choose("mps", "float16", sdpa=False).coordinates == "float32"
    exact = ExecutionPlan.choose("cuda", "float32", sdpa=False, exact=True)
    assert exact.exact and exact.attention == "transformers" and exact.upscaler == "torch"


# machine, --dtype, --exact -> the compute dtype, decoder, upscaler, ViT attention and encoder chosen
# (where the openvino package is installed; without it, torch's ViT everywhere)
MACHINES = [
    ("avx2-cpu", None, False, "float32", "fast", "opencv", "blocked", "openvino"),
    ("avx2-cpu", None, True, "float32", "exact", "torch", "blocked", "torch"),
    ("bf16-cpu", None, False, "bfloat16", "fast", "opencv", "folded", "torch"),
    ("bf16-cpu", None, True, "float32", "exact", "torch", "blocked", "torch"),
    ("bf16-cpu", "float32", False, "float32", "fast", "opencv", "blocked", "openvino"),
    ("cuda", None, False, "bfloat16", "fast", "opencv", "blocked", "torch"),
    ("cuda", None, True, "float32", "exact", "torch", "blocked", "torch"),
    ("cuda", "float16", False, "float16", "fast", "opencv", "blocked", "torch"),
    ("cuda", "float32", False, "float32", "fast", "opencv", "blocked", "torch"),
]


@pytest.mark.parametrize(
    ("machine", "dtype", "exact", "compute", "decoder", "upscaler", "attention", "encoder"), MACHINES
)
@pytest.mark.parametrize("installed", [True, False], ids=["openvino", "no-openvino"])
def test_the_mode_is_chosen_apart_from_the_dtype(
    monkeypatch, machine, dtype, exact, compute, decoder, upscaler, attention, encoder, installed
):
    """The fast mode everywhere by default, float32 included (an AVX2-only CPU), its ViT on OpenVINO
    on a CPU in float32 where it is installed; the exact mode when asked for, in float32, with
    torch's ViT. As data: the CPU's bf16 support, CUDA and the package are stood in for."""
    from sam_demo.engine import loading

    monkeypatch.setattr(loading, "cpu_has_fast_bf16", lambda: machine == "bf16-cpu")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    device = torch.device("cuda" if machine == "cuda" else "cpu")
    chosen = loading.resolve_dtype(dtype, device, exact)
    name = str(chosen).removeprefix("torch.")
    plan = ExecutionPlan.choose(device.type, name, sdpa=True, exact=exact, openvino=installed)
    assert (name, plan.decoder, plan.upscaler, plan.attention) == (compute, decoder, upscaler, attention)
    assert plan.encoder == (encoder if installed else "torch")
    assert plan.exact == exact and plan.decoder_compute == compute
    assert ("asked for (--exact)" if exact else "--exact gives masks bit-equal") in plan.describe()
    assert plan.one_thread_per_click == (compute != "float32")


@pytest.mark.parametrize(
    ("device", "compute", "exact", "installed", "says"),
    [
        ("cpu", "float32", True, True, "the exact mode runs torch's image encoder"),
        ("cuda", "bfloat16", False, True, "OpenVINO runs the image encoder on CPUs here, not cuda"),
        ("cpu", "float32", False, False, "needs the openvino package: pip install openvino"),
    ],
)
def test_openvino_asked_for_where_it_cannot_run_is_refused_saying_why(device, compute, exact, installed, says):
    with pytest.raises(ValueError, match=re.escape(says)):
        ExecutionPlan.choose(device, compute, sdpa=True, exact=exact, encoder="openvino", openvino=installed)
    assert ExecutionPlan.choose("cpu", "bfloat16", sdpa=True, encoder="openvino", openvino=True).encoder == "openvino"


def test_the_exact_mode_in_reduced_precision_is_refused_before_the_weights_load(tmp_path):
    with pytest.raises(ValueError, match="exact mode computes in float32.*drop --dtype or --exact"):
        ExecutionPlan.choose("cpu", "bfloat16", sdpa=True, exact=True)
    missing = tmp_path / "no-such-model"  # not loaded: the mode is refused first
    with pytest.raises(ValueError, match="exact mode computes in float32"):
        load_engine(EngineConfig(model=str(missing), device="cpu", dtype="bfloat16", exact=True))
