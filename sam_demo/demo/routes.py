"""HTTP routes of the web demo outside Gradio's events: the click fast path, the hover preview, the downloads.

    POST /sam-demo/edit                    {"token", "events"} -> the prompter's view JSON (render.view_json)
    POST /sam-demo/preview                 {"token", "x", "y"} -> image/png (half display size), or 204 when busy
    POST /sam-demo/detail                  {"token", "region": [x0, y0, x1, y1], "size": [w, h], "keys": [key]}
                                           -> {"png": {key: data URI}}: the layers of a zoomed-in region, or 204 when busy
    GET  /sam-demo/photo/{token}           the photo at full resolution (JPEG), for zooming in
    GET  /sam-demo/example/{name}          an example photo's file (picked in the empty stage)
    GET  /sam-demo/export-set/{token}/{kind}   the whole set of images of the session's workspace, streamed:
                                           coco.json | coco-polygons.json | yolo-seg.zip | masks.zip |
                                           cutouts.zip | sam-endpoint.zip
    GET  /sam-demo/export/{token}/{kind}   kind: sam-endpoint.json | masks.zip | label-image.png | coco.json |
                                           coco-polygons.json | yolo-seg.zip | cutouts.zip | cutout.png
         both take ?tolerance=PX: how far a polygon (COCO polygons, YOLO) may stray from its mask

All find the session by its unguessable token in the `SessionStore`. A click goes to /edit: it
applies the new events and decodes under the session's lock, exactly as the UI's `on_prompt`
would, and answers with the new layers and panels (status, candidates, legend, exports) at once.
Only if /edit fails does the page fire its Gradio event, which does the edit itself, reports the
problem and resends every layer.

A preview is the mask that a positive click at (x, y) would give the object being edited, drawn
faintly; it never waits: while any edit is being decoded, or another preview is running, it is
dropped (204) at once. A zoomed-in page asks for the layers of what it shows at the screen's
resolution (`detail.py`) and for the full-resolution photo; both run on a pool of their own, so
clicks never wait behind them, and a detail request is dropped (204) while that pool is busy.
Downloads are built when asked for, from the session's latest state.
"""

from __future__ import annotations

import asyncio
import functools
import json
import threading
import time
import weakref
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import torch
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from sam_demo.demo.detail import MAX_DETAIL_LAYERS, detail_layers, photo_jpeg
from sam_demo.demo.example_photos import example_file
from sam_demo.demo.exports import (
    ExportOptions,
    coco_export,
    cutout_union_png,
    cutouts_zip,
    endpoint_export,
    label_image_png,
    masks_zip,
    parse_tolerance,
    yolo_export,
)
from sam_demo.demo.render import (
    DISPLAY_MAX_SIDE,
    EXPORT_PATH,
    SET_EXPORT_PATH,
    ViewCache,
    click_status,
    display_size,
    preview_png,
    view_json,
)
from sam_demo.demo.session import Decoded, ObjectPrompts, Session, decode
from sam_demo.demo.session_store import SessionStore
from sam_demo.demo.set_exports import SET_EXPORT_KINDS, set_export_chunks
from sam_demo.demo.workspace import WorkspaceStore, remade, set_images
from sam_demo.endpoint.http_body import read_limited
from sam_demo.engine.sam_engine import SamEngine
from sam_demo.engine.utils.prompts import finite_numbers
from sam_demo.engine.utils.transforms import logits_to_size
from sam_demo.engine.utils.workers import torch_thread_pool

# kind -> (media type, build(session, options) -> the file's bytes)
EXPORTS = {
    "sam-endpoint.json": ("application/json", lambda s, _: json.dumps(endpoint_export(s)).encode()),
    "masks.zip": ("application/zip", lambda s, _: masks_zip(s)),
    "label-image.png": ("image/png", lambda s, _: label_image_png(s)),
    "coco.json": ("application/json", lambda s, _: json.dumps(coco_export(s)).encode()),
    "coco-polygons.json": (
        "application/json",
        lambda s, o: json.dumps(coco_export(s, polygons=True, tolerance=o.tolerance)).encode(),
    ),
    "yolo-seg.zip": ("application/zip", yolo_export),
    "cutouts.zip": ("application/zip", cutouts_zip),
    "cutout.png": ("image/png", cutout_union_png),
}
DETAIL_PATH = "/sam-demo/detail"
DETAIL_THREADS = 2
# Downloads are made on threads of their own (a photo's polygons or cut-outs take seconds to
# minutes), never on the pool that serves the page, uploads and examples: 45 at once held it all.
DOWNLOAD_THREADS = 2
DOWNLOADS_AT_ONCE = 8  # being made or waiting for those threads, one per session; past it, 503
EDIT_PATH = "/sam-demo/edit"
EXAMPLE_PATH = "/sam-demo/example"
INTERACTIVE_THREADS = 2
PHOTO_PATH = "/sam-demo/photo"
PREVIEW_PATH = "/sam-demo/preview"


class _Downloads:
    """The downloads being made or waiting, by session token: one per session at a time (its
    exports take its lock in turn anyway) and `most` in all; past either, an answer at once."""

    def __init__(self, most: int):
        self.most = most
        self.tokens: set[str] = set()
        self.lock = threading.Lock()  # released from a streamed download's thread

    def admit(self, token: str) -> JSONResponse | None:
        """None when `token`'s download may go ahead (then `done` must follow), else the refusal."""
        with self.lock:
            if token in self.tokens:
                return _error(429, "a download of this image is being made; wait until it has come, then ask again")
            if len(self.tokens) >= self.most:
                refused = _error(503, f"busy: {self.most} downloads are being made; retry in a moment")
                refused.headers["Retry-After"] = "5"
                return refused
            self.tokens.add(token)
            return None

    def done(self, token: str) -> None:
        with self.lock:
            self.tokens.discard(token)

    def done_after(self, token: str, work: Future | None) -> None:
        """`done` once `work`, a download's part on its thread, has ended (at once if it has, or if
        None): a client that leaves does not stop the part being made, so its place is kept till then
        (else leaving and asking again would queue parts without bound)."""
        if work is None:
            self.done(token)
        else:
            work.add_done_callback(lambda _: self.done(token))


def preview(engine: SamEngine, session: Session, prompts: ObjectPrompts, cache: ViewCache) -> bytes:
    """PNG of the mask a positive click would show, faint, at half the display size.

    prompts: the edited object's with that point (`Session.with_point`), as the click would make
    them, so the decode is the click's: it is kept in `cache.preview`, and a click on that spot
    shows it without decoding again. Same choice of output (the best of three for a lone point);
    the logits are resized straight to size.
    """
    embedding = session.embedding(engine)
    low_res, scores = decode(engine, embedding, prompts)
    cache.preview = Decoded(prompts, low_res, scores)
    hw = display_size(session.size_hw, DISPLAY_MAX_SIDE // 2)
    small = logits_to_size(low_res[int(scores.argmax())], embedding.geometry, hw)
    return preview_png(small, session.edited_layer().rgb)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers={"Cache-Control": "no-store"})


def edit(engine: SamEngine, sessions: SessionStore, session: Session, events: list) -> Response:
    """Apply a click's new events to the session's latest state and decode: the view JSON, timed.

    Malformed events are not applied here (422): the page then fires its Gradio event, which
    applies the others and reports them to the user.
    """
    start, cpu = time.perf_counter(), time.thread_time()
    with sessions.editing(session) as session:
        problems = session.apply_events(events)
        if problems:  # nothing is kept; the page's own event then applies the others and reports these
            detail = "; ".join(p[:200] for p in problems[:10])
            return _error(422, f"some prompt events are malformed or cannot apply, so none was applied: {detail}")
        locked = time.perf_counter()
        cache = sessions.view(session)
        try:
            count = session.update(engine, ready=cache.preview)
        except (ValueError, RuntimeError) as exc:
            return _error(400, str(exc))
        decoded = time.perf_counter()
        sessions.put(session)
        view = view_json(session, click_status(session, count, (decoded - locked) * 1000), cache)
    timing = ", ".join(
        f"{name};dur={(b - a) * 1000:.1f}"
        for name, a, b in (
            ("wait", start, locked),
            ("decode", locked, decoded),
            ("render", decoded, time.perf_counter()),
            ("cpu", cpu, time.thread_time()),
        )
    )
    return Response(view, media_type="application/json", headers={"Cache-Control": "no-store", "Server-Timing": timing})


def add_demo_routes(
    app: FastAPI | APIRouter, engine: SamEngine, sessions: SessionStore, workspaces: WorkspaceStore | None = None
) -> None:
    """Add the click, preview and download routes for the demo whose sessions live in `sessions`
    (and its sets of images in `workspaces`: the whole set's downloads).

    Clicks and previews run on their own small pool of threads, two of them so that two users'
    clicks run side by side, each on as many torch threads as the plan says (`one_thread_per_click`).
    """
    threads = 1 if engine.plan.one_thread_per_click else torch.get_num_threads()
    interactive = torch_thread_pool(INTERACTIVE_THREADS, threads, "sam-interactive")
    preview_slot = threading.Lock()
    zoomed = ThreadPoolExecutor(DETAIL_THREADS, thread_name_prefix="sam-detail")
    detail_slots = threading.BoundedSemaphore(DETAIL_THREADS)
    photo_lock = threading.Lock()  # one photo made at a time (a 12 MP one takes a few hundred ms)
    downloads = ThreadPoolExecutor(DOWNLOAD_THREADS, thread_name_prefix="sam-download")
    gate = _Downloads(DOWNLOADS_AT_ONCE)
    expired = "this session has expired; reload the page and upload the image again"

    async def run(fn, *args, pool=interactive):
        return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)

    @app.post(EDIT_PATH, include_in_schema=False)
    async def edit_route(request: Request):
        body = await _json_body(request)
        token, events = body.get("token"), body.get("events")
        if not isinstance(token, str) or not isinstance(events, list):
            return _error(400, 'send JSON {"token": str, "events": [...]}')
        session = sessions.get(token)
        if session is None:
            return _error(404, expired)
        return await run(edit, engine, sessions, session, events)

    @app.post(PREVIEW_PATH, include_in_schema=False)
    async def preview_route(request: Request):
        body = await _json_body(request)
        try:
            token, x, y = body["token"], body["x"], body["y"]
            if not isinstance(token, str) or isinstance(x, (bool, str)) or isinstance(y, (bool, str)):
                raise TypeError
            x, y = float(x), float(y)
        except (ValueError, KeyError, TypeError, OverflowError):
            return _error(400, 'send JSON {"token": str, "x": number, "y": number}')
        session = sessions.get(token)
        if session is None:
            return _error(404, expired)
        try:
            prompts = session.with_point(x, y, 1)
        except ValueError as exc:
            return _error(400, str(exc))
        if sessions.edits_in_flight or not preview_slot.acquire(blocking=False):
            return Response(status_code=204, headers={"X-Preview": "dropped: busy"})
        try:
            png = await run(preview, engine, session, prompts, sessions.view(session))
        finally:
            preview_slot.release()
        return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})

    @app.post(DETAIL_PATH, include_in_schema=False)
    async def detail_route(request: Request):
        body = await _json_body(request)
        token, region, size, keys = body.get("token"), body.get("region"), body.get("size"), body.get("keys")
        if not (
            isinstance(token, str)
            and finite_numbers(region, 4)
            and finite_numbers(size, 2)
            and isinstance(keys, list)
            and len(keys) <= MAX_DETAIL_LAYERS
        ):
            return _error(
                400,
                'send JSON {"token": str, "region": [x0, y0, x1, y1] and "size": [w, h] (finite numbers), '
                f'"keys": [str] (at most {MAX_DETAIL_LAYERS})}}',
            )
        session = sessions.get(token)
        if session is None:
            return _error(404, expired)
        if not detail_slots.acquire(blocking=False):
            return Response(status_code=204, headers={"X-Detail": "dropped: busy"})
        try:
            layers = await run(detail_layers, session, region, size, [str(k) for k in keys], pool=zoomed)
        except ValueError as exc:
            return _error(400, str(exc))
        finally:
            detail_slots.release()
        return JSONResponse({"png": layers}, headers={"Cache-Control": "no-store"})

    @app.get(PHOTO_PATH + "/{token}", include_in_schema=False)
    async def photo_route(token: str):
        session = sessions.get(token)
        if session is None:
            return _error(404, expired)

        def make() -> bytes:
            with photo_lock:
                photo = sessions.view(session).photo
                if photo is None:
                    photo = photo_jpeg(session.pixels(engine.max_pixels))
                    sessions.keep_photo(token, photo)
                return photo

        try:
            photo = await run(make, pool=zoomed)
        except (ValueError, RuntimeError) as exc:
            return _error(409, str(exc))
        return Response(photo, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})

    @app.get(EXAMPLE_PATH + "/{name}", include_in_schema=False)
    def example_route(name: str):
        path = example_file(name)
        if path is None:
            return _error(404, f"there is no example photo {name[:80]!r}")
        return FileResponse(path, headers={"Cache-Control": "public, max-age=86400"})

    @app.get(SET_EXPORT_PATH + "/{token}/{kind}", include_in_schema=False)
    async def export_set(token: str, kind: str, tolerance: str | None = None):
        if workspaces is None:
            return _error(404, "this server keeps no sets of images")
        answer = await run_in_threadpool(_set_export, workspaces, sessions, engine, token, kind, tolerance)
        if not isinstance(answer, Iterator):
            return answer
        refused = gate.admit(token)
        if refused is not None:
            return refused

        async def stream():  # each part made on the downloads' threads; a client gone stops the rest
            work = None
            try:
                while True:
                    work = downloads.submit(next, answer, None)
                    if (chunk := await asyncio.wrap_future(work)) is None:
                        return
                    yield chunk
            finally:
                never_started.detach()
                gate.done_after(token, work)

        body = stream()
        never_started = weakref.finalize(body, gate.done, token)  # dropped unstarted: its client went first
        return StreamingResponse(
            body,
            media_type=SET_EXPORT_KINDS[kind][0],
            headers={"Content-Disposition": f'attachment; filename="images.{kind}"', "Cache-Control": "no-store"},
        )

    @app.get(EXPORT_PATH + "/{token}/{kind}", include_in_schema=False)
    async def export(token: str, kind: str, tolerance: str | None = None):
        if kind not in EXPORTS:
            return _error(404, f"unknown export {kind!r}; one of {', '.join(EXPORTS)}")
        session = sessions.get(token)
        if session is None:
            return _error(404, expired)
        try:
            options = ExportOptions(engine.max_pixels, parse_tolerance(tolerance))
        except ValueError as exc:
            return _error(400, str(exc))
        refused = gate.admit(token)
        if refused is not None:
            return refused
        work = downloads.submit(_image_export, engine, sessions, session, kind, options)
        gate.done_after(token, work)
        return await asyncio.wrap_future(work)


def _image_export(engine: SamEngine, sessions: SessionStore, session: Session, kind: str, options: ExportOptions):
    """One image's download (`EXPORTS[kind]`), or 409 with the reason where there is none."""
    mime, build = EXPORTS[kind]
    try:
        with sessions.editing(session) as session:
            if session.update(engine):  # it had been made light: its masks were remade
                sessions.put(session)
            content = build(session, options)
    except ValueError as exc:
        return _error(409, str(exc))
    name = f"{Path(session.name).stem or 'image'}.{kind}"
    return Response(
        content,
        media_type=mime,
        headers={"Content-Disposition": f'attachment; filename="{_ascii_name(name)}"', "Cache-Control": "no-store"},
    )


def _set_export(
    workspaces: WorkspaceStore, sessions: SessionStore, engine: SamEngine, token: str, kind: str, tolerance: str | None
) -> Iterator[bytes] | JSONResponse:
    """A whole set's download as the parts to stream, each made when it is asked for
    (`set_exports.py`); 400 / 404 / 409 with the reason where there is none."""
    if kind not in SET_EXPORT_KINDS:
        return _error(404, f"unknown export {kind!r}; one of {', '.join(SET_EXPORT_KINDS)}")
    session = sessions.get(token)
    if session is None:
        return _error(404, "this session has expired; reload the page and upload the images again")
    try:
        options = ExportOptions(engine.max_pixels, parse_tolerance(tolerance))
    except ValueError as exc:
        return _error(400, str(exc))
    try:
        images = set_images(workspaces, sessions, session)
    except ValueError as exc:
        return _error(409, str(exc))
    return iter(set_export_chunks(kind, images, functools.partial(remade, engine), options))


def _ascii_name(name: str) -> str:
    return "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in name)


async def _json_body(request: Request, limit: int = 1 << 20, timeout_s: float = 10.0) -> dict:
    """The request's JSON object ({} if it is not one, over `limit` bytes, or not all there within
    `timeout_s`: never read further)."""
    try:
        data = await read_limited(request, limit, timeout_s)
    except TimeoutError:
        return {}
    try:
        body = json.loads(data) if data is not None else {}
    except (ValueError, RecursionError):
        return {}
    return body if isinstance(body, dict) else {}
