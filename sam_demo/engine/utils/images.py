"""Turn user images into HxWx3 uint8 RGB arrays, safely.

Every entry point (the predictor, the web UI, `/score`, the batch command) goes through
`to_rgb_array` or `decode_image_bytes`, so EXIF orientation, odd modes and oversized images
are handled the same way everywhere.
"""

from __future__ import annotations

import io
import re
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# 50 megapixels: a 8660x5773 photo. Larger images are refused before they are decoded.
DEFAULT_MAX_PIXELS = 50_000_000
# The formats read (JPEG takes cameras' MPO files too). Pillow opens many more (DDS, PSD, SGI, ...),
# whose rarely used decoders are more attack surface than use.
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF")


class ImageTooLargeError(ValueError):
    """The image has more pixels than the configured limit (decompression-bomb guard)."""


def check_pixel_limit(width: int, height: int, max_pixels: int) -> None:
    """Raise ImageTooLargeError when width*height exceeds max_pixels."""
    if width * height > max_pixels:
        raise _over_pixel_limit(f"image is {width}x{height} = {width * height / 1e6:.1f} megapixels", max_pixels)


def _over_pixel_limit(what: str, max_pixels: int) -> ImageTooLargeError:
    return ImageTooLargeError(
        f"{what}, over the limit of {max_pixels / 1e6:.1f}; downscale it first, or raise the limit (--max-pixels)"
    )


def decode_image_bytes(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode encoded image bytes (PNG, JPEG, WebP, ...) into a fully loaded PIL image.

    The pixel limit is checked from the header, before any pixel is decoded.
    Raises ValueError (ImageTooLargeError for size) with a readable message.
    """
    if not data:
        raise ValueError("the image is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            # Our own limit is checked from the header below; Pillow's (89 MP) need not also warn.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
            check_pixel_limit(image.width, image.height, max_pixels)
            image.load()
    except ImageTooLargeError:
        raise
    except Image.DecompressionBombError as exc:  # over twice Pillow's limit: refused in open()
        found = re.search(r"\((\d+) pixels\)", str(exc))
        pixels = int(found.group(1)) if found else 0
        if pixels > max_pixels or not found:
            raise _over_pixel_limit(f"the image has {pixels / 1e6:.1f} megapixels", max_pixels) from None
        raise ImageTooLargeError(
            f"the image has {pixels / 1e6:.1f} megapixels; the image decoder refuses more than "
            f"{2 * Image.MAX_IMAGE_PIXELS / 1e6:.1f} whatever --max-pixels says; downscale it first"
        ) from None
    except UnidentifiedImageError:
        raise ValueError(
            f"the data is not an image this app reads ({len(data)} bytes starting {data[:8]!r}); "
            "send a PNG, JPEG, WebP, BMP, GIF or TIFF"
        ) from None
    except Exception as exc:  # noqa: BLE001 - a decoder's error on untrusted bytes (OSError, NotImplementedError, ...)
        raise ValueError(f"the image is damaged or truncated: {exc}") from None
    return image


def to_rgb_array(image: np.ndarray | Image.Image, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Convert an image to a C-contiguous (H, W, 3) uint8 RGB array.

    Accepts a PIL image (EXIF orientation applied; modes L, LA, P, RGBA, CMYK, I;16, I, F ...)
    or a numpy array of shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) with dtype uint8,
    uint16 (scaled by 1/257), bool, or float: in [0, 1], else in [0, 255], else scaled to its
    largest value (negative values are 0). Alpha is dropped, as the endpoint does.
    """
    if isinstance(image, Image.Image):
        check_pixel_limit(image.width, image.height, max_pixels)
        image = ImageOps.exif_transpose(image)
        if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
            array = np.asarray(image)
        else:
            return np.ascontiguousarray(np.asarray(image if image.mode == "RGB" else image.convert("RGB")))
    elif isinstance(image, np.ndarray):
        array = image
    else:
        raise ValueError(f"expected a numpy array or a PIL image, got {type(image).__name__}")

    if array.ndim == 3 and array.shape[2] in (1, 3, 4):
        array = array[:, :, :3] if array.shape[2] != 1 else array[:, :, 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3)) or 0 in array.shape:
        raise ValueError(f"expected an HxW or HxWx3 image, got an array of shape {image.shape}")
    check_pixel_limit(array.shape[1], array.shape[0], max_pixels)
    array = _to_uint8(array)
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    return np.ascontiguousarray(array)


def _to_uint8(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if array.dtype == np.uint16 or (array.dtype.kind in "iu" and array.max(initial=0) > 255):
        return (np.clip(array, 0, 65535).astype(np.uint32) * 255 // 65535).astype(np.uint8)
    if array.dtype.kind in "iu":
        return np.clip(array, 0, 255).astype(np.uint8)
    if array.dtype.kind == "f":
        if not np.isfinite(array).all():
            raise ValueError("the image contains NaN or infinite values")
        # [0, 1] as the usual float convention; [0, 255] as Pillow's "F" images (a float TIFF) are
        # mostly written; past that, scaled to its largest value (else it was all white)
        top = float(array.max(initial=0.0))
        scale = 255.0 if top <= 1.0 else 1.0 if top <= 255.0 else 255.0 / top
        return (np.clip(array * scale, 0.0, 255.0) + 0.5).astype(np.uint8)
    raise ValueError(f"unsupported image dtype {array.dtype}")
