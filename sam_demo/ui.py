"""The Gradio 6 web demo. The only module that imports gradio.

Handlers are plain functions `(ctx, inputs..., state) -> View` that tests call without a
server; `build_demo` binds them to the components. Per-session state is a `Session` in
`gr.State`, also kept under its token in the `SessionStore` (the hover preview and the
downloads read it there; overlapping events of one tab edit its latest state in turn).

Queues: encodes, edits (clicks, undo, candidates...) and "segment everything" each have their
own, so a click never waits behind another user's encode; edits of different users run side by side.
"""

from __future__ import annotations

import functools
import html
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import gradio as gr
import numpy as np

from .demo_routes import export_url
from .engine import SamEngine
from .everything import EverythingConfig, generate
from .exports import masks_from_saved
from .images import decode_image_bytes, to_rgb_array
from .render import display_image_uri, legend_rows, shown_score, view_json
from .session import FixedMask, Session
from .session_store import SessionStore

STATIC = Path(__file__).resolve().parent / "static"
ASSETS = Path(__file__).resolve().parent.parent / "assets"
PROMPTER_JS = (STATIC / "prompter.js").read_text()
PROMPTER_CSS = (STATIC / "prompter.css").read_text()
ENCODE_CALLS = "sam-encode"  # uploads: one encoder run at a time
EDIT_CALLS = "sam-edit"  # clicks, boxes, candidates, undo/redo...: decodes of different users side by side
EDIT_CONCURRENCY = 2
EVERYTHING_CALLS = "sam-everything"  # "segment everything" jobs (seconds to minutes on a CPU)


@dataclass(frozen=True)
class DemoContext:
    """What the handlers share: the engine and the live sessions."""

    engine: SamEngine
    sessions: SessionStore = field(default_factory=SessionStore)


class View(NamedTuple):
    """Outputs of every handler, in the order of `build_demo`'s outputs."""

    state: Session | None
    prompter: dict
    status: str
    candidates: dict
    legend: str
    auto_keep: dict
    exports: str


class Prompter(gr.HTML):
    """Click/drag surface: shows the image, the mask layers and SVG markers; emits prompt events.

    Props: image_url (the display JPEG), view (JSON from `render.view_json`).
    """

    def __init__(self, image_url: str = "", view: str | None = None, **kwargs):
        # Gradio re-creates the component from gr.update(...) keywords, so the props are parameters.
        kwargs.setdefault("value", "")
        kwargs.setdefault("html_template", '<div class="sd-root"></div>')
        kwargs.setdefault("css_template", PROMPTER_CSS)
        kwargs.setdefault("js_on_load", PROMPTER_JS)
        super().__init__(image_url=image_url, view=view if view is not None else view_json(None), **kwargs)

    def api_info(self) -> dict:
        return {"type": "string", "description": 'JSON {"token": str, "events": [{"type": "point"|"box", ...}]}'}

    def __getattr__(self, name: str):
        # gr.HTML looks up custom events by searching js_on_load for every unknown attribute, which
        # Gradio does many times per update; the prompter has none (it only fires .change).
        raise AttributeError(f"'Prompter' object has no attribute '{name}'")


# ---- view -------------------------------------------------------------------------------------
def _candidates_update(session: Session | None):
    result = None if session is None else session.results.get(len(session.objects) - 1)
    if result is None or not result.prompts.multimask:
        return gr.update(visible=False, choices=[], value=None)
    best = int(np.argmax(result.scores))
    choices = [(f"Mask {k + 1} · IoU {shown_score(s):.3f}" + (" (best)" if k == best else ""), k)
               for k, s in enumerate(result.scores)]
    return gr.update(visible=True, choices=choices, value=result.chosen)


def _legend(session: Session | None) -> str:
    if session is None:
        return ""
    rows = "".join(
        f'<li><span style="display:inline-block;width:12px;height:12px;border-radius:3px;background:{c};'
        f'margin-right:6px;vertical-align:middle"></span><b>{html.escape(n)}</b> — {html.escape(t)}</li>'
        for c, n, t in legend_rows(session.layers())
    )
    return f'<ul style="list-style:none;padding-left:0;margin:0">{rows}</ul>'


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'s' * (count != 1)}"


def _auto_update(session: Session | None):
    if session is None or not session.auto_masks:
        return gr.update(visible=False, choices=[], value=[])
    choices = [(f"#{i + 1} · IoU {m.score:.2f} · {int(m.mask.sum()):,} px", i) for i, m in enumerate(session.auto_masks)]
    return gr.update(visible=True, choices=choices, value=list(session.auto_keep))


EXPORT_LINKS = (
    ("download-json", "sam-endpoint.json", "Download JSON (endpoint request + response)"),
    ("download-zip", "masks.zip", "PNG masks (zip)"),
    ("download-coco", "coco.json", "COCO JSON (RLE)"),
)


def exports_html(session: Session | None) -> str:
    """The export panel: a status line and three download links; the server builds a file when clicked."""
    results = [] if session is None else session.finished_results()
    fixed = [] if session is None else session.fixed_masks()
    reasons = dict.fromkeys((kind for _, kind, _ in EXPORT_LINKS), "Click on the image to segment an object first.")
    note = ""
    if results or fixed:
        prompts = sum(len(r.prompts.points) + (r.prompts.box_xyxy is not None) for _, r in results)
        status = f"Exports ready: {_plural(len(results) + len(fixed), 'object')}, {_plural(prompts, 'prompt')}."
        reasons = dict.fromkeys(reasons, "")
        if not results:
            reasons["sam-endpoint.json"] = note = ("Download JSON replays prompts, and loaded or automatic masks have "
                                                   "none: click on the image to add an object.")
    else:
        status = "Nothing to export yet."
    links = []
    for elem_id, kind, label in EXPORT_LINKS:
        if reasons[kind]:
            links.append(f'<a id="{elem_id}" class="sd-download" aria-disabled="true" '
                         f'title="{html.escape(reasons[kind])}">{label}</a>')
        else:
            name = html.escape(f"{Path(session.name).stem or 'image'}.{kind}")
            links.append(f'<a id="{elem_id}" class="sd-download" href="{export_url(session, kind)}" '
                         f'download="{name}">{label}</a>')
    note = f'<p class="sd-export-note">{note}</p>' if note else ""
    return f'<p id="export-status">{status}</p>{note}<div class="sd-downloads">{"".join(links)}</div>'


def _view(ctx: DemoContext, session: Session | None, status: str, new_image: bool = False, auto: bool = False,
          prompter_current: bool = False) -> View:
    """Record `session` as the latest state and build the outputs from it.

    Only what differs from what this session's page was last sent is sent (Gradio rebuilds each
    updated component, which costs more CPU than the click's decode): the prompter's view is
    skipped with `prompter_current` (the click's fast path has shown it), and the automatic masks'
    list is rebuilt only with `auto` or a new image.
    """
    if session is None:
        return View(None, gr.update(image_url="", view=view_json(None)), status, _candidates_update(None), "",
                    _auto_update(None), exports_html(None))
    ctx.sessions.put(session)
    cache = ctx.sessions.view(session)
    if prompter_current:
        prompter = gr.skip()
    else:
        props = dict(view=view_json(session, cache))
        if new_image:
            props["image_url"] = display_image_uri(session.rgb)
        prompter = gr.update(**props)
    panels = dict(status=status, candidates=_candidates_update(session), legend=_legend(session),
                  auto_keep=_auto_update(session) if auto or new_image else cache.panels.get("auto_keep"),
                  exports=exports_html(session))
    sent, cache.panels = cache.panels, panels
    return View(session, prompter, **{k: gr.skip() if sent.get(k) == v else v for k, v in panels.items()})


def _require(session: Session | None) -> Session:
    if session is None:
        raise gr.Error("Upload an image first (or pick an example), then click on it.")
    return session


def _run(action, *args):
    """Call core code; turn its ValueError/RuntimeError into a readable gr.Error."""
    try:
        return action(*args)
    except (ValueError, RuntimeError) as exc:
        raise gr.Error(str(exc)) from None


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
    session = Session(image_bytes=data, rgb=rgb, embedding=embedding, name=Path(path).name)
    h, w = rgb.shape[:2]
    how = f"in {seconds:.2f} s" if encoded else f"(cached embedding, {seconds * 1000:.0f} ms)"
    return _view(ctx, session, f"Image {w}×{h} encoded {how} on {engine.info.device}. Click on an object to segment it.",
                 new_image=True)


def on_prompt(ctx: DemoContext, value: str, session: Session | None) -> View:
    """New clicks or boxes from the browser: apply the events not seen yet, then decode."""
    try:
        message = json.loads(value) if value else {}
    except json.JSONDecodeError:
        raise gr.Error("The prompt surface sent malformed data; reload the page.") from None
    events = message.get("events", [])
    if session is None:
        if events:
            gr.Warning("Upload an image first (or pick an example), then click on it.")
        return _view(ctx, None, "Upload an image to start.")
    with ctx.sessions.editing(session) as session:
        if message.get("token") != session.token:
            return _view(ctx, session, "Ready.")  # events for an earlier image
        # Usually the prompt surface's fast path (demo_routes) has applied and decoded these events
        # already, and shown the masks; this event then only refreshes the panels. Otherwise it
        # does the edit itself.
        applied = len(events) <= session.consumed_events
        for problem in session.apply_events(events):
            gr.Warning(problem)
        return _decode_and_view(ctx, session, prompter_current=applied)


def _decode_and_view(ctx: DemoContext, session: Session, prompter_current: bool = False) -> View:
    start = time.perf_counter()
    decoded = _run(session.update, ctx.engine)
    ms = (time.perf_counter() - start) * 1000
    active = session.layers()[-1]
    if active.score is None:
        status = f"Object {active.number}: click on the image or drag a box."
    else:
        status = f"Object {active.number}: IoU {shown_score(active.score):.3f}"
        if decoded:
            status += f" · decoded in {ms:.0f} ms"
        if active.prompts.multimask:
            status += " · 3 candidates: pick another below if the best is not what you meant"
    return _view(ctx, session, status, prompter_current=prompter_current)


def on_candidate(ctx: DemoContext, index: int | None, session: Session | None) -> View:
    with ctx.sessions.editing(_require(session)) as session:
        if index is None:
            return _view(ctx, session, "Ready.")
        _run(session.select_candidate, index)
        return _decode_and_view(ctx, session)


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

    masks = _run(generate, ctx.engine, session.rgb, EverythingConfig(), report)
    seconds = time.perf_counter() - start
    with ctx.sessions.editing(session) as session:
        session.auto_masks = [FixedMask(m.segmentation, m.predicted_iou, "Auto mask") for m in masks]
        session.auto_keep = tuple(range(len(masks)))
        if not masks:
            return _view(ctx, session, f"Segment everything found no mask ({seconds:.1f} s).", auto=True)
        return _view(ctx, session, f"Segment everything: {_plural(len(masks), 'mask')} in {seconds:.1f} s. "
                                   "Untick the ones to drop in the list beside the image.", auto=True)


def on_auto_keep(ctx: DemoContext, keep: list[int] | None, session: Session | None) -> View:
    with ctx.sessions.editing(_require(session)) as session:
        session.auto_keep = tuple(sorted(int(i) for i in keep or []))
        return _view(ctx, session, f"Keeping {len(session.auto_keep)} of "
                                   f"{_plural(len(session.auto_masks), 'automatic mask')}.")


def on_load_saved(ctx: DemoContext, path: str | None, session: Session | None) -> View:
    """Draw the masks of a saved JSON (our export, or a response in either spelling)."""
    with ctx.sessions.editing(_require(session)) as session:
        if not path:
            return _view(ctx, session, "Ready.")
        masks = _run(masks_from_saved, Path(path).read_bytes(), session.rgb.shape[:2])
        session.imported = session.imported + masks
        return _view(ctx, session, f"Loaded {_plural(len(masks), 'mask')} from {Path(path).name}.")


# ---- layout -------------------------------------------------------------------------------------
def build_demo(engine: SamEngine, sessions: SessionStore | None = None) -> gr.Blocks:
    """The Blocks app for one loaded engine; `sessions` is shared with the demo's HTTP routes."""
    ctx = DemoContext(engine, sessions if sessions is not None else SessionStore())
    with gr.Blocks(title="SAM demo — Segment Anything", delete_cache=(3600, 3600)) as demo:
        state = gr.State(None, delete_callback=lambda s: s is not None and ctx.sessions.discard(s.token))
        gr.Markdown(
            f"## Segment Anything — click to segment\n"
            f"Model `{engine.info.model}` on `{engine.info.device}` ({engine.info.dtype}). "
            "Left click adds a point, right click or Shift+click subtracts, drag draws a box."
        )
        if engine.info.random_weights:
            gr.Markdown(
                "⚠️ **This model has random weights** (a test checkpoint): masks are meaningless. "
                "Run with `--model facebook/sam-vit-large` or a downloaded checkpoint for real results.",
                elem_id="random-weights-warning",
            )
        with gr.Row(equal_height=False):
            with gr.Column(scale=3, min_width=320):
                status = gr.Markdown("Upload an image to start.", elem_id="status")
                prompter = Prompter(elem_id="prompter")

            with gr.Column(scale=1, min_width=300):
                image_in = gr.Image(label="Image (upload, paste or drop)", type="filepath", image_mode=None,
                                    sources=["upload", "clipboard"], elem_id="image-input", height=220)
                examples = sorted(str(p) for p in ASSETS.glob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
                if examples:
                    gr.Examples(examples=examples, inputs=image_in, label="Example photos")
                with gr.Row():
                    undo = gr.Button("↶ Undo", size="sm", elem_id="undo", min_width=60)
                    redo = gr.Button("↷ Redo", size="sm", elem_id="redo", min_width=60)
                    clear = gr.Button("Clear", size="sm", elem_id="clear", min_width=60)
                new_object = gr.Button("+ New object", variant="primary", elem_id="new-object")
                everything = gr.Button("Segment everything", elem_id="segment-everything")
                auto_keep = gr.CheckboxGroup(label="Automatic masks (untick to drop)", visible=False, elem_id="auto-masks")
                candidates = gr.Radio(label="Candidate masks for a single click", visible=False, elem_id="candidates")
                legend = gr.HTML(elem_id="legend")
                with gr.Accordion("Export and import", open=True):
                    exports = gr.HTML(exports_html(None), elem_id="exports", css_template=EXPORTS_CSS)
                    load_saved = gr.UploadButton("Load saved JSON", file_types=[".json"], size="sm", elem_id="load-json")
        outputs = [state, prompter, status, candidates, legend, auto_keep, exports]
        edit = dict(outputs=outputs, queue=False,
                    show_progress="hidden", api_visibility="private")
        bind = functools.partial
        image_in.change(bind(on_image, ctx), inputs=[image_in, state], outputs=outputs, show_progress="full",
                        concurrency_id=ENCODE_CALLS, concurrency_limit=1, api_visibility="private")
        prompter.change(bind(on_prompt, ctx), inputs=[prompter, state], trigger_mode="always_last", **edit)
        candidates.input(bind(on_candidate, ctx), inputs=[candidates, state], **edit)
        for button, handler in ((undo, on_undo), (redo, on_redo), (clear, on_clear), (new_object, on_new_object)):
            button.click(bind(handler, ctx), inputs=state, **edit)
        auto_keep.input(bind(on_auto_keep, ctx), inputs=[auto_keep, state], **edit)
        load_saved.upload(bind(on_load_saved, ctx), inputs=[load_saved, state], **edit)
        # A long job of its own queue, so other users' clicks are not held behind it.
        everything.click(bind(on_everything, ctx), inputs=state, outputs=outputs, show_progress="full",
                         concurrency_id=EVERYTHING_CALLS, concurrency_limit=1, api_visibility="private")
    return demo


EXPORTS_CSS = """
.sd-downloads { display: flex; flex-direction: column; gap: 6px; }
.sd-download { display: block; text-align: center; padding: 6px 10px; border-radius: var(--button-small-radius, 6px);
               border: 1px solid var(--button-secondary-border-color, #d1d5db); font-size: var(--button-small-text-size, 14px);
               background: var(--button-secondary-background-fill, #f3f4f6); color: var(--button-secondary-text-color, inherit);
               text-decoration: none; font-weight: 600; }
.sd-download:hover:not([aria-disabled]) { background: var(--button-secondary-background-fill-hover, #e5e7eb); }
.sd-download[aria-disabled] { opacity: 0.5; cursor: not-allowed; }
.sd-export-note { font-size: 13px; opacity: 0.75; margin: 4px 0; }
"""
