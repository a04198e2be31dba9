"""The Gradio 6 web demo. The only module that imports gradio.

Handlers are plain functions `(engine, inputs..., state) -> outputs` that tests call without a
server; `build_demo` binds them to the components. Per-session state is a `Session` in
`gr.State`; every model call shares one `concurrency_id`.
"""

from __future__ import annotations

import functools
import json
import tempfile
import time
from pathlib import Path

import gradio as gr
import numpy as np

from .engine import SamEngine
from .exports import coco_export, endpoint_export, masks_from_saved, masks_zip
from .images import decode_image_bytes, to_rgb_array
from .render import display_image_uri, hex_color, markers_json, overlay_uri
from .everything import EverythingConfig, generate
from .session import FixedMask, Session

STATIC = Path(__file__).resolve().parent / "static"
ASSETS = Path(__file__).resolve().parent.parent / "assets"
MODEL_CALLS = "sam-model"  # the shared concurrency_id of every interactive event that runs the model
EVERYTHING_CALLS = "sam-everything"  # "segment everything" jobs (seconds to minutes on a CPU)


class Prompter(gr.HTML):
    """Click/drag surface: shows the image, the mask overlay and SVG markers; emits prompt events."""

    def __init__(self, image_url: str = "", overlay_url: str = "", markers: str | None = None, **kwargs):
        # Gradio re-creates the component from gr.update(...) keywords, so the props are parameters.
        kwargs.setdefault("value", "")
        kwargs.setdefault("html_template", '<div class="sd-root"></div>')
        kwargs.setdefault("css_template", (STATIC / "prompter.css").read_text())
        kwargs.setdefault("js_on_load", (STATIC / "prompter.js").read_text())
        super().__init__(image_url=image_url, overlay_url=overlay_url,
                         markers=markers if markers is not None else markers_json(None), **kwargs)

    def api_info(self) -> dict:
        return {"type": "string", "description": 'JSON {"token": str, "events": [{"type": "point"|"box", ...}]}'}


# ---- view -------------------------------------------------------------------------------------
def _candidates_update(session: Session | None):
    if session is None:
        return gr.update(visible=False, choices=[], value=None)
    result = session.results.get(len(session.objects) - 1)
    if result is None or not result.prompts.multimask:
        return gr.update(visible=False, choices=[], value=None)
    best = int(np.argmax(result.scores))
    choices = [(f"Mask {k + 1} · IoU {s:.3f}" + (" (best)" if k == best else ""), k) for k, s in enumerate(result.scores)]
    return gr.update(visible=True, choices=choices, value=result.chosen)


def _legend(session: Session | None) -> str:
    if session is None:
        return ""
    items = []
    fixed = session.fixed_masks()
    for i, f in enumerate(fixed):
        items.append((hex_color(i), f"{f.label} {i + 1}", f"IoU {f.score:.3f}"))
    base = len(fixed)
    active = len(session.objects) - 1
    for i, prompts in enumerate(session.objects):
        result = session.results.get(i)
        what = ", ".join(p for p in (_plural(len(prompts.points), "point") if prompts.points else "",
                                     "box" if prompts.box_xyxy else "") if p)
        score = f"IoU {result.score:.3f}" if result else "no prompt yet"
        name = f"Object {base + i + 1}" + (" (editing)" if i == active else "")
        items.append((hex_color(base + i), name, f"{score}{' · ' + what if what else ''}"))
    rows = "".join(
        f'<li><span style="display:inline-block;width:12px;height:12px;border-radius:3px;background:{c};'
        f'margin-right:6px;vertical-align:middle"></span><b>{n}</b> — {t}</li>' for c, n, t in items
    )
    return f'<ul style="list-style:none;padding-left:0;margin:0">{rows}</ul>'


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'s' * (count != 1)}"


def _auto_update(session: Session | None):
    if session is None or not session.auto_masks:
        return gr.update(visible=False, choices=[], value=[])
    choices = [(f"#{i + 1} · IoU {m.score:.2f} · {int(m.mask.sum()):,} px", i) for i, m in enumerate(session.auto_masks)]
    return gr.update(visible=True, choices=choices, value=list(session.auto_keep))


def _view(session: Session | None, status: str, new_image: bool = False) -> tuple:
    """Outputs shared by every handler: state, prompter, status, candidates, legend, kept auto masks."""
    if session is None:
        prompter = gr.update(image_url="", overlay_url="", markers=markers_json(None))
    else:
        props = dict(overlay_url=overlay_uri(session), markers=markers_json(session))
        if new_image:
            props["image_url"] = display_image_uri(session.rgb)
        prompter = gr.update(**props)
    return session, prompter, status, _candidates_update(session), _legend(session), _auto_update(session)


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
def on_image(engine: SamEngine, path: str | None, progress=gr.Progress()) -> tuple:
    """A new image (upload, paste, drop or example): decode it and compute its embedding now."""
    if not path:
        return _view(None, "Upload an image to start.")
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
    return _view(session, f"Image {w}×{h} encoded {how} on {engine.info.device}. Click on an object to segment it.", new_image=True)


def on_prompt(engine: SamEngine, value: str, session: Session | None) -> tuple:
    """New clicks or boxes from the browser: apply the events not seen yet, then decode."""
    try:
        message = json.loads(value) if value else {}
    except json.JSONDecodeError:
        raise gr.Error("The prompt surface sent malformed data; reload the page.") from None
    events = message.get("events", [])
    if session is None:
        if events:
            gr.Warning("Upload an image first (or pick an example), then click on it.")
        return _view(None, "Upload an image to start.")
    if message.get("token") != session.token or len(events) <= session.consumed_events:
        return _view(session, "Ready.")  # events for an earlier image, or nothing new
    session = session.fork()
    problems = []
    for event in events[session.consumed_events :]:
        try:
            if event.get("type") == "box":
                session.set_box(float(event["x0"]), float(event["y0"]), float(event["x1"]), float(event["y1"]))
            else:
                session.add_point(float(event["x"]), float(event["y"]), 1 if int(event.get("label", 1)) == 1 else 0)
        except (KeyError, TypeError, ValueError) as exc:
            problems.append(str(exc))
    session.consumed_events = len(events)
    for problem in problems:
        gr.Warning(problem)
    return _decode_and_view(engine, session)


def _decode_and_view(engine: SamEngine, session: Session) -> tuple:
    start = time.perf_counter()
    decoded = _run(session.update, engine)
    ms = (time.perf_counter() - start) * 1000
    result = session.results.get(len(session.objects) - 1)
    index = len(session.fixed_masks()) + len(session.objects)
    if result is None:
        status = f"Object {index}: click on the image or drag a box."
    else:
        status = f"Object {index}: IoU {result.score:.3f}"
        if decoded:
            status += f" · decoded in {ms:.0f} ms"
        if result.prompts.multimask:
            status += " · 3 candidates: pick another below if the best is not what you meant"
    return _view(session, status)


def on_candidate(engine: SamEngine, index: int | None, session: Session | None) -> tuple:
    session = _require(session).fork()
    if index is None:
        return _view(session, "Ready.")
    _run(session.select_candidate, index)
    return _decode_and_view(engine, session)


def on_undo(engine: SamEngine, session: Session | None) -> tuple:
    session = _require(session).fork()
    if not session.undo():
        gr.Info("Nothing to undo.")
    return _decode_and_view(engine, session)


def on_redo(engine: SamEngine, session: Session | None) -> tuple:
    session = _require(session).fork()
    if not session.redo():
        gr.Info("Nothing to redo.")
    return _decode_and_view(engine, session)


def on_clear(engine: SamEngine, session: Session | None) -> tuple:
    session = _require(session).fork()
    session.clear()
    return _decode_and_view(engine, session)


def on_new_object(engine: SamEngine, session: Session | None) -> tuple:
    session = _require(session).fork()
    _run(session.new_object)
    return _decode_and_view(engine, session)


def on_everything(engine: SamEngine, session: Session | None, progress=gr.Progress()) -> tuple:
    """Segment everything on the current image (Meta's defaults) from its cached embedding."""
    session = _require(session).fork()
    start = time.perf_counter()

    reported = 0

    def report(done: int, total: int) -> None:
        nonlocal reported
        if done == total or done - reported >= 32:  # one progress event per 32 prompts is plenty
            reported = done
            progress(done / total, desc=f"Segment everything: {done}/{total} points")

    masks = _run(generate, engine, session.rgb, EverythingConfig(), report)
    session.auto_masks = [FixedMask(m.segmentation, m.predicted_iou, "Auto mask") for m in masks]
    session.auto_keep = tuple(range(len(masks)))
    seconds = time.perf_counter() - start
    if not masks:
        return _view(session, f"Segment everything found no mask ({seconds:.1f} s).")
    return _view(session, f"Segment everything: {_plural(len(masks), 'mask')} in {seconds:.1f} s. "
                          "Untick the ones to drop in the list beside the image.")


def on_auto_keep(keep: list[int] | None, session: Session | None) -> tuple:
    session = _require(session).fork()
    session.auto_keep = tuple(sorted(int(i) for i in keep or []))
    return _view(session, f"Keeping {len(session.auto_keep)} of {_plural(len(session.auto_masks), 'automatic mask')}.")


def prepare_exports(session: Session | None) -> tuple:
    """Write the three downloads for the current state; the buttons download them on click.

    Runs after each change (outside the model queue), so a click downloads at once. Files go
    to one folder per session and are overwritten; Gradio serves copies from its cache.
    """
    results = [] if session is None else session.finished_results()
    if session is None or not (results or session.fixed_masks()):
        off = gr.update(value=None, interactive=False)
        return off, off, off, "Nothing to export yet."
    folder = Path(tempfile.gettempdir()) / f"sam-demo-{session.token}"
    folder.mkdir(exist_ok=True)
    stem = Path(session.name).stem or "image"
    files = {
        ".masks.zip": masks_zip(session),
        ".coco.json": json.dumps(coco_export(session)).encode(),
    }
    if results:
        files[".sam-endpoint.json"] = json.dumps(endpoint_export(session)).encode()
    paths = {}
    for suffix, content in files.items():
        paths[suffix] = folder / f"{stem}{suffix}"
        paths[suffix].write_bytes(content)
    prompts = sum(len(r.prompts.points) + (r.prompts.box_xyxy is not None) for _, r in results)
    endpoint = paths.get(".sam-endpoint.json")
    return (
        gr.update(value=str(endpoint) if endpoint else None, interactive=endpoint is not None),
        gr.update(value=str(paths[".masks.zip"]), interactive=True),
        gr.update(value=str(paths[".coco.json"]), interactive=True),
        f"Exports ready: {_plural(len(results) + len(session.fixed_masks()), 'object')}, {_plural(prompts, 'prompt')}.",
    )


def on_load_saved(path: str | None, session: Session | None) -> tuple:
    """Draw the masks of a saved JSON (our export, or a response in either spelling)."""
    session = _require(session).fork()
    if not path:
        return _view(session, "Ready.")
    masks = _run(masks_from_saved, Path(path).read_bytes(), session.rgb.shape[:2])
    session.imported = session.imported + masks
    return _view(session, f"Loaded {_plural(len(masks), 'mask')} from {Path(path).name}.")


# ---- layout -------------------------------------------------------------------------------------
def build_demo(engine: SamEngine) -> gr.Blocks:
    """The Blocks app for one loaded engine."""
    with gr.Blocks(title="SAM demo — Segment Anything", delete_cache=(3600, 3600)) as demo:
        state = gr.State(None)
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
                    export_status = gr.Markdown("Nothing to export yet.", elem_id="export-status")
                    download_json = gr.DownloadButton("Download JSON (endpoint request + response)", elem_id="download-json",
                                                      size="sm", interactive=False)
                    download_zip = gr.DownloadButton("PNG masks (zip)", elem_id="download-zip", size="sm", interactive=False)
                    download_coco = gr.DownloadButton("COCO JSON (RLE)", elem_id="download-coco", size="sm", interactive=False)
                    load_saved = gr.UploadButton("Load saved JSON", file_types=[".json"], size="sm", elem_id="load-json")
        outputs = [state, prompter, status, candidates, legend, auto_keep]
        model_event = dict(outputs=outputs, concurrency_id=MODEL_CALLS, concurrency_limit=1)
        exports = dict(fn=prepare_exports, inputs=state, outputs=[download_json, download_zip, download_coco, export_status],
                       show_progress="hidden")
        bind = functools.partial
        image_in.change(bind(on_image, engine), inputs=image_in, show_progress="full", **model_event).then(**exports)
        prompter.change(bind(on_prompt, engine), inputs=[prompter, state], trigger_mode="always_last",
                        show_progress="hidden", **model_event).then(**exports)
        candidates.input(bind(on_candidate, engine), inputs=[candidates, state], show_progress="hidden",
                         **model_event).then(**exports)
        for button, handler in ((undo, on_undo), (redo, on_redo), (clear, on_clear), (new_object, on_new_object)):
            button.click(bind(handler, engine), inputs=state, **model_event).then(**exports)
        # A long job of its own queue, so other users' clicks are not held behind it.
        everything.click(bind(on_everything, engine), inputs=state, outputs=outputs, show_progress="full",
                         concurrency_id=EVERYTHING_CALLS, concurrency_limit=1).then(**exports)
        auto_keep.input(on_auto_keep, inputs=[auto_keep, state], outputs=outputs, show_progress="hidden").then(**exports)
        load_saved.upload(on_load_saved, inputs=[load_saved, state], outputs=outputs).then(**exports)
    return demo
