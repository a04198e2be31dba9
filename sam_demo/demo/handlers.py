"""The demo's event handlers: plain functions `(ctx, inputs..., state) -> View` that tests call without a server.

Per-session state is a `Session` in `gr.State`, also kept under its token in the `SessionStore`
(the click fast path, the hover preview and the downloads read it there; overlapping events of
one tab edit its latest state in turn). A click (or a choice among the candidates) goes to the
prompt surface's fast path (`routes.py`, outside Gradio), which decodes and answers with the new
layers and panels; `on_prompt` runs only if that fails. `layout.build_demo` binds the handlers.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import gradio as gr
import numpy as np

from sam_demo.demo.components import user_error
from sam_demo.demo.exports import masks_from_saved
from sam_demo.demo.render import click_status, display_image_uri, plural, shown_score, view_json
from sam_demo.demo.session import FixedMask, Session
from sam_demo.demo.session_store import SessionStore
from sam_demo.endpoint.fetch import FetchPolicy
from sam_demo.engine.automatic_mask_generator import EverythingConfig, generate
from sam_demo.engine.sam_engine import SamEngine
from sam_demo.engine.utils.heap import return_free_memory
from sam_demo.engine.utils.images import decode_image_bytes, to_rgb_array

NO_IMAGE = "Upload an image first (or pick an example), then click on it."
ENCODE_CALLS = "sam-encode"  # uploads: one encoder run at a time
EVERYTHING_CALLS = "sam-everything"  # "segment everything" jobs (seconds to minutes on a CPU)


@dataclass(frozen=True)
class DemoContext:
    """What the handlers share: the engine, the live sessions, and which image URLs API calls may fetch."""

    engine: SamEngine
    sessions: SessionStore = field(default_factory=SessionStore)
    fetch: FetchPolicy = field(default_factory=FetchPolicy)


class View(NamedTuple):
    """Outputs of every handler, in the order of `build_demo`'s outputs.

    The status line, legend and export links travel inside the prompter's view (`render.view_json`)
    and are drawn by the page from there, like the layers.
    """

    state: Session | None
    prompter: dict
    auto_keep: dict


# ---- view -------------------------------------------------------------------------------------
def _auto_update(session: Session | None):
    if session is None or not session.auto_masks:
        return gr.update(visible=False, choices=[], value=[])
    choices = [
        (f"#{i + 1} · IoU {shown_score(m.score):.2f} · {m.area:,} px", i) for i, m in enumerate(session.auto_masks)
    ]
    return gr.update(visible=True, choices=choices, value=list(session.auto_keep))


def _view(
    ctx: DemoContext,
    session: Session | None,
    status: str,
    new_image: np.ndarray | None = None,
    auto: bool = False,
    problem: bool = False,
) -> View:
    """Record `session` as the latest state and build the outputs from it.

    new_image: the pixels of a new image, (H, W, 3) uint8, to send to the page. The view carries
    only the layers the page lacks; the automatic masks' list is rebuilt (Gradio redraws each
    updated component) only with `auto` or a new image. Gradio's state gets the session without
    its decoded results (`Session.light`): the store holds them, within its memory budget.
    problem: `status` tells what went wrong (shown as an alert).
    """
    if session is None:
        return View(None, gr.update(image_url="", view=view_json(None, status, problem=problem)), _auto_update(None))
    _run(session.update, ctx.engine)  # remakes the results of a state the store had lightened
    ctx.sessions.put(session)
    props = dict(view=view_json(session, status, ctx.sessions.view(session), problem=problem))
    if new_image is not None:
        props["image_url"] = display_image_uri(new_image)
    return View(
        session.light(), gr.update(**props), _auto_update(session) if auto or new_image is not None else gr.skip()
    )


def _refused(ctx: DemoContext, session: Session | None, message: str) -> View:
    """The outputs after an action that could not run: the session as it was (not stored again),
    `message` on the status line as a problem. Edits skip Gradio's queue, where an error would
    reach the page as a silent HTTP 500, so they tell their problems here."""
    if session is None:
        return _view(ctx, None, message, problem=True)
    current = ctx.sessions.latest(session)
    _run(current.update, ctx.engine)  # remakes the results of a state the store had lightened
    view = view_json(current, message, ctx.sessions.view(current), problem=True)
    return View(current.light(), gr.update(view=view), gr.skip())


def _require(session: Session | None) -> Session:
    if session is None:
        raise user_error(NO_IMAGE)
    return session


def _run(action, *args):
    """Call core code; turn its ValueError/RuntimeError into a readable gr.Error."""
    try:
        return action(*args)
    except (ValueError, RuntimeError) as exc:
        raise user_error(str(exc)) from None


# ---- handlers (plain functions; tests call them directly) ---------------------------------------
def on_image(ctx: DemoContext, path: str | None, previous: Session | None = None, progress=gr.Progress()) -> View:
    """A new image (upload, paste, drop or example): decode it and compute its embedding now."""
    if previous is not None:
        ctx.sessions.discard(previous.token)
    if not path:
        return _view(ctx, None, "Upload an image to start.")
    engine = ctx.engine
    data = Path(path).read_bytes()
    progress(0.05, desc="Reading the image")
    rgb = _run(lambda: to_rgb_array(decode_image_bytes(data, engine.max_pixels), engine.max_pixels))
    progress(0.2, desc="Encoding the image (once per image)")
    start = time.perf_counter()
    embedding, encoded = _run(engine.embed_with_status, rgb)
    seconds = time.perf_counter() - start
    session = Session.start(data, embedding, Path(path).name)
    h, w = session.size_hw
    how = f"in {seconds:.2f} s" if encoded else f"(cached embedding, {seconds * 1000:.0f} ms)"
    view = _view(
        ctx,
        session,
        f"Image {w}×{h} encoded {how} on {engine.info.device}. Click on an object to segment it.",
        new_image=rgb,
    )
    del rgb
    return_free_memory()
    return view


def on_prompt(ctx: DemoContext, value: str, session: Session | None) -> View:
    """New clicks or boxes from the browser: apply the events not seen yet, then decode."""
    try:
        message = json.loads(value) if value else {}
        if not isinstance(message, dict):
            raise ValueError(message)
    except ValueError:  # not JSON, or not an object
        return _refused(ctx, session, "The prompt surface sent malformed data; reload the page.")
    events = message.get("events", [])
    if session is None:
        return _refused(ctx, None, NO_IMAGE) if events else _view(ctx, None, "Upload an image to start.")
    with ctx.sessions.editing(session) as session:
        if message.get("token") != session.token:
            return _view(ctx, session, "Ready.")  # events for an earlier image
        # The page fires this event only when the click's fast path (routes.py) failed, and then
        # it may lack any layer, even one the fast path made before its answer was lost: send all.
        ctx.sessions.view(session).anchors.clear()
        return _decode_and_view(ctx, session, session.apply_events(events))


def _decode_and_view(ctx: DemoContext, session: Session, problems: list[str] | None = None) -> View:
    """Decode what changed and show it; `problems` (events that were skipped) go on the status line."""
    start = time.perf_counter()
    decoded = _run(session.update, ctx.engine)
    if problems:
        return _view(ctx, session, " ".join(map(_sentence, problems)), problem=True)
    return _view(ctx, session, click_status(session, decoded, (time.perf_counter() - start) * 1000))


def _sentence(message: str) -> str:
    """A core error's message ("the box has zero size; ...") as a sentence for the status line."""
    return message[:1].upper() + message[1:] + "."


def _history(ctx: DemoContext, session: Session | None, step: str) -> View:
    """Undo or redo (`step`), or say why not."""
    if session is None:
        return _refused(ctx, None, NO_IMAGE)
    with ctx.sessions.editing(session) as session:
        if not getattr(session, step)():
            return _refused(ctx, session, f"Nothing to {step}.")
        return _decode_and_view(ctx, session)


def on_undo(ctx: DemoContext, session: Session | None) -> View:
    return _history(ctx, session, "undo")


def on_redo(ctx: DemoContext, session: Session | None) -> View:
    return _history(ctx, session, "redo")


def on_clear(ctx: DemoContext, session: Session | None) -> View:
    if session is None:
        return _refused(ctx, None, NO_IMAGE)
    with ctx.sessions.editing(session) as session:
        session.clear()
        return _decode_and_view(ctx, session)


def on_new_object(ctx: DemoContext, session: Session | None) -> View:
    if session is None:
        return _refused(ctx, None, NO_IMAGE)
    with ctx.sessions.editing(session) as session:
        try:
            session.new_object()
        except ValueError as exc:
            return _refused(ctx, session, _sentence(str(exc)))
        return _decode_and_view(ctx, session)


def on_everything(ctx: DemoContext, session: Session | None, progress=gr.Progress()) -> View:
    """Segment everything on the current image (Meta's defaults) from its cached embedding.

    Runs outside the session's lock (it takes seconds); its masks join the latest state.
    """
    session = _require(session)
    start = time.perf_counter()
    reported = 0

    def report(done: int, total: int) -> None:
        nonlocal reported
        if done == total or done - reported >= 32:  # one progress event per 32 prompts is plenty
            reported = done
            progress(done / total, desc=f"Segment everything: {done}/{total} points")

    rgb = _run(session.pixels, ctx.engine.max_pixels)
    masks = _run(generate, ctx.engine, rgb, EverythingConfig(), report)
    auto_masks = [FixedMask.of(m.segmentation, m.predicted_iou, "Auto mask") for m in masks]
    del rgb, masks  # the pixels and the full-size masks go before the view is built
    return_free_memory()
    seconds = time.perf_counter() - start
    with ctx.sessions.editing(session) as session:
        session.auto_masks = auto_masks
        session.auto_keep = tuple(range(len(auto_masks)))
        if not auto_masks:
            return _view(ctx, session, f"Segment everything found no mask ({seconds:.1f} s).", auto=True)
        return _view(
            ctx,
            session,
            f"Segment everything: {plural(len(auto_masks), 'mask')} in {seconds:.1f} s. "
            "Untick the ones to drop in the list beside the image.",
            auto=True,
        )


def on_auto_keep(ctx: DemoContext, keep: list[int] | None, session: Session | None) -> View:
    if session is None:
        return _refused(ctx, None, NO_IMAGE)
    with ctx.sessions.editing(session) as session:
        session.auto_keep = tuple(sorted(int(i) for i in keep or []))
        return _view(
            ctx, session, f"Keeping {len(session.auto_keep)} of {plural(len(session.auto_masks), 'automatic mask')}."
        )


def on_load_saved(ctx: DemoContext, path: str | None, session: Session | None) -> View:
    """Draw the masks of a saved JSON (our export, or a response in either spelling)."""
    if session is None:
        return _refused(ctx, None, "Upload the image these masks were made for first, then load the saved JSON.")
    with ctx.sessions.editing(session) as session:
        if not path:
            return _view(ctx, session, "Ready.")
        try:
            masks = masks_from_saved(Path(path).read_bytes(), session.size_hw)
        except ValueError as exc:
            return _refused(ctx, session, f"{Path(path).name} was not loaded: {exc}")
        session.imported = session.imported + masks
        return _view(ctx, session, f"Loaded {plural(len(masks), 'mask')} from {Path(path).name}.")
