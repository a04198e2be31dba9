"""Automatic mask generation helpers against their plain torch formulas."""

from __future__ import annotations

import pytest
import torch

from sam_demo.engine.utils.amg import stability_scores


def reference(logits: torch.Tensor, threshold: float, offset: float) -> torch.Tensor:
    """Meta's `calculate_stability_score`: areas at threshold +- offset, summed by torch."""
    inter = (logits > threshold + offset).sum((-1, -2), dtype=torch.int64)
    union = (logits > threshold - offset).sum((-1, -2), dtype=torch.int64)
    return inter / union


@pytest.mark.parametrize(("threshold", "offset"), [(0.0, 1.0), (0.5, 0.25), (-2.0, 3.0)])
def test_stability_scores_are_the_torch_formulas(threshold, offset):
    logits = torch.randn(5, 37, 53, generator=torch.Generator().manual_seed(0)) * 3
    logits[3] = -10.0  # nothing over either threshold: 0 / 0
    logits[4, :, :20] = offset + threshold + 0.5  # a block over both
    ours, want = stability_scores(logits, threshold, offset), reference(logits, threshold, offset)
    assert ours.dtype == want.dtype and ours.shape == (5,)
    assert torch.equal(ours[[0, 1, 2, 4]], want[[0, 1, 2, 4]]) and ours[3].isnan() and want[3].isnan()


def test_stability_scores_of_no_masks():
    assert stability_scores(torch.zeros(0, 8, 8), 0.0, 1.0).shape == (0,)
