"""Exports of a session: endpoint JSON (request + response), PNG masks (zip), COCO, and cut-outs.

The endpoint export holds one request row per object, each with the uploaded file as
base64 and that object's prompts, so posting `request` to `/score` (ours or Azure's)
reproduces `response`, mask for mask. A cut-out is an object's pixels as an RGBA PNG cropped to
its box, alpha from its mask, the edge antialiased from SAM's logits.
"""

from __future__ import annotations

import base64
import io
import json
import zipfile

import cv2
import numpy as np

from sam_demo.demo.session import FixedMask, Session
from sam_demo.endpoint.wire import build_request, read_response, response_row
from sam_demo.engine.utils.coco import coco_annotation


def endpoint_export(session: Session) -> dict:
    """{"request": ..., "response": ..., "shown": [...]} for every object with a prompt.

    shown[i] names the mask on screen for request row i: its prediction and mask index in the
    response (the chosen multimask candidate), with its predicted IoU.
    """
    results = session.finished_results()
    if not results:
        raise ValueError(NOTHING_YET)
    image_b64 = base64.b64encode(session.image_bytes).decode("ascii")
    rows = [dict(image=image_b64, **r.prompts.endpoint_columns()) for _, r in results]
    response = [response_row(r.masks[None], r.scores[None]) for _, r in results]
    shown = [
        {"row": k, "prediction": 0, "mask": r.chosen, "iou_score": r.score, "object": i + 1}
        for k, (i, r) in enumerate(results)
    ]
    return {"request": build_request(rows), "response": response, "shown": shown}


NOTHING_YET = "nothing to export yet: click on the image to segment an object"


def _shown_masks(session: Session) -> list[tuple[np.ndarray, float, dict | None]]:
    """(mask, predicted IoU, prompts or None) for every shown object, fixed masks first."""
    out = [(fixed.mask, fixed.score, None) for fixed in session.fixed_masks()]
    for _, result in session.finished_results():
        cols = result.prompts.endpoint_columns()
        out.append((result.mask, result.score, {k: cols[k] for k in ("input_points", "input_labels", "input_boxes")}))
    return out


def masks_zip(session: Session) -> bytes:
    """A zip of object_NN.png: 8-bit grayscale, the image's size, 0 background / 255 object."""
    shown = _shown_masks(session)
    if not shown:
        raise ValueError(NOTHING_YET)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:  # PNGs are compressed already
        for i, (mask, _, _) in enumerate(shown):
            ok, png = cv2.imencode(".png", mask.astype(np.uint8) * 255)
            archive.writestr(f"object_{i + 1:02d}.png", png.tobytes())
    return buffer.getvalue()


def coco_export(session: Session) -> dict:
    """COCO-style dict: one image, one annotation per object with RLE, bbox (XYWH), area,
    predicted IoU and the prompts that produced it."""
    shown = _shown_masks(session)
    if not shown:
        raise ValueError(NOTHING_YET)
    h, w = session.size_hw
    annotations = [
        coco_annotation(mask, i + 1, predicted_iou=score, prompts=prompts)
        for i, (mask, score, prompts) in enumerate(shown)
    ]
    return {
        "images": [{"id": 1, "file_name": session.name, "width": w, "height": h}],
        "annotations": annotations,
        "categories": [{"id": 1, "name": "object"}],
    }


def cutout_alpha(mask: np.ndarray, logits: np.ndarray | None = None) -> np.ndarray:
    """(H, W) uint8 alpha for an (H, W) bool mask: 255 inside, 0 outside, and with its logits a
    one-pixel antialiased edge (the logit over its gradient: about the distance to the logit's
    zero in pixels). Always >= 128 exactly where `mask` is set, so the alpha thresholds to the mask."""
    if logits is None:
        return mask.astype(np.uint8) * 255
    gy, gx = np.gradient(logits)
    soft = np.clip(0.5 + logits / np.maximum(np.hypot(gx, gy), 1e-6), 0.0, 1.0)
    alpha = np.rint(soft * 255).astype(np.uint8)
    return np.where(mask, np.maximum(alpha, 128), np.minimum(alpha, 127)).astype(np.uint8)


def _cutout_alphas(session: Session) -> list[np.ndarray]:
    """Every shown object's alpha, fixed masks first (as `_shown_masks` orders them)."""
    alphas = [cutout_alpha(fixed.mask) for fixed in session.fixed_masks()]
    for _, result in session.finished_results():
        logits = result.logits
        alphas.append(cutout_alpha(logits > 0, logits))
    return alphas


def _rgba_png(rgb: np.ndarray, alpha: np.ndarray) -> bytes:
    """An RGBA PNG of `rgb` (H, W, 3) with `alpha` (H, W), cropped to where alpha is not 0."""
    rows, cols = np.flatnonzero(alpha.any(1)), np.flatnonzero(alpha.any(0))
    if len(rows) == 0:
        raise ValueError("the object's mask is empty: there is nothing to cut out; refine or delete it")
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    rgba = np.dstack([rgb[y0:y1, x0:x1], alpha[y0:y1, x0:x1]])
    ok, png = cv2.imencode(".png", cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
    return png.tobytes()


def cutouts_zip(session: Session, max_pixels: int) -> bytes:
    """A zip of object_NN.png: each object's RGBA cut-out, cropped to its box (numbered as masks.zip)."""
    alphas = _cutout_alphas(session)
    if not alphas:
        raise ValueError(NOTHING_YET)
    rgb = session.pixels(max_pixels)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for i, alpha in enumerate(alphas):
            if alpha.any():
                archive.writestr(f"object_{i + 1:02d}.png", _rgba_png(rgb, alpha))
    return buffer.getvalue()


def cutout_union_png(session: Session, max_pixels: int) -> bytes:
    """One RGBA cut-out of every object together (alpha: the largest of theirs), cropped to them."""
    alphas = _cutout_alphas(session)
    if not alphas:
        raise ValueError(NOTHING_YET)
    return _rgba_png(session.pixels(max_pixels), np.maximum.reduce(alphas))


def masks_from_saved(data: bytes, image_hw: tuple[int, int]) -> list[FixedMask]:
    """Masks shown in a saved JSON: our export, or a bare response in either spelling.

    For our export only the masks on screen (`shown`) are taken; for a bare response, the
    best-scoring mask of each prediction. Raises ValueError if the masks' size differs from
    the image's.
    """
    try:
        body = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"the file is not JSON: {exc}") from None
    shown = body.get("shown") if isinstance(body, dict) else None
    rows = read_response(
        body["response"] if isinstance(body, dict) and "response" in body and "request" in body else body
    )
    if shown:
        try:
            chosen = [rows[entry["row"]][entry["prediction"]][entry["mask"]] for entry in shown]
        except (KeyError, IndexError, TypeError):
            raise ValueError(
                'the saved JSON\'s "shown" list names masks its response does not have; '
                "load the file as Download JSON wrote it"
            ) from None
    else:
        chosen = [max(prediction, key=lambda m: m.iou_score) for row in rows for prediction in row]
    for decoded in chosen:
        if decoded.mask.shape != tuple(image_hw):
            raise ValueError(
                f"the saved masks are {decoded.mask.shape[1]}x{decoded.mask.shape[0]} but the image is "
                f"{image_hw[1]}x{image_hw[0]}; upload the image the masks were made for"
            )
    return [FixedMask.of(decoded.mask, decoded.iou_score, "Loaded mask") for decoded in chosen]
