"""The SAM engine: a cached image encoder and a per-prompt decoder, stateless and thread-safe.

Split as in sam2's `SAM2ImagePredictor`: `embed(image)` is the once-per-image work (the ViT,
~100x the cost of a click) and is cached by image content; `decode(embedding, prompts)` is
the per-click work and never touches the image's pixels again.

Masks, scores and low-res logits equal the transformers reference recipe
(`SamProcessor` + `SamModel` + `post_process_masks`, threshold 0) on the same weights and dtype.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from sam_demo.engine.embedding_store import EmbeddingStore
from sam_demo.engine.modeling.decoder import CachedDecoder, ImageDecoderCache
from sam_demo.engine.modeling.factored_image import ImageProjections
from sam_demo.engine.modeling.fast_decoder import FastDecoder
from sam_demo.engine.plan import ExecutionPlan
from sam_demo.engine.utils.cache import DEFAULT_CACHE_BYTES, ByteLRUCache, CacheStats
from sam_demo.engine.utils.geometry import LOW_RES_SIDE, ImageGeometry
from sam_demo.engine.utils.images import DEFAULT_MAX_PIXELS, to_rgb_array
from sam_demo.engine.utils.prompts import PromptError, check_prompts  # noqa: F401  (PromptError: part of the engine's API)
from sam_demo.engine.utils.transforms import masks_from_logits
from sam_demo.engine.utils.workers import Item, Result, ordered_map, torch_thread_pool


@dataclass(frozen=True)
class ImageEmbedding:
    """The once-per-image state: SAM's image features and the image's geometry.

    Args:
        key (`str`):
            Hex digest of the image's RGB pixels and shape: the cache key.
        features (`torch.Tensor` of shape `(1, 256, 64, 64)`):
            The ViT's image embedding, on the engine's device, in the decoder's dtype.
        geometry (`ImageGeometry`):
            The image's size in the original and model frames.
        decoder_cache (`ImageDecoderCache`):
            The decoder's prompt-independent work on this image (see modeling/decoder.py).
        from_store (`bool`):
            Read from the embedding store on disk rather than computed by the encoder here.
    """

    key: str
    features: torch.Tensor
    geometry: ImageGeometry
    decoder_cache: ImageDecoderCache
    from_store: bool = False

    @property
    def nbytes(self) -> int:
        return self.features.numel() * self.features.element_size() + self.decoder_cache.nbytes


@dataclass(frozen=True)
class Prediction:
    """Decoder output for B prompt groups with C masks each (C = 3 with multimask output, else 1).

    Args:
        masks (`np.ndarray` of shape `(B, C, H, W)`):
            bool masks (float32 logits with `return_logits`) in the original image's pixels.
        iou_scores (`np.ndarray` of shape `(B, C)`):
            float32 predicted IoU of each mask, in decoder order.
        low_res_logits (`np.ndarray` of shape `(B, C, 256, 256)`):
            float32 logits over the padded 1024x1024 model frame, usable as a later `mask_input`;
            `(B, C, h, w)`, the rows and columns the masks are made from, when `decode` was asked
            for less than the full frame.
    """

    masks: np.ndarray
    iou_scores: np.ndarray
    low_res_logits: np.ndarray


@dataclass(frozen=True)
class EngineInfo:
    model: str
    device: str
    dtype: str
    random_weights: bool


PROJECTIONS_BYTES = 48 << 20  # the last two images' factored-token parts (float32 fast mode)


def image_key(rgb: np.ndarray) -> str:
    """Content hash of an (H, W, 3) uint8 array: equal pixels give equal keys."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(repr(rgb.shape).encode())
    digest.update(memoryview(np.ascontiguousarray(rgb)).cast("B"))
    return digest.hexdigest()


class SamEngine:
    """Runs a transformers `SamModel`; safe to share between threads and sessions.

    Args:
        model: a `SamModel` in eval mode, on `plan.device`, cast as `plan` says (loading.py does it).
        processor: the matching `SamProcessor` (only its image processor is used, once per image).
        plan: what runs (see plan.py); the engine follows it and infers nothing from the model.
        cache_bytes: bound of the embedding cache, in bytes.
        store: the embedding store on disk under that cache (None: memory only); its namespace
          must name this model and plan (see `loading.store_namespace`).
    """

    def __init__(
        self,
        model,
        processor,
        info: EngineInfo,
        plan: ExecutionPlan,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        vit=None,
        store: EmbeddingStore | None = None,
    ):
        self.model = model
        self.store = store
        # What runs the image encoder: pixel values (1, 3, 1024, 1024) -> (1, 256, 64, 64); the
        # model's own ViT unless the plan gives it to another runtime (OpenVINO, see loading.py).
        self._vit = vit if vit is not None else (lambda pixel_values: self.model.get_image_embeddings(pixel_values))
        self.processor = processor
        self.info = info
        self.plan = plan
        self.device = torch.device(info.device)
        self.compute_dtype = getattr(torch, plan.vit_compute)
        self.weights_dtype = getattr(torch, plan.prompt_encoder)
        self.encoder_dtype = getattr(torch, plan.vit_weights)
        self.max_pixels = max_pixels
        self.cache: ByteLRUCache[ImageEmbedding] = ByteLRUCache(cache_bytes, lambda e: e.nbytes)
        self.exact = plan.exact  # the exact mode (decoder and upscaler): results equal the reference's
        self.exact_upscale = plan.upscaler == "torch"  # masks_from_logits: the exact upscaler, or OpenCV's
        decoder = {"exact": CachedDecoder, "fast": FastDecoder}[plan.decoder]
        self.decoder = decoder(model, getattr(torch, plan.decoder_compute))
        self._low_res_per_token = LOW_RES_SIDE // self.decoder.embedding_hw[0]  # low-res logits per image token
        # The fast float32 decoder's per-image parts (~20 MB each), for the images clicked last only:
        # held with every cached embedding they would halve how many images the cache holds.
        self._projections: ByteLRUCache[ImageProjections] = ByteLRUCache(PROJECTIONS_BYTES, lambda p: p.nbytes)
        self._encode_lock = threading.Lock()
        # segment everything's decoder calls side by side, each on one torch thread (see plan.py)
        workers = plan.everything_workers
        self._everything_pool = torch_thread_pool(workers, 1, "sam-everything") if workers > 1 else None
        self._coord_dtype = getattr(torch, plan.coordinates)
        self._encode_seconds: float | None = None

    # ---- once per image -------------------------------------------------------------------
    def embed(self, image: np.ndarray | Image.Image) -> ImageEmbedding:
        """The image's embedding, running the encoder only for images not seen before.

        Arguments:
          image (np.ndarray or PIL.Image): an (H, W, 3) uint8 RGB array, or a PIL image of any
            mode (converted to RGB, EXIF orientation applied), of at most `max_pixels` pixels.

        Returns:
          (ImageEmbedding): the (1, 256, 64, 64) features and the image's geometry; the same
            object for equal pixels while it stays in the cache.

        Raises ValueError for an image too large or too thin for SAM's input.
        """
        return self.embed_with_status(image)[0]

    def embed_with_status(self, image: np.ndarray | Image.Image) -> tuple[ImageEmbedding, bool]:
        """`embed`, also saying whether this call ran the encoder (False: a cache hit)."""
        rgb = to_rgb_array(image, self.max_pixels)
        key = image_key(rgb)
        return self.cache.lookup(key, lambda: self._stored_or_encoded(key, lambda: rgb, rgb.shape[:2]))

    def embed_by_key(self, key: str, load_rgb, size_hw: tuple[int, int] | None = None) -> ImageEmbedding:
        """The embedding cached under `key`; on a miss, `load_rgb()` gives the (H, W, 3) uint8 pixels
        to encode (they must be the ones `key` was made from; not called on a store hit). size_hw:
        the image's (H, W) where known, checked against a stored entry's."""
        return self.cache.get_or_compute(key, lambda: self._stored_or_encoded(key, load_rgb, size_hw))

    def _stored_or_encoded(self, key: str, load_rgb, size_hw: tuple[int, int] | None) -> ImageEmbedding:
        """A memory-cache miss: the store's entry if it has one (and it agrees with the image's size,
        and the pixel limit), else an encode (then stored)."""
        if self.store is None:
            return self._encode(key, load_rgb())
        stored = self.store.get(key, self.features_shape, self.weights_dtype)
        h, w = stored.original_hw if stored is not None else (0, 0)
        if stored is not None and ((size_hw is not None and tuple(size_hw) != (h, w)) or h * w > self.max_pixels):
            self.store.discard(key, f"its image is {w}x{h}, not the one asked for")
            stored = None
        if stored is not None:
            features = stored.features.to(self.device)
            geometry = ImageGeometry.for_size(stored.original_hw)
            return ImageEmbedding(key, features, geometry, self.decoder.prepare(features), from_store=True)
        embedding = self._encode(key, load_rgb())
        self.store.put(key, embedding.features, embedding.geometry.original_hw)
        return embedding

    @property
    def features_shape(self) -> tuple[int, int, int, int]:
        """The image embedding's shape, (1, 256, 64, 64) for every SAM ViT."""
        return (1, self.model.config.vision_config.output_channels, *self.decoder.embedding_hw)

    def _encode(self, key: str, rgb: np.ndarray) -> ImageEmbedding:
        geometry = ImageGeometry.for_size(rgb.shape[:2])
        # The layout is given: guessed, an image 1, 3 or 4 pixels tall reads as channels first.
        pixel_values = self.processor.image_processor(rgb, return_tensors="pt", input_data_format="channels_last")[
            "pixel_values"
        ]
        pixel_values = pixel_values.to(self.device, self.encoder_dtype)
        with self._encode_lock, torch.inference_mode(), self._autocast():
            start = time.perf_counter()
            features = self._vit(pixel_values).to(self.device)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self._encode_seconds = time.perf_counter() - start
        features = features.to(self.weights_dtype).contiguous()
        return ImageEmbedding(key, features, geometry, self.decoder.prepare(features))

    @property
    def encode_seconds(self) -> float | None:
        """How long the image encoder took on its last run here (every image's input is 1024x1024,
        so this is what the next encode costs, given the machine's load); None before any encode."""
        return self._encode_seconds

    def _autocast(self):
        if self.compute_dtype == self.weights_dtype:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.compute_dtype)

    def cache_stats(self) -> CacheStats:
        return self.cache.stats()

    # ---- once per prompt ------------------------------------------------------------------
    def decode_low_res(
        self,
        embedding: ImageEmbedding,
        points_xy: np.ndarray | None = None,
        labels: np.ndarray | None = None,
        boxes_xyxy: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = True,
        full_frame: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The decoder alone: low-res logits (B, C, 256, 256) and IoU (B, C), float32, on the device.

        Arguments as in `decode`; with `full_frame` False the logits are (B, C, h, w), only the
        rows and columns that the image's masks are made from.
        """
        geometry = embedding.geometry
        points_xy, labels, boxes_xyxy, mask_input = check_prompts(
            geometry.original_hw, points_xy, labels, boxes_xyxy, mask_input
        )
        prompts = {"input_points": None, "input_labels": None, "input_boxes": None}
        if points_xy is not None:
            prompts["input_points"] = self._tensor(geometry.coords_to_model(points_xy)[None])
            prompts["input_labels"] = torch.from_numpy(labels[None]).to(self.device)
        if boxes_xyxy is not None:
            prompts["input_boxes"] = self._tensor(geometry.boxes_to_model(boxes_xyxy)[None])
        token_hw = None if full_frame else self._token_hw(geometry)
        with torch.inference_mode():
            if mask_input is None:  # the common case: reuse the image's decoder cache
                sparse = self.decoder.prompt_embeddings(
                    prompts["input_points"], prompts["input_labels"], prompts["input_boxes"]
                )
                cache = embedding.decoder_cache
                if isinstance(self.decoder, FastDecoder):  # it makes only the logits asked for
                    projections = self._image_projections(embedding)
                    low_res, iou = self.decoder.decode(cache, sparse, multimask_output, token_hw, projections)
                else:
                    low_res, iou = self.decoder.decode(cache, sparse, multimask_output)
            else:
                masks_in = torch.from_numpy(mask_input).to(self.device, self.weights_dtype)
                out = self.model(
                    image_embeddings=embedding.features,
                    multimask_output=multimask_output,
                    input_masks=masks_in,
                    **{k: v for k, v in prompts.items() if v is not None},
                )
                low_res, iou = out.pred_masks, out.iou_scores
        if token_hw is not None:  # cut (and copied, so that the rest is freed); the fast decoder's already are
            factor = self._low_res_per_token
            low_res = low_res[..., : factor * token_hw[0], : factor * token_hw[1]].contiguous()
        return low_res[0].float(), iou[0].float()

    def _image_projections(self, embedding: ImageEmbedding) -> ImageProjections | None:
        """The fast decoder's per-image parts of its factored tokens (None where it keeps none: not
        float32), made at the image's first decode and kept for the last images decoded."""
        if not self.decoder.factored:
            return None
        return self._projections.get_or_compute(embedding.key, lambda: self.decoder.project(embedding.decoder_cache))

    def _token_hw(self, geometry: ImageGeometry) -> tuple[int, int]:
        """(rows, cols) of the 64x64 image tokens whose logits cover `geometry.low_res_extent`."""
        return tuple(-(-side // self._low_res_per_token) for side in geometry.low_res_extent)

    def decode_candidates(
        self, embedding: ImageEmbedding, points_xy: np.ndarray, min_iou: float
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Segment everything's decode: single positive points, three candidates each, only those
        whose predicted IoU is over `min_iou`.

        Arguments:
          embedding (ImageEmbedding): from `embed`.
          points_xy (np.ndarray): (B, 2) float64, one point per prompt, in original pixels.
          min_iou (float): keep the candidates whose predicted IoU is over this (-inf: all).

        Returns:
          group (B',) int64: the point of each kept candidate; candidate (B',) int64: 0-2;
          logits (B', h, w) float32: its low-res logits, of which rows [:h] and columns [:w] cover at
            least `geometry.low_res_extent` (only those are made, in whole image tokens);
          iou (B',) float32; all on the device, in point order.
        """
        geometry = embedding.geometry
        points_xy, labels = np.asarray(points_xy, dtype=np.float64)[:, None, :], np.ones((len(points_xy), 1), np.int64)
        if not isinstance(self.decoder, FastDecoder):  # the exact mode: as the reference, then filtered
            low_res, iou = self.decode_low_res(embedding, points_xy, labels, full_frame=False)
            pairs = torch.nonzero(iou > min_iou)
            return pairs[:, 0], pairs[:, 1], low_res[pairs[:, 0], pairs[:, 1]], iou[pairs[:, 0], pairs[:, 1]]
        points_xy, labels, _, _ = check_prompts(geometry.original_hw, points_xy, labels, None, None)
        points = self._tensor(geometry.coords_to_model(points_xy)[None])
        with torch.inference_mode():
            sparse = self.decoder.prompt_embeddings(points, torch.from_numpy(labels[None]).to(self.device), None)
            return self.decoder.candidates(
                embedding.decoder_cache, sparse, min_iou, self._token_hw(geometry), self._image_projections(embedding)
            )

    def map_everything(self, fn: Callable[[Item], Result], items: Iterable[Item]) -> Iterator[tuple[Item, Result]]:
        """Segment everything's decoder calls and kept masks: (item, fn(item)) in the items' order, run side by side
        on the plan's `everything_workers` (a few ahead of the consumer), else here one at a time.
        Stopping the iteration early leaves the items not yet started undone."""
        if self._everything_pool is None:
            return ((item, fn(item)) for item in items)
        return ordered_map(self._everything_pool, fn, items, ahead=2 * self.plan.everything_workers)

    def decode(
        self,
        embedding: ImageEmbedding,
        points_xy: np.ndarray | None = None,
        labels: np.ndarray | None = None,
        boxes_xyxy: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
        full_frame: bool = True,
    ) -> Prediction:
        """Predict masks for B prompt groups on one embedded image. Point group b goes with box b.

        Arguments:
          embedding (ImageEmbedding): from `embed`.
          points_xy (np.ndarray or None): (B, N, 2) float, [x, y] in original pixels.
          labels (np.ndarray or None): (B, N) int, 1 foreground, 0 background, -1 ignored;
            None: all foreground.
          boxes_xyxy (np.ndarray or None): (B, 4) float, [x0, y0, x1, y1] in original pixels.
          mask_input (np.ndarray or None): (1, 256, 256) or (1, 1, 256, 256) low-res logits from
            an earlier prediction (then B is 1).
          multimask_output (bool): three candidate masks per group (C = 3), else one (C = 1).
          return_logits (bool): float32 logits instead of bool masks.
          full_frame (bool): low-res logits over the whole 256x256 model frame (a later
            `mask_input`); False: only the rows and columns that the masks are made from, (h, w),
            which in the fast mode skips the upscaling of the padding (a third of a 3:2 photo's).

        Returns:
          (Prediction): masks (B, C, H, W), iou_scores (B, C), low_res_logits (B, C, 256, 256),
            or (B, C, h, w) without `full_frame`.

        Raises PromptError (a ValueError) for malformed or out-of-image prompts.
        """
        low_res, iou = self.decode_low_res(
            embedding, points_xy, labels, boxes_xyxy, mask_input, multimask_output, full_frame
        )
        groups, count = low_res.shape[:2]
        flat = low_res.flatten(0, 1)
        masks = masks_from_logits(flat, embedding.geometry, return_logits, exact=self.exact_upscale)
        return Prediction(
            masks=masks.reshape(groups, count, *embedding.geometry.original_hw),
            iou_scores=iou.cpu().numpy(),
            low_res_logits=low_res.cpu().numpy(),
        )

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(array).to(self.device, self._coord_dtype)
