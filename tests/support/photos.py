"""The example photos that ship with the demo, as arrays and as the base64 PNGs that requests carry."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

from sam_demo.demo import EXAMPLES as PHOTOS


def asset(name: str) -> np.ndarray:
    """(H, W, 3) uint8 pixels of the example photo `name`."""
    return np.asarray(Image.open(PHOTOS / name).convert("RGB"))


def photo(width: int, height: int, name: str = "rocket.jpg") -> np.ndarray:
    """(height, width, 3) uint8: an example photo resized (bilinear) to `width` x `height`."""
    return np.asarray(Image.open(PHOTOS / name).convert("RGB").resize((width, height), Image.BILINEAR))


def b64_png(rgb: np.ndarray, optimize: bool = False) -> str:
    """Base64 of a PNG of an (H, W, 3) uint8 array, as endpoint requests carry images."""
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "PNG", optimize=optimize)
    return base64.b64encode(buffer.getvalue()).decode()
