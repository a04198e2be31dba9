"""Segment everything: SAM's automatic mask generation from the cached image embedding.

A grid of single-point prompts is decoded in batches against the image's cached embedding (no
second encode), then filtered as Meta's `SamAutomaticMaskGenerator` and transformers'
`pipeline("mask-generation")` do: predicted IoU, stability score, box NMS, and optionally crop
layers (each crop is encoded once, through the same cache) and a minimum region area.
Full-resolution logits are made only for masks that pass the IoU filter, one at a time into a
reused buffer; those that pass the stability filter keep their low-res logits and box through the
box NMS, and only the masks it keeps are made full-size, on the same workers, each kept as
compressed RLE (a busy photo's hundreds of masks would be the image's size each as bool arrays).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

import numpy as np
import torch
from pycocotools import mask as mask_utils

from sam_demo.engine.sam_engine import SamEngine
from sam_demo.engine.utils.amg import (
    crop_boxes,
    mask_boxes,
    near_crop_edge,
    nms,
    point_grid,
    remove_small_regions,
    stability_and_box,
)
from sam_demo.engine.utils.coco import coco_rle_annotation, decode_rle, encode_rle
from sam_demo.engine.utils.geometry import ImageGeometry
from sam_demo.engine.utils.images import to_rgb_array
from sam_demo.engine.utils.prompts import finite_number
from sam_demo.engine.utils.transforms import masks_from_logits

__all__ = ["AutoMask", "EverythingConfig", "coco_result", "generate"]


@dataclass(frozen=True)
class EverythingConfig:
    """Meta's SamAutomaticMaskGenerator defaults, except `points_per_batch`.

    points_per_batch: prompts per decoder call; it changes speed and memory, not the masks.
    None: the engine's plan's (`everything_batch`): 64 (Meta's) on GPUs; 2 on CPUs in the fast mode,
    whose calls run side by side, one per torch thread (`everything_workers`); 1 in the exact mode.
    """

    points_per_side: int = 32
    points_per_batch: int | None = None
    pred_iou_thresh: float = 0.88
    stability_score_thresh: float = 0.95
    stability_score_offset: float = 1.0
    box_nms_thresh: float = 0.7
    crop_n_layers: int = 0
    crop_nms_thresh: float = 0.7
    crop_overlap_ratio: float = 512 / 1500
    crop_n_points_downscale_factor: int = 1
    min_mask_region_area: int = 0

    def __post_init__(self):
        if self.points_per_side < 1 or (self.points_per_batch is not None and self.points_per_batch < 1):
            raise ValueError("points_per_side and points_per_batch must be at least 1")
        if self.crop_n_layers < 0 or self.min_mask_region_area < 0:
            raise ValueError("crop_n_layers and min_mask_region_area must be >= 0")
        thresholds = (self.pred_iou_thresh, self.stability_score_thresh, self.box_nms_thresh, self.crop_nms_thresh)
        if not all(finite_number(v) for v in thresholds):
            raise ValueError(
                "pred_iou_thresh, stability_score_thresh and the NMS thresholds must be finite numbers (0 to 1), "
                f"not {thresholds}"
            )


@dataclass(frozen=True)
class AutoMask:
    """One generated mask.

    Args:
        rle (`dict`):
            The mask in the image's pixels as pycocotools' compressed RLE, {"size": [H, W], "counts":
            bytes}; `segmentation` decodes it.
        predicted_iou (`float`):
            The decoder's estimate of the mask's IoU.
        stability_score (`float`):
            IoU of the mask binarised at logit +offset and -offset.
        box_xyxy (`tuple[int, int, int, int]`):
            Inclusive pixel bounds of the mask, [x0, y0, x1, y1].
        point_xy (`tuple[float, float]`):
            The grid point that prompted it, [x, y] in the image's pixels.
        crop_box_xyxy (`tuple[int, int, int, int]`):
            The crop it was found in, [x0, y0, x1, y1]; the whole image without crop layers.
    """

    rle: dict
    predicted_iou: float
    stability_score: float
    box_xyxy: tuple[int, int, int, int]
    point_xy: tuple[float, float]
    crop_box_xyxy: tuple[int, int, int, int]

    @property
    def segmentation(self) -> np.ndarray:
        """The mask, (H, W) bool, decoded from `rle` on each access."""
        return decode_rle(self.rle)

    @property
    def area(self) -> int:
        """The mask's pixels."""
        return int(mask_utils.area(self.rle))

    def to_coco(self, annotation_id: int, image_id: int = 1) -> dict:
        """COCO annotation with compressed RLE, bbox (XYWH), area and SAM's scores."""
        return coco_rle_annotation(
            self.rle,
            annotation_id,
            image_id,
            predicted_iou=self.predicted_iou,
            stability_score=self.stability_score,
            point_coords=[list(self.point_xy)],
            crop_box=list(self.crop_box_xyxy),
        )


def coco_result(image_hw: tuple[int, int], masks: list[AutoMask]) -> dict:
    """{"width", "height", "annotations": COCO annotations with RLE, ids from 1}: what the batch
    command's --everything lines and the /segment_everything API return."""
    return {
        "width": int(image_hw[1]),
        "height": int(image_hw[0]),
        "annotations": [m.to_coco(i + 1) for i, m in enumerate(masks)],
    }


def generate(
    engine: SamEngine, image, config: EverythingConfig = EverythingConfig(), progress=None, stop=None
) -> list[AutoMask]:
    """Every mask SAM finds in `image`: a point grid decoded from the cached embedding, then filtered.

    Arguments:
      engine (SamEngine): the engine whose cache holds (or will hold) the image's embedding.
      image (np.ndarray or PIL.Image): any form `SamEngine.embed` takes, (H, W, 3) uint8 RGB.
      config (EverythingConfig): the grid, the filters and the crop layers (Meta's defaults).
      progress (callable or None): progress(done_points, total_points), after each decoder call.
      stop (callable or None): stop() is asked after each decoder call; once it is true, no more
        decoder calls start (those already under way on other workers finish and are dropped),
        and the masks of the points reported to `progress` are filtered and returned.

    Returns:
      (list(AutoMask)): the masks that pass the filters, sorted by area, largest first; each held
        as compressed RLE (`AutoMask.segmentation` decodes it, (H, W) bool).
    """
    rgb = to_rgb_array(image, engine.max_pixels)
    image_hw = rgb.shape[:2]
    crops = crop_boxes(image_hw, config.crop_n_layers, config.crop_overlap_ratio)
    grids = [
        point_grid(max(1, int(config.points_per_side / config.crop_n_points_downscale_factor**layer)))
        for layer in range(config.crop_n_layers + 1)
    ]
    per_call = config.points_per_batch or engine.plan.everything_batch
    total = sum(len(grids[layer]) for _, layer in crops)
    done, candidates = 0, []
    scratch = threading.local()  # each worker's float buffer for its candidates' full-size logits
    stopped = lambda: stop is not None and stop()  # noqa: E731
    for crop, layer in crops:
        if stopped():
            break
        x0, y0, x1, y1 = crop
        embedding = engine.embed(rgb if layer == 0 else np.ascontiguousarray(rgb[y0:y1, x0:x1]))
        points = grids[layer] * np.array([x1 - x0, y1 - y0])
        crop_candidates = []
        batches = [points[start : start + per_call] for start in range(0, len(points), per_call)]
        decode = partial(_decode_batch, engine, embedding, crop=crop, image_hw=image_hw, config=config, scratch=scratch)
        for batch, found in engine.map_everything(decode, batches):
            crop_candidates += found
            done += len(batch)
            if progress is not None:
                progress(done, total)
            if stopped():
                break
        candidates += _dedupe(crop_candidates, config.box_nms_thresh)
    if len(crops) > 1:
        candidates = _dedupe(candidates, config.crop_nms_thresh, prefer_small_crops=True)
    materialise = partial(_materialised, image_hw=image_hw, exact_upscale=engine.exact_upscale, scratch=scratch)
    results = [mask for _, mask in engine.map_everything(materialise, candidates)]
    if config.min_mask_region_area > 0:
        results = _clean_small_regions(results, config)
    return sorted(results, key=lambda m: -m.area)


@dataclass(frozen=True)
class _Candidate:
    """A mask over the IoU and stability bars, kept as its low-res logits until the box NMS has
    chosen: a full-size bool mask per candidate is the image's size each (gigabytes for a big
    photo's grid with low bars). Its fields are `AutoMask`'s, but for the logits and their frame."""

    low_res: torch.Tensor  # (h, w) float32, covering geometry.low_res_extent
    geometry: ImageGeometry  # the crop's
    predicted_iou: float
    stability_score: float
    box_xyxy: tuple[int, int, int, int]
    point_xy: tuple[float, float]
    crop_box_xyxy: tuple[int, int, int, int]


Masked = TypeVar("Masked", AutoMask, _Candidate)


def _decode_batch(engine, embedding, points_xy, crop, image_hw, config, scratch) -> list[_Candidate]:
    """Decode single-point prompts (3 candidates each) and keep the candidates that pass the filters.

    The candidates over the IoU bar are upscaled one at a time into this worker's float buffer
    (`scratch.logits`, reused across its calls: a fresh multi-MB array per candidate costs its page
    faults); those that pass the stability filter keep their low-res logits and box."""
    min_iou = config.pred_iou_thresh if config.pred_iou_thresh > 0 else -float("inf")
    group, _, low_res, scores = engine.decode_candidates(embedding, points_xy, min_iou)  # the IoU filter
    x0, y0, _, _ = crop
    buffer = _logits_buffer(scratch, embedding.geometry.original_hw)
    out = []
    for index in range(len(scores)):
        masks_from_logits(
            low_res[index : index + 1], embedding.geometry, return_logits=True, exact=engine.exact_upscale, out=buffer
        )
        stability, box = stability_and_box(buffer[0], 0.0, config.stability_score_offset)
        if config.stability_score_thresh > 0 and not stability > config.stability_score_thresh:
            continue
        box = (box + torch.tensor([x0, y0, x0, y0]))[None]
        if near_crop_edge(box, crop, image_hw)[0]:
            continue
        px, py = points_xy[int(group[index])]
        out.append(
            _Candidate(
                low_res[index].clone(),
                embedding.geometry,
                float(scores[index]),
                float(stability),
                tuple(int(v) for v in box[0]),
                (float(px + x0), float(py + y0)),
                crop,
            )
        )
    return out


def _logits_buffer(scratch: threading.local, hw: tuple[int, int]) -> np.ndarray:
    """This worker's (1, H, W) float32 buffer for full-size logits, made anew when the size changes."""
    buffer = getattr(scratch, "logits", None)
    if buffer is None or buffer.shape != (1, *hw):
        buffer = scratch.logits = np.empty((1, *hw), dtype=np.float32)
    return buffer


def _materialised(
    candidate: _Candidate, image_hw: tuple[int, int], exact_upscale: bool, scratch: threading.local
) -> AutoMask:
    """The candidate's full-size mask in the image's pixels, the same upscale as its filters saw
    (into this worker's buffer), kept as compressed RLE."""
    buffer = _logits_buffer(scratch, candidate.geometry.original_hw)
    masks_from_logits(candidate.low_res[None], candidate.geometry, return_logits=True, exact=exact_upscale, out=buffer)
    mask = buffer[0] > 0
    x0, y0, x1, y1 = candidate.crop_box_xyxy
    if (x0, y0, x1, y1) != (0, 0, image_hw[1], image_hw[0]):
        full = np.zeros(image_hw, dtype=bool)
        full[y0:y1, x0:x1] = mask
        mask = full
    return AutoMask(
        encode_rle(mask),
        candidate.predicted_iou,
        candidate.stability_score,
        candidate.box_xyxy,
        candidate.point_xy,
        candidate.crop_box_xyxy,
    )


def _dedupe(masks: list[Masked], threshold: float, prefer_small_crops: bool = False) -> list[Masked]:
    """The masks (or candidates) kept by box NMS: by predicted IoU within a crop, smaller crops first across them."""
    if prefer_small_crops:  # as Meta: across crops, masks from smaller crops win
        scores = [1 / max(1, (c[2] - c[0]) * (c[3] - c[1])) for c in (m.crop_box_xyxy for m in masks)]
    else:
        scores = [m.predicted_iou for m in masks]
    return _keep_by_nms(masks, scores, threshold)


def _keep_by_nms(masks: list[Masked], scores: list[float], threshold: float) -> list[Masked]:
    if not masks:
        return []
    boxes = torch.tensor([m.box_xyxy for m in masks], dtype=torch.float)
    return [masks[i] for i in nms(boxes, torch.tensor(scores), threshold).tolist()]


def _clean_small_regions(masks: list[AutoMask], config: EverythingConfig) -> list[AutoMask]:
    cleaned, scores = [], []
    for m in masks:
        original = m.segmentation
        seg = remove_small_regions(original, config.min_mask_region_area)
        unchanged = np.array_equal(seg, original)
        cleaned.append(
            AutoMask(
                m.rle if unchanged else encode_rle(seg),
                m.predicted_iou,
                m.stability_score,
                tuple(int(v) for v in mask_boxes(torch.from_numpy(seg)[None])[0]),
                m.point_xy,
                m.crop_box_xyxy,
            )
        )
        scores.append(1.0 if unchanged else 0.0)  # prefer unchanged masks, as Meta
    return _keep_by_nms(cleaned, scores, config.box_nms_thresh)
