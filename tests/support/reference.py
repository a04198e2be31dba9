"""The transformers reference recipe that our engine must reproduce (the naive click path)."""

from __future__ import annotations

import numpy as np
import torch


def reference_predict(model, processor, image, points=None, labels=None, boxes=None, mask_input=None, multimask=True):
    """SamProcessor + SamModel + post_process_masks (threshold 0), as the transformers docs show.

    points: (G, N, 2), labels: (G, N), boxes: (G, 4) in original pixels; mask_input (1, 256, 256).
    Returns masks (G, C, H, W) bool, scores (G, C) and low-res logits (G, C, 256, 256).
    """
    kwargs = {}
    if points is not None:
        kwargs["input_points"] = [np.asarray(points).tolist()]
    if labels is not None:
        kwargs["input_labels"] = [np.asarray(labels).tolist()]
    if boxes is not None:
        kwargs["input_boxes"] = [np.asarray(boxes).tolist()]
    inputs = processor(images=image, return_tensors="pt", input_data_format="channels_last", **kwargs)
    extra = {}
    if mask_input is not None:
        extra["input_masks"] = torch.from_numpy(np.asarray(mask_input, dtype=np.float32)).reshape(1, 1, 256, 256)
    with torch.no_grad():
        out = model(
            **{k: v for k, v in inputs.items() if k not in ("original_sizes", "reshaped_input_sizes")},
            multimask_output=multimask,
            **extra,
        )
    masks = processor.post_process_masks(out.pred_masks, inputs["original_sizes"], inputs["reshaped_input_sizes"])[0]
    return masks.numpy(), out.iou_scores[0].numpy(), out.pred_masks[0].numpy()


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def with_affine_layer_norms(model, seed: int = 5):
    """A copy of a SamModel whose mask decoder's layer norms have random weights (1 + N(0, 0.2)) and
    biases (N(0, 0.2)). The tests' random model keeps them at 1 and 0, under which a rearranged
    decoder that mishandles them would still agree with the reference."""
    import copy

    model = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.mask_decoder.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.copy_(1 + 0.2 * torch.randn(module.weight.shape, generator=generator))
                module.bias.copy_(0.2 * torch.randn(module.bias.shape, generator=generator))
    return model
