"""The engine's two modes: the fast mode in float32 (the default on CPUs without native bf16) is
within a pixel of the exact mode (bit-equal to transformers, see test_predictor.py), for clicks,
boxes, points with a box, several groups, and segment everything."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

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
