"""The endpoint codec: exact wire format, both response spellings, and every bad input."""

from __future__ import annotations

import base64
import http.server
import io
import json
import socket
import threading

import numpy as np
import pytest
from PIL import Image

from sam_demo import SamPredictor
from sam_demo.endpoint.fetch import FetchPolicy
from sam_demo.endpoint.scoring import score
from sam_demo.endpoint.wire import (
    COLUMNS,
    RequestError,
    build_request,
    decode_mask_png,
    parse_request,
    read_response,
)
from tests.support.photos import asset, b64_png


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return np.asarray(Image.fromarray(asset("chelsea.png")).resize((1800, 1350)))


def seed_request(image_b64: str) -> dict:
    """The endpoint's sample request, verbatim but for the image."""
    return json.loads(
        '{"input_data": {"columns": ["image", "input_points", "input_boxes", "input_labels", "multimask_output"],'
        ' "index": [0], "data": [["IMAGE", "", "[[650, 900, 1000, 1250]]", "", false]]}, "params": {}}'.replace(
            "IMAGE", image_b64
        )
    )


def test_seed_request_gives_live_format_equal_to_predictor(engine, photo):
    response = score(seed_request(b64_png(photo)), engine)
    assert isinstance(response, list) and len(response) == 1
    assert list(response[0]) == ["response"] and list(response[0]["response"]) == ["predictions"]
    predictions = response[0]["response"]["predictions"]
    assert len(predictions) == 1 and list(predictions[0]) == ["masks_per_prediction"]
    entries = predictions[0]["masks_per_prediction"]
    assert len(entries) == 1 and sorted(entries[0]) == ["encoded_binary_mask", "iou_score"]
    assert type(entries[0]["iou_score"]) is float
    png = Image.open(io.BytesIO(base64.b64decode(entries[0]["encoded_binary_mask"], validate=True)))
    assert png.format == "PNG" and png.mode == "L" and png.size == (1800, 1350)
    assert set(np.unique(np.asarray(png)).tolist()) <= {0, 255}

    predictor = SamPredictor(engine)
    predictor.set_image(photo)
    masks, scores, _ = predictor.predict(box=np.array([650, 900, 1000, 1250]), multimask_output=False)
    decoded = read_response(json.dumps(response))
    assert np.array_equal(decoded[0][0][0].mask, masks[0])
    assert decoded[0][0][0].iou_score == float(scores[0])


def test_multi_row_any_column_order_and_json_lists(engine, photo, landscape):
    columns = ["multimask_output", "input_labels", "image", "input_boxes", "input_points"]
    body = {
        "input_data": {
            "columns": columns,
            "index": [0, 1],
            "data": [
                [True, [[1], [1]], b64_png(photo), None, [[[280, 320]], [[900, 700]]]],
                ["False", "[[1, 0]]", b64_png(landscape), "[[10, 20, 300, 250]]", "[[[100, 100], [200, 150]]]"],
            ],
        }
    }
    response = score(body, engine)
    decoded = read_response(response)
    assert [len(row) for row in decoded] == [2, 1]  # predictions per row = point groups / boxes
    assert [len(p) for p in decoded[0]] == [3, 3] and [len(p) for p in decoded[1]] == [1]
    predictor = SamPredictor(engine)
    predictor.set_image(photo)
    masks, scores, _ = predictor.predict_batch(np.array([[[280, 320]], [[900, 700]]]), np.array([[1], [1]]))
    for g in range(2):
        for c in range(3):  # decoder order, not sorted by score
            assert np.array_equal(decoded[0][g][c].mask, masks[g, c])
            assert decoded[0][g][c].iou_score == float(scores[g, c])


def test_reader_accepts_model_card_spelling(engine, landscape):
    live = score(
        build_request([dict(image=b64_png(landscape), input_points=[[[100, 100]]], multimask_output=True)]), engine
    )
    card = [
        {"predictions": [{"mask_per_prediction": p["masks_per_prediction"]} for p in row["response"]["predictions"]]}
        for row in live
    ]
    a, b = read_response(live), read_response(card)
    assert len(a[0][0]) == 3
    for x, y in zip(a[0][0], b[0][0]):
        assert np.array_equal(x.mask, y.mask) and x.iou_score == y.iou_score
    with pytest.raises(ValueError, match="predictions"):
        read_response([{"nothing": 1}])


@pytest.mark.parametrize("fmt", ["PNG", "ICO", "BMP", "GIF", "TIFF"])
def test_a_responses_masks_are_read_as_png_only(fmt):
    """The wire's masks are PNGs: no other decoder of Pillow's runs on a saved file's masks (its EPS
    one would start Ghostscript)."""
    buffer = io.BytesIO()
    Image.fromarray(np.eye(16, dtype=np.uint8) * 255).save(buffer, fmt)
    text = base64.b64encode(buffer.getvalue()).decode()
    if fmt == "PNG":
        assert np.array_equal(decode_mask_png(text), np.eye(16, dtype=bool))
    else:
        with pytest.raises(OSError, match="cannot identify image file"):
            decode_mask_png(text)


def test_build_request_round_trips():
    body = build_request([dict(image="abc", input_points=[[[1.5, 2]]], input_labels=[[1]], multimask_output=False)])
    assert body["input_data"]["columns"] == list(COLUMNS)
    assert body["input_data"]["data"][0] == ["abc", "[[[1.5, 2.0]]]", "", "[[1]]", False]
    (row,) = parse_request(json.dumps(body))
    assert row.points_xy.tolist() == [[[1.5, 2.0]]] and row.boxes_xyxy is None and row.multimask_output is False


def row(**overrides) -> dict:
    values = {
        "image": "aGVsbG8=",
        "input_points": "[[[10, 10]]]",
        "input_boxes": "",
        "input_labels": "",
        "multimask_output": False,
    }
    values.update(overrides)
    return {"input_data": {"columns": list(values), "index": [0], "data": [list(values.values())]}}


@pytest.mark.parametrize(
    "body, column, message",
    [
        (row(input_points="[[[10, 10]], [[1, 2], [3, 4]]]"), "input_points", "ragged"),
        (row(input_points="[[10, 10]]"), "input_points", "levels of nesting"),
        (row(input_points="[[[10, 10, 5]]]"), "input_points", "[x, y]"),
        (row(input_points="[[[10, 10"), "input_points", "cannot parse"),
        (row(input_points="", input_boxes="[1, 2, 3, 4]"), "input_boxes", "must still be wrapped"),
        (row(input_points="", input_boxes="[[1, 2, 3]]"), "input_boxes", "[x0, y0, x1, y1]"),
        (row(input_labels="[[1, 0]]"), "input_labels", "shape"),
        (row(input_labels="[[2]]"), "input_labels", "1, 0 or -1"),
        (
            row(input_points="", input_labels="[[1]]", input_boxes="[[1, 2, 3, 4]]"),
            "input_labels",
            "without input_points",
        ),
        (
            row(input_points="[[[1, 1]], [[2, 2]]]", input_boxes="[[1, 2, 3, 4]]"),
            "input_boxes",
            "2 point groups but 1 boxes",
        ),
        (row(multimask_output="yes"), "multimask_output", "true or false"),
        (row(multimask_output=1), "multimask_output", "true or false"),
        (row(input_points=""), "input_points", "no prompt"),
        (row(image=""), "image", "base64"),
    ],
)
def test_bad_rows_name_row_column_and_problem(body, column, message):
    with pytest.raises(RequestError) as info:
        parse_request(body)
    assert (info.value.row, info.value.column) == (0, column)
    assert message in str(info.value)
    assert info.value.to_json() == {"error": str(info.value), "row": 0, "column": column}


def test_bad_tables():
    with pytest.raises(RequestError, match="not valid JSON"):
        parse_request("{nope")
    with pytest.raises(RequestError, match="input_data"):
        parse_request({"data": []})
    body = row()
    body["input_data"]["columns"].remove("multimask_output")
    body["input_data"]["data"][0].pop()
    with pytest.raises(RequestError, match="missing") as info:
        parse_request(body)
    assert info.value.column == "multimask_output"
    body = row()
    body["input_data"]["data"][0].pop()
    with pytest.raises(RequestError, match="one per column") as info:
        parse_request(body)
    assert info.value.row == 0


def test_bad_images_and_out_of_image_prompts(engine, landscape):
    def error(**overrides):
        with pytest.raises(RequestError) as info:
            score(row(**overrides), engine)
        return info.value

    e = error(image="@@not base64@@")
    assert (e.column, e.status) == ("image", 400) and "base64" in str(e)
    e = error(image=base64.b64encode(b"hello, not an image").decode())
    assert e.column == "image" and "not an image" in str(e)
    e = error(image=b64_png(landscape), input_points="[[[1000, 10]]]")
    assert e.column == "input_points" and "outside the 451x300 image" in str(e)
    e = error(image=b64_png(landscape), input_points="", input_boxes="[[10, 10, 10, 50]]")
    assert e.column == "input_boxes" and "zero" in str(e)
    e = error(image=b64_png(landscape), input_points="", input_boxes="[[10, 10, 4962, 50]]")
    assert e.column == "input_boxes" and "reaches more than 10 image sizes past the 451x300 image" in str(e)
    score(row(image=b64_png(landscape), input_points="", input_boxes="[[-4510, -3000, 4961, 3300]]"), engine)
    big = b64_png(np.zeros((3000, 3000, 3), dtype=np.uint8))
    engine_limit = engine.max_pixels
    try:
        engine.max_pixels = 4_000_000
        e = error(image=big)
    finally:
        engine.max_pixels = engine_limit
    assert (e.column, e.status) == ("image", 413) and "megapixels" in str(e)


@pytest.fixture()
def image_server(landscape):
    png = base64.b64decode(b64_png(landscape))

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            hosts.append(self.headers["Host"])
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(png)))
            self.end_headers()
            self.wfile.write(png)

        def log_message(self, *args):
            pass

    hosts = []  # the Host header of each request the server got
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield _Served(f"http://127.0.0.1:{server.server_address[1]}/cat.png", hosts)
    server.shutdown()


class _Served(str):
    """The image server's URL, with the Host header of each request it got."""

    def __new__(cls, url: str, hosts: list):
        served = super().__new__(cls, url)
        served.hosts = hosts
        return served


def resolving(monkeypatch, name: str, addresses: list[str]):
    """socket.getaddrinfo answering `name` with the next of `addresses` at each lookup."""
    real, answers = socket.getaddrinfo, iter(addresses)

    def fake(host, port, *args, **kwargs):
        if host != name:
            return real(host, port, *args, **kwargs)
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (next(answers), int(port)))]

    monkeypatch.setattr(socket, "getaddrinfo", fake)


def test_a_url_is_fetched_from_the_address_it_was_checked_at(engine, image_server, monkeypatch):
    """The name is resolved once: checked, then connected to (DNS rebinding: a name that answers a
    public address to the check and a private one to the connection reached the private one), with
    the URL's own host in the Host header."""
    port = image_server.split(":")[2].split("/")[0]
    resolving(monkeypatch, "images.example", ["127.0.0.1"] * 2)
    response = score(row(image=f"http://images.example:{port}/cat.png"), engine, FetchPolicy(allow_private=True))
    assert read_response(response)[0][0][0].mask.shape == (300, 451)
    assert image_server.hosts == [f"images.example:{port}"]
    resolving(monkeypatch, "rebinding.example", ["93.184.216.34", "127.0.0.1", "127.0.0.1"])
    with pytest.raises(RequestError) as info:
        score(row(image=f"http://rebinding.example:{port}/cat.png"), engine, FetchPolicy(timeout_s=1))
    assert info.value.column == "image" and image_server.hosts == [f"images.example:{port}"], "never connected"


def test_url_images_refuse_private_addresses_unless_allowed(engine, image_server):
    body = row(image=image_server)
    with pytest.raises(RequestError, match="loopback/private") as info:
        score(body, engine)
    assert info.value.column == "image"
    response = score(body, engine, FetchPolicy(allow_private=True))
    assert read_response(response)[0][0][0].mask.shape == (300, 451)
    with pytest.raises(RequestError, match="over the limit"):
        score(body, engine, FetchPolicy(allow_private=True, max_bytes=1000))
    with pytest.raises(RequestError, match="base64"):
        score(row(image="ftp://example.com/x.png"), engine)
