"""The demo's Gradio components: the prompt surface, the upload box, the page's panels, and their CSS/JS.

The prompter and the panels are `gr.HTML` subclasses with their own JavaScript (`static/`); the
page draws the layers, markers, status, legend and exports from the prompter's views.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr
from gradio.data_classes import ListFiles
from gradio.utils import get_upload_folder

from sam_demo.demo.render import view_json

__all__ = ["PAGE_CSS", "ImageInput", "Panel", "Prompter", "UploadInput", "is_uploaded", "user_error"]

STATIC = Path(__file__).resolve().parent / "static"
# The prompter's script, by job (one scope, in this order): the view transform's pure maths, the
# stage with zoom and pan, the layers, the hover preview, and the input and keys.
PROMPTER_PARTS = ("view.js", "stage.js", "layers.js", "preview.js", "input.js")
PROMPTER_JS = "\n".join((STATIC / "prompter" / name).read_text() for name in PROMPTER_PARTS)
PROMPTER_CSS = (STATIC / "prompter.css").read_text()
PANEL_JS = (STATIC / "panel.js").read_text()
PANEL_CSS = (STATIC / "panel.css").read_text()
# Page-wide CSS (passed where the app is mounted or launched): an error is told in its toast; the
# "Error" overlay Gradio puts on output components would cover the prompter's toolbar and hint.
# The upload box is hidden: the prompter's stage is the one place to upload (click, drop, paste, or
# an example), and it hands the file to the box. A job's progress replaces the status line it reports on.
PAGE_CSS = (
    "#prompter > .wrap:has(> .error) { display: none; }\n"
    "#image-input { display: none; }\n"
    "#status:has(> .wrap:not(.hide)) { min-height: 56px; }\n"
    "#status:has(> .wrap:not(.hide)) .html-container { visibility: hidden; }\n"
    # Touch: Clear object and Start over are targets a finger can hit.
    "@media (pointer: coarse) { #clear-object, #start-over { min-height: 40px; } }\n"
    # The candidates and the object list take no room while they have nothing to show.
    "#candidates:not(:has(.sd-candidates)), #legend:not(:has(.sd-legend)) { display: none; }\n"
    # Buttons that cannot run now (the prompter marks them from each view), their reason as the tooltip.
    "button[aria-disabled='true'] { opacity: 0.45; cursor: not-allowed; }\n"
    # A problem on the status line is red in either theme (the panel's own CSS cannot see the theme).
    ".dark #status .sd-problem { color: #fca5a5; }\n"
    "#tolerance-problem { color: #b91c1c; font-size: 13px; margin: 0 0 6px; }\n"
    ".dark #tolerance-problem { color: #fca5a5; }\n"
    "#tolerance-problem:empty { display: none; }\n"
    # The set's strip: arrows and × large enough to read; on a phone the image's name takes a row of
    # its own above them (squeezed between three buttons it was cut off).
    "#prev-image, #next-image, #remove-image { font-size: 18px !important; }\n"
    "@media (max-width: 600px) { #workspace { flex-wrap: wrap; }"
    " #workspace > .form:has(#images) { flex: 1 1 100% !important; order: -1; } }\n"
    # The random-weights warning is a banner, not a line of text.
    ".sd-banner { border: 1px solid #f59e0b; background: rgba(245, 158, 11, 0.12); border-radius: 8px; padding: 6px 12px; }\n"
    # On a phone or in a narrow window the bar pinned under the image holds Undo, Redo and New object
    # (prompter.css), so the column's own are not shown twice (they keep their ids for scripts).
    "@media not ((hover: hover) and (pointer: fine) and (min-width: 900px)) {"
    " #undo, #redo, #new-object { display: none !important; } }\n"
    # On a phone the image takes the screen's width, less a thin margin. Gradio scopes the rules in
    # an @media block to its content, which the page's margin is outside of: a top-level rule makes
    # it 8 px below 600 px of width and Gradio's 32 px above (clamp of a step function).
    ".gradio-container > .main { padding-inline: clamp(8px, (100vw - 600px) * 1000, 32px) !important; }\n"
    "@media (max-width: 600px) { #prompter .html-container { padding-left: 0; padding-right: 0; } }"
)


def user_error(message: str) -> gr.Error:
    """An error the user made (told in a toast that stays until closed: it says what to do); not a
    fault of the server, so no traceback in its log."""
    return gr.Error(message, duration=None, print_exception=False)


def is_uploaded(path: str) -> bool:
    """Whether `path` is a file that Gradio's upload route wrote (in its upload folder). A request may
    name any path in a file's payload, and Gradio checks only payloads tagged as its FileData."""
    resolved = Path(path).resolve()
    return resolved.is_file() and resolved.is_relative_to(Path(get_upload_folder()).resolve())


def _uploaded_only(payload) -> None:
    """Refuses a payload naming a file that was not uploaded (before anything reads it)."""
    files = payload.root if isinstance(payload, ListFiles) else [payload]
    if any(f is not None and not is_uploaded(str(getattr(f, "path", ""))) for f in files):
        raise user_error("A file of this request was not uploaded here: upload it from your computer.")


class _PageHTML(gr.HTML):
    """A gr.HTML with its own JavaScript and no custom events.

    gr.HTML looks up custom events by searching js_on_load for every unknown attribute, which
    Gradio does many times per update; these components fire none (the prompter only .change).
    """

    def __getattr__(self, name: str):
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")


class Prompter(_PageHTML):
    """Click/drag surface: shows the image, the mask layers and SVG markers; emits prompt events.

    Props: image_url (the display JPEG), view (JSON from `render.view_json`), examples (JSON
    [{"name", "caption", "thumb": data URI}]: the example photos offered in the empty stage, each
    fetched from the demo's example route when picked).
    """

    def __init__(self, image_url: str = "", view: str | None = None, examples: str = "[]", **kwargs):
        # Gradio re-creates the component from gr.update(...) keywords, so the props are parameters.
        kwargs.setdefault("value", "")
        kwargs.setdefault("html_template", '<div class="sd-root"></div>')
        kwargs.setdefault("css_template", PROMPTER_CSS)
        kwargs.setdefault("js_on_load", PROMPTER_JS)
        view = view if view is not None else view_json(None, "Upload an image to start.")
        super().__init__(image_url=image_url, view=view, examples=examples, **kwargs)

    def api_info(self) -> dict:
        return {"type": "string", "description": 'JSON {"token": str, "events": [{"type": "point"|"box", ...}]}'}


class ImageInput(gr.Image):
    """The upload box. A file that is not an image gets a plain message instead of Gradio's internal
    one (which names the server's temporary paths)."""

    def preprocess(self, payload):
        _uploaded_only(payload)
        try:
            return super().preprocess(payload)
        except Exception:
            name = str(getattr(payload, "orig_name", None) or "This file")[:80]  # several errors may show at once
            raise user_error(
                f"{name} is not an image we can read. Upload a photo (JPEG, PNG, WebP, BMP, TIFF or GIF)."
            ) from None

    def get_block_name(self) -> str:
        return "image"  # drawn by Gradio's own image component


class UploadInput(gr.UploadButton):
    """An upload button whose files must have come through Gradio's upload route (see `is_uploaded`)."""

    def preprocess(self, payload):
        _uploaded_only(payload)
        return super().preprocess(payload)

    def get_block_name(self) -> str:
        return "uploadbutton"


class Panel(_PageHTML):
    """A part of the page drawn from the prompter's views: "status", "candidates", "legend" or "exports"."""

    def __init__(self, part: str = "status", initial: str = "", **kwargs):
        kwargs.setdefault("value", initial)
        kwargs.setdefault("css_template", PANEL_CSS)
        kwargs.setdefault("js_on_load", PANEL_JS)
        super().__init__(part=part, **kwargs)
