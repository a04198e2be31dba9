"""The engine equals the transformers reference recipe; prompts are validated."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from sam_demo import PromptError, SamPredictor
from tests.support.photos import asset
from tests.support.reference import mask_iou, reference_predict, with_affine_layer_norms

SIZES_WH = {"landscape": (1800, 1200), "portrait": (400, 600), "tiny": (17, 5), "large": (4000, 3000)}


@pytest.fixture(scope="module", params=list(SIZES_WH))
def image(request) -> np.ndarray:
    source = Image.fromarray(
        asset("chelsea.png") if request.param != "portrait" else asset("coffee.png").transpose(1, 0, 2)
    )
    return np.asarray(source.resize(SIZES_WH[request.param], Image.BILINEAR))


def scaled(image, fractions):
    h, w = image.shape[:2]
    return np.asarray(fractions, dtype=np.float64) * np.array([w, h] * (np.shape(fractions)[-1] // 2))


CASES = {
    "point": dict(points=[[[0.4, 0.5]]], labels=[[1]], multimask=True),
    "negative_point": dict(points=[[[0.4, 0.5], [0.7, 0.3]]], labels=[[1, 0]], multimask=True),
    "box": dict(boxes=[[0.2, 0.2, 0.8, 0.9]], multimask=False),
    "points_and_box": dict(
        points=[[[0.5, 0.5], [0.25, 0.3]]], labels=[[1, 0]], boxes=[[0.2, 0.2, 0.8, 0.9]], multimask=True
    ),
    "single_mask": dict(points=[[[0.6, 0.6]]], labels=[[1]], multimask=False),
    "two_boxes": dict(boxes=[[0.1, 0.1, 0.5, 0.5], [0.4, 0.3, 0.95, 0.99]], multimask=True),
    "box_past_the_edge": dict(boxes=[[-0.1, 0.5, 0.6, 1.2]], multimask=False),  # used as given, as Azure does
}


def assert_same(ours, ref):
    masks, scores, logits = ours
    ref_masks, ref_scores, ref_logits = ref
    assert masks.shape == ref_masks.shape and masks.dtype == np.bool_
    for a, b in zip(masks.reshape(-1, *masks.shape[-2:]), ref_masks.reshape(-1, *masks.shape[-2:])):
        assert mask_iou(a, b) >= 0.995
    np.testing.assert_allclose(scores, ref_scores, atol=1e-3)
    np.testing.assert_allclose(logits, ref_logits, atol=1e-4)


@pytest.mark.parametrize("case", list(CASES))
def test_matches_reference(engine, reference_model, image, case):
    spec = CASES[case]
    points = scaled(image, spec["points"]) if "points" in spec else None
    boxes = scaled(image, spec["boxes"]) if "boxes" in spec else None
    labels = np.array(spec["labels"]) if "labels" in spec else None
    predictor = SamPredictor(engine)
    predictor.set_image(image)
    ours = predictor.predict_batch(points, labels, boxes, multimask_output=spec["multimask"])
    ref = reference_predict(*reference_model, image, points, labels, boxes, multimask=spec["multimask"])
    assert_same(ours, ref)


def test_predict_single_and_mask_input_match_reference(engine, reference_model, landscape):
    predictor = SamPredictor(engine)
    predictor.set_image(landscape)
    point, label = np.array([[200.0, 150.0]]), np.array([1])
    masks, scores, logits = predictor.predict(point_coords=point, point_labels=label)
    ref = reference_predict(*reference_model, landscape, point[None], label[None])
    assert_same((masks[None], scores[None], logits[None]), ref)

    # Refinement as in Meta's demo: the best low-res logits fed back with a second click.
    best = logits[np.argmax(scores)][None]
    points2, labels2 = np.array([[200.0, 150.0], [320.0, 90.0]]), np.array([1, 0])
    masks2, scores2, logits2 = predictor.predict(points2, labels2, mask_input=best, multimask_output=False)
    ref2 = reference_predict(
        *reference_model, landscape, points2[None], labels2[None], mask_input=best, multimask=False
    )
    assert_same((masks2[None], scores2[None], logits2[None]), ref2)
    assert not np.array_equal(masks2[0], masks[np.argmax(scores)]), "the mask input must change the result"


def test_masks_depend_on_prompt(engine, landscape):
    predictor = SamPredictor(engine)
    predictor.set_image(landscape)
    a = predictor.predict(np.array([[50.0, 50.0]]), np.array([1]))[0]
    b = predictor.predict(np.array([[400.0, 250.0]]), np.array([1]))[0]
    assert (a != b).mean() > 0.05


def test_return_logits(engine, landscape):
    predictor = SamPredictor(engine)
    predictor.set_image(landscape)
    masks, _, _ = predictor.predict(np.array([[100.0, 100.0]]), np.array([1]))
    logits, _, _ = predictor.predict(np.array([[100.0, 100.0]]), np.array([1]), return_logits=True)
    assert logits.dtype == np.float32 and logits.shape == masks.shape
    np.testing.assert_array_equal(logits > 0, masks)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(point_coords=np.array([[500.0, 10.0]]), point_labels=np.array([1])), "points"),  # x > W=451
        (dict(point_coords=np.array([[-1.0, 10.0]]), point_labels=np.array([1])), "points"),
        (dict(point_coords=np.array([[10.0, 10.0]]), point_labels=np.array([2])), "labels"),
        (dict(point_coords=np.array([[10.0, 10.0]]), point_labels=np.array([1, 0])), "labels"),
        (dict(point_coords=np.array([[np.nan, 10.0]]), point_labels=np.array([1])), "points"),
        (dict(box=np.array([10.0, 10.0, 10.0, 50.0])), "boxes"),  # zero width
        (dict(box=np.array([460.0, 10.0, 500.0, 50.0])), "boxes"),  # wholly right of W=451
        (dict(box=np.array([10.0, -50.0, 50.0, 0.0])), "boxes"),  # wholly above
        (dict(box=np.array([10.0, 10.0, 50.0])), "boxes"),
        (dict(), "prompt"),
        (dict(point_coords=np.array([[10.0, 10.0]]), mask_input=np.zeros((64, 64))), "mask_input"),
    ],
)
def test_bad_prompts_raise_clear_errors(engine, landscape, kwargs, field):
    predictor = SamPredictor(engine)
    predictor.set_image(landscape)
    with pytest.raises(PromptError) as info:
        predictor.predict(**kwargs)
    assert info.value.field == field
    assert str(info.value).startswith(field)


def test_predict_without_image_says_what_to_do(engine):
    with pytest.raises(RuntimeError, match="set_image"):
        SamPredictor(engine).predict(np.array([[1.0, 1.0]]), np.array([1]))


@pytest.mark.parametrize("original_hw", [(1200, 1800), (600, 400), (5, 17), (3000, 4000), (1024, 1024)])
def test_lean_upscaling_is_bit_identical_to_post_process_masks(reference_model, original_hw):
    from sam_demo.engine.utils.geometry import ImageGeometry
    from sam_demo.engine.utils.transforms import upscale_logits

    _, processor = reference_model
    geometry = ImageGeometry.for_size(original_hw)
    low_res = torch.randn(3, 256, 256, generator=torch.Generator().manual_seed(0))
    ref = processor.post_process_masks([low_res[None]], [original_hw], [geometry.resized_hw], binarize=False)[0][0]
    assert torch.equal(upscale_logits(low_res, geometry), ref)


def decoder_cases(embedding):
    """SamModel prompt kwargs: points with a negative, a box, both, two boxes (two groups), and
    many points (more tokens than the attention heads' width, where re-association costs more)."""
    geometry = embedding.geometry
    points = torch.tensor(geometry.coords_to_model(np.array([[[200.0, 150.0], [300.0, 100.0]]]))[None])
    labels = torch.tensor([[[1, 0]]])
    many_xy = np.random.default_rng(0).uniform([0, 0], geometry.original_hw[::-1], size=(1, 20, 2))
    many = torch.tensor(geometry.coords_to_model(many_xy)[None])
    many_labels = torch.tensor([[[1, 0, 1, 1] * 5]])
    boxes = torch.tensor(geometry.boxes_to_model(np.array([[20.0, 30.0, 400.0, 280.0]]))[None])
    two_boxes = torch.tensor(geometry.boxes_to_model(np.array([[20.0, 30.0, 400.0, 280.0], [5, 5, 100, 90]]))[None])
    return [
        dict(input_points=points, input_labels=labels),
        dict(input_boxes=boxes),
        dict(input_points=points, input_labels=labels, input_boxes=boxes),
        dict(input_boxes=two_boxes),
        dict(input_points=many, input_labels=many_labels),
    ]


def decode_both(engine, decoder, embedding, kwargs, multimask_output):
    """(SamModel's output, the decoder's output) for one prompt, in the decoder's dtype."""
    with torch.inference_mode():
        ref = engine.model(image_embeddings=embedding.features, multimask_output=multimask_output, **kwargs)
        sparse, _ = engine.model.prompt_encoder(
            input_masks=None, **{"input_points": None, "input_labels": None, "input_boxes": None, **kwargs}
        )
        return ref, decoder.decode(decoder.prepare(embedding.features), sparse, multimask_output)


@pytest.mark.parametrize("multimask_output", [True, False])
def test_cached_decoder_is_bit_identical_to_sam_model(engine, landscape, multimask_output):
    embedding = engine.embed(landscape)
    for kwargs in decoder_cases(embedding):
        ref, (low_res, iou) = decode_both(engine, engine.decoder, embedding, kwargs, multimask_output)
        assert torch.equal(low_res, ref.pred_masks) and torch.equal(iou, ref.iou_scores)


@pytest.mark.parametrize("layer_norms", ["unit", "affine"])
@pytest.mark.parametrize("multimask_output", [True, False])
def test_fast_decoder_computes_the_same_function(engine, landscape, multimask_output, layer_norms):
    """The rearranged decoder of the fast mode, run in fp32, equals SamModel up to float rounding,
    also where the decoder's layer norms are not 1 and 0 (the random model's)."""
    from sam_demo.engine.modeling.fast_decoder import FastDecoder

    embedding = engine.embed(landscape)
    model = engine.model if layer_norms == "unit" else with_affine_layer_norms(engine.model)
    fast = FastDecoder(model)
    for kwargs in decoder_cases(embedding):
        ref, (low_res, iou) = decode_both(SimpleNamespace(model=model), fast, embedding, kwargs, multimask_output)
        assert low_res.shape == ref.pred_masks.shape and iou.shape == ref.iou_scores.shape
        scale = ref.pred_masks.abs().max().item()
        assert torch.allclose(low_res, ref.pred_masks, rtol=1e-5, atol=1e-5 * scale)
        assert torch.allclose(iou, ref.iou_scores, rtol=1e-5, atol=1e-5)


def test_bfloat16_fast_path_agrees_with_float32(engine, checkpoint, landscape):
    """Reduced precision (the CPU default where bf16 is native): close to fp32, far from chance.

    Random test models are far more sensitive than real weights (see the notes), so the bar is
    relative: the same click in bf16 and fp32 must agree much better than two different clicks.
    """
    from sam_demo import EngineConfig, load_engine

    fast = load_engine(EngineConfig(model=str(checkpoint), device="cpu", dtype="bfloat16"))
    assert fast.info.dtype == "bfloat16" and fast.decoder.dtype == torch.bfloat16
    exact_embedding, fast_embedding = engine.embed(landscape), fast.embed(landscape)
    rng = np.random.default_rng(0)
    clicks = rng.uniform([0, 0], [451, 300], size=(8, 2))
    same, different = [], []
    for a, b in zip(clicks, np.roll(clicks, 1, axis=0)):
        ones = np.ones((1, 1), np.int64)
        exact = engine.decode(exact_embedding, a[None, None], ones).masks[0]
        quick = fast.decode(fast_embedding, a[None, None], ones).masks[0]
        other = engine.decode(exact_embedding, b[None, None], ones).masks[0]
        same += [mask_iou(x, y) for x, y in zip(exact, quick)]
        different += [mask_iou(x, y) for x, y in zip(exact, other)]
    assert np.mean(same) >= 0.85 and np.mean(same) > np.mean(different) + 0.1


def test_fast_upscaling_matches_exact_upscaling():
    from sam_demo.engine.utils.geometry import ImageGeometry
    from sam_demo.engine.utils.transforms import masks_from_logits

    low_res = torch.randn(3, 256, 256, generator=torch.Generator().manual_seed(1))
    for hw in [(1200, 1800), (600, 400), (5, 17)]:
        geometry = ImageGeometry.for_size(hw)
        exact = masks_from_logits(low_res, geometry, return_logits=True)
        fast = masks_from_logits(low_res, geometry, return_logits=True, exact=False)
        assert fast.shape == exact.shape and np.abs(fast - exact).max() < 1e-4
        exact_masks, fast_masks = exact > 0, fast > 0
        assert all(mask_iou(a, b) > 0.999 for a, b in zip(exact_masks, fast_masks))


@pytest.mark.parametrize("exact", [True, False])
@pytest.mark.parametrize("return_logits", [True, False])
def test_masks_from_logits_writes_into_a_given_buffer(exact, return_logits):
    from sam_demo.engine.utils.geometry import ImageGeometry
    from sam_demo.engine.utils.transforms import masks_from_logits

    low_res = torch.randn(2, 256, 256, generator=torch.Generator().manual_seed(2))
    geometry = ImageGeometry.for_size((300, 450))
    fresh = masks_from_logits(low_res, geometry, return_logits, exact=exact)
    buffer = np.full_like(fresh, 7 if return_logits else True)
    assert masks_from_logits(low_res, geometry, return_logits, exact=exact, out=buffer) is buffer
    assert np.array_equal(buffer, fresh)
    wrong = [np.empty((2, 300, 451), fresh.dtype), np.empty((1, 300, 450), fresh.dtype), fresh.astype(np.float64)]
    for out in wrong:
        with pytest.raises(ValueError, match="not"):
            masks_from_logits(low_res, geometry, return_logits, exact=exact, out=out)


@pytest.fixture(scope="module")
def tiny_encoder_and_pixels():
    from sam_demo.engine.random_sam import build_random_sam

    encoder = build_random_sam("tiny").vision_encoder
    pixels = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        reference = encoder(pixels)[0]
    return encoder, pixels, reference


def patched_encoder_output(encoder, pixels, fast: bool) -> tuple[int, torch.Tensor]:
    import copy

    from sam_demo.engine.modeling.vision_attention import patch_vision_attention

    patched = copy.deepcopy(encoder)
    count = patch_vision_attention(patched, fast=fast)
    with torch.inference_mode():
        return count, patched(pixels)[0]


def test_blocked_vision_attention_is_bit_identical(tiny_encoder_and_pixels):
    encoder, pixels, reference = tiny_encoder_and_pixels
    count, out = patched_encoder_output(encoder, pixels, fast=False)
    assert count == 1  # the tiny ViT has one global layer
    assert torch.equal(out, reference)


def test_folded_vision_attention_computes_the_same_function(tiny_encoder_and_pixels):
    """The fast form (rel-pos bias folded into the score matmul), run in fp32, equals
    transformers' attention up to float rounding, in the windowed and the global layers."""
    encoder, pixels, reference = tiny_encoder_and_pixels
    count, out = patched_encoder_output(encoder, pixels, fast=True)
    assert count == len(encoder.layers)
    assert torch.allclose(out, reference, rtol=1e-5, atol=1e-5 * reference.abs().max().item())
    perturbed = encoder.layers[0].attn.rel_pos_h
    with torch.no_grad():  # the comparison is not vacuous: the bias matters to the output
        saved = perturbed.clone()
        perturbed.mul_(2)
        _, moved = patched_encoder_output(encoder, pixels, fast=True)
        perturbed.copy_(saved)
    assert not torch.allclose(moved, reference, rtol=1e-3, atol=1e-3 * reference.abs().max().item())
