"""What the browser draws for a session: the display image, one small PNG per mask layer, markers, panels.

The browser keeps every layer it was sent and stacks them itself, so an edit sends only the
layers whose key is new (one, after a click): a palette PNG at display size whose transparent
index 0 is the background, index 1 the tinted fill and index 2 the outline, in the layer's colour.
Points, boxes and score tags travel as JSON in original pixels and are drawn as SVG. The status
line, the legend and the export links travel in the same view (as HTML), so a click's answer
updates everything it changes at once.
"""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from sam_demo.demo.session import MAX_NAME_CHARS, PALETTE, Decoded, Layer, ObjectResult, Session, hex_colour
from sam_demo.engine.utils.polygons import DEFAULT_TOLERANCE, MAX_TOLERANCE
from sam_demo.engine.utils.transforms import logits_to_size

DISPLAY_MAX_SIDE = 1280
EXPORT_PATH = "/sam-demo/export"  # + /{token}/{kind}: a download, built when asked for
SET_EXPORT_PATH = "/sam-demo/export-set"  # + /{token}/{kind}: the whole set of images' download
SET_EXPORT_LINKS = (  # (element id, kind, label): shown when the image is one of a set
    ("download-set-coco", "coco.json", "COCO JSON (RLE)"),
    ("download-set-coco-polygons", "coco-polygons.json", "COCO JSON (polygons)"),
    ("download-set-yolo", "yolo-seg.zip", "YOLO segmentation (zip)"),
    ("download-set-masks", "masks.zip", "PNG masks and label images (zip)"),
    ("download-set-cutouts", "cutouts.zip", "Cut-outs by category (zip)"),
    ("download-set-json", "sam-endpoint.zip", "Endpoint JSON per image (zip)"),
)
EXPORT_LINKS = (  # (element id, kind, label)
    ("download-json", "sam-endpoint.json", "Download JSON (endpoint request + response)"),
    ("download-zip", "masks.zip", "PNG masks (zip)"),
    ("download-label-image", "label-image.png", "Label image: one PNG, object k = k"),
    ("download-coco", "coco.json", "COCO JSON (RLE)"),
    ("download-coco-polygons", "coco-polygons.json", "COCO JSON (polygons)"),
    ("download-yolo", "yolo-seg.zip", "YOLO segmentation (zip)"),
    ("download-cutouts", "cutouts.zip", "Cut-outs: transparent PNGs (zip)"),
    ("download-cutout", "cutout.png", "Cut-out of all objects (PNG)"),
)
FILL_ALPHA = 110
TAG_NAME_CHARS = 24  # a score tag shows at most this much of a name (the list shows it whole)
PREVIEW_ALPHA = 90
_EDGE = {False: np.ones((3, 3), np.uint8), True: cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))}


def display_size(original_hw: tuple[int, int], max_side: int = DISPLAY_MAX_SIDE) -> tuple[int, int]:
    """(h, w) at which the image is shown: the original, or downscaled to max_side."""
    h, w = original_hw
    scale = min(1.0, max_side / max(h, w))
    return max(1, round(h * scale)), max(1, round(w * scale))


def data_uri(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def display_image_uri(rgb: np.ndarray) -> str:
    """The image for the browser: JPEG (quality 90) at display size, as a data URI."""
    h, w = display_size(rgb.shape[:2])
    small = rgb if (h, w) == rgb.shape[:2] else cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(small, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
    return data_uri("image/jpeg", jpeg.tobytes())


def palette_png(index: np.ndarray, rgb: tuple[int, int, int], alphas: bytes) -> bytes:
    """(h, w) uint8 palette indices (0, 1, 2) -> a 2-bit PNG, every index in `rgb` with `alphas`."""
    image = Image.fromarray(index, mode="P")
    image.putpalette([0, 0, 0, *rgb, *rgb])
    buffer = io.BytesIO()
    image.save(buffer, "PNG", transparency=alphas, bits=2, compress_level=1)
    return buffer.getvalue()


def layer_png(small: np.ndarray, rgb: tuple[int, int, int], active: bool) -> bytes:
    """A layer for a (h, w) 0/1 display mask: tinted fill with an outline (thicker while edited)."""
    edge = cv2.morphologyEx(small, cv2.MORPH_GRADIENT, _EDGE[active])
    index = small.copy()
    index[edge > 0] = 2
    return palette_png(index, rgb, bytes([0, FILL_ALPHA, 255]))


def preview_png(small: np.ndarray, rgb: tuple[int, int, int]) -> bytes:
    """The faint hover preview for a (h, w) 0/1 display mask: fill only."""
    return palette_png(small, rgb, bytes([0, PREVIEW_ALPHA, PREVIEW_ALPHA]))


def shown_score(score: float) -> float:
    """A predicted IoU as the UI shows it: clamped to [0, 1] (exports keep the raw value)."""
    return min(max(float(score), 0.0), 1.0)


@dataclass
class ViewCache:
    """What one session's browser holds: the layers on screen (key -> the tag anchor of its mask),
    the decode behind the last hover preview (a click on that spot shows it without decoding), and
    the full-resolution photo (JPEG) made for zooming in, once asked for.

    Lives in the session store beside the session; used under the session's lock, but for
    `preview` and `photo`, which their routes set (one assignment each).
    """

    anchors: dict[str, tuple[float, float] | None] = field(default_factory=dict)
    preview: Decoded | None = None
    photo: bytes | None = None

    @property
    def nbytes(self) -> int:
        return (0 if self.preview is None else self.preview.nbytes) + len(self.photo or b"")


CONTROLS = ("undo", "redo", "clear-object", "start-over", "new-object", "segment-everything", "load-json")


def controls(session: Session | None) -> dict[str, str]:
    """Element id of each button -> why it cannot run now ("" when it can). The page dims a button
    with a reason and shows the reason as its tooltip; a click still says it on the status line."""
    if session is None:
        no_image = "Upload an image first (or pick an example)."
        return dict.fromkeys(CONTROLS, no_image)
    active = session.edited
    nothing = all(o.is_empty for o in session.objects) and not session.auto_keep
    return {
        "undo": "" if session.undo_stack else "Nothing to undo yet.",
        "redo": "" if session.redo_stack else "Nothing to redo.",
        "clear-object": f"{session.edited_layer().name} has no prompt to clear." if active.is_empty else "",
        "start-over": "Nothing to start over from: no object yet." if nothing else "",
        "new-object": "Click on the image first: the current object has no prompt yet." if active.is_empty else "",
        "segment-everything": "",
        "load-json": "",
    }


def status_html(status: str, problem: bool = False) -> str:
    """The status line: `status` as text, or as an alert when it says what went wrong."""
    text = html.escape(status)
    if problem:
        return f'<div class="sd-status sd-problem" role="alert" title="{text}">⚠ {text}</div>'
    return f'<div class="sd-status" title="{text}">{text}</div>'


def view_json(session: Session | None, status: str, cache: ViewCache | None = None, problem: bool = False) -> str:
    """The prompter's `view`: the layer order, PNGs of new layers, markers, tags and the panels.

    {token, consumed, w, h, order: [key], active: key or "", png: {key: data URI},
     points: [[x, y, label, colour]], boxes: [[x0, y0, x1, y1, colour]] (the edited object's),
     tags: [[x, y, text, colour, ink]] (centred on the mask, text in `ink`),
     panels: {status, candidates, legend, exports: HTML}, controls: {element id: reason or ""}},
    coordinates in original pixels. consumed: how many browser events the session has applied;
    active: the layer of the object being edited (the browser flattens the others). problem: the
    status says what went wrong. Updates `cache`.
    """
    everything = [] if session is None else session.layers()
    panels = {
        "status": status_html(status, problem),
        "candidates": candidates_html(session),
        "legend": legend_html(everything, () if session is None else session.categories),
        "exports": exports_html(session),
    }
    if session is None:
        return json.dumps(
            {
                "token": "",
                "consumed": 0,
                "w": 1,
                "h": 1,
                "order": [],
                "active": "",
                "png": {},
                "points": [],
                "boxes": [],
                "tags": [],
                "panels": panels,
                "controls": controls(None),
            }
        )
    cache = cache if cache is not None else ViewCache()
    h, w = session.size_hw
    hw = display_size((h, w))
    layers = [layer for layer in everything if layer.source is not None and not layer.hidden]
    png = {}
    for layer in layers:
        if layer.key not in cache.anchors:
            small = layer.source.display_mask(hw)
            png[layer.key] = data_uri("image/png", layer_png(small, layer.rgb, layer.active))
            cache.anchors[layer.key] = _anchor(small, w / hw[1], h / hw[0])
    shown = {layer.key for layer in layers}
    cache.anchors = {k: v for k, v in cache.anchors.items() if k in shown}
    points, boxes, tags = [], [], []
    for layer in everything:
        if layer.prompts is not None and layer.active:  # only the edited object's prompts are drawn
            points += [[x, y, label, layer.hex] for x, y, label in layer.prompts.points]
            if layer.prompts.box_xyxy:
                boxes.append([*layer.prompts.box_xyxy, layer.hex])
        anchor = cache.anchors.get(layer.key) if layer.source is not None else None
        if anchor is not None:
            given = layer.prompts.name if layer.prompts is not None else ""
            label = given or layer.category or f"#{layer.number}"
            label = label if len(label) <= TAG_NAME_CHARS else label[: TAG_NAME_CHARS - 1] + "…"
            tags.append([*anchor, f"{label} IoU {shown_score(layer.score):.2f}", layer.hex, tag_ink(layer.rgb)])
    return json.dumps(
        {
            "token": session.token,
            "consumed": session.consumed_events,
            "w": w,
            "h": h,
            "order": [layer.key for layer in layers],
            "png": png,
            "active": next((layer.key for layer in layers if layer.active), ""),
            "active_object": session.active,
            "categories": list(session.categories),
            "points": points,
            "boxes": boxes,
            "tags": tags,
            "panels": panels,
            "controls": controls(session),
        }
    )


def _anchor(small: np.ndarray, sx: float, sy: float) -> tuple[float, float] | None:
    """Where a display mask's score tag goes, in original pixels (None if empty): the mask's pixel
    farthest from its edge (its pole of inaccessibility), so the tag sits on the object, also for
    rings and L shapes whose centroid or box corner lies outside it."""
    if not small.any():
        return None
    distance = cv2.distanceTransform(np.pad(small, 1), cv2.DIST_L2, 3)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(distance)), distance.shape)
    return round((x + 0.5) * sx, 1), round((y + 0.5) * sy, 1)


def _luminance(rgb: tuple[int, int, int]) -> float:
    """WCAG 2's relative luminance of an sRGB colour."""
    channels = [c / 255 for c in rgb]
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def tag_ink(rgb: tuple[int, int, int]) -> str:
    """Black or white, whichever contrasts more with a tag of colour `rgb` (WCAG contrast ratio)."""
    lum = _luminance(rgb)
    return "#000000" if (lum + 0.05) / 0.05 >= 1.05 / (lum + 0.05) else "#ffffff"


def legend_html(layers: list[Layer], categories: tuple[str, ...] = ()) -> str:
    """The category list and the object list (#objects).

    The category list: an editor (one name a line; the page sends it when it loses focus) and each
    category's colour and key (1-9). Per layer: a colour swatch, its name and IoU (and prompts); an
    object's row (data-object-index) also selects it for editing, gives it a category and a name
    (names offered from the others'), hides or shows it, and deletes it. Names are escaped: never
    HTML. "" before an image."""
    if not layers:
        return ""
    names = sorted({layer.name for layer in layers if layer.prompts is not None and layer.prompts.name})
    rows = []
    for layer, (colour, name, detail) in zip(layers, legend_rows(layers)):
        swatch = f'<span class="sd-swatch" style="background:{colour}"></span>'
        label = f"<b>{html.escape(name)}</b> — {html.escape(detail)}"
        if layer.object_index is None:  # an automatic mask: shown, kept or dropped in its own list
            rows.append(f'<li class="sd-object">{swatch}{label}</li>')
            continue
        i, hidden = layer.object_index, layer.hidden
        title = html.escape(layer.name)
        rows.append(
            f'<li class="sd-object{" sd-editing" * layer.active}" data-object-index="{i}">'
            f'<button type="button" class="sd-select" data-select="{i}" aria-pressed="{str(layer.active).lower()}" '
            f'title="Edit {title}: the next click refines it">{swatch}{label}</button>'
            f'<span class="sd-object-tools">{_category_select(i, layer.category, categories, title)}'
            f'<input class="sd-name" data-rename="{i}" value="{html.escape(layer.prompts.name)}" maxlength="{MAX_NAME_CHARS}" '
            f'placeholder="Name" aria-label="Name of {title}" list="sd-names" '
            f'title="A name for this one object, at most {MAX_NAME_CHARS} characters; Enter applies it">'
            f'<button type="button" class="sd-hide" data-hide="{i}" aria-pressed="{str(hidden).lower()}" '
            f'title="{"Show" if hidden else "Hide"} {title}">{"Show" if hidden else "Hide"}</button>'
            f'<button type="button" class="sd-delete" data-delete="{i}" title="Delete {title} (Delete key; Undo brings it back)">'
            f"Delete</button></span></li>"
        )
    options = "".join(f'<option value="{html.escape(n)}"></option>' for n in names)
    return (
        f"{categories_html(categories)}"
        f'<ul id="objects" class="sd-legend">{"".join(rows)}</ul><datalist id="sd-names">{options}</datalist>'
    )


def categories_html(categories: tuple[str, ...]) -> str:
    """The category list: its editor (#categories) and each category's colour and key."""
    chips = "".join(
        f'<span class="sd-chip"><span class="sd-swatch" style="background:{hex_colour(PALETTE[k % len(PALETTE)])}"></span>'
        f"{f'<kbd>{k + 1}</kbd> ' if k < 9 else ''}{html.escape(name)}</span>"
        for k, name in enumerate(categories)
    )
    listed = html.escape("\n".join(categories))
    return (
        f'<details class="sd-categories"{" open" if not categories else ""}>'
        f"<summary>Categories ({len(categories)}){': keys 1-9 set the edited object' if categories else ''}</summary>"
        f'<textarea id="categories" data-categories rows="3" placeholder="One category per line (or paste a list)" '
        f'aria-label="Categories, one per line">{listed}</textarea></details>'
        f'<div class="sd-chips">{chips}</div>'
    )


def _category_select(index: int, category: str, categories: tuple[str, ...], title: str) -> str:
    """An object's category picker (data-category): none, or one of the list (or its own, if no
    longer listed)."""
    choices = [("", "No category")] + [(c, c) for c in categories]
    if category and category not in categories:
        choices.append((category, f"{category} (not in the list)"))
    options = "".join(
        f'<option value="{html.escape(value)}"{" selected" if value == category else ""}>{html.escape(text)}</option>'
        for value, text in choices
    )
    return f'<select class="sd-category" data-category="{index}" aria-label="Category of {title}">{options}</select>'


def legend_rows(layers: list[Layer]) -> list[tuple[str, str, str]]:
    """(colour, name, detail) per layer, as the legend lists them."""
    rows = []
    for layer in layers:
        detail = "no prompt yet" if layer.score is None else f"IoU {shown_score(layer.score):.3f}"
        if layer.prompts is not None:
            p = layer.prompts
            what = ", ".join(
                x for x in (plural(len(p.points), "point") if p.points else "", "box" if p.box_xyxy else "") if x
            )
            detail += f" · {what}" if what else ""
            detail += " · loaded, no prompts" if p.fixed is not None else ""
        detail += " · hidden" if layer.hidden else ""
        named = layer.category and layer.category != layer.name
        name = layer.name + (f" ({layer.category})" if named else "") + (" (editing)" if layer.active else "")
        rows.append((layer.hex, name, detail))
    return rows


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'s' * (count != 1)}"


def export_url(session: Session, kind: str) -> str:
    """Relative URL of a download (relative, so it works under any mount path or proxy prefix)."""
    return f"{EXPORT_PATH.lstrip('/')}/{session.token}/{kind}"


def exports_html(session: Session | None) -> str:
    """The export panel: a status line and the download links (and, for one image of a set, the
    whole set's); the server builds a file when clicked."""
    results = [] if session is None else session.finished_results()
    fixed = (
        [] if session is None else [layer for layer in session.shown() if not isinstance(layer.source, ObjectResult)]
    )
    reasons = dict.fromkeys((kind for _, kind, _ in EXPORT_LINKS), "Click on the image to segment an object first.")
    note = ""
    if results or fixed:
        prompts = sum(len(r.prompts.points) + (r.prompts.box_xyxy is not None) for _, r in results)
        status = f"Exports ready: {plural(len(results) + len(fixed), 'object')}, {plural(prompts, 'prompt')}."
        reasons = dict.fromkeys(reasons, "")
        if not results:
            reasons["sam-endpoint.json"] = note = (
                "Download JSON replays prompts, and loaded or automatic masks have "
                "none: click on the image to add an object."
            )
    else:
        status = "Nothing to export yet."
    links = []
    for elem_id, kind, label in EXPORT_LINKS:
        if reasons[kind]:
            links.append(
                f'<a id="{elem_id}" class="sd-download" aria-disabled="true" '
                f'title="{html.escape(reasons[kind])}">{label}</a>'
            )
        else:
            name = html.escape(f"{Path(session.name).stem or 'image'}.{kind}")
            links.append(_download_link(elem_id, export_url(session, kind), kind, name, label))
    note = f'<p class="sd-export-note">{note}</p>' if note else ""
    whole, this = "", ""
    if session is not None and session.workspace is not None:
        this = f'<p class="sd-set-title">This image, {html.escape(session.name)}:</p>'
        sets = "".join(
            _download_link(
                elem_id, f"{SET_EXPORT_PATH.lstrip('/')}/{session.token}/{kind}", kind, f"images.{kind}", label
            )
            for elem_id, kind, label in SET_EXPORT_LINKS
        )
        whole = f'<p class="sd-set-title">The whole set of images:</p><div class="sd-downloads" id="set-exports">{sets}</div>'
    tolerance = (
        '<label class="sd-tolerance" title="How far a polygon may stray from its mask, in pixels of the image '
        f'(COCO polygons and YOLO; 0 follows every pixel)">Polygon tolerance, px (COCO polygons, YOLO) <input id="polygon-tolerance" '
        f'type="number" min="0" max="{MAX_TOLERANCE:g}" step="0.1" value="{DEFAULT_TOLERANCE:g}"> 0-{MAX_TOLERANCE:g}</label>'
        '<p id="tolerance-problem" role="alert"></p>'
    )
    return f'<p id="export-status">{status}</p>{note}{tolerance}{this}<div class="sd-downloads">{"".join(links)}</div>{whole}'


POLYGON_KINDS = ("coco-polygons.json", "yolo-seg.zip")  # downloads whose outlines take the tolerance


def _download_link(elem_id: str, url: str, kind: str, file: str, label: str) -> str:
    """A download link; one of polygons has data-polygons (the page adds ?tolerance= when clicked)."""
    polygons = " data-polygons" if kind in POLYGON_KINDS else ""
    return f'<a id="{elem_id}" class="sd-download" href="{url}" download="{file}"{polygons}>{label}</a>'


def click_status(session: Session, decoded: int = 0, ms: float = 0.0) -> str:
    """The status line after an edit: what its events did that shows no mask (an object deleted,
    hidden), then the edited object's IoU (and decode time), or what to do."""
    done = "".join(f"{note} · " for note in session.notes)
    active = session.edited_layer()
    if active.score is None:
        return f"{done}{active.name}: click or tap on the image, or drag a box."
    if active.prompts.fixed is not None:
        return f"{done}{active.name}: a loaded mask has no prompts to refine; a click or box starts a new object."
    status = f"{done}{active.name}: IoU {shown_score(active.score):.3f}"
    if decoded:
        status += f" · decoded in {ms:.0f} ms"
    if active.prompts.multimask:
        status += " · 3 candidates: pick another of the three if the best is not what you meant"
    return status


THUMB_MAX_SIDE = 96  # a candidate's thumbnail: the photo's aspect, at most this on its long side
THUMB_FILL_ALPHA = 160  # stronger than on the photo: a thumbnail's mask lies on a plain checker
_THUMB_EDGE = np.ones((3, 3), np.uint8)


def thumbnail_png(small: np.ndarray, rgb: tuple[int, int, int]) -> bytes:
    """A candidate's thumbnail for a (h, w) 0/1 mask: tinted fill, an opaque outline along its inner
    edge (so the coloured pixels are exactly the mask), transparent elsewhere (the page lays it on a
    checker that suits either theme)."""
    index = small + (small - cv2.erode(small, _THUMB_EDGE))  # 1 inside, 2 on the mask's own border
    return palette_png(index, rgb, bytes([0, THUMB_FILL_ALPHA, 255]))


def candidates_html(session: Session | None) -> str:
    """SAM's three candidates after a lone click: a button each (data-candidate; the chosen one
    aria-pressed) with a thumbnail of its mask in the object's colour and its IoU. The page sends a
    choice as a {"type": "candidate", "index"} prompt event; "" when the edited object has none.
    The object's name is escaped: never HTML."""
    result = None if session is None else session.results.get(session.active)
    if result is None or not result.prompts.multimask:
        return ""
    layer = session.edited_layer()
    h, w = display_size(session.size_hw, THUMB_MAX_SIDE)
    best, chosen = int(np.argmax(result.scores)), result.chosen
    buttons = []
    for k, score in enumerate(result.scores):
        small = logits_to_size(result.low_res[k], result.geometry, (h, w))
        uri = data_uri("image/png", thumbnail_png(small, layer.rgb))
        iou = shown_score(score)
        is_best = " · SAM's best" if k == best else ""
        badge = '<span class="sd-best">best</span>' if k == best else ""
        buttons.append(
            f'<button type="button" class="sd-candidate" data-candidate="{k}" aria-pressed="{str(k == chosen).lower()}" '
            f'title="Show candidate {k + 1}: predicted IoU {iou:.3f}{is_best}">'
            f'<img class="sd-thumb" src="{uri}" width="{w}" height="{h}" alt="Candidate {k + 1} mask">'
            f'<span class="sd-candidate-iou">IoU {iou:.2f}</span>{badge}</button>'
        )
    name = html.escape(layer.name)
    return (
        f'<div class="sd-candidates" role="group" aria-label="Candidate masks for {name}">'
        f"<p>Candidates for <b>{name}</b>: pick the one you meant</p>"
        f'<div class="sd-candidate-row">{"".join(buttons)}</div></div>'
    )
