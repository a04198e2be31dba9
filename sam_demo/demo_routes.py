"""HTTP routes of the web demo outside Gradio's event queue: the hover preview and the downloads.

    POST /sam-demo/preview                 {"token", "x", "y"} -> image/png (display size), or 204 when busy
    GET  /sam-demo/export/{token}/{kind}   kind: sam-endpoint.json | masks.zip | coco.json

Both find the session by its unguessable token in the `SessionStore`. A preview is the mask
that a positive click at (x, y) would give the object being edited, drawn faintly; it never
waits: while any edit is being decoded, or another preview is running, it is dropped (204) at
once. Downloads are built when asked for, from the session's latest state.
"""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path

import numpy as np
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from .engine import SamEngine
from .exports import coco_export, endpoint_export, masks_zip
from .render import display_size, preview_png
from .session import Session, decoder_arrays
from .session_store import SessionStore
from .transforms import upscale_logits_fast

EXPORTS = {
    "sam-endpoint.json": ("application/json", lambda s: json.dumps(endpoint_export(s)).encode()),
    "masks.zip": ("application/zip", masks_zip),
    "coco.json": ("application/json", lambda s: json.dumps(coco_export(s)).encode()),
}
PREVIEW_PATH = "/sam-demo/preview"
EXPORT_PATH = "/sam-demo/export"


def export_url(session: Session, kind: str) -> str:
    """Relative URL of a download (relative, so it works under any mount path or proxy prefix)."""
    return f"{EXPORT_PATH.lstrip('/')}/{session.token}/{kind}"


def preview_mask(engine: SamEngine, session: Session, x: float, y: float) -> np.ndarray:
    """(h, w) uint8 0/1 at display size: the mask a positive click at (x, y) would show.

    Same prompts as the click (the edited object's, plus this point) and the same choice of
    output (the best of three for a lone point); the logits are resized straight to display size.
    """
    prompts = session.with_point(x, y, 1)
    low_res, iou = engine.decode_low_res(session.embedding, *decoder_arrays(prompts), None, prompts.multimask)
    best = int(iou[0].argmax())
    logits = low_res[0, best].cpu().numpy()
    hw = display_size(session.rgb.shape[:2])
    return (upscale_logits_fast(logits, session.embedding.geometry, size_hw=hw) > 0).view(np.uint8)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers={"Cache-Control": "no-store"})


def add_demo_routes(app: FastAPI | APIRouter, engine: SamEngine, sessions: SessionStore) -> None:
    """Add the preview and download routes for the demo whose sessions live in `sessions`."""
    preview_slot = threading.Lock()

    @app.post(PREVIEW_PATH, include_in_schema=False)
    async def preview(request: Request):
        try:
            body = json.loads(await request.body())
            token, x, y = str(body["token"]), float(body["x"]), float(body["y"])
        except (ValueError, KeyError, TypeError):
            return _error(400, 'send JSON {"token": str, "x": number, "y": number}')
        session = sessions.get(token)
        if session is None:
            return _error(404, "this session has expired; reload the page and upload the image again")
        h, w = session.rgb.shape[:2]
        if not (math.isfinite(x) and math.isfinite(y) and 0 <= x <= w and 0 <= y <= h):
            return _error(400, f"({x}, {y}) is outside the {w}x{h} image")
        if sessions.edits_in_flight or not preview_slot.acquire(blocking=False):
            return Response(status_code=204, headers={"X-Preview": "dropped: busy"})
        try:
            small = await run_in_threadpool(preview_mask, engine, session, x, y)
        except ValueError as exc:
            return _error(400, str(exc))
        finally:
            preview_slot.release()
        color = session.layers()[-1].rgb
        return Response(preview_png(small, color), media_type="image/png", headers={"Cache-Control": "no-store"})

    @app.get(EXPORT_PATH + "/{token}/{kind}", include_in_schema=False)
    def export(token: str, kind: str):
        if kind not in EXPORTS:
            return _error(404, f"unknown export {kind!r}; one of {', '.join(EXPORTS)}")
        session = sessions.get(token)
        if session is None:
            return _error(404, "this session has expired; reload the page and upload the image again")
        mime, build = EXPORTS[kind]
        try:
            content = build(session)
        except ValueError as exc:
            return _error(409, str(exc))
        name = f"{Path(session.name).stem or 'image'}.{kind}"
        return Response(content, media_type=mime, headers={
            "Content-Disposition": f'attachment; filename="{_ascii_name(name)}"', "Cache-Control": "no-store"})


def _ascii_name(name: str) -> str:
    return "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in name)
