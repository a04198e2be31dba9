"""The naive baseline: the transformers SAM recipe, as its docs show it (processor, model, post-processing)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


class Naive:
    """The transformers reference recipe, as its docs show it."""

    def __init__(self, path: str, device: torch.device):
        from transformers import SamModel, SamProcessor

        self.processor = SamProcessor.from_pretrained(path)
        self.model = SamModel.from_pretrained(path).to(device).eval()
        self.device = device

    @torch.inference_mode()
    def embed(self, image: np.ndarray) -> torch.Tensor:
        pixel_values = self.processor(images=image, return_tensors="pt")["pixel_values"].to(self.device)
        return self.model.get_image_embeddings(pixel_values)

    @torch.inference_mode()
    def click(self, image: np.ndarray, embeddings: torch.Tensor, xy) -> torch.Tensor:
        inputs = self.processor(images=image, input_points=[[[list(xy)]]], return_tensors="pt")
        out = self.model(
            image_embeddings=embeddings,
            input_points=inputs["input_points"].to(self.device),
            input_labels=torch.ones((1, 1, 1), dtype=torch.int64, device=self.device),
        )
        return self.processor.post_process_masks(
            out.pred_masks.cpu(), inputs["original_sizes"], inputs["reshaped_input_sizes"]
        )[0]

    @torch.inference_mode()
    def full(self, image: Image.Image, box) -> tuple:
        inputs = self.processor(images=image, input_boxes=[[list(box)]], return_tensors="pt").to(self.device)
        out = self.model(
            **{k: v for k, v in inputs.items() if k not in ("original_sizes", "reshaped_input_sizes")},
            multimask_output=False,
        )
        masks = self.processor.post_process_masks(
            out.pred_masks.cpu(), inputs["original_sizes"].cpu(), inputs["reshaped_input_sizes"].cpu()
        )[0]
        return masks, out.iou_scores
