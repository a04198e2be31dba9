"""The demo's page: `build_demo` lays out the components and binds the handlers; `mount_demo` and
`launch_demo` serve it beside other routes (the endpoint's), on uvicorn or on Gradio's own server.
"""

from __future__ import annotations

import functools

import gradio as gr
from fastapi import FastAPI

from sam_demo.demo.components import PAGE_CSS, ImageInput, Panel, Prompter, UploadInput
from sam_demo.demo.example_photos import example_cards
from sam_demo.demo.handlers import (
    ENCODE_CALLS,
    EVERYTHING_CALLS,
    LOAD_CALLS,
    DemoContext,
    encode_note,
    on_auto_keep,
    on_clear_object,
    on_everything,
    on_everything_asked,
    on_everything_cancel,
    on_everything_ended,
    on_new_object,
    on_prompt,
    on_redo,
    on_start_over,
    on_undo,
)
from sam_demo.demo.render import exports_html, status_html
from sam_demo.demo.session_store import SessionStore
from sam_demo.demo.space_api import add_space_api
from sam_demo.demo.workspace import BackgroundEncoder, WorkspaceLimits, WorkspaceStore
from sam_demo.demo.workspace_handlers import (
    TICK_SECONDS,
    on_add_folder,
    on_add_images,
    on_load,
    on_pick,
    on_remove,
    on_step,
    on_tick,
    on_upload,
)
from sam_demo.endpoint.fetch import FetchPolicy
from sam_demo.endpoint.wire import RequestLimits
from sam_demo.engine.sam_engine import SamEngine

__all__ = ["build_demo", "launch_demo", "mount_demo"]

# How long Gradio keeps a tab's (light) session after the tab's last Gradio event; Gradio drops it
# an hour after the tab closes in any case. Clicks go by the fast path and do not renew it, so it is
# long; the session store forgets a session after an hour without any edit.
# Remove asks first (its objects go with the image, and no undo brings them back).
CONFIRM_REMOVE = (
    "(confirmed, state) => [window.confirm('Remove this image and its objects from the set? "
    "This cannot be undone; download the set first to keep them.'), state]"
)
STATE_TTL_SECONDS = 24 * 3600


def build_demo(
    engine: SamEngine,
    sessions: SessionStore | None = None,
    fetch: FetchPolicy = FetchPolicy(),
    workspaces: WorkspaceStore | None = None,
    limits: WorkspaceLimits = WorkspaceLimits(),
    request_limits: RequestLimits = RequestLimits(),
) -> gr.Blocks:
    """The Blocks app for one loaded engine; `sessions` and `workspaces` are shared with the demo's
    HTTP routes; `limits` bound a set of images, `request_limits` the API's /segment (as /score's)."""
    ctx = DemoContext(
        engine,
        sessions if sessions is not None else SessionStore(),
        fetch,
        workspaces=workspaces if workspaces is not None else WorkspaceStore(),
        limits=limits,
        request_limits=request_limits,
        background=BackgroundEncoder(engine),
    )
    with gr.Blocks(title="SAM demo — Segment Anything", delete_cache=(3600, 3600)) as demo:
        state = gr.State(None, time_to_live=STATE_TTL_SECONDS)
        gr.Markdown("## Segment Anything — click to segment")
        if engine.info.random_weights:
            gr.Markdown(
                "⚠️ **This model has random weights** (a test checkpoint): masks are meaningless. "
                "Run with `--model facebook/sam-vit-large` or a downloaded checkpoint for real results.",
                elem_id="random-weights-warning",
                elem_classes="sd-banner",
            )
        # The engine's details, collapsed: on a phone the photo comes first.
        with gr.Accordion("Details: model and plan", open=False, elem_id="details"):
            gr.Markdown(
                f"Model `{engine.info.model}` on `{engine.info.device}` ({engine.info.dtype}). "
                "Upload a photo, then click or tap what you want to segment."
            )
            gr.Markdown(f"<small>Plan: {engine.plan.describe()}</small>", elem_id="plan")
            speed = gr.Markdown(encode_note(engine), elem_id="encode-speed")
        with gr.Row(equal_height=False):
            with gr.Column(scale=3, min_width=560):  # beside the tools from 900 px of width; above them below that
                status = Panel("status", status_html("Upload an image to start."), elem_id="status")
                # A set of images (shown from two): the strip, D / A, and the background's progress,
                # above the image, where the set's place stays in sight.
                with gr.Row(visible=False, elem_id="workspace", equal_height=True) as workspace_row:
                    prev_image = gr.Button("◀", size="sm", elem_id="prev-image", min_width=44, scale=0)
                    images = gr.Dropdown(
                        choices=[], value=None, show_label=False, elem_id="images", scale=4, min_width=160
                    )
                    next_image = gr.Button("▶", size="sm", elem_id="next-image", min_width=44, scale=0)
                    # Remove the image from the set (the page asks first).
                    remove_image = gr.Button("×", size="sm", elem_id="remove-image", min_width=44, scale=0)
                    # What the page's confirm() answered, for the handler (never shown).
                    remove_confirmed = gr.Checkbox(False, visible=False, elem_id="remove-confirmed")
                workspace_progress = gr.Markdown("", elem_id="workspace-progress")
                timer = gr.Timer(TICK_SECONDS, active=False)
                prompter = Prompter(examples=example_cards(), elem_id="prompter")

            with gr.Column(scale=1, min_width=300):
                image_in = ImageInput(
                    label="Image (upload, paste or drop)",
                    type="filepath",
                    image_mode=None,
                    sources=["upload", "clipboard"],
                    elem_id="image-input",
                    height=220,
                )
                with gr.Row():
                    add_images = UploadInput(
                        "Add images (many, or a zip)",
                        file_count="multiple",
                        size="sm",
                        elem_id="add-images",
                        min_width=60,
                    )
                    add_folder = UploadInput(
                        "Add a folder", file_count="directory", size="sm", elem_id="add-folder", min_width=60
                    )
                # The edit buttons first, where they stay while the object list below them grows (on a
                # phone the bar pinned under the image has copies of them).
                with gr.Row():
                    undo = gr.Button("↶ Undo", size="sm", elem_id="undo", min_width=60)
                    redo = gr.Button("↷ Redo", size="sm", elem_id="redo", min_width=60)
                new_object = gr.Button("+ New object", variant="primary", elem_id="new-object")
                with gr.Row():
                    clear_object = gr.Button("Clear object", size="sm", elem_id="clear-object", min_width=60)
                    start_over = gr.Button("Start over", size="sm", elem_id="start-over", min_width=60)
                candidates = Panel("candidates", elem_id="candidates")
                legend = Panel("legend", elem_id="legend")
                with gr.Row():
                    everything = gr.Button("Segment everything", elem_id="segment-everything", scale=3)
                    cancel = gr.Button("Cancel", visible=False, elem_id="cancel-everything", variant="stop", scale=1)
                if engine.info.random_weights:
                    gr.Markdown(
                        "<small>With random weights, segment everything finds no mask.</small>",
                        elem_id="everything-note",
                    )
                auto_keep = gr.CheckboxGroup(
                    label="Automatic masks (untick to drop)", visible=False, elem_id="auto-masks"
                )
                with gr.Accordion("Export and import", open=True):
                    exports = Panel("exports", exports_html(None), elem_id="exports")
                    # Any file: the handler says what is wrong with one that is not a saved JSON, a COCO
                    # file or YOLO labels (whose boxes are segmented here). Several at once: a set's YOLO
                    # label files (with data.yaml), each into the image of its name.
                    load_saved = UploadInput(
                        "Load JSON, COCO or YOLO", size="sm", elem_id="load-json", file_count="multiple"
                    )
        del candidates, legend, exports  # drawn by the page from the prompter's views
        outputs = [state, prompter, auto_keep]
        strip = [images, workspace_progress, timer, workspace_row]  # WorkspaceView's order
        hidden_event = dict(queue=False, show_progress="hidden", api_visibility="private")
        # Edits skip Gradio's queue: they take milliseconds, and so run at once, side by side.
        edit = dict(outputs=outputs, queue=False, show_progress="hidden", api_visibility="private")
        bind = functools.partial

        def long_job(queue: str, progress_on, extra: list = ()) -> dict:
            """A job of its own queue, one at a time, so no click waits behind it; its progress shows
            in one place (the encode's over the image, segment everything's on the status line)."""
            return dict(
                outputs=outputs + list(extra),
                show_progress="full",
                show_progress_on=progress_on,
                concurrency_id=queue,
                concurrency_limit=1,
                api_visibility="private",
            )

        # A new image comes from an upload (file, paste, drop) or an example; not .change, which
        # fires twice when one image replaces another.
        # Each upload queued, none dropped while another is read (Gradio's default drops a trigger
        # that comes while the event runs).
        opening = long_job(ENCODE_CALLS, prompter, strip) | dict(trigger_mode="multiple")
        image_in.upload(bind(on_upload, ctx), inputs=[image_in, state], **opening)  # examples come this way too
        add_images.upload(bind(on_add_images, ctx), inputs=[add_images, state], **opening)
        add_folder.upload(bind(on_add_folder, ctx), inputs=[add_folder, state], **opening)
        images.input(bind(on_pick, ctx), inputs=[images, state], **opening)
        next_image.click(bind(on_step, ctx, 1), inputs=state, **opening)
        prev_image.click(bind(on_step, ctx, -1), inputs=state, **opening)
        remove_image.click(bind(on_remove, ctx), inputs=[remove_confirmed, state], js=CONFIRM_REMOVE, **opening)
        timer.tick(bind(on_tick, ctx), inputs=state, outputs=strip, **hidden_event)
        prompter.change(bind(on_prompt, ctx), inputs=[prompter, state], trigger_mode="always_last", **edit)
        for button, handler in (
            (undo, on_undo),
            (redo, on_redo),
            (clear_object, on_clear_object),
            (start_over, on_start_over),
            (new_object, on_new_object),
        ):
            button.click(bind(handler, ctx), inputs=state, **edit)
        auto_keep.input(bind(on_auto_keep, ctx), inputs=[auto_keep, state], **edit)
        # A saved file can take seconds to read (its masks decoded one at a time): one load at a time.
        load_saved.upload(bind(on_load, ctx), inputs=[load_saved, state], **long_job(LOAD_CALLS, status, strip))
        # Asked for -> (queued) the job -> Cancel hidden again; Cancel itself runs at once, beside the job.
        everything.click(
            bind(on_everything_asked, ctx), inputs=state, outputs=[cancel, everything], **hidden_event
        ).success(bind(on_everything, ctx), inputs=state, **long_job(EVERYTHING_CALLS, status)).then(
            bind(on_everything_ended, ctx), inputs=state, outputs=[cancel, everything], **hidden_event
        )
        cancel.click(bind(on_everything_cancel, ctx), inputs=state, outputs=cancel, **hidden_event)
        add_space_api(ctx)
        # The encode's speed is measured by the start-up warm-up and each encode: told as of the page's load.
        demo.load(functools.partial(encode_note, engine), outputs=speed, queue=False, api_visibility="private")
    return demo


def mount_demo(
    app: FastAPI,
    engine: SamEngine,
    sessions: SessionStore,
    fetch: FetchPolicy,
    workspaces: WorkspaceStore | None = None,
    limits: WorkspaceLimits = WorkspaceLimits(),
    request_limits: RequestLimits = RequestLimits(),
) -> FastAPI:
    """`app` with the demo mounted at `/` (its other routes keep their paths)."""
    demo = build_demo(engine, sessions, fetch, workspaces, limits, request_limits)
    app = gr.mount_gradio_app(app, demo, path="/", css=PAGE_CSS, max_file_size=limits.max_bytes)
    # Gradio refuses a request's file that was not uploaded (any path the server can read) only once
    # the Blocks count as launched, which mounting does not set.
    demo.has_launched = True
    return app


def launch_demo(
    engine: SamEngine,
    sessions: SessionStore,
    fetch: FetchPolicy,
    host: str,
    port: int,
    routes: list,
    workspaces: WorkspaceStore | None = None,
    limits: WorkspaceLimits = WorkspaceLimits(),
    request_limits: RequestLimits = RequestLimits(),
) -> None:
    """Serve the demo on Gradio's own server with a public share link, `routes` beside it; blocks."""
    build_demo(engine, sessions, fetch, workspaces, limits, request_limits).launch(
        server_name=host,
        server_port=port,
        share=True,
        css=PAGE_CSS,
        max_file_size=limits.max_bytes,
        app_kwargs={"routes": routes},
    )
