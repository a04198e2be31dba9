"""Web-demo handlers, called in-process: upload -> click -> box -> undo -> new object -> export."""

from __future__ import annotations

import io
import json
import zipfile

import gradio as gr
import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from sam_demo import EngineConfig, SamPredictor, load_engine
from sam_demo.demo.handlers import (
    DemoContext,
    on_auto_keep,
    on_clear,
    on_everything,
    on_image,
    on_load_saved,
    on_new_object,
    on_prompt,
    on_redo,
    on_undo,
)
from sam_demo.demo.layout import build_demo
from sam_demo.demo.routes import EXPORTS
from sam_demo.endpoint.scoring import score
from sam_demo.endpoint.wire import read_response
from tests.support.photos import PHOTOS

CAT = str(PHOTOS / "chelsea.png")  # 451x300


def events(session, *items) -> str:
    return json.dumps({"token": session.token, "events": list(items)})


def point(x, y, label=1):
    return {"type": "point", "x": x, "y": y, "label": label}


def candidate(index):
    return {"type": "candidate", "index": index}


def box(x0, y0, x1, y1):
    return {"type": "box", "x0": x0, "y0": y0, "x1": x1, "y1": y1}


@pytest.fixture()
def ctx(engine):
    return DemoContext(engine)


@pytest.fixture()
def uploaded(ctx):
    return on_image(ctx, CAT).state


def panels(view) -> dict:
    """The status line, legend and export links that a handler's view puts on the page (HTML)."""
    return json.loads(view.prompter["view"])["panels"]


def stored(ctx, session):
    """The session's full state in the store (handlers give Gradio's state a light one, without results)."""
    return ctx.sessions.get(session.token)


def export(ctx, session, kind: str, folder=None):
    """Build a download as the server does when its link is clicked; with `folder`, write it there."""
    content = EXPORTS[kind][1](stored(ctx, session))
    if folder is None:
        return content
    path = folder / f"saved.{kind}"
    path.write_bytes(content)
    return str(path)


def test_upload_encodes_at_once_and_shows_the_image(ctx):
    view = on_image(ctx, CAT)
    session, prompter = view.state, view.prompter
    status, exports = panels(view)["status"], panels(view)["exports"]
    assert session.size_hw == (300, 451) and session.embedding(ctx.engine).geometry.original_hw == (300, 451)
    assert not session.results, "Gradio's state is light"
    assert "451×300" in status and "encoded" in status
    assert prompter["image_url"].startswith("data:image/jpeg;base64,")
    assert json.loads(prompter["view"])["w"] == 451 and json.loads(prompter["view"])["h"] == 300
    assert 'id="download-json"' in exports and "Nothing to export yet" in exports and "href" not in exports
    again = panels(on_image(ctx, CAT))["status"]
    assert "cached embedding" in again


def test_click_box_undo_new_object_match_predictor(ctx, engine, uploaded):
    predictor = SamPredictor(engine)
    predictor.set_image(np.asarray(Image.open(CAT).convert("RGB")))

    session, prompter, _ = view = on_prompt(ctx, events(uploaded, point(200, 150)), uploaded)
    shown = panels(view)
    assert "IoU" in shown["status"] and shown["candidates"].count('data-candidate="') == 3
    masks, scores, _ = predictor.predict(np.array([[200, 150]]), np.array([1]))
    result = stored(ctx, session).results[0]
    assert np.array_equal(result.masks, masks) and result.chosen == int(np.argmax(scores))
    view = json.loads(prompter["view"])
    assert len(view["order"]) == 1 and view["png"][view["order"][0]].startswith("data:image/png;base64,")

    session = on_prompt(ctx, events(session, point(200, 150), candidate(2)), session).state
    assert stored(ctx, session).results[0].chosen == 2 and np.array_equal(
        stored(ctx, session).results[0].mask, masks[2]
    )

    # Negative click and a box arrive together (as after rapid input): both are applied, one decode.
    value = events(session, point(200, 150), candidate(2), point(320, 90, 0), box(40, 30, 400, 280))
    session, _, _ = view = on_prompt(ctx, value, session)
    legend = panels(view)["legend"]
    assert session.consumed_events == 4 and panels(view)["candidates"] == ""
    masks2, scores2, _ = predictor.predict(
        np.array([[200, 150], [320, 90]]), np.array([1, 0]), box=np.array([40, 30, 400, 280]), multimask_output=False
    )
    assert np.array_equal(stored(ctx, session).results[0].mask, masks2[0]) and "2 points, box" in legend

    session = on_undo(ctx, session)[0]  # removes the box
    assert session.objects[0].box_xyxy is None and len(session.objects[0].points) == 2
    session = on_redo(ctx, session)[0]
    assert session.objects[0].box_xyxy == (40.0, 30.0, 400.0, 280.0)

    session = on_new_object(ctx, session)[0]
    view = on_prompt(ctx, events(session, *[point(1, 1)] * session.consumed_events, point(100, 250)), session)
    session, legend = view.state, panels(view)["legend"]
    assert len(session.objects) == 2 and session.objects[1].points == ((100.0, 250.0, 1),)
    assert "Object 1" in legend and "Object 2 (editing)" in legend
    assert np.array_equal(stored(ctx, session).results[0].mask, masks2[0]), "the finished object keeps its mask"

    session = on_clear(ctx, session)[0]
    assert len(session.objects) == 1 and session.objects[0].is_empty and not stored(ctx, session).results
    assert on_undo(ctx, session)[0].objects[1].points == ((100.0, 250.0, 1),)


def test_stale_and_bad_events_never_break_the_session(ctx, uploaded):
    stale = json.dumps({"token": "another-image", "events": [point(10, 10)]})
    session = on_prompt(ctx, stale, uploaded)[0]
    assert session.objects[0].is_empty
    session = on_prompt(ctx, events(uploaded, box(10, 10, 10.2, 80), point(10, 10)), uploaded)[0]
    assert session.objects[0].box_xyxy is None and len(session.objects[0].points) == 1  # zero box skipped
    assert on_prompt(ctx, events(uploaded, point(5, 5)), None)[0] is None  # click before an image
    with pytest.raises(gr.Error, match="Upload an image first"):
        on_undo(ctx, None)
    # Handlers edit the latest state of the session, even when handed an older copy (overlapping events).
    assert on_undo(ctx, uploaded).state.objects[0].is_empty
    assert on_redo(ctx, uploaded).state.objects[0].points == ((10.0, 10.0, 1),)  # the stale copy has nothing to redo
    fresh = on_image(ctx, CAT).state
    before = stored(ctx, fresh)
    with pytest.raises(gr.Error, match="no prompt yet"):
        on_new_object(ctx, fresh)
    assert fresh.objects[0].is_empty and stored(ctx, fresh) is before, (
        "a failed action leaves the stored state untouched"
    )


def test_bad_uploads_give_readable_errors(ctx, engine, tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("this is not an image")
    with pytest.raises(gr.Error, match="not an image"):
        on_image(ctx, str(text))
    big = tmp_path / "big.png"
    Image.new("RGB", (3000, 2000)).save(big)
    small_limit = load_engine(
        EngineConfig(model=engine.info.model, device="cpu", dtype="float32", max_pixels=1_000_000)
    )
    with pytest.raises(gr.Error, match="megapixels"):
        on_image(DemoContext(small_limit), str(big))


def test_huge_image_is_shown_downscaled_with_full_size_masks(ctx, tmp_path):
    path = tmp_path / "wide.png"
    Image.open(CAT).resize((3000, 2000)).save(path)
    session, prompter, *_ = on_image(ctx, str(path))
    shown = Image.open(io.BytesIO(__import__("base64").b64decode(prompter["image_url"].split(",", 1)[1])))
    assert max(shown.size) == 1280
    session = on_prompt(ctx, events(session, point(1500, 1000)), session)[0]
    assert stored(ctx, session).results[0].masks.shape == (3, 2000, 3000)


def test_exports_replay_and_reload(ctx, engine, uploaded, tmp_path):
    session = on_prompt(ctx, events(uploaded, point(200, 150)), uploaded)[0]
    session = on_prompt(ctx, events(session, point(200, 150), candidate(1)), session).state
    session = on_new_object(ctx, session)[0]
    view = on_prompt(ctx, events(session, point(200, 150), candidate(1), box(20, 20, 200, 200)), session)
    session, panel = view.state, panels(view)["exports"]
    assert "2 objects, 2 prompts" in panel
    assert (
        f'href="sam-demo/export/{session.token}/sam-endpoint.json"' in panel and 'download="chelsea.masks.zip"' in panel
    )

    saved = export(ctx, session, "sam-endpoint.json", tmp_path)
    export_json = json.loads(open(saved).read())
    assert list(export_json) == ["request", "response", "shown"]
    replay = score(export_json["request"], engine)  # what POST /score answers
    assert read_response(replay) and json.dumps(replay) == json.dumps(export_json["response"])
    shown = [
        read_response(export_json["response"])[s["row"]][s["prediction"]][s["mask"]].mask for s in export_json["shown"]
    ]
    assert np.array_equal(shown[0], stored(ctx, session).results[0].masks[1]) and np.array_equal(
        shown[1], stored(ctx, session).results[1].mask
    )

    with zipfile.ZipFile(io.BytesIO(export(ctx, session, "masks.zip"))) as archive:
        assert archive.namelist() == ["object_01.png", "object_02.png"]
        png = Image.open(io.BytesIO(archive.read("object_01.png")))
        assert png.mode == "L" and png.size == (451, 300)
        assert np.array_equal(np.asarray(png) > 127, shown[0])

    coco = json.loads(export(ctx, session, "coco.json"))
    ann = coco["annotations"][0]
    rle = {"size": ann["segmentation"]["size"], "counts": ann["segmentation"]["counts"].encode()}
    assert np.array_equal(mask_utils.decode(rle).astype(bool), shown[0])
    assert ann["area"] == int(shown[0].sum()) and ann["prompts"]["input_points"] == [[[200.0, 150.0]]]
    assert coco["images"][0]["width"] == 451

    fresh = on_image(ctx, CAT)[0]
    view = on_load_saved(ctx, saved, fresh)
    loaded, status, legend = view.state, panels(view)["status"], panels(view)["legend"]
    assert "Loaded 2 masks" in status and len(loaded.imported) == 2
    assert np.array_equal(loaded.imported[0].mask, shown[0]) and "Loaded mask 1" in legend


def test_loading_masks_for_another_image_is_refused(ctx, uploaded, tmp_path):
    session = on_prompt(ctx, events(uploaded, point(200, 150)), uploaded)[0]
    saved = export(ctx, session, "sam-endpoint.json", tmp_path)
    other = on_image(ctx, str(PHOTOS / "coffee.png"))[0]
    with pytest.raises(gr.Error, match="upload the image the masks were made for"):
        on_load_saved(ctx, saved, other)
    with pytest.raises(gr.Error, match="Upload the image these masks were made for first"):
        on_load_saved(ctx, saved, None)
    junk = tmp_path / "junk.json"
    junk.write_text("{not json")
    with pytest.raises(gr.Error, match="not JSON"):
        on_load_saved(ctx, str(junk), other)


def test_build_demo_and_random_weights_banner(engine):
    demo = build_demo(engine)
    config = demo.get_config_file()
    ids = {c.get("props", {}).get("elem_id") for c in config["components"]}
    assert {"image-input", "prompter", "exports", "status", "new-object", "random-weights-warning"} <= ids
    public = sorted(d["api_name"] for d in config["dependencies"] if d.get("api_visibility") == "public")
    assert public == ["segment", "segment_everything"], "UI events stay off the API page"


def test_segment_everything_keep_and_drop(ctx, uploaded, monkeypatch):
    import sam_demo.demo.handlers as ui
    from sam_demo.engine.automatic_mask_generator import EverythingConfig

    # The random test model needs lower thresholds than Meta's defaults to produce masks.
    monkeypatch.setattr(
        ui,
        "EverythingConfig",
        lambda: EverythingConfig(
            points_per_side=6, pred_iou_thresh=0.5, stability_score_thresh=0.3, box_nms_thresh=1.0
        ),
    )
    session, _, auto = view = on_everything(ctx, uploaded)
    status = panels(view)["status"]
    count = len(session.auto_masks)
    assert count >= 3 and auto["visible"] and auto["value"] == list(range(count)) and "Segment everything" in status
    view = on_auto_keep(ctx, [0, 2], session)
    session, panel = view.state, panels(view)["exports"]
    assert session.fixed_masks() == [session.auto_masks[0], session.auto_masks[2]]
    assert "2 objects, 0 prompts" in panel and "Download JSON replays prompts" in panel  # no prompts: no endpoint rows
    assert '<a id="download-json" class="sd-download" aria-disabled="true"' in panel and "masks.zip" in panel
    with pytest.raises(ValueError, match="nothing to export"):
        export(ctx, session, "sam-endpoint.json")
    with zipfile.ZipFile(io.BytesIO(export(ctx, session, "masks.zip"))) as archive:
        assert len(archive.namelist()) == 2
    legend = panels(on_prompt(ctx, events(session, point(200, 150)), session))["legend"]
    assert "Auto mask 1" in legend and "Object 3 (editing)" in legend


def test_load_bare_response_in_model_card_spelling(ctx, uploaded, tmp_path):
    session = on_prompt(ctx, events(uploaded, point(200, 150)), uploaded)[0]
    saved = json.loads(export(ctx, session, "sam-endpoint.json"))
    card = [
        {"predictions": [{"mask_per_prediction": p["masks_per_prediction"]} for p in row["response"]["predictions"]]}
        for row in saved["response"]
    ]
    path = tmp_path / "card.json"
    path.write_text(json.dumps(card))
    loaded = on_load_saved(ctx, str(path), on_image(ctx, CAT)[0])[0]
    best = int(np.argmax(stored(ctx, session).results[0].scores))  # a bare response: the best mask of each prediction
    assert len(loaded.imported) == 1 and np.array_equal(
        loaded.imported[0].mask, stored(ctx, session).results[0].masks[best]
    )
