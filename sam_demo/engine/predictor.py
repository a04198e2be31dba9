"""`SamPredictor`: Meta's segment-anything predictor contract on top of `SamEngine`.

    predictor = load_predictor("facebook/sam-vit-large")
    predictor.set_image(image)                       # HxWx3 uint8 RGB or a PIL image
    masks, scores, logits = predictor.predict(point_coords=np.array([[500, 375]]),
                                              point_labels=np.array([1]))

One predictor holds one current image, like Meta's. Servers share one `SamEngine` instead
and keep each session's `ImageEmbedding` themselves.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from sam_demo.engine.automatic_mask_generator import AutoMask, EverythingConfig, generate
from sam_demo.engine.config import EngineConfig
from sam_demo.engine.loading import load_engine
from sam_demo.engine.sam_engine import ImageEmbedding, SamEngine
from sam_demo.engine.utils.images import to_rgb_array


class SamPredictor:
    """Meta's `SamPredictor` contract: `set_image` once, then `predict` per prompt, on a `SamEngine`."""

    def __init__(self, engine: SamEngine):
        self.engine = engine
        self._embedding: ImageEmbedding | None = None
        self._image: np.ndarray | None = None

    def set_image(self, image: np.ndarray | Image.Image) -> None:
        """Embed an (H, W, 3) uint8 RGB array or a PIL image (any mode; EXIF orientation applied).

        Images seen before (same pixels) come from the engine's cache without running the encoder.
        """
        self._image = to_rgb_array(image, self.engine.max_pixels)
        self._embedding = self.engine.embed(self._image)

    def reset_image(self) -> None:
        self._embedding = self._image = None

    @property
    def image(self) -> np.ndarray:
        """The current image, (H, W, 3) uint8 RGB."""
        if self._image is None:
            raise RuntimeError("no image is set; call set_image(image) first")
        return self._image

    @property
    def is_image_set(self) -> bool:
        return self._embedding is not None

    @property
    def embedding(self) -> ImageEmbedding:
        if self._embedding is None:
            raise RuntimeError("no image is set; call set_image(image) before predicting")
        return self._embedding

    @property
    def original_size(self) -> tuple[int, int]:
        """(H, W) of the current image."""
        return self.embedding.geometry.original_hw

    def predict(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Predict masks for one prompt on the current image (set by `set_image`).

        Arguments:
          point_coords (np.ndarray or None): (N, 2) [x, y] in the image's pixels.
          point_labels (np.ndarray or None): (N,) 1 foreground, 0 background; None: all foreground.
          box (np.ndarray or None): (4,) [x0, y0, x1, y1] in the image's pixels.
          mask_input (np.ndarray or None): (1, 256, 256) low-res logits from an earlier call.
          multimask_output (bool): three candidate masks (C = 3), else one (C = 1).
          return_logits (bool): float32 logits instead of bool masks.

        Returns:
          (np.ndarray): masks, (C, H, W) bool (float32 logits with `return_logits`).
          (np.ndarray): iou_predictions, (C,) float32, the model's estimate of each mask's IoU.
          (np.ndarray): low_res_masks, (C, 256, 256) float32, a later call's `mask_input`.
        """
        points = None if point_coords is None else np.asarray(point_coords, dtype=np.float64)[None]
        labels = None if point_labels is None else np.asarray(point_labels)[None]
        boxes = None if box is None else np.asarray(box, dtype=np.float64).reshape(1, -1)
        pred = self.engine.decode(self.embedding, points, labels, boxes, mask_input, multimask_output, return_logits)
        return pred.masks[0], pred.iou_scores[0], pred.low_res_logits[0]

    def segment_everything(self, config: EverythingConfig = EverythingConfig()) -> list[AutoMask]:
        """Every mask SAM finds in the current image (Meta's automatic mask generator defaults),
        from the cached embedding; largest first. See `sam_demo.engine.automatic_mask_generator`."""
        return generate(self.engine, self.image, config)

    def predict_batch(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        boxes: np.ndarray | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Predict B objects on the current image in one decoder call (the endpoint's shape).

        point_coords: (B, N, 2); point_labels: (B, N); boxes: (B, 4). Point group i goes with
        box i. Returns masks (B, C, H, W), iou_predictions (B, C), low_res_masks (B, C, 256, 256).
        """
        pred = self.engine.decode(
            self.embedding, point_coords, point_labels, boxes, None, multimask_output, return_logits
        )
        return pred.masks, pred.iou_scores, pred.low_res_logits


def load_predictor(
    model: str | None = None, device: str | None = None, dtype: str | None = None, **config
) -> SamPredictor:
    """Load SAM and return a predictor.

    model: hub id or local `save_pretrained` folder; default $SAM_MODEL or facebook/sam-vit-large.
    device: None picks cuda, then mps, then cpu. dtype: "float32", "bfloat16", "float16" or None
    (the fastest safe choice for the device). Other keywords go to `EngineConfig`
    (cache_bytes, max_pixels). Raises ModelLoadError if the model cannot be fetched.
    """
    return SamPredictor(load_engine(EngineConfig(model=model, device=device, dtype=dtype, **config)))
