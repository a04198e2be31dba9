"""POST /score and GET /health over real HTTP on 127.0.0.1, decoded as the official notebook does."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from sam_demo import SamPredictor
from sam_demo.app import build_app
from sam_demo.endpoint.settings import ServerConfig
from tests.support.photos import PHOTOS, asset, b64_png
from tests.support.servers import RunningServer


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return np.asarray(Image.fromarray(asset("chelsea.png")).resize((1800, 1350)))


SEED = (
    '{"input_data": {"columns": ["image", "input_points", "input_boxes", "input_labels", "multimask_output"], '
    '"index": [0], "data": [["image1", "", "[[650, 900, 1000, 1250]]", "", false]]}, "params": {}}'
)


def notebook_masks(text: str) -> list[list[np.ndarray]]:
    """Decode a response as Azure's sample notebook does: pandas, then response/predictions/masks."""
    frame = pd.read_json(io.StringIO(text))
    out = []
    for response in frame["response"]:
        for prediction in response["predictions"]:
            out.append(
                [
                    np.asarray(Image.open(io.BytesIO(base64.b64decode(m["encoded_binary_mask"])))) > 0
                    for m in prediction["masks_per_prediction"]
                ]
            )
    return out


def test_health_and_docs(server):
    health = httpx.get(f"{server.url}/health").json()
    assert health["status"] == "ok" and health["device"] == "cpu" and health["dtype"] == "float32"
    assert health["random_weights"] is True and {"entries", "bytes", "max_bytes"} <= set(health["cache"])
    assert {"sessions", "light", "bytes", "budget_bytes", "lightened", "forgotten"} <= set(health["sessions"])
    assert 0 < health["sessions"]["budget_bytes"] < 1 << 50
    spec = httpx.get(f"{server.url}/openapi.json").json()
    post = spec["paths"]["/score"]["post"]
    assert post["requestBody"]["content"]["application/json"]["example"]["input_data"]["columns"][0] == "image"
    assert "200" in post["responses"] and "400" in post["responses"]
    assert httpx.get(f"{server.url}/").status_code == 200  # the UI on the same port
    # /docs and /redoc work offline: every script and style they load is served by this server.
    for page in ("/docs", "/redoc"):
        docs = httpx.get(f"{server.url}{page}")
        assets = re.findall(r'(?:src|href)="([^"]+)"', docs.text)
        assert docs.status_code == 200 and assets and all(url.startswith("/") for url in assets), assets
        for url in assets:
            assert httpx.get(f"{server.url}{url}").status_code == 200, url


def test_seed_sample_verbatim(server, engine, photo):
    response = httpx.post(
        f"{server.url}/score",
        content=SEED.replace("image1", b64_png(photo)),
        headers={"Content-Type": "application/json"},
        timeout=60,
    )
    assert response.status_code == 200
    (masks,) = notebook_masks(response.text)
    predictor = SamPredictor(engine)
    predictor.set_image(photo)
    expected, scores, _ = predictor.predict(box=np.array([650, 900, 1000, 1250]), multimask_output=False)
    assert len(masks) == 1 and masks[0].shape == (1350, 1800) and np.array_equal(masks[0], expected[0])
    assert response.json()[0]["response"]["predictions"][0]["masks_per_prediction"][0]["iou_score"] == float(scores[0])


def test_multi_row_multi_box(server, photo, landscape):
    body = {
        "input_data": {
            "columns": ["image", "input_points", "input_boxes", "input_labels", "multimask_output"],
            "index": [0, 1],
            "data": [
                [b64_png(photo), "", "[[10, 10, 900, 700], [800, 500, 1700, 1300]]", "", True],
                [b64_png(landscape), "[[[100, 100], [300, 200]]]", "", "[[1, 0]]", False],
            ],
        }
    }
    response = httpx.post(f"{server.url}/score", json=body, timeout=60)
    assert response.status_code == 200
    masks = notebook_masks(response.text)
    assert [len(m) for m in masks] == [3, 3, 1]
    assert masks[0][0].shape == (1350, 1800) and masks[2][0].shape == (300, 451)


@pytest.mark.parametrize(
    "body, status, row, column",
    [
        ("{not json", 400, None, None),
        ('{"inputs": []}', 400, None, None),
        (SEED.replace("image1", "%%%"), 400, 0, "image"),
        (SEED.replace('"[[650, 900, 1000, 1250]]"', '"[650, 900, 1000, 1250]"'), 400, 0, "input_boxes"),
        (SEED.replace("false]]", '"maybe"]]'), 400, 0, "multimask_output"),
    ],
)
def test_bad_requests_get_4xx_and_the_server_keeps_serving(server, body, status, row, column):
    response = httpx.post(f"{server.url}/score", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == status
    payload = response.json()
    assert payload["row"] == row and payload["column"] == column and payload["error"]
    assert httpx.get(f"{server.url}/health").status_code == 200


def test_prompt_outside_image_and_body_limit(server, landscape):
    body = SEED.replace("image1", b64_png(landscape))  # the box lies outside a 451x300 image
    response = httpx.post(f"{server.url}/score", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and response.json()["column"] == "input_boxes"
    assert "outside the 451x300 image" in response.json()["error"]
    huge = '{"input_data": {"columns": [], "data": [["' + "A" * (9 << 20) + '"]]}}'
    response = httpx.post(f"{server.url}/score", content=huge, headers={"Content-Type": "application/json"})
    assert response.status_code == 413 and "MiB" in response.json()["error"]


def test_model_card_sample_box_past_the_edge_gets_the_reference_masks(server, engine, reference_model):
    from sam_demo.endpoint.wire import read_response
    from tests.support.reference import reference_predict

    photo = np.asarray(Image.fromarray(asset("chelsea.png")).resize((1800, 1200)))
    body = SEED.replace("image1", b64_png(photo))  # the model card's box [650, 900, 1000, 1250] ends below y = 1200
    response = httpx.post(f"{server.url}/score", content=body, headers={"Content-Type": "application/json"}, timeout=60)
    assert response.status_code == 200
    (mask,) = read_response(response.json())[0][0]
    ref_masks, ref_scores, _ = reference_predict(
        *reference_model, photo, None, None, np.array([[650.0, 900.0, 1000.0, 1250.0]]), multimask=False
    )
    assert np.array_equal(mask.mask, ref_masks[0, 0]) and abs(mask.iou_score - float(ref_scores[0, 0])) < 1e-5


def test_api_key_and_model_not_loaded(engine):
    from fastapi import FastAPI

    from sam_demo.endpoint.http import add_api_routes

    with RunningServer(build_app(engine, ServerConfig(api_key="s3cret"))) as running:
        body = SEED.replace("image1", b64_png(asset("chelsea.png")))
        assert httpx.post(f"{running.url}/score", content=body).status_code == 401
        wrong = httpx.post(f"{running.url}/score", content=body, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and "Bearer" in wrong.json()["error"]
        ok = httpx.post(
            f"{running.url}/score",
            content=SEED.replace("image1", b64_png(np.zeros((1300, 1100, 3), np.uint8))),
            headers={"Authorization": "Bearer s3cret"},
            timeout=60,
        )
        assert ok.status_code == 200
    app = FastAPI()
    add_api_routes(app, None, ServerConfig())
    with RunningServer(app) as running:
        response = httpx.post(f"{running.url}/score", content=SEED)
        assert response.status_code == 503 and response.headers["retry-after"]


def test_app_exits_with_a_clear_message_when_the_model_cannot_load(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        [sys.executable, "app.py", "--model", str(tmp_path / "missing")],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "does not exist" in done.stderr and "save_pretrained" in done.stderr and "Traceback" not in done.stderr


def test_a_restarted_server_answers_a_known_image_from_the_embedding_store(checkpoint, tmp_path):
    """Start the app with a store, POST /score an image, stop it, start it again: the same request
    runs no encoder (/health counts a store hit and no miss) and returns the same bytes."""
    import time

    from tests.support.requests import score_body
    from tests.support.servers import AppProcess

    body = score_body(b64_png(asset("rocket.jpg")[:300, :400]), points="[[[200, 150]]]")
    args = ("--embedding-store", str(tmp_path / "store"), "--exact")
    answers, deltas = [], []
    for _ in range(2):
        app = AppProcess(str(checkpoint), "float32", args=args)
        try:
            for _ in range(600):  # the warm-up's examples (stored too): counted before the request
                store = httpx.get(f"{app.url}/health").json()["embedding_store"]
                if store["hits"] + store["writes"] == 4:
                    break
                time.sleep(0.1)
            answer = httpx.post(f"{app.url}/score", content=body, timeout=120)
            assert answer.status_code == 200
            after = httpx.get(f"{app.url}/health").json()["embedding_store"]
            answers.append(answer.content)
            deltas.append({k: after[k] - store[k] for k in ("hits", "misses", "writes", "corrupt")})
        finally:
            app.close()
    assert deltas == [
        {"hits": 0, "misses": 1, "writes": 1, "corrupt": 0},
        {"hits": 1, "misses": 0, "writes": 0, "corrupt": 0},
    ]
    assert answers[0] == answers[1]
    assert after["entries"] == 5 and after["enabled"] and 0 < after["bytes"] <= after["max_bytes"]


def test_space_api_segment_and_segment_everything_via_gradio_client(server, engine):
    from gradio_client import Client, handle_file

    from sam_demo.endpoint.wire import read_response

    client = Client(server.url, verbose=False)
    endpoints = client.view_api(return_format="dict", print_info=False)
    assert set(endpoints["named_endpoints"]) == {"/segment", "/segment_everything"}
    assert not endpoints["unnamed_endpoints"]

    image = PHOTOS / "chelsea.png"
    element = client.predict(
        handle_file(str(image)), "[[[200, 150], [320, 90]]]", "", [[1, 0]], True, api_name="/segment"
    )
    assert list(element) == ["response"]
    decoded = read_response([element])[0][0]
    predictor = SamPredictor(engine)
    predictor.set_image(asset("chelsea.png"))
    masks, scores, _ = predictor.predict(np.array([[200.0, 150.0], [320.0, 90.0]]), np.array([1, 0]))
    assert [m.iou_score for m in decoded] == [float(s) for s in scores]
    assert all(np.array_equal(m.mask, masks[k]) for k, m in enumerate(decoded))
    # The model card's box reaching past the edge is accepted; a point outside is refused by name.
    assert client.predict(handle_file(str(image)), "", "[[300, 200, 600, 400]]", "", False, api_name="/segment")
    with pytest.raises(Exception, match="input_points.*outside the 451x300 image"):
        client.predict(handle_file(str(image)), "[[[900, 10]]]", "", "", False, api_name="/segment")

    everything = client.predict(handle_file(str(image)), 4, 0.0, 0.0, api_name="/segment_everything")
    with pytest.raises(Exception, match="points_per_side: send a whole number from 1 to 64"):
        client.predict(handle_file(str(image)), 100000, 0.0, 0.0, api_name="/segment_everything")
    client.close()
    assert everything["width"] == 451 and everything["height"] == 300 and everything["annotations"]
    assert {"segmentation", "bbox", "area", "predicted_iou"} <= set(everything["annotations"][0])


def test_a_file_the_request_names_but_did_not_upload_is_refused_unread(server):
    """Gradio copies a request's FileData path into its cache only if it was uploaded; the check runs
    once the Blocks count as launched, which mounting alone does not set (any file the server could
    read came back: its first bytes in /segment's error, an image whole through the upload event)."""
    named = {"path": str((PHOTOS / "chelsea.png").resolve()), "meta": {"_type": "gradio.FileData"}}
    call = f"{server.url}/gradio_api/call/segment"
    event = httpx.post(call, json={"data": [named, "", "[[10, 10, 200, 200]]", "", False]}, timeout=30)
    stream = httpx.get(f"{call}/{event.json()['event_id']}", timeout=60).text
    assert "event: error" in stream and "event: complete" not in stream, stream
    assert "PNG" not in stream and "not uploaded by a user" in stream, stream


def _event(url: str, elem_id: str, trigger: str) -> int:
    """The fn_index of the page's event `trigger` on the component `elem_id`, from Gradio's config."""
    config = httpx.get(f"{url}/config", timeout=30).json()
    component = next(c["id"] for c in config["components"] if c.get("props", {}).get("elem_id") == elem_id)
    return next(i for i, d in enumerate(config["dependencies"]) if [component, trigger] in d["targets"])


def _queued(url: str, fn_index: int, data: list) -> dict:
    """Run a page event through Gradio's queue as the page does; its last message."""
    session = "t" + str(fn_index) * 6
    join = {"data": data, "fn_index": fn_index, "session_hash": session, "event_data": None, "trigger_id": None}
    assert httpx.post(f"{url}/gradio_api/queue/join", json=join, timeout=30).status_code == 200
    with httpx.stream("GET", f"{url}/gradio_api/queue/data", params={"session_hash": session}, timeout=60) as stream:
        for line in stream.iter_lines():
            message = json.loads(line[5:]) if line.startswith("data:") else {}
            if message.get("msg") == "process_completed":
                return message
    raise AssertionError("the event did not complete")


@pytest.mark.parametrize("elem_id", ["image-input", "add-images", "add-folder", "load-json"])
@pytest.mark.parametrize("meta", [None, {"_type": "other"}], ids=["no-meta", "other-meta"])
def test_a_path_the_page_did_not_upload_is_refused_in_any_payload(server, elem_id, meta):
    """Gradio checks only payloads tagged as its FileData: one without the tag named any path, and
    the upload event opened it as the image shown (its pixels then at /sam-demo/photo/<token>)."""
    named = {"path": str((PHOTOS / "chelsea.png").resolve())} | ({"meta": meta} if meta else {})
    message = _queued(server.url, _event(server.url, elem_id, "upload"), [named, None])
    assert message["success"] is False, message
    # The upload buttons' untagged payloads fail Gradio's data model already (a list of its FileData);
    # the image box's passed it, and is refused by ours.
    says = "was not uploaded here" if elem_id == "image-input" else "validation error"
    assert says in message["output"]["error"], message


def test_an_upload_over_the_sets_limit_is_refused(engine):
    """Gradio's upload route takes at most --max-upload-mb per file (it wrote any size to disk)."""
    from sam_demo.demo.workspace import WorkspaceLimits

    app = build_app(engine, ServerConfig(), limits=WorkspaceLimits(max_bytes=1 << 20))
    with RunningServer(app) as running:
        url = f"{running.url}/gradio_api/upload"
        over = httpx.post(url, files={"files": ("big.bin", b"\0" * ((1 << 20) + 1))}, timeout=60)
        under = httpx.post(url, files={"files": ("small.bin", b"\0" * (1 << 20))}, timeout=60)
    assert over.status_code == 413 and "1048576 bytes" in over.text, over.text
    assert under.status_code == 200


@pytest.mark.parametrize("side", [0, 65, 100000, 2.5, -3, float("nan"), float("inf"), "abc", None])
def test_space_api_bounds_the_grid_of_segment_everything(engine, side):
    import gradio as gr

    from sam_demo.demo.handlers import DemoContext
    from sam_demo.demo.space_api import api_segment_everything

    with pytest.raises(gr.Error, match=r"points_per_side: send a whole number from 1 to 64 \(the grid is its square\)"):
        api_segment_everything(DemoContext(engine), {"path": str(PHOTOS / "chelsea.png")}, side)


@pytest.mark.parametrize("threshold", [float("nan"), float("inf"), -float("inf"), 10**400])
def test_space_api_refuses_thresholds_that_are_not_numbers(engine, threshold):
    import gradio as gr

    from sam_demo.demo.handlers import DemoContext
    from sam_demo.demo.space_api import api_segment_everything

    with pytest.raises(gr.Error, match="stability_score_thresh and the NMS thresholds must be finite numbers"):
        api_segment_everything(DemoContext(engine), {"path": str(PHOTOS / "chelsea.png")}, 4, threshold, 0.95)


def test_space_api_segment_keeps_the_servers_request_limits(engine):
    """/segment answers as /score does, under the same --max-* flags (it used the defaults)."""
    import gradio as gr
    from gradio.utils import get_upload_folder

    from sam_demo.demo.handlers import DemoContext
    from sam_demo.demo.space_api import api_segment
    from sam_demo.endpoint.wire import RequestLimits

    ctx = DemoContext(engine, request_limits=RequestLimits(max_groups=2))
    uploaded = Path(get_upload_folder()) / "test-request-limits" / "chelsea.png"  # as Gradio keeps an upload
    uploaded.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(PHOTOS / "chelsea.png", uploaded)
    image = {"path": str(uploaded)}
    assert api_segment(ctx, image, "", "[[1, 1, 50, 50], [60, 60, 90, 90]]")["response"]
    with pytest.raises(gr.Error, match=r"3 is over the limit of 2 \(--max-prompts\)"):
        api_segment(ctx, image, "", "[[1, 1, 50, 50], [60, 60, 90, 90], [5, 5, 9, 9]]")


def test_space_api_reads_only_uploaded_files(engine):
    import gradio as gr

    from sam_demo.demo.handlers import DemoContext
    from sam_demo.demo.space_api import api_segment

    for image in ({"path": "/etc/passwd"}, "/etc/passwd", "ftp://example.com/x.png"):
        with pytest.raises(gr.Error, match="handle_file"):
            api_segment(DemoContext(engine), image, "[[[1, 1]]]")
