"""The web demo's routes outside Gradio (click fast path, hover preview, downloads) and its session view.

Sessions are made with the UI's own handlers, in a store shared with the routes, as build_app does.
"""

from __future__ import annotations

import io
import json
import threading
import time
import zipfile
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from sam_demo import SamPredictor
from sam_demo.demo.handlers import on_image, on_new_object, on_prompt, on_undo
from sam_demo.demo.render import DISPLAY_MAX_SIDE, display_size, view_json
from sam_demo.demo.routes import add_demo_routes
from sam_demo.demo.session import MAX_POINTS_PER_OBJECT, PALETTE
from sam_demo.demo.session_store import SessionStore
from tests.support.demo import box, point
from tests.support.photos import PHOTOS

WIDE = PHOTOS / "rocket.jpg"


@pytest.fixture()
def client(ctx):
    app = FastAPI()
    add_demo_routes(app, ctx.engine, ctx.sessions)
    with TestClient(app) as client:
        yield client


def edit(client, session, events):
    return client.post("/sam-demo/edit", json={"token": session.token, "events": events})


def test_click_fast_path_equals_the_predictor_and_sends_only_new_layers(ctx, client, engine):
    session = on_image(ctx, str(WIDE)).state
    h, w = session.size_hw
    events = [point(w * 0.4, h * 0.5)]
    answer = edit(client, session, events)
    assert answer.status_code == 200 and "decode;dur=" in answer.headers["server-timing"]
    view = answer.json()
    assert view["token"] == session.token and view["consumed"] == 1 and len(view["order"]) == 1
    assert list(view["png"]) == view["order"] and view["active"] == view["order"][0]
    layer = Image.open(io.BytesIO(__import__("base64").b64decode(view["png"][view["order"][0]].split(",", 1)[1])))
    assert layer.mode == "P" and max(layer.size) == min(DISPLAY_MAX_SIDE, max(w, h))

    latest = ctx.sessions.get(session.token)
    predictor = SamPredictor(engine)
    predictor.set_image(session.pixels(engine.max_pixels))
    masks, scores, _ = predictor.predict(np.array([[w * 0.4, h * 0.5]]), np.array([1]))
    assert np.array_equal(latest.results[0].masks, masks) and np.array_equal(latest.results[0].scores, scores)

    # The Gradio event that follows finds the click applied: no decode, the prompter is not resent.
    assert "IoU" in view["panels"]["status"] and view["panels"]["candidates"].count("data-candidate=") == 3
    # The page fires its Gradio event only if this route fails, maybe after the route had applied
    # the click: it decodes nothing again, and resends every layer the page may lack.
    refresh = on_prompt(ctx, json.dumps({"token": session.token, "events": events}), session)
    fallback = json.loads(refresh.prompter["view"])
    assert "decoded" not in fallback["panels"]["status"] and "IoU" in fallback["panels"]["status"]
    assert fallback["order"] == view["order"] and list(fallback["png"]) == view["order"]
    assert ctx.sessions.get(session.token).results[0].uid == latest.results[0].uid

    # Another candidate: a new PNG for the same decode, nothing decoded.
    other = int(np.argsort(scores)[0])
    events.append({"type": "candidate", "index": other})
    chosen = edit(client, session, events).json()
    assert len(chosen["png"]) == 1 and "decoded" not in chosen["panels"]["status"]
    assert f'data-candidate="{other}" aria-pressed="true"' in chosen["panels"]["candidates"]
    assert ctx.sessions.get(session.token).results[0].chosen == other

    # A second click: one new PNG (the edited object's); New object: the finished one is redrawn thin.
    events.append(point(w * 0.6, h * 0.3, 0))
    second = edit(client, session, events).json()
    assert len(second["png"]) == 1 and second["order"] != view["order"]
    state, prompter, *_ = on_new_object(ctx, session)
    finished = json.loads(prompter["view"])
    assert list(finished["png"]) == finished["order"] and finished["active"] == "", "its outline is redrawn thin"
    events.append(point(w * 0.2, h * 0.2))
    third = edit(client, state, events).json()
    assert len(third["order"]) == 2 and list(third["png"]) == [third["active"]] == [third["order"][1]]


def test_layers_number_and_colour_everything_once(ctx):
    session = on_image(ctx, str(WIDE)).state
    token = session.token
    session = on_prompt(ctx, json.dumps({"token": token, "events": [point(100, 100)]}), session).state
    session = ctx.sessions.get(on_new_object(ctx, session).state.token)
    layers = session.layers()
    assert [(layer.number, layer.name, layer.active) for layer in layers] == [
        (1, "Object 1", False),
        (2, "Object 2", True),
    ]
    assert layers[0].rgb == PALETTE[0] and layers[1].source is None and layers[1].score is None
    view = json.loads(view_json(session, "status"))
    assert view["points"] == [], "only the edited object's prompts are drawn, and object 2 has none yet"
    assert view["tags"][0][3] == layers[0].hex and view["tags"][0][4] in ("#000000", "#ffffff")
    assert view["tags"][0][2] == f"#1 IoU {min(max(layers[0].score, 0), 1):.2f}"
    assert view["active"] == "", "the edited object has no mask yet"


def test_preview_shows_a_click_without_adding_it_and_yields_to_edits(ctx, client, engine):
    session = on_image(ctx, str(WIDE)).state
    h, w = session.size_hw
    answer = client.post("/sam-demo/preview", json={"token": session.token, "x": w / 2, "y": h / 2})
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
    png = Image.open(io.BytesIO(answer.content))
    assert (png.size[1], png.size[0]) == display_size((h, w), DISPLAY_MAX_SIDE // 2)
    assert ctx.sessions.get(session.token).objects[0].is_empty, "a preview adds no prompt"

    # The preview equals the click's best mask, at its own size; a click on that spot reuses its decode.
    clicked = edit(client, session, [point(w / 2, h / 2)])
    best = ctx.sessions.get(session.token).results[0]
    expected = best.display_mask((png.size[1], png.size[0]))
    assert (np.asarray(png) > 0).astype(np.uint8).tolist() == expected.tolist() and clicked.status_code == 200
    assert "IoU" in clicked.json()["panels"]["status"] and "decoded" not in clicked.json()["panels"]["status"]
    predictor = SamPredictor(ctx.engine)
    predictor.set_image(session.pixels(engine.max_pixels))
    masks, scores, _ = predictor.predict(np.array([[w / 2, h / 2]]), np.array([1]))
    assert np.array_equal(best.masks, masks) and np.array_equal(best.scores, scores)
    second = edit(client, session, [point(w / 2, h / 2), point(w / 4, h / 4)])
    assert "decoded in" in second.json()["panels"]["status"], "another spot is decoded"

    # While an edit is being decoded, previews are dropped at once (never queued).
    entered, leave = threading.Event(), threading.Event()

    def hold():
        with ctx.sessions.editing(session):
            entered.set()
            leave.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    entered.wait(10)
    try:
        busy = client.post("/sam-demo/preview", json={"token": session.token, "x": 5, "y": 5})
        assert busy.status_code == 204
    finally:
        leave.set()
        holder.join()


def test_routes_refuse_bad_requests_clearly(ctx, client):
    session = on_image(ctx, str(WIDE)).state
    h, w = session.size_hw
    cases = [
        (client.post("/sam-demo/edit", json={"token": "nope", "events": []}), 404, "expired"),
        (client.post("/sam-demo/edit", content=b"{not json"), 400, "send JSON"),
        (client.post("/sam-demo/edit", json=[1, 2]), 400, "send JSON"),
        (client.post("/sam-demo/edit", content=b"[" * 100_000), 400, "send JSON"),
        (edit(client, session, [{"type": "point", "x": "left"}]), 422, "malformed"),
        (edit(client, session, [point(w + 50, 10)]), 422, "malformed"),
        (edit(client, session, [{"type": "candidate", "index": 1}]), 422, "malformed"),
        (  # NaN passed the box's clamps and reached the decoder
            client.post(
                "/sam-demo/edit",
                content=json.dumps({"token": session.token, "events": [box(float("nan"), float("nan"), 100, 100)]}),
            ),
            422,
            "the box (nan, nan, 100.0, 100.0) has a corner that is not a finite number",
        ),
        (client.post("/sam-demo/preview", json={"token": session.token, "x": w + 1, "y": 0}), 400, "outside"),
        (
            client.post("/sam-demo/preview", content=json.dumps({"token": session.token, "x": float("nan"), "y": 0})),
            400,
            "outside",
        ),
        (client.post("/sam-demo/preview", json={"token": session.token}), 400, "send JSON"),
        (client.post("/sam-demo/preview", json={"token": session.token, "x": "5", "y": 0}), 400, "send JSON"),
        (client.post("/sam-demo/preview", json={"token": session.token, "x": True, "y": 0}), 400, "send JSON"),
        (client.post("/sam-demo/preview", json={"token": [session.token], "x": 5, "y": 5}), 400, "send JSON"),
        (client.get(f"/sam-demo/export/{session.token}/masks.zip"), 409, "nothing to export"),
        (client.get(f"/sam-demo/export/{session.token}/secrets.txt"), 404, "unknown export"),
        (client.get("/sam-demo/export/nope/masks.zip"), 404, "expired"),
    ]
    for answer, status, words in cases:
        assert answer.status_code == status and words in answer.json()["error"], (answer.status_code, answer.text)
    assert ctx.sessions.get(session.token).objects[0].is_empty, "refused edits change nothing"

    many = [point(10 + i, 10) for i in range(MAX_POINTS_PER_OBJECT + 1)]
    assert edit(client, session, many).status_code == 422
    refresh = on_prompt(ctx, json.dumps({"token": session.token, "events": many}), session)
    assert len(refresh.state.objects[0].points) == MAX_POINTS_PER_OBJECT  # the rest was reported, not applied


def test_downloads_are_built_when_asked_and_match_the_session(ctx, client, engine):
    session = on_image(ctx, str(WIDE)).state
    h, w = session.size_hw
    edit(client, session, [point(w / 3, h / 3)])
    session = on_new_object(ctx, session).state
    edit(client, session, [point(w / 3, h / 3), point(w * 0.7, h * 0.6)])
    session = on_undo(ctx, session).state  # downloads follow the latest state, whatever its path
    answer = client.get(f"/sam-demo/export/{session.token}/masks.zip")
    assert answer.status_code == 200 and answer.headers["cache-control"] == "no-store"
    assert answer.headers["content-disposition"] == 'attachment; filename="rocket.masks.zip"'
    with zipfile.ZipFile(io.BytesIO(answer.content)) as archive:
        assert archive.namelist() == ["object_01.png"]
        saved = np.asarray(Image.open(io.BytesIO(archive.read("object_01.png")))) > 127
    assert np.array_equal(saved, ctx.sessions.get(session.token).results[0].mask)
    endpoint = client.get(f"/sam-demo/export/{session.token}/sam-endpoint.json").json()
    assert len(endpoint["request"]["input_data"]["data"]) == 1


def test_session_store_is_bounded_and_expires(ctx):
    now = [0.0]
    store = SessionStore(max_sessions=2, idle_seconds=60, clock=lambda: now[0])
    sessions = [on_image(ctx, str(WIDE)).state for _ in range(3)]
    for s in sessions:
        store.put(s)
    assert len(store) == 2 and store.get(sessions[0].token) is None, "least recently used goes first"
    now[0] = 30
    assert store.get(sessions[1].token) is sessions[1]  # touched at 30
    now[0] = 80
    assert store.get(sessions[2].token) is None and store.get(sessions[1].token) is sessions[1]
    newer = sessions[1].fork()
    store.put(newer)
    assert store.latest(sessions[1]) is newer and store.latest(sessions[0]) is sessions[0]
    store.discard(sessions[1].token)
    assert len(store) == 0


def test_detail_route_sends_the_shown_layers_of_a_region_at_the_asked_size(ctx, client, uploaded):
    view = edit(client, uploaded, [point(200, 150)]).json()
    key = view["active"]
    answer = client.post(
        "/sam-demo/detail",
        json={"token": uploaded.token, "region": [100, 50, 250, 200], "size": [300, 300], "keys": [key, "gone"]},
    )
    assert answer.status_code == 200 and list(answer.json()["png"]) == [key]
    layer = Image.open(io.BytesIO(__import__("base64").b64decode(answer.json()["png"][key].split(",", 1)[1])))
    assert layer.size == (300, 300) and layer.mode == "P"


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"token": 5, "region": [0, 0, 10, 10], "size": [10, 10], "keys": []}, 400, "send JSON"),
        ({"token": "t", "region": [0, 0, 10], "size": [10, 10], "keys": []}, 400, "send JSON"),
        ({"token": "t", "region": [0, 0, 10, True], "size": [10, 10], "keys": []}, 400, "send JSON"),
        ({"token": "t", "region": [0, 0, 10, 10], "size": [10, 10], "keys": ["k"] * 25}, 400, "at most 24"),
        ({"token": "t", "region": [0, 0, 10**400, 10], "size": [10, 10], "keys": []}, 400, "finite numbers"),
        ({"token": "t", "region": [0, 0, 10, 10], "size": [float("inf"), 10], "keys": []}, 400, "finite numbers"),
        ({"token": "t", "region": [0, 0, 10, 10], "size": [float("nan"), 10], "keys": []}, 400, "finite numbers"),
        ({"token": "no-such-session", "region": [0, 0, 10, 10], "size": [10, 10], "keys": []}, 404, "expired"),
        ({"region": [0, 0, 1e9, 10], "size": [10, 10], "keys": []}, 400, "within the 451x300 image"),
        ({"region": [0, 0, 10, 10], "size": [100000, 100000], "keys": []}, 400, "at most"),
    ],
)
def test_detail_route_refuses_bad_requests_clearly(client, uploaded, body, status, message):
    body = {"token": uploaded.token, **body}
    # As a browser or a script may send it: Infinity and NaN as JSON text, integers of any length.
    answer = client.post("/sam-demo/detail", content=json.dumps(body), headers={"Content-Type": "application/json"})
    assert answer.status_code == status and message in answer.json()["error"]


def test_photo_route_sends_the_full_resolution_photo_once_made_and_counts_it(ctx, client):
    session = on_image(ctx, str(WIDE)).state
    h, w = session.size_hw
    before = ctx.sessions.stats().bytes
    first = client.get(f"/sam-demo/photo/{session.token}")
    assert first.status_code == 200 and first.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(first.content)).size == (w, h)
    assert ctx.sessions.stats().bytes == before + len(first.content)
    assert client.get(f"/sam-demo/photo/{session.token}").content == first.content  # kept, not made again
    assert client.get("/sam-demo/photo/no-such-session").status_code == 404


def test_the_warm_up_encodes_every_example_after_the_users_own_encodes_and_measures_the_encode(engine):
    import threading

    from sam_demo.demo.example_photos import example_photos, warm_up
    from sam_demo.engine.sam_engine import image_key
    from tests.support.photos import asset

    engine.cache.clear()
    keys = [image_key(asset(path.name)) for path in example_photos()]
    release, started = threading.Event(), threading.Event()

    def users_encode():  # a user's upload, in flight when the warm-up starts
        started.set()
        release.wait(60)
        return engine.embed(asset("chelsea.png"))

    user = threading.Thread(target=lambda: engine.cache.lookup("a user's upload", users_encode))
    user.start()
    started.wait(10)
    warming = warm_up(engine, pause_s=0.01)
    warming.join(timeout=0.5)
    assert warming.is_alive() and not any(key in engine.cache for key in keys), "the warm-up waited"
    release.set()
    user.join(60)
    warming.join(timeout=120)
    assert all(key in engine.cache for key in keys), "every example ready to click"
    assert engine.encode_seconds is not None and engine.encode_seconds > 0


def test_numbers_past_floats_range_get_a_clear_4xx(client, uploaded):
    preview = client.post("/sam-demo/preview", json={"token": uploaded.token, "x": 10**400, "y": 5})
    assert preview.status_code == 400 and "send JSON" in preview.json()["error"]
    for event in ({"type": "point", "x": 5, "y": 5, "label": float("inf")}, {"type": "point", "x": 10**400, "y": 5}):
        body = json.dumps({"token": uploaded.token, "events": [event]})  # 1e400 reads as Infinity
        clicked = client.post("/sam-demo/edit", content=body, headers={"Content-Type": "application/json"})
        assert clicked.status_code == 422 and "malformed" in clicked.json()["error"]


def test_downloads_take_one_at_a_time_per_image_and_a_few_in_all_and_never_the_pages_threads(ctx, monkeypatch):
    """A photo's polygons or cut-outs take seconds to minutes: 45 asked for at once held every thread
    of the pool that serves the page, uploads and examples. Now a second download of one image gets
    429 at once, past DOWNLOADS_AT_ONCE in all 503 with Retry-After, and the rest of the page answers
    meanwhile."""
    import sam_demo.demo.routes as routes

    release = threading.Event()

    def slow(session, options):
        release.wait(60)
        return b"made"

    monkeypatch.setitem(routes.EXPORTS, "cutout.png", ("image/png", slow))
    admitted = []
    admit = routes._Downloads.admit

    def counted(gate, token):
        refused = admit(gate, token)
        admitted.append(token) if refused is None else None
        return refused

    monkeypatch.setattr(routes._Downloads, "admit", counted)
    sessions = [on_image(ctx, str(WIDE)).state for _ in range(routes.DOWNLOADS_AT_ONCE + 1)]
    app = FastAPI()
    add_demo_routes(app, ctx.engine, ctx.sessions)
    with TestClient(app) as client:

        def download(session):
            return client.get(f"/sam-demo/export/{session.token}/cutout.png")

        with ThreadPoolExecutor(routes.DOWNLOADS_AT_ONCE) as pool:
            waiting = [pool.submit(download, s) for s in sessions[:-1]]
            deadline = time.monotonic() + 30
            while len(admitted) < routes.DOWNLOADS_AT_ONCE:
                assert time.monotonic() < deadline, "the downloads never started"
                time.sleep(0.05)
            again = download(sessions[0])
            assert again.status_code == 429 and "a download of this image is being made" in again.json()["error"]
            over = download(sessions[-1])
            assert over.status_code == 503 and over.headers["retry-after"] == "5" and "busy" in over.json()["error"]
            assert client.get("/sam-demo/example/chelsea.png").status_code == 200
            release.set()
            assert all(f.result().content == b"made" for f in waiting)
        assert download(sessions[-1]).content == b"made", "each one's turn comes"


def test_a_downloads_place_is_kept_until_its_part_has_been_made():
    """A client that leaves does not stop the part being made on its thread: its place stays taken
    till then, or leaving and asking again would queue parts without bound."""
    from sam_demo.demo.routes import _Downloads

    gate = _Downloads(1)
    assert gate.admit("a") is None
    work = Future()
    gate.done_after("a", work)  # its client went; the part is still being made
    assert gate.admit("a").status_code == 429 and gate.admit("b").status_code == 503
    work.set_result(b"part")
    assert gate.admit("b") is None
