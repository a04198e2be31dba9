"""Automatic mask generation helpers against their plain torch formulas."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sam_demo.engine.utils.amg import crop_boxes, mask_boxes, stability_and_box


def reference_stability(logits: torch.Tensor, threshold: float, offset: float) -> torch.Tensor:
    """Meta's `calculate_stability_score`: areas at threshold +- offset, summed by torch."""
    inter = (logits > threshold + offset).sum((-1, -2), dtype=torch.int64)
    union = (logits > threshold - offset).sum((-1, -2), dtype=torch.int64)
    return inter / union


def reference_box(logits: torch.Tensor, threshold: float) -> torch.Tensor:
    """Meta's `batched_mask_to_box` of the mask, in one pass over the whole map."""
    h, w = logits.shape
    mask = logits > threshold
    if not mask.any():
        return torch.zeros(4, dtype=torch.int64)
    ys, xs = torch.nonzero(mask.any(1)).flatten(), torch.nonzero(mask.any(0)).flatten()
    return torch.stack([xs.min(), ys.min(), xs.max(), ys.max()])


def _maps() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    smooth = torch.nn.functional.interpolate(torch.randn(1, 1, 9, 13, generator=g), size=(70, 90), mode="bilinear")
    block = torch.full((37, 53), -10.0)
    block[5:9, 40:52] = 4.0
    band = torch.full((37, 53), -10.0)
    band[20:23, 3:50] = 0.7  # over 0 and -1, under 1: strips around it have nothing over any
    with_nan = torch.randn(37, 53, generator=g) * 3
    with_nan[::7, ::5] = float("nan")
    return {
        "noise": torch.randn(37, 53, generator=g) * 3,
        "smooth": smooth[0, 0] * 4,
        "block": block,
        "band": band,
        "empty": torch.full((37, 53), -10.0),
        "full": torch.full((37, 53), 10.0),
        "one row": torch.randn(1, 53, generator=g),
        "one column": torch.randn(37, 1, generator=g),
        "nan": with_nan,
    }


MAPS = _maps()


@pytest.mark.parametrize("name", list(MAPS))
@pytest.mark.parametrize(("threshold", "offset"), [(0.0, 1.0), (0.5, 0.25), (-2.0, 3.0), (0.0, 0.0), (1.0, -2.0)])
@pytest.mark.parametrize("rows", [1, 8, 32])
def test_stability_and_box_are_the_torch_formulas(name, threshold, offset, rows):
    logits = MAPS[name]
    stability, box = stability_and_box(logits.numpy(), threshold, offset, rows)
    want = reference_stability(logits, threshold, offset)
    assert stability.dtype == want.dtype == torch.float32 and stability.shape == ()
    assert torch.equal(stability, want) or (stability.isnan() and want.isnan())
    assert box.dtype == torch.int64 and torch.equal(box, reference_box(logits, threshold))
    assert torch.equal(box, mask_boxes((logits > threshold)[None])[0])


def test_a_mask_with_nothing_over_either_threshold_is_0_over_0():
    stability, box = stability_and_box(np.full((8, 8), -5.0, np.float32), 0.0, 1.0)
    assert stability.isnan() and box.tolist() == [0, 0, 0, 0]


@pytest.mark.parametrize(
    ("hw", "layers", "count"),
    [
        ((1500, 2250), 1, 1 + 4),
        ((1500, 2250), 2, 1 + 4 + 16),
        ((1, 1), 1, 1 + 1),
        ((1, 7), 2, 1 + 2 + 4),
        ((3, 2), 1, 1 + 4),
    ],
)
def test_crop_boxes_cover_the_image_and_none_is_empty(hw, layers, count):
    boxes = crop_boxes(hw, layers, 512 / 1500)
    assert len(boxes) == count and boxes[0] == ((0, 0, hw[1], hw[0]), 0)
    for layer in range(1, layers + 1):
        covered = np.zeros(hw, bool)
        for (x0, y0, x1, y1), _ in (b for b in boxes if b[1] == layer):
            assert 0 <= x0 < x1 <= hw[1] and 0 <= y0 < y1 <= hw[0]
            covered[y0:y1, x0:x1] = True
        assert covered.all()
