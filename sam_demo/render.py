"""Draw a session for the browser: a downscaled display image, a mask overlay and markers.

The overlay is an RGBA PNG at display resolution (masks tinted, with outlines); points, boxes
and score tags travel as JSON in original pixels and are drawn by the browser as SVG, so the
markers stay sharp at any zoom and appear the moment the user clicks.
"""

from __future__ import annotations

import base64
import json

import cv2
import numpy as np

from .session import Session

DISPLAY_MAX_SIDE = 1280
FILL_ALPHA = 110
# Distinct, colour-blind-friendly hues (Okabe-Ito, then Tableau), as RGB.
PALETTE = [
    (0, 114, 178), (230, 159, 0), (0, 158, 115), (204, 121, 167), (86, 180, 233),
    (213, 94, 0), (240, 228, 66), (148, 103, 189), (140, 86, 75), (127, 127, 127),
]


def color_of(index: int) -> tuple[int, int, int]:
    return PALETTE[index % len(PALETTE)]


def hex_color(index: int) -> str:
    return "#%02x%02x%02x" % color_of(index)


def display_size(original_hw: tuple[int, int], max_side: int = DISPLAY_MAX_SIDE) -> tuple[int, int]:
    """(h, w) at which the image is shown: the original, or downscaled to max_side."""
    h, w = original_hw
    scale = min(1.0, max_side / max(h, w))
    return max(1, round(h * scale)), max(1, round(w * scale))


def data_uri(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def display_image_uri(rgb: np.ndarray) -> str:
    """The image for the browser: JPEG (quality 90) at display size, as a data URI."""
    h, w = display_size(rgb.shape[:2])
    small = rgb if (h, w) == rgb.shape[:2] else cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(small, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
    return data_uri("image/jpeg", jpeg.tobytes())


def _to_display(mask: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    if mask.shape == hw:
        return mask.astype(np.uint8)
    area = cv2.resize(mask.astype(np.uint8) * 255, (hw[1], hw[0]), interpolation=cv2.INTER_AREA)
    return (area >= 128).astype(np.uint8)


def overlay_uri(session: Session) -> str:
    """RGBA PNG data URI at display size: every object's mask in its colour, with an outline.

    The active object is drawn last (on top) with a thicker outline. Empty string if no mask.
    """
    fixed = session.fixed_masks()
    layers = [(f.mask, f.score, i, False) for i, f in enumerate(fixed)]
    base = len(fixed)
    active = len(session.objects) - 1
    layers += [(r.mask, r.score, base + i, i == active) for i, r in session.finished_results()]
    if not layers:
        return ""
    hw = display_size(session.rgb.shape[:2])
    canvas = np.zeros((*hw, 4), dtype=np.uint8)
    for mask, _, color_index, is_active in layers:
        small = _to_display(mask, hw)
        color = color_of(color_index)
        canvas[small > 0] = (*color, FILL_ALPHA)
        contours, _ = cv2.findContours(small, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(canvas, contours, -1, (*color, 255), 3 if is_active else 2)
    ok, png = cv2.imencode(".png", cv2.cvtColor(canvas, cv2.COLOR_RGBA2BGRA), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    return data_uri("image/png", png.tobytes())


def markers_json(session: Session | None) -> str:
    """Points, boxes and score tags in original pixels, for the browser to draw as SVG.

    w, h: the image's size in original pixels. consumed: how many browser events the session
    has applied (the browser drops those from its list of not-yet-confirmed markers).
    """
    if session is None:
        return json.dumps({"token": "", "consumed": 0, "w": 1, "h": 1, "points": [], "boxes": [], "tags": []})
    fixed = session.fixed_masks()
    base = len(fixed)
    points, boxes, tags = [], [], []
    for i, prompts in enumerate(session.objects):
        color = hex_color(base + i)
        points += [[x, y, label, color] for x, y, label in prompts.points]
        if prompts.box_xyxy:
            boxes.append([*prompts.box_xyxy, color])
    for i, f in enumerate(fixed):
        tags += _tag(f.mask, f"#{i + 1} IoU {f.score:.2f}", hex_color(i))
    for i, result in session.finished_results():
        tags += _tag(result.mask, f"#{base + i + 1} IoU {result.score:.2f}", hex_color(base + i))
    h, w = session.rgb.shape[:2]
    return json.dumps({"token": session.token, "consumed": session.consumed_events, "w": w, "h": h,
                       "points": points, "boxes": boxes, "tags": tags})


def _tag(mask: np.ndarray, text: str, color: str) -> list:
    """A label at the top-left of the mask's bounding box (none for an empty mask)."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return []
    cols = np.flatnonzero(mask[rows[0] : rows[-1] + 1].any(axis=0))
    return [[float(cols[0]), float(rows[0]), text, color]]
