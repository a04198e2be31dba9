"""Endpoint request bodies, built as a client would send them."""

from __future__ import annotations

import json

from sam_demo.endpoint.wire import COLUMNS


def score_body(image_b64: str, points="", boxes="", multimask=False) -> str:
    """A one-row /score body: the image and its prompt cells (JSON text, "" for none)."""
    row = [image_b64, points, boxes, "", multimask]
    return json.dumps({"input_data": {"columns": list(COLUMNS), "index": [0], "data": [row]}, "params": {}})


# A batch CSV's header row, written out (not taken from the code under test).
BATCH_HEADER = ["image", "input_points", "input_boxes", "input_labels", "multimask_output"]
