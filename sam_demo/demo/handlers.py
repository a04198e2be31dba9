"""The demo's event handlers: plain functions `(ctx, inputs..., state) -> View` that tests call without a server.

Per-session state is a `Session` in `gr.State`, also kept under its token in the `SessionStore`
(the click fast path, the hover preview and the downloads read it there; overlapping events of
one tab edit its latest state in turn). A click (or a choice among the candidates) goes to the
prompt surface's fast path (`routes.py`, outside Gradio), which decodes and answers with the new
layers and panels; `on_prompt` runs only if that fails. `layout.build_demo` binds the handlers.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import gradio as gr
import numpy as np

from sam_demo.demo.components import user_error
from sam_demo.demo.exports import SavedFile, saved_objects, yolo_dataset_objects, yolo_objects
from sam_demo.demo.render import click_status, display_image_uri, plural, shown_score, view_json
from sam_demo.demo.session import FixedMask, Session
from sam_demo.demo.session_store import SessionStore
from sam_demo.demo.workspace import BackgroundEncoder, WorkspaceLimits, WorkspaceStore, read_yolo_uploads
from sam_demo.endpoint.fetch import FetchPolicy
from sam_demo.endpoint.wire import RequestLimits
from sam_demo.engine.automatic_mask_generator import EverythingConfig, generate
from sam_demo.engine.checkpoint_catalog import encoder_tflop, faster_checkpoints
from sam_demo.engine.sam_engine import SamEngine
from sam_demo.engine.utils.heap import return_free_memory
from sam_demo.engine.utils.images import decode_image_bytes, to_rgb_array

NO_IMAGE = "Upload an image first (or pick an example), then click on it."
ENCODE_CALLS = "sam-encode"  # uploads: one encoder run at a time
EVERYTHING_CALLS = "sam-everything"  # "segment everything" jobs (seconds to minutes on a CPU)
LOAD_CALLS = "sam-load"  # saved files read back (up to 64 MB of JSON, masks decoded)


class Jobs:
    """The "segment everything" jobs asked for, by session token, each with its stop flag: one at a
    time per session, cancellable from the moment it is asked for. Thread-safe; bounded (the oldest
    entries go first, should a job never come to run)."""

    def __init__(self, limit: int = 1024):
        self._flags: OrderedDict[str, threading.Event] = OrderedDict()
        self._lock = threading.Lock()
        self._limit = limit

    def ask(self, token: str) -> bool:
        """Note a job asked for; False if this session has one asked for or running already."""
        with self._lock:
            if token in self._flags:
                return False
            self._flags[token] = threading.Event()
            while len(self._flags) > self._limit:
                self._flags.popitem(last=False)
            return True

    def flag(self, token: str) -> threading.Event:
        """The stop flag of the session's job (a new one if the job was not asked for through `ask`)."""
        with self._lock:
            return self._flags.setdefault(token, threading.Event())

    def cancel(self, token: str) -> bool:
        """Ask the session's job to stop; False if it has none."""
        with self._lock:
            flag = self._flags.get(token)
        if flag is None:
            return False
        flag.set()
        return True

    def done(self, token: str) -> None:
        with self._lock:
            self._flags.pop(token, None)


@dataclass(frozen=True)
class DemoContext:
    """What the handlers share: the engine, the live sessions, which image URLs API calls may
    fetch, the running "segment everything" jobs, and the workspaces (sets of images), their
    limits and their background encoder."""

    engine: SamEngine
    sessions: SessionStore = field(default_factory=SessionStore)
    fetch: FetchPolicy = field(default_factory=FetchPolicy)
    jobs: Jobs = field(default_factory=Jobs)
    workspaces: WorkspaceStore = field(default_factory=WorkspaceStore)
    limits: WorkspaceLimits = field(default_factory=WorkspaceLimits)
    request_limits: RequestLimits = field(default_factory=RequestLimits)  # the API's /segment, as /score's
    background: BackgroundEncoder | None = None  # encodes workspaces' images ahead (None: not ahead)


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
    cache = ctx.sessions.view(session)
    if new_image is not None:  # the page starts this image afresh (one of a set, shown again): every layer
        cache.anchors = {}
    props = dict(view=view_json(session, status, cache, problem=problem))
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
    """A new image (upload, paste, drop or example) in place of the one shown: decode it and compute
    its embedding now."""
    categories = ()
    if previous is not None:
        ctx.jobs.cancel(previous.token)  # segment everything on the image this one replaces stops
        categories = ctx.sessions.latest(previous).categories  # the category list goes on to the next image
        ctx.sessions.discard(previous.token)
    if not path:
        return _view(ctx, None, "Upload an image to start.")
    return open_image(ctx, Path(path).read_bytes(), Path(path).name, categories, progress)


class Started(NamedTuple):
    """A new session, its image's pixels (H, W, 3) uint8, and how its embedding came: "in N s" (an
    encode here), or from the store or the memory cache, with the time it took."""

    session: Session
    rgb: np.ndarray
    how: str


def start_session(
    ctx: DemoContext,
    data: bytes,
    name: str,
    categories: tuple[str, ...] = (),
    workspace: str | None = None,
    progress=None,
) -> Started:
    """A new session on an image file: decoded, its embedding computed (or found in the cache or the
    store). Not stored, not shown."""
    engine = ctx.engine
    if progress is not None:
        progress(0.05, desc="Reading the image")
    rgb = _run(lambda: to_rgb_array(decode_image_bytes(data, engine.max_pixels), engine.max_pixels))
    start = time.perf_counter()
    with _encode_progress(progress, engine.encode_seconds):
        embedding, encoded = _run(engine.embed_with_status, rgb)
    seconds = time.perf_counter() - start
    session = Session.start(data, embedding, name)
    session.categories, session.workspace = categories, workspace
    if encoded and not embedding.from_store:
        how = f"in {seconds:.2f} s"
    else:
        how = f"({'stored' if encoded else 'cached'} embedding, {seconds * 1000:.0f} ms)"
    return Started(session, rgb, how)


def open_image(
    ctx: DemoContext,
    data: bytes,
    name: str,
    categories: tuple[str, ...] = (),
    progress=None,
    workspace: str | None = None,
    note: str = "",
) -> View:
    """A new session on an image file (`start_session`), shown; `note` goes before the status
    line's usual words."""
    session, rgb, how = start_session(ctx, data, name, categories, workspace, progress)
    h, w = session.size_hw
    view = _view(
        ctx,
        session,
        f"{note}Image {w}×{h} encoded {how} on {ctx.engine.info.device}. Click or tap on an object to segment it.",
        new_image=rgb,
    )
    del rgb
    return_free_memory()
    return view


@contextlib.contextmanager
def _encode_progress(progress, expected: float | None, every: float = 0.5):
    """The encode's progress while it runs: with the last encode's time on this machine (`expected`),
    the time left, told every `every` seconds from a thread of its own (the encode holds the handler's).
    No progress (None): nothing is told."""
    if progress is None:
        yield
        return
    if not expected:
        progress(0.2, desc="Encoding the image (once per image)")
        yield
        return
    start, done = time.perf_counter(), threading.Event()

    def tell() -> None:
        while True:
            elapsed = time.perf_counter() - start
            left = expected - elapsed
            when = f"about {left:.0f} s left" if left >= 1.5 else "nearly done" if left > -expected else "taking longer"
            progress(
                0.2 + 0.75 * min(1.0, elapsed / expected), desc=f"Encoding the image (~{expected:.0f} s here): {when}"
            )
            if done.wait(every):
                return

    # Gradio finds the event a progress call belongs to in the context: the ticker runs in a copy of it.
    ticker = threading.Thread(target=contextvars.copy_context().run, args=(tell,), daemon=True)
    ticker.start()
    try:
        yield
    finally:
        done.set()
        ticker.join()


def encode_note(engine: SamEngine) -> str:
    """The page's details on encoding (Markdown): how long an image takes here and, where that is
    over 5 s, the smaller checkpoints this app runs, with their sizes and the time each would take."""
    seconds = engine.encode_seconds
    if seconds is None:
        return "Encoding speed: not measured yet (the first image's encode measures it)."
    note = f"Encoding a new image takes about **{seconds:.1f} s** here ({engine.info.device}, {engine.info.dtype})."
    tflop = encoder_tflop(engine.model.config.vision_config)
    faster = faster_checkpoints(tflop)
    if seconds > SLOW_ENCODE_SECONDS and faster:
        options = "; ".join(
            f"`--model {c.model}` ({c.params_m:.0f}M parameters, {c.size_mib:,} MiB, about "
            f"{seconds * c.encode_tflop / tflop:.1f} s here)"
            for c in faster
        )
        note += f" Smaller SAM checkpoints encode faster, with the same clicks and exports: {options}."
    return note


SLOW_ENCODE_SECONDS = 5.0


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


def _decode_and_view(
    ctx: DemoContext, session: Session, problems: list[str] | None = None, auto: bool = False, said: str = ""
) -> View:
    """Decode what changed and show it; `problems` (events that were skipped) go on the status line,
    else `said` (what was done) before the edited object's state. auto: the automatic masks may have
    changed (undo, redo, start over): their list is sent again."""
    start = time.perf_counter()
    decoded = _run(session.update, ctx.engine)
    if problems:
        return _view(ctx, session, " ".join(map(_sentence, problems)), problem=True, auto=auto)
    status = click_status(session, decoded, (time.perf_counter() - start) * 1000)
    return _view(ctx, session, f"{said} {status}" if said else status, auto=auto)


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
        return _decode_and_view(ctx, session, auto=True, said={"undo": "Undone.", "redo": "Redone."}[step])


def on_undo(ctx: DemoContext, session: Session | None) -> View:
    return _history(ctx, session, "undo")


def on_redo(ctx: DemoContext, session: Session | None) -> View:
    return _history(ctx, session, "redo")


def _action(ctx: DemoContext, session: Session | None, action: str, done: str | None = None) -> View:
    """Run the session's edit `action` (a method's name) and show the result (`done` on the status
    line, if given), or say why it cannot run."""
    if session is None:
        return _refused(ctx, None, NO_IMAGE)
    with ctx.sessions.editing(session) as session:
        try:
            getattr(session, action)()
        except ValueError as exc:
            return _refused(ctx, session, _sentence(str(exc)))
        if done is None:
            return _decode_and_view(ctx, session, auto=True)
        _run(session.update, ctx.engine)
        return _view(ctx, session, done, auto=True)


def on_clear_object(ctx: DemoContext, session: Session | None) -> View:
    """Clear the edited object's prompts (its name stays); undoable."""
    return _action(ctx, session, "clear_object")


def on_start_over(ctx: DemoContext, session: Session | None) -> View:
    """Remove every object and kept automatic mask; one Undo brings them all back."""
    return _action(ctx, session, "start_over", "Started over: every object is gone. Undo (Ctrl+Z) brings them back.")


def on_new_object(ctx: DemoContext, session: Session | None) -> View:
    return _action(ctx, session, "new_object")


RUNNING = "Segment everything is running on this image: Cancel stops it."


def on_everything_asked(ctx: DemoContext, session: Session | None):
    """The moment Segment everything is clicked (before its job waits in the queue): note the job,
    so that Cancel can stop it from now on, show Cancel, and make the button (and its key) inert
    until the job ends. Before an image, or for a second job on the same image (which the inert
    button prevents on the page), raises: the job does not run."""
    session = _require(session)
    if not ctx.jobs.ask(session.token):
        raise user_error(RUNNING)
    return gr.update(visible=True, value="Cancel", interactive=True), gr.update(interactive=False)


def on_everything(ctx: DemoContext, session: Session | None, progress=gr.Progress()) -> View:
    """Segment everything on the current image (Meta's defaults) from its cached embedding; Cancel
    stops it after the decoder call under way, keeping the masks found so far.

    Runs outside the session's lock (it takes seconds); its masks join the latest state, undoably.
    """
    session = _require(session)
    stop = ctx.jobs.flag(session.token)
    asked_for = session.token
    try:
        start = time.perf_counter()
        seen = {"done": 0, "total": 0, "told": 0}  # points decoded, in all, and when progress was last told

        def report(done: int, total: int) -> None:
            seen.update(done=done, total=total)
            if done == total or done - seen["told"] >= 32:  # one progress event per 32 prompts is plenty
                seen["told"] = done
                progress(done / total, desc=f"Segment everything: {done}/{total} points")

        rgb = _run(session.pixels, ctx.engine.max_pixels)
        masks = _run(generate, ctx.engine, rgb, EverythingConfig(), report, stop.is_set)
    finally:
        ctx.jobs.done(session.token)
    auto_masks = [FixedMask(m.rle, m.predicted_iou, "Auto mask") for m in masks]
    del rgb, masks  # the pixels go before the view is built
    return_free_memory()
    seconds = time.perf_counter() - start
    cancelled = stop.is_set()
    if _moved_on(ctx, asked_for, session.workspace):  # another image came meanwhile: this one's result is dropped
        gr.Info(f"Segment everything on {session.name} stopped: another image was opened. Run it there again.")
        return View(gr.skip(), gr.skip(), gr.skip())
    with ctx.sessions.editing(session) as session:
        session.set_auto(auto_masks)
        how = f"in {seconds:.1f} s"
        if cancelled:
            how = (
                f"cancelled after {seen['done']} of {seen['total']} points, {how}"
                if seen["done"]
                else "cancelled at once"
            )
        if not auto_masks:
            why = (
                " This model has random weights: its masks are noise, and none passes SAM's quality filters."
                if ctx.engine.info.random_weights
                else ""
            )
            status = f"Segment everything found no mask ({how}).{why}"
        else:
            status = (
                f"Segment everything: {plural(len(auto_masks), 'mask')} ({how}). "
                "Untick the ones to drop in the list beside the image; Undo takes them all away."
            )
        gr.Info(status)  # also where the status line is out of sight (a phone, scrolled to the button)
        return _view(ctx, session, status, auto=True)


def _moved_on(ctx: DemoContext, token: str, workspace_token: str | None) -> bool:
    """Whether the page shows another image than session `token`'s now: that session is gone
    (replaced), or its set has another image on screen (the job on the image left was cancelled)."""
    if ctx.sessions.get(token) is None:
        return True
    workspace = ctx.workspaces.get(workspace_token)
    if workspace is None:
        return False
    with workspace.lock:
        return workspace.index_of(token) != workspace.current


def on_everything_cancel(ctx: DemoContext, session: Session | None):
    """Cancel: the job stops after its decoder call under way and shows what it found."""
    if session is None or not ctx.jobs.cancel(session.token):
        return gr.update(visible=False)
    return gr.update(value="Stopping…", interactive=False)


def on_everything_ended(ctx: DemoContext, session: Session | None):
    """After the job (finished, cancelled or failed): Cancel goes away, the button works again."""
    return gr.update(visible=False, value="Cancel", interactive=True), gr.update(interactive=True)


def on_auto_keep(ctx: DemoContext, keep: list[int] | None, session: Session | None) -> View:
    """Show the ticked automatic masks (undoably)."""
    if session is None:
        return _refused(ctx, None, NO_IMAGE)
    with ctx.sessions.editing(session) as session:
        try:
            session.keep_auto(keep or [])
        except (TypeError, ValueError) as exc:
            return _refused(ctx, session, _sentence(str(exc)))
        return _view(
            ctx, session, f"Keeping {len(session.auto_keep)} of {plural(len(session.auto_masks), 'automatic mask')}."
        )


MAX_SAVED_BYTES = 64 << 20  # a saved JSON file; ours holds a PNG per candidate and the image itself


def _text(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValueError("it is not a YOLO label file: it is not UTF-8 text") from None


def _yolo_zip_objects(path: Path, session: Session, max_images: int) -> SavedFile:
    """The objects of a YOLO dataset zip's label file for the image shown (by its name's stem), with
    the class names of its data.yaml or classes.txt; ValueError saying what the zip holds instead."""
    labels = read_yolo_uploads([path], MAX_SAVED_BYTES, 10 * max_images)
    stem = Path(session.name).stem
    if stem not in labels.texts:
        held = ", ".join(where for where, _ in list(labels.texts.values())[:3]) or "no YOLO label file (.txt)"
        raise ValueError(f"it holds {held}{', ...' if len(labels.texts) > 3 else ''}, but no {stem}.txt for this image")
    return yolo_dataset_objects(labels.texts[stem][1], session.size_hw, labels.names, session.categories)


def on_load_saved(ctx: DemoContext, path: str | None, session: Session | None, into: str = "") -> View:
    """Add the objects of a saved file, undoably: our Download JSON, an endpoint response in either
    spelling, a COCO file (instances, or detections whose boxes are segmented here) or a YOLO label
    file (boxes segmented here, or polygons), alone or in a zip of a YOLO dataset; with their names and categories, and refinable again
    where their prompts remake their masks. `into`: said after the file's name (where it went)."""
    if session is None:
        return _refused(ctx, None, "Upload the image these masks were made for first, then load the saved JSON.")
    with ctx.sessions.editing(session) as session:
        if not path:
            return _view(ctx, session, "Ready.")
        name = Path(path).name[:80]
        try:
            if Path(path).stat().st_size > MAX_SAVED_BYTES:
                raise ValueError(f"it is over {MAX_SAVED_BYTES >> 20} MB, larger than any file Download JSON writes")
            data = Path(path).read_bytes()
            if Path(path).suffix.lower() == ".txt":  # YOLO labels: boxes to segment, or polygons
                saved = yolo_objects(_text(data), session.size_hw, session.categories)
            elif Path(path).suffix.lower() == ".zip":  # a YOLO dataset (as its download): this image's labels
                saved = _yolo_zip_objects(Path(path), session, ctx.limits.max_images)
            else:
                saved = saved_objects(data, session.size_hw, session.image_bytes, session.name)
            restored, fixed, skipped = session.add_saved(ctx.engine, saved.objects, saved.categories)
        except (ValueError, RuntimeError) as exc:
            return _refused(ctx, session, f"{name} was not loaded: {exc}")
        if not saved.objects:
            return _refused(ctx, session, f"{name} holds no mask to load.")
        told = [
            f"{plural(restored, 'object')} to refine" if restored else "",
            f"{plural(fixed, 'fixed mask')}" if fixed else "",
            f"{plural(skipped, 'mask')} already shown, skipped" if skipped else "",
        ]
        status = f"Loaded from {name}{into}: " + "; ".join(t for t in told if t) + "."
        if saved.other_image:
            status += " It was saved with another image file of this size, so its objects have no prompts here."
        gr.Info(status)  # also where the status line is out of sight (a phone, scrolled to the button)
        return _view(ctx, session, status)
