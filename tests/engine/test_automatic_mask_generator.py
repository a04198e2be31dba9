"""Segment everything: equal to transformers' pipeline("mask-generation"), from the cached embedding."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from sam_demo import SamPredictor
from sam_demo.engine.automatic_mask_generator import EverythingConfig, generate
from sam_demo.engine.config import EngineConfig
from sam_demo.engine.loading import load_engine
from sam_demo.engine.utils.amg import nms, remove_small_regions
from tests.support.photos import PHOTOS, asset
from tests.support.reference import mask_iou

PIPELINE_PYTHON = os.environ.get("SAM_PIPELINE_PYTHON")
REFERENCE_SCRIPT = Path(__file__).resolve().parents[1] / "support" / "pipeline_reference.py"


def pipeline_masks(checkpoint, image_path: Path, options: dict, tmp_path: Path) -> np.ndarray:
    if not PIPELINE_PYTHON:
        if os.environ.get("CI"):
            raise RuntimeError("CI must set SAM_PIPELINE_PYTHON (a Python with torch + torchvision), see .ci/run")
        pytest.skip("set SAM_PIPELINE_PYTHON to a Python with torchvision to compare with the pipeline")
    out = tmp_path / f"reference-{time.monotonic_ns()}.npz"
    done = subprocess.run(
        [PIPELINE_PYTHON, str(REFERENCE_SCRIPT), str(checkpoint), str(image_path), str(out), json.dumps(options)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return np.load(out)["masks"]


def assert_same_masks(ours, reference: np.ndarray):
    assert len(ours) == len(reference)
    unused = list(range(len(reference)))
    for m in ours:
        best = max(unused, key=lambda j: mask_iou(m.segmentation, reference[j]))
        assert mask_iou(m.segmentation, reference[best]) >= 0.99
        unused.remove(best)


@pytest.mark.parametrize("nms_thresh", [1.0, 0.7])
def test_matches_transformers_pipeline(engine, checkpoint, tmp_path, nms_thresh):
    # Thresholds suit the random test model (its IoU predictions and stability are low): with
    # Meta's defaults it keeps no mask at all and the comparison would prove nothing.
    config = EverythingConfig(
        points_per_side=8, pred_iou_thresh=0.5, stability_score_thresh=0.3, box_nms_thresh=nms_thresh
    )
    ours = generate(engine, asset("chelsea.png"), config)
    reference = pipeline_masks(
        checkpoint,
        PHOTOS / "chelsea.png",
        {
            "points_per_batch": 64,
            "points_per_crop": 8,
            "pred_iou_thresh": 0.5,
            "stability_score_thresh": 0.3,
            "crops_nms_thresh": nms_thresh,
        },
        tmp_path,
    )
    assert len(ours) >= (20 if nms_thresh == 1.0 else 1)
    assert_same_masks(ours, reference)


def test_uses_the_cached_embedding(engine, monkeypatch):
    predictor = SamPredictor(engine)
    predictor.set_image(asset("coffee.png"))
    calls = []
    original = engine.model.get_image_embeddings
    monkeypatch.setattr(engine.model, "get_image_embeddings", lambda pv: calls.append(1) or original(pv))
    masks = predictor.segment_everything(
        EverythingConfig(points_per_side=4, pred_iou_thresh=0, stability_score_thresh=0)
    )
    assert calls == [] and len(masks) >= 1


def test_crop_layers_small_regions_and_coco(engine):
    image = asset("chelsea.png")
    masks = generate(
        engine,
        image,
        EverythingConfig(
            points_per_side=4, crop_n_layers=1, pred_iou_thresh=0.3, stability_score_thresh=0.2, min_mask_region_area=50
        ),
    )
    assert masks and all(m.segmentation.shape == (300, 451) for m in masks)
    areas = [int(m.segmentation.sum()) for m in masks]
    assert areas == sorted(areas, reverse=True)
    annotation = masks[0].to_coco(1)
    rle = {"size": annotation["segmentation"]["size"], "counts": annotation["segmentation"]["counts"].encode()}
    assert np.array_equal(mask_utils.decode(rle).astype(bool), masks[0].segmentation)
    assert annotation["area"] == areas[0] and len(annotation["bbox"]) == 4 and "stability_score" in annotation


def test_small_regions_and_nms_helpers():
    mask = np.zeros((40, 40), bool)
    mask[5:30, 5:30] = True
    mask[10:12, 10:12] = False  # a 4-pixel hole
    mask[35:37, 35:37] = True  # a 4-pixel island
    cleaned = remove_small_regions(mask, 10)
    assert cleaned[10:12, 10:12].all() and not cleaned[35:37, 35:37].any() and cleaned[5:30, 5:30].all()
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]], dtype=torch.float)
    assert nms(boxes, torch.tensor([0.5, 0.9, 0.1]), 0.7).tolist() == [1, 2]


def test_a_stop_ends_the_run_after_the_decoder_call_under_way_keeping_what_it_found(engine):
    config = EverythingConfig(
        points_per_side=6, points_per_batch=4, pred_iou_thresh=0, stability_score_thresh=0, box_nms_thresh=1.0
    )
    calls = []
    everything = generate(engine, asset("chelsea.png"), config, progress=lambda done, total: calls.append(done))
    calls.clear()
    found = generate(
        engine, asset("chelsea.png"), config, lambda done, total: calls.append(done), lambda: len(calls) >= 2
    )
    assert calls == [4, 8], "two decoder calls of 4 points, then no more"
    points = {m.point_xy for m in found}
    assert len(points) == 8 and len(found) < len(everything), "the masks of the 8 points decoded"
    assert generate(engine, asset("chelsea.png"), config, stop=lambda: True) == [], "stopped before it began"


def test_the_fast_modes_calls_run_side_by_side_with_the_masks_of_one_at_a_time(checkpoint, monkeypatch):
    """On a CPU the fast mode decodes its calls of 2 prompts on the plan's workers, one torch thread
    each: the masks are those of the same calls made one at a time on the caller's threads."""
    fast = load_engine(EngineConfig(model=str(checkpoint), device="cpu", dtype="float32"))
    workers = fast.plan.everything_workers
    if workers < 2:
        pytest.skip("one torch thread here: the calls run one at a time")
    config = EverythingConfig(points_per_side=8, pred_iou_thresh=0.5, stability_score_thresh=0.3, box_nms_thresh=1.0)
    threads = set()
    original = fast.decode_candidates
    monkeypatch.setattr(
        fast,
        "decode_candidates",
        lambda *a: threads.add((threading.current_thread().name, torch.get_num_threads())) or original(*a),
    )
    calls = []
    side_by_side = generate(fast, asset("chelsea.png"), config, progress=lambda done, total: calls.append(done))
    assert calls == list(range(2, 65, 2)), "progress in point order, a call of 2 at a time"
    assert {name.split("_")[0] for name, _ in threads} == {"sam-everything"} and len(threads) == workers
    assert {count for _, count in threads} == {1}
    monkeypatch.setattr(fast, "_everything_pool", None)
    threads.clear()
    one_at_a_time = generate(fast, asset("chelsea.png"), config)
    assert {name for name, _ in threads} == {threading.current_thread().name}
    assert len(side_by_side) >= 20
    assert [m.point_xy for m in side_by_side] == [m.point_xy for m in one_at_a_time]
    assert all(mask_iou(a.segmentation, b.segmentation) > 0.99 for a, b in zip(side_by_side, one_at_a_time))


def test_full_size_masks_are_made_one_at_a_time_and_kept_as_rle(checkpoint):
    """Each worker upscales its candidates into one float buffer, one at a time, and the masks kept
    are made one at a time and kept as compressed RLE: segmentation everything's peak memory is a
    few full-size float masks, not a full-size mask per candidate or per mask returned (which on a
    50 MP photo was gigabytes)."""
    fast = load_engine(EngineConfig(model=str(checkpoint), device="cpu", dtype="float32"))
    image = np.ascontiguousarray(np.random.default_rng(0).integers(0, 255, (1500, 2000, 3), np.uint8))
    fast.embed(image)
    # no bar and no NMS: every candidate is upscaled and every one is returned
    config = EverythingConfig(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0)
    tracemalloc.start()
    try:
        masks = generate(fast, image, config)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    float_mask, bool_mask = 4 * 1500 * 2000, 1500 * 2000
    assert len(masks) == 4 * 4 * 3
    # the workers' buffers, then one survivor at a time: its float logits, bool mask and their RLE
    assert peak < (fast.plan.everything_workers + 3) * float_mask  # was 183 MB, the bool masks 144 MB of it
    assert sum(len(m.rle["counts"]) for m in masks) < len(masks) * bool_mask / 4  # even the random model's noise
    first = masks[0]
    assert first.segmentation.shape == (1500, 2000) and first.segmentation.dtype == bool
    assert first.area == int(first.segmentation.sum()) == max(m.area for m in masks)
    assert first.rle == mask_utils.encode(np.asfortranarray(first.segmentation, dtype=np.uint8))


def test_full_size_masks_are_made_only_for_the_masks_the_nms_keeps(checkpoint, monkeypatch):
    """Candidates keep their low-res logits and box through the NMS; only the survivors are
    upscaled again into masks (a bool mask per candidate was the image's size each), and in the
    fast mode on the workers that decoded them."""
    import sam_demo.engine.automatic_mask_generator as amg

    fast = load_engine(EngineConfig(model=str(checkpoint), device="cpu", dtype="float32"))
    made, real = [], amg.masks_from_logits
    monkeypatch.setattr(
        amg, "masks_from_logits", lambda *a, **k: made.append(threading.current_thread().name) or real(*a, **k)
    )
    config = EverythingConfig(points_per_side=6, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=0.7)
    masks = generate(fast, asset("chelsea.png"), config)
    candidates = 6 * 6 * 3  # every candidate is over the IoU bar: full-size logits for each
    assert 0 < len(masks) < candidates / 2, "the NMS drops most of them"
    assert len(made) == candidates + len(masks), "then a full-size mask for each mask returned, none for the others"
    if fast.plan.everything_workers > 1:
        assert {name.split("_")[0] for name in made} == {"sam-everything"}
