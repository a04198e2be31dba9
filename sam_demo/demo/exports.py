"""Exports of a session: endpoint JSON (request + response), PNG masks (zip) and COCO.

The endpoint export holds one request row per object, each with the uploaded file as
base64 and that object's prompts, so posting `request` to `/score` (ours or Azure's)
reproduces `response`, mask for mask.
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
        raise ValueError("nothing to export yet: click on the image to segment an object")
    image_b64 = base64.b64encode(session.image_bytes).decode("ascii")
    rows = [dict(image=image_b64, **r.prompts.endpoint_columns()) for _, r in results]
    response = [response_row(r.masks[None], r.scores[None]) for _, r in results]
    shown = [
        {"row": k, "prediction": 0, "mask": r.chosen, "iou_score": r.score, "object": i + 1}
        for k, (i, r) in enumerate(results)
    ]
    return {"request": build_request(rows), "response": response, "shown": shown}


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
        raise ValueError("nothing to export yet: click on the image to segment an object")
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
        raise ValueError("nothing to export yet: click on the image to segment an object")
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
