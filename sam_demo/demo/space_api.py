"""The Space's API (the "Use via API" page, gradio_client): `/segment` and `/segment_everything`.

Each answers as the endpoint would: `/segment` with one row of /score's response, `/segment_everything`
with COCO annotations. Every other event of the demo is hidden from that page.
"""

from __future__ import annotations

import base64
from pathlib import Path

import gradio as gr
from gradio import FileData

from sam_demo.demo.components import is_uploaded, user_error
from sam_demo.demo.handlers import ENCODE_CALLS, EVERYTHING_CALLS, DemoContext
from sam_demo.endpoint.scoring import load_row_image, score
from sam_demo.endpoint.wire import COLUMNS, EndpointRow, RequestError
from sam_demo.engine.automatic_mask_generator import EverythingConfig, coco_result, generate

__all__ = ["MAX_POINTS_PER_SIDE", "add_space_api", "api_segment", "api_segment_everything"]

# The largest grid /segment_everything decodes: 64 x 64 = 4,096 prompts, about a minute on a 2-core
# CPU in float32; a larger one would hold the queue of segment everything for every user.
MAX_POINTS_PER_SIDE = 64


def _api_image(image) -> str:
    """The endpoint's image cell for an API call: an upload (gradio_client.handle_file) as base64,
    or an http(s) URL as given. Only files in Gradio's upload folder are read."""
    if isinstance(image, dict) and isinstance(image.get("path"), str):
        if not is_uploaded(image["path"]):
            raise user_error("image: send the file with gradio_client.handle_file(path), or an http(s) URL")
        return base64.b64encode(Path(image["path"]).read_bytes()).decode("ascii")
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
    return _api_call(lambda: score(body, ctx.engine, ctx.fetch, ctx.request_limits)[0])


def api_segment_everything(
    ctx: DemoContext,
    image,
    points_per_side: int = 32,
    pred_iou_thresh: float = 0.88,
    stability_score_thresh: float = 0.95,
) -> dict:
    """Every object in the image: {"width", "height", "annotations": COCO annotations with RLE}."""

    def run():
        side = _points_per_side(points_per_side)
        config = EverythingConfig(
            points_per_side=side,
            pred_iou_thresh=pred_iou_thresh,  # checked there: finite numbers, not text or booleans
            stability_score_thresh=stability_score_thresh,
        )
        row = EndpointRow(_api_image(image), None, None, None, False)
        rgb = load_row_image(row, 0, ctx.engine, ctx.fetch)
        return coco_result(rgb.shape[:2], generate(ctx.engine, rgb, config))

    return _api_call(run)


def _points_per_side(value) -> int:
    """The grid's points per side: a whole number from 1 to MAX_POINTS_PER_SIDE, else a ValueError
    that says what was sent."""
    try:
        side = float(value)
    except (TypeError, ValueError):
        side = float("nan")
    if not (side.is_integer() and 1 <= side <= MAX_POINTS_PER_SIDE):
        raise ValueError(
            f"points_per_side: send a whole number from 1 to {MAX_POINTS_PER_SIDE} (the grid is its square), "
            f"not {str(value)[:40]!r}"
        )
    return int(side)


def add_space_api(ctx: DemoContext) -> None:
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
        """Find every object (SAM's automatic mask generator). image: a file or an http(s) URL;
        points_per_side: the grid of point prompts, 1 to 64 per side. Returns {"width", "height", "annotations"}: COCO annotations with RLE segmentation, bbox
        XYWH, area, predicted_iou and stability_score, largest first."""
        return api_segment_everything(ctx, image, points_per_side, pred_iou_thresh, stability_score_thresh)

    gr.api(segment, api_name="segment", concurrency_id=ENCODE_CALLS, concurrency_limit=1)
    gr.api(segment_everything, api_name="segment_everything", concurrency_id=EVERYTHING_CALLS, concurrency_limit=1)
