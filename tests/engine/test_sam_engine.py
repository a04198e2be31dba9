"""The engine's two modes: the fast mode in float32 (the default on CPUs without native bf16) is
within a pixel of the exact mode (bit-equal to transformers, see test_predictor.py), for clicks,
boxes, points with a box, several groups, and segment everything."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from sam_demo import EngineConfig, load_engine
from sam_demo.engine.automatic_mask_generator import EverythingConfig, generate

# (points_xy (G, N, 2), labels (G, N), boxes_xyxy (G, 4)) in the 451x300 photo's pixels
PROMPTS = {
    "click": ([[[200.0, 150.0]]], [[1]], None),
    "clicks, one negative": ([[[120.0, 80.0], [300.0, 200.0]]], [[1, 0]], None),
    "box": (None, None, [[40.0, 30.0, 380.0, 260.0]]),
    "points and a box": ([[[200.0, 150.0]]], [[1]], [[60.0, 40.0, 350.0, 280.0]]),
    "three groups": ([[[50.0, 50.0]], [[225.0, 150.0]], [[400.0, 250.0]]], [[1], [1], [1]], None),
}


def off_the_edge(fast: np.ndarray, exact: np.ndarray) -> int:
    """Pixels where `fast` differs from `exact` (H, W) other than within one pixel of its edge."""
    kernel = np.ones((3, 3), np.uint8)
    exact_u8 = exact.astype(np.uint8)
    edge = cv2.dilate(exact_u8, kernel).astype(bool) & ~cv2.erode(exact_u8, kernel).astype(bool)
    return int(((fast != exact) & ~edge).sum())


@pytest.fixture(scope="module")
def fast_fp32(checkpoint):
    engine = load_engine(EngineConfig(model=str(checkpoint), device="cpu", dtype="float32"))
    assert not engine.exact and engine.plan.decoder == "fast" and engine.plan.upscaler == "opencv"
    return engine


def test_a_planted_difference_off_the_edge_is_counted():
    exact = np.zeros((40, 40), bool)
    exact[10:30, 10:30] = True
    moved = np.roll(exact, 1, axis=1)  # one pixel over: every change is on the edge
    far = exact.copy()
    far[20, 20] = False  # a hole in the middle
    assert off_the_edge(moved, exact) == 0 and off_the_edge(far, exact) == 1


@pytest.mark.parametrize("name", PROMPTS)
@pytest.mark.parametrize("multimask", [True, False])
def test_the_fast_float32_mode_is_within_a_pixel_of_the_exact_mode(engine, fast_fp32, landscape, name, multimask):
    points, labels, boxes = (None if v is None else np.asarray(v) for v in PROMPTS[name])
    exact = engine.decode(engine.embed(landscape), points, labels, boxes, multimask_output=multimask)
    fast = fast_fp32.decode(fast_fp32.embed(landscape), points, labels, boxes, multimask_output=multimask)
    assert fast.masks.shape == exact.masks.shape and exact.masks.any()
    assert np.abs(fast.iou_scores - exact.iou_scores).max() < 1e-4
    assert np.abs(fast.low_res_logits - exact.low_res_logits).max() < 1e-3
    for f, e in zip(fast.masks.reshape(-1, *landscape.shape[:2]), exact.masks.reshape(-1, *landscape.shape[:2])):
        assert off_the_edge(f, e) == 0


def test_segment_everything_in_the_fast_float32_mode_finds_the_exact_modes_masks(engine, fast_fp32, landscape):
    config = EverythingConfig(points_per_side=6, pred_iou_thresh=0.5, stability_score_thresh=0.3, box_nms_thresh=1.0)
    exact, fast = generate(engine, landscape, config), generate(fast_fp32, landscape, config)
    assert len(exact) >= 3 and len(fast) == len(exact)
    for f, e in zip(fast, exact):
        assert f.point_xy == e.point_xy and abs(f.predicted_iou - e.predicted_iou) < 1e-4
        assert off_the_edge(f.segmentation, e.segmentation) == 0


@pytest.mark.parametrize("min_iou", [-float("inf"), 0.5, float("inf")])
@pytest.mark.parametrize("mode", ["exact", "fast"])
def test_segment_everythings_candidates_are_the_decoders_over_the_iou_bar_on_the_image(
    engine, fast_fp32, landscape, min_iou, mode, monkeypatch
):
    eng = engine if mode == "exact" else fast_fp32
    points = np.array([[50.0, 40.0], [225.0, 150.0], [400.0, 260.0], [10.0, 290.0]])
    embedding = eng.embed(landscape)
    in_h, in_w = embedding.geometry.low_res_extent
    low_res, iou = eng.decode_low_res(embedding, points[:, None], np.ones((4, 1), np.int64))
    heads = []  # the groups the fast mode's upscaling head runs for
    if mode == "fast":
        real = eng.decoder._mask_logits
        monkeypatch.setattr(eng.decoder, "_mask_logits", lambda *a, **k: heads.append(len(a[0])) or real(*a, **k))
    group, candidate, logits, scores = eng.decode_candidates(embedding, points, min_iou)
    want = torch.nonzero(iou > min_iou)
    assert group.tolist() == want[:, 0].tolist() and candidate.tolist() == want[:, 1].tolist()
    assert logits.shape[1] >= in_h and logits.shape[2] >= in_w
    if mode == "exact":  # the reference's, filtered: bit-equal
        rows, cols = logits.shape[1:]
        assert torch.equal(scores, iou[group, candidate])
        assert torch.equal(logits, low_res[group, candidate][:, :rows, :cols])
        return
    assert torch.allclose(scores, iou[group, candidate], atol=1e-5)
    assert torch.allclose(logits[:, :in_h, :in_w], low_res[group, candidate][:, :in_h, :in_w], atol=1e-4)
    with_candidate = len(set(group.tolist()))
    assert heads == ([with_candidate] if with_candidate else []), "the head runs for those groups only"
    assert logits.shape[1] == 4 * 43 and logits.shape[2] == 256, "over the image's 43 of 64 token rows (451x300)"


@pytest.mark.parametrize("mode", ["exact", "fast"])
@pytest.mark.parametrize("orientation", ["landscape", "portrait"])
def test_without_the_full_frame_only_the_images_logits_are_made_and_the_masks_do_not_change(
    engine, fast_fp32, landscape, mode, orientation
):
    eng = engine if mode == "exact" else fast_fp32
    image = landscape if orientation == "landscape" else np.ascontiguousarray(landscape.transpose(1, 0, 2))
    embedding = eng.embed(image)
    points, labels = np.array([[[100.0, 120.0]], [[250.0, 200.0]]]), np.ones((2, 1), np.int64)
    full = eng.decode(embedding, points, labels)
    part = eng.decode(embedding, points, labels, full_frame=False)
    in_h, in_w = embedding.geometry.low_res_extent  # 451x300 -> resized 1024x681 -> 172 rows of logits
    want = (-(-in_h // 4) * 4, -(-in_w // 4) * 4)  # whole image tokens: 4 logits each way
    assert want == ((172, 256) if orientation == "landscape" else (256, 172))
    assert part.low_res_logits.shape == (2, 3, *want) and full.low_res_logits.shape == (2, 3, 256, 256)
    assert part.low_res_logits.flags.c_contiguous, "its own memory, not a view of the whole frame's"
    cut = full.low_res_logits[..., : want[0], : want[1]]
    if mode == "exact":
        assert np.array_equal(part.low_res_logits, cut) and np.array_equal(part.masks, full.masks)
    else:
        assert np.abs(part.low_res_logits - cut).max() < 1e-5
        assert np.array_equal(part.masks, full.masks)
    assert np.array_equal(part.iou_scores, full.iou_scores)
