"""The Gradio 6 web demo. The only module that imports gradio.

Handlers are plain functions `(ctx, inputs..., state) -> View` that tests call without a
server; `build_demo` binds them to the components. Per-session state is a `Session` in
`gr.State`, also kept under its token in the `SessionStore` (the click fast path, the hover
preview and the downloads read it there; overlapping events of one tab edit its latest state in turn).

A click (or a choice among the candidates) goes to the prompt surface's fast path (`demo_routes`,
outside Gradio), which decodes and answers with the new layers and panels; its Gradio event fires
only if that fails. Encodes and "segment everything" have queues of their own; the other edits
(undo, new object...) skip the queue, so nothing a user does waits behind another user's encode.
"""

from __future__ import annotations

import base64
import functools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import gradio as gr
import numpy as np
from gradio import FileData
from gradio.utils import get_upload_folder as gradio_upload_folder

from .endpoint import COLUMNS, EndpointRow, RequestError
from .engine import SamEngine
from .everything import EverythingConfig, coco_result, generate
from .exports import masks_from_saved
from .fetch import FetchPolicy
from .heap import return_free_memory
from .images import decode_image_bytes, to_rgb_array
from .render import click_status, display_image_uri, exports_html, plural, shown_score, view_json
from .scoring import load_row_image, score
from .session import FixedMask, Session
from .session_store import SessionStore

STATIC = Path(__file__).resolve().parent / "static"
ASSETS = Path(__file__).resolve().parent.parent / "assets"
PROMPTER_JS = (STATIC / "prompter.js").read_text()
PROMPTER_CSS = (STATIC / "prompter.css").read_text()
PANEL_JS = (STATIC / "panel.js").read_text()
PANEL_CSS = (STATIC / "panel.css").read_text()
# Page-wide CSS (passed where the app is mounted or launched): an error is told in its toast; the
# "Error" overlay Gradio puts on output components would cover the prompter's toolbar and hint.
# The upload box is hidden while it holds an image, which the prompter shows (it also takes new
# images: "Change image", drop, paste). A job's progress replaces the status line it reports on.
PAGE_CSS = (
    "#prompter > .wrap:has(> .error) { display: none; }\n"
    "#image-input:has(.image-frame) { display: none; }\n"
    "#status:has(> .wrap:not(.hide)) { min-height: 56px; }\n"
    "#status:has(> .wrap:not(.hide)) .html-container { visibility: hidden; }"
)
# How long Gradio keeps a tab's (light) session after the tab's last Gradio event; Gradio drops it
# an hour after the tab closes in any case. Clicks go by the fast path and do not renew it, so it is
# long; the session store forgets a session after an hour without any edit.
STATE_TTL_SECONDS = 24 * 3600
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


def user_error(message: str) -> gr.Error:
    """An error the user made (told in a toast); not a fault of the server, so no traceback in its log."""
    return gr.Error(message, print_exception=False)


class _PageHTML(gr.HTML):
    """A gr.HTML with its own JavaScript and no custom events.

    gr.HTML looks up custom events by searching js_on_load for every unknown attribute, which
    Gradio does many times per update; these components fire none (the prompter only .change).
    """

    def __getattr__(self, name: str):
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")


class Prompter(_PageHTML):
    """Click/drag surface: shows the image, the mask layers and SVG markers; emits prompt events.

    Props: image_url (the display JPEG), view (JSON from `render.view_json`).
    """

    def __init__(self, image_url: str = "", view: str | None = None, **kwargs):
        # Gradio re-creates the component from gr.update(...) keywords, so the props are parameters.
        kwargs.setdefault("value", "")
        kwargs.setdefault("html_template", '<div class="sd-root"></div>')
        kwargs.setdefault("css_template", PROMPTER_CSS)
        kwargs.setdefault("js_on_load", PROMPTER_JS)
        view = view if view is not None else view_json(None, "Upload an image to start.")
        super().__init__(image_url=image_url, view=view, **kwargs)

    def api_info(self) -> dict:
        return {"type": "string", "description": 'JSON {"token": str, "events": [{"type": "point"|"box", ...}]}'}


class ImageInput(gr.Image):
    """The upload box. A file that is not an image gets a plain message instead of Gradio's internal
    one (which names the server's temporary paths)."""

    def preprocess(self, payload):
        try:
            return super().preprocess(payload)
        except Exception:
            raise user_error(
                "This file is not an image we can read. Upload a photo (JPEG, PNG, WebP, BMP, TIFF or GIF)."
            ) from None

    def get_block_name(self) -> str:
        return "image"  # drawn by Gradio's own image component


class Panel(_PageHTML):
    """A part of the page drawn from the prompter's views: "status", "candidates", "legend" or "exports"."""

    def __init__(self, part: str = "status", initial: str = "", **kwargs):
        kwargs.setdefault("value", initial)
        kwargs.setdefault("css_template", PANEL_CSS)
        kwargs.setdefault("js_on_load", PANEL_JS)
        super().__init__(part=part, **kwargs)


# ---- view -------------------------------------------------------------------------------------
def _auto_update(session: Session | None):
    if session is None or not session.auto_masks:
        return gr.update(visible=False, choices=[], value=[])
    choices = [
        (f"#{i + 1} · IoU {shown_score(m.score):.2f} · {m.area:,} px", i) for i, m in enumerate(session.auto_masks)
    ]
    return gr.update(visible=True, choices=choices, value=list(session.auto_keep))


def _view(
    ctx: DemoContext, session: Session | None, status: str, new_image: np.ndarray | None = None, auto: bool = False
) -> View:
    """Record `session` as the latest state and build the outputs from it.

    new_image: the pixels of a new image, (H, W, 3) uint8, to send to the page. The view carries
    only the layers the page lacks; the automatic masks' list is rebuilt (Gradio redraws each
    updated component) only with `auto` or a new image. Gradio's state gets the session without
    its decoded results (`Session.light`): the store holds them, within its memory budget.
    """
    if session is None:
        return View(None, gr.update(image_url="", view=view_json(None, status)), _auto_update(None))
    _run(session.update, ctx.engine)  # remakes the results of a state the store had lightened
    ctx.sessions.put(session)
    props = dict(view=view_json(session, status, ctx.sessions.view(session)))
    if new_image is not None:
        props["image_url"] = display_image_uri(new_image)
    return View(
        session.light(), gr.update(**props), _auto_update(session) if auto or new_image is not None else gr.skip()
    )


def _require(session: Session | None) -> Session:
    if session is None:
        raise user_error("Upload an image first (or pick an example), then click on it.")
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
    except json.JSONDecodeError:
        raise user_error("The prompt surface sent malformed data; reload the page.") from None
    events = message.get("events", [])
    if session is None:
        if events:
            gr.Warning("Upload an image first (or pick an example), then click on it.")
        return _view(ctx, None, "Upload an image to start.")
    with ctx.sessions.editing(session) as session:
        if message.get("token") != session.token:
            return _view(ctx, session, "Ready.")  # events for an earlier image
        # The page fires this event only when the click's fast path (demo_routes) failed, and then
        # it may lack any layer, even one the fast path made before its answer was lost: send all.
        ctx.sessions.view(session).anchors.clear()
        for problem in session.apply_events(events):
            gr.Warning(problem)
        return _decode_and_view(ctx, session)


def _decode_and_view(ctx: DemoContext, session: Session) -> View:
    start = time.perf_counter()
    decoded = _run(session.update, ctx.engine)
    status = click_status(session, decoded, (time.perf_counter() - start) * 1000)
    return _view(ctx, session, status)


def on_undo(ctx: DemoContext, session: Session | None) -> View:
    with ctx.sessions.editing(_require(session)) as session:
        if not session.undo():
            gr.Info("Nothing to undo.")
        return _decode_and_view(ctx, session)


def on_redo(ctx: DemoContext, session: Session | None) -> View:
    with ctx.sessions.editing(_require(session)) as session:
        if not session.redo():
            gr.Info("Nothing to redo.")
        return _decode_and_view(ctx, session)


def on_clear(ctx: DemoContext, session: Session | None) -> View:
    with ctx.sessions.editing(_require(session)) as session:
        session.clear()
        return _decode_and_view(ctx, session)


def on_new_object(ctx: DemoContext, session: Session | None) -> View:
    with ctx.sessions.editing(_require(session)) as session:
        _run(session.new_object)
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
    with ctx.sessions.editing(_require(session)) as session:
        session.auto_keep = tuple(sorted(int(i) for i in keep or []))
        return _view(
            ctx, session, f"Keeping {len(session.auto_keep)} of {plural(len(session.auto_masks), 'automatic mask')}."
        )


def on_load_saved(ctx: DemoContext, path: str | None, session: Session | None) -> View:
    """Draw the masks of a saved JSON (our export, or a response in either spelling)."""
    if session is None:
        raise user_error("Upload the image these masks were made for first, then load the saved JSON.")
    with ctx.sessions.editing(session) as session:
        if not path:
            return _view(ctx, session, "Ready.")
        masks = _run(masks_from_saved, Path(path).read_bytes(), session.size_hw)
        session.imported = session.imported + masks
        return _view(ctx, session, f"Loaded {plural(len(masks), 'mask')} from {Path(path).name}.")


# ---- the Space's API (gradio_client) --------------------------------------------------------------
def _api_image(image) -> str:
    """The endpoint's image cell for an API call: an upload (gradio_client.handle_file) as base64,
    or an http(s) URL as given. Only files in Gradio's upload folder are read."""
    if isinstance(image, dict) and isinstance(image.get("path"), str):
        path = Path(image["path"]).resolve()
        if not path.is_file() or not path.is_relative_to(Path(gradio_upload_folder()).resolve()):
            raise user_error("image: send the file with gradio_client.handle_file(path), or an http(s) URL")
        return base64.b64encode(path.read_bytes()).decode("ascii")
    if isinstance(image, str) and image.strip().lower().startswith(("http://", "https://")):
        return image.strip()
    raise user_error("image: send a file with gradio_client.handle_file(path), or an http(s) URL")


def _api_call(action, *args):
    """Run an API call; turn a request or prompt error into a gr.Error that names the column."""
    try:
        return action(*args)
    except RequestError as exc:
        raise user_error(f"{exc.column}: {exc}" if exc.column else str(exc)) from None
    except (ValueError, RuntimeError) as exc:
        raise user_error(str(exc)) from None


def api_segment(
    ctx: DemoContext, image, input_points="", input_boxes="", input_labels="", multimask_output: bool = False
) -> dict:
    """One row of the endpoint's request, as /score would answer it: {"response": {"predictions": [...]}}."""
    row = [_api_image(image), input_points, input_boxes, input_labels, multimask_output]
    body = {"input_data": {"columns": list(COLUMNS), "index": [0], "data": [row]}, "params": {}}
    return _api_call(lambda: score(body, ctx.engine, ctx.fetch)[0])


def api_segment_everything(
    ctx: DemoContext,
    image,
    points_per_side: int = 32,
    pred_iou_thresh: float = 0.88,
    stability_score_thresh: float = 0.95,
) -> dict:
    """Every object in the image: {"width", "height", "annotations": COCO annotations with RLE}."""

    def run():
        config = EverythingConfig(
            points_per_side=int(points_per_side),
            pred_iou_thresh=float(pred_iou_thresh),
            stability_score_thresh=float(stability_score_thresh),
        )
        row = EndpointRow(_api_image(image), None, None, None, False)
        rgb = load_row_image(row, 0, ctx.engine, ctx.fetch)
        return coco_result(rgb.shape[:2], generate(ctx.engine, rgb, config))

    return _api_call(run)


def _add_api(ctx: DemoContext) -> None:
    """The two endpoints of the Space's "Use via API" page (everything else there is hidden)."""

    def segment(
        image: FileData | str,
        input_points: str | list = "",
        input_boxes: str | list = "",
        input_labels: str | list = "",
        multimask_output: bool = False,
    ) -> dict:
        """Segment with the Azure endpoint's five columns. image: a file (gradio_client.handle_file)
        or an http(s) URL; input_points (groups, points, 2), input_boxes (n, 4) and input_labels
        (groups, points) as JSON text or lists, "" for none. Returns what /score returns for this
        row: {"response": {"predictions": [{"masks_per_prediction": [{"encoded_binary_mask",
        "iou_score"}]}]}}, masks as base64 PNGs of the image's size."""
        return api_segment(ctx, image, input_points, input_boxes, input_labels, multimask_output)

    def segment_everything(
        image: FileData | str,
        points_per_side: int = 32,
        pred_iou_thresh: float = 0.88,
        stability_score_thresh: float = 0.95,
    ) -> dict:
        """Find every object (SAM's automatic mask generator). image: a file or an http(s) URL.
        Returns {"width", "height", "annotations"}: COCO annotations with RLE segmentation, bbox
        XYWH, area, predicted_iou and stability_score, largest first."""
        return api_segment_everything(ctx, image, points_per_side, pred_iou_thresh, stability_score_thresh)

    gr.api(segment, api_name="segment", concurrency_id=ENCODE_CALLS, concurrency_limit=1)
    gr.api(segment_everything, api_name="segment_everything", concurrency_id=EVERYTHING_CALLS, concurrency_limit=1)


# ---- layout -------------------------------------------------------------------------------------
def build_demo(
    engine: SamEngine, sessions: SessionStore | None = None, fetch: FetchPolicy = FetchPolicy()
) -> gr.Blocks:
    """The Blocks app for one loaded engine; `sessions` is shared with the demo's HTTP routes."""
    ctx = DemoContext(engine, sessions if sessions is not None else SessionStore(), fetch)
    with gr.Blocks(title="SAM demo — Segment Anything", delete_cache=(3600, 3600)) as demo:
        state = gr.State(None, time_to_live=STATE_TTL_SECONDS)
        gr.Markdown(
            f"## Segment Anything — click to segment\n"
            f"Model `{engine.info.model}` on `{engine.info.device}` ({engine.info.dtype}). "
            "Upload a photo, then click or tap what you want to segment."
        )
        gr.Markdown(f"<small>Plan: {engine.plan.describe()}</small>", elem_id="plan")
        if engine.info.random_weights:
            gr.Markdown(
                "⚠️ **This model has random weights** (a test checkpoint): masks are meaningless. "
                "Run with `--model facebook/sam-vit-large` or a downloaded checkpoint for real results.",
                elem_id="random-weights-warning",
            )
        with gr.Row(equal_height=False):
            with gr.Column(scale=3, min_width=320):
                status = Panel("status", "Upload an image to start.", elem_id="status")
                prompter = Prompter(elem_id="prompter")

            with gr.Column(scale=1, min_width=300):
                image_in = ImageInput(
                    label="Image (upload, paste or drop)",
                    type="filepath",
                    image_mode=None,
                    sources=["upload", "clipboard"],
                    elem_id="image-input",
                    height=220,
                )
                examples = sorted(str(p) for p in ASSETS.glob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
                example_picked = (
                    gr.Examples(examples=examples, inputs=image_in, label="Example photos").load_input_event
                    if examples
                    else None
                )
                with gr.Row():
                    undo = gr.Button("↶ Undo", size="sm", elem_id="undo", min_width=60)
                    redo = gr.Button("↷ Redo", size="sm", elem_id="redo", min_width=60)
                    clear = gr.Button("Clear", size="sm", elem_id="clear", min_width=60)
                new_object = gr.Button("+ New object", variant="primary", elem_id="new-object")
                everything = gr.Button("Segment everything", elem_id="segment-everything")
                auto_keep = gr.CheckboxGroup(
                    label="Automatic masks (untick to drop)", visible=False, elem_id="auto-masks"
                )
                candidates = Panel("candidates", elem_id="candidates")
                legend = Panel("legend", elem_id="legend")
                with gr.Accordion("Export and import", open=True):
                    exports = Panel("exports", exports_html(None), elem_id="exports")
                    load_saved = gr.UploadButton(
                        "Load saved JSON", file_types=[".json"], size="sm", elem_id="load-json"
                    )
        del candidates, legend, exports  # drawn by the page from the prompter's views
        outputs = [state, prompter, auto_keep]
        # Edits skip Gradio's queue: they take milliseconds, and so run at once, side by side.
        edit = dict(outputs=outputs, queue=False, show_progress="hidden", api_visibility="private")
        bind = functools.partial

        def long_job(queue: str, progress_on) -> dict:
            """A job of its own queue, one at a time, so no click waits behind it; its progress shows
            in one place (the encode's over the image, segment everything's on the status line)."""
            return dict(
                outputs=outputs,
                show_progress="full",
                show_progress_on=progress_on,
                concurrency_id=queue,
                concurrency_limit=1,
                api_visibility="private",
            )

        # A new image comes from an upload (file, paste, drop) or an example; not .change, which
        # fires twice when one image replaces another.
        encode = dict(inputs=[image_in, state], **long_job(ENCODE_CALLS, prompter))
        image_in.upload(bind(on_image, ctx), **encode)
        if example_picked is not None:
            example_picked.then(bind(on_image, ctx), **encode)
        prompter.change(bind(on_prompt, ctx), inputs=[prompter, state], trigger_mode="always_last", **edit)
        for button, handler in ((undo, on_undo), (redo, on_redo), (clear, on_clear), (new_object, on_new_object)):
            button.click(bind(handler, ctx), inputs=state, **edit)
        auto_keep.input(bind(on_auto_keep, ctx), inputs=[auto_keep, state], **edit)
        load_saved.upload(bind(on_load_saved, ctx), inputs=[load_saved, state], **edit)
        everything.click(bind(on_everything, ctx), inputs=state, **long_job(EVERYTHING_CALLS, status))
        _add_api(ctx)
    return demo
