"""Web-demo handlers, called in-process: upload -> click -> box -> undo -> new object -> export."""

from __future__ import annotations

import io
import json
import time
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
    on_clear_object,
    on_everything,
    on_everything_asked,
    on_everything_cancel,
    on_everything_ended,
    on_image,
    on_load_saved,
    on_new_object,
    on_prompt,
    on_redo,
    on_start_over,
    on_undo,
)
from sam_demo.demo.layout import build_demo
from sam_demo.endpoint.scoring import score
from sam_demo.endpoint.wire import read_response
from tests.support.demo import CAT, box, candidate, events, export, panels, point, stored
from tests.support.photos import PHOTOS


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

    session = on_clear_object(ctx, session)[0]  # the edited object's prompts only
    assert len(session.objects) == 2 and session.objects[1].is_empty and 1 not in stored(ctx, session).results
    assert np.array_equal(stored(ctx, session).results[0].mask, masks2[0]), "the other object stays"
    session = on_undo(ctx, session)[0]
    assert session.objects[1].points == ((100.0, 250.0, 1),)
    view = on_start_over(ctx, session)  # everything, in one undoable step
    session = view.state
    assert len(session.objects) == 1 and session.objects[0].is_empty and not stored(ctx, session).results
    assert "Undo" in panels(view)["status"]
    session = on_undo(ctx, session)[0]
    assert [o.points for o in session.objects] == [((200.0, 150.0, 1), (320.0, 90.0, 0)), ((100.0, 250.0, 1),)]
    assert np.array_equal(stored(ctx, session).results[0].mask, masks2[0])


def test_stale_and_bad_events_never_break_the_session(ctx, uploaded):
    stale = json.dumps({"token": "another-image", "events": [point(10, 10)]})
    session = on_prompt(ctx, stale, uploaded)[0]
    assert session.objects[0].is_empty
    session = on_prompt(ctx, events(uploaded, box(10, 10, 10.2, 80), point(10, 10)), uploaded)[0]
    assert session.objects[0].box_xyxy is None and len(session.objects[0].points) == 1  # zero box skipped
    assert on_prompt(ctx, events(uploaded, point(5, 5)), None)[0] is None  # click before an image
    refused = panels(on_undo(ctx, None))["status"]
    assert 'role="alert"' in refused and "Upload an image first" in refused
    # Handlers edit the latest state of the session, even when handed an older copy (overlapping events).
    assert on_undo(ctx, uploaded).state.objects[0].is_empty
    assert on_redo(ctx, uploaded).state.objects[0].points == ((10.0, 10.0, 1),)  # the stale copy has nothing to redo
    fresh = on_image(ctx, CAT).state
    before = stored(ctx, fresh)
    refused = panels(on_new_object(ctx, fresh))["status"]
    assert 'role="alert"' in refused and "no prompt yet" in refused
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
        EngineConfig(model=engine.info.model, device="cpu", dtype="float32", exact=True, max_pixels=1_000_000)
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
    assert list(export_json) == ["request", "response", "shown", "categories"]
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

    # Loaded again on the same image with the same engine, the objects come back to refine: prompts,
    # chosen candidate and masks. A second load adds nothing (the masks are shown already).
    fresh = on_image(ctx, CAT)[0]
    view = on_load_saved(ctx, saved, fresh)
    loaded, status = view.state, panels(view)["status"]
    assert "2 objects to refine" in status
    assert [o.points for o in loaded.objects] == [o.points for o in session.objects] + [()]
    assert [o.box_xyxy for o in loaded.objects] == [None, (20.0, 20.0, 200.0, 200.0), None]
    assert loaded.objects[0].candidate == 1 and loaded.active == 2 and loaded.objects[2].is_empty
    assert np.array_equal(stored(ctx, loaded).results[0].mask, shown[0])
    assert np.array_equal(stored(ctx, loaded).results[1].mask, shown[1])
    again = on_load_saved(ctx, saved, loaded)
    assert "2 masks already shown, skipped" in panels(again)["status"] and len(again.state.objects) == 3
    assert on_undo(ctx, again.state).state.objects[0].is_empty, "one undo takes the whole load back"


def test_loading_masks_for_another_image_is_refused(ctx, uploaded, tmp_path):
    session = on_prompt(ctx, events(uploaded, point(200, 150)), uploaded)[0]
    saved = export(ctx, session, "sam-endpoint.json", tmp_path)
    other = on_image(ctx, str(PHOTOS / "coffee.png"))[0]
    view = on_load_saved(ctx, saved, other)
    assert "saved.sam-endpoint.json was not loaded" in panels(view)["status"]
    assert "upload the image the masks were made for" in panels(view)["status"] and view.state.objects[0].is_empty
    assert "Upload the image these masks were made for first" in panels(on_load_saved(ctx, saved, None))["status"]
    junk = tmp_path / "junk.json"
    junk.write_text("{not json")
    refused = panels(on_load_saved(ctx, str(junk), other))["status"]
    assert 'role="alert"' in refused and "not JSON" in refused


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
    assert [layer.source for layer in session.shown()] == [session.auto_masks[0], session.auto_masks[2]]
    assert "2 objects, 0 prompts" in panel and "Download JSON replays prompts" in panel  # no prompts: no endpoint rows
    assert '<a id="download-json" class="sd-download" aria-disabled="true"' in panel and "masks.zip" in panel
    with pytest.raises(ValueError, match="Download JSON replays prompts.*download the masks, COCO JSON or cut-outs"):
        export(ctx, session, "sam-endpoint.json")
    with zipfile.ZipFile(io.BytesIO(export(ctx, session, "masks.zip"))) as archive:
        assert len(archive.namelist()) == 2
    view = on_prompt(ctx, events(session, point(200, 150)), session)
    assert "Auto mask 1" in panels(view)["legend"] and "Object 3 (editing)" in panels(view)["legend"]
    # A new run replaces the masks; undo brings the last run's back, with what was kept of it.
    rerun = on_everything(ctx, view.state).state
    assert rerun.auto_keep == tuple(range(len(rerun.auto_masks))) and rerun.auto_masks[0] is not session.auto_masks[0]
    back = on_undo(ctx, rerun).state
    assert back.auto_masks == session.auto_masks and back.auto_keep == (0, 2)
    view = on_redo(ctx, back)
    # Start over unticks them too, undoably; so is the list's own untick, and the run itself.
    session = on_start_over(ctx, view.state).state
    assert session.auto_keep == () and not session.shown()
    session = on_undo(ctx, on_undo(ctx, session).state).state
    assert session.auto_keep == (0, 2) and len(stored(ctx, session).shown()) == 3
    session = on_undo(ctx, on_undo(ctx, session).state).state
    assert session.auto_keep == tuple(range(count))
    view = on_undo(ctx, session)
    assert view.state.auto_masks == [] and view.auto_keep["visible"] is False, "the list goes with the run"


def test_cancel_stops_segment_everything_keeping_the_masks_found_so_far(ctx, uploaded, monkeypatch):
    import sam_demo.demo.handlers as ui
    from sam_demo.engine.automatic_mask_generator import EverythingConfig

    config = EverythingConfig(points_per_side=8, points_per_batch=4, pred_iou_thresh=0, stability_score_thresh=0)
    monkeypatch.setattr(ui, "EverythingConfig", lambda: config)
    shown, button = on_everything_asked(ctx, uploaded)
    assert shown["visible"] is True and button["interactive"] is False, "Cancel shows; the button is inert"
    with pytest.raises(gr.Error, match="running on this image"):
        on_everything_asked(ctx, uploaded)
    calls = []
    real = ui.generate

    def generate(engine, rgb, config, progress, stop):
        def counted(done, total):
            calls.append(done)
            if len(calls) == 3:  # the user presses Cancel during the third decoder call
                assert on_everything_cancel(ctx, uploaded)["value"] == "Stopping…"
            progress(done, total)

        return real(engine, rgb, config, counted, stop)

    monkeypatch.setattr(ui, "generate", generate)
    view = on_everything(ctx, uploaded)
    status = panels(view)["status"]
    assert calls == [4, 8, 12] and "cancelled after 12 of 64 points" in status
    assert 0 < len(view.state.auto_masks) and "Undo takes them all away" in status
    hidden, button = on_everything_ended(ctx, uploaded)
    assert hidden["visible"] is False and button["interactive"] is True
    assert on_everything_cancel(ctx, uploaded)["visible"] is False, "nothing runs now: Cancel goes"
    assert on_everything_asked(ctx, uploaded)[0]["visible"] is True, "and a new run may be asked for"


def test_load_bare_response_in_model_card_spelling(ctx, uploaded, tmp_path):
    session = on_prompt(ctx, events(uploaded, point(200, 150)), uploaded)[0]
    saved = json.loads(export(ctx, session, "sam-endpoint.json"))
    card = [
        {"predictions": [{"mask_per_prediction": p["masks_per_prediction"]} for p in row["response"]["predictions"]]}
        for row in saved["response"]
    ]
    path = tmp_path / "card.json"
    path.write_text(json.dumps(card))
    view = on_load_saved(ctx, str(path), on_image(ctx, CAT)[0])
    loaded = view.state
    best = int(np.argmax(stored(ctx, session).results[0].scores))  # a bare response: the best mask of each prediction
    assert "1 fixed mask" in panels(view)["status"] and len(loaded.objects) == 2
    assert np.array_equal(loaded.objects[0].fixed.mask, stored(ctx, session).results[0].masks[best])
    assert "Loaded mask 1" in panels(view)["legend"] and loaded.active == 1


EDITS_BEFORE_AN_IMAGE = {
    "undo": lambda ctx: on_undo(ctx, None),
    "redo": lambda ctx: on_redo(ctx, None),
    "clear object": lambda ctx: on_clear_object(ctx, None),
    "start over": lambda ctx: on_start_over(ctx, None),
    "new object": lambda ctx: on_new_object(ctx, None),
    "keep automatic masks": lambda ctx: on_auto_keep(ctx, [0], None),
    "a click": lambda ctx: on_prompt(ctx, json.dumps({"token": "", "events": [point(5, 5)]}), None),
    "malformed prompt data": lambda ctx: on_prompt(ctx, "[1, 2", None),
}


@pytest.mark.parametrize("action", EDITS_BEFORE_AN_IMAGE)
def test_every_edit_before_an_image_says_what_to_do_on_the_status_line(ctx, action):
    """Edits skip Gradio's queue, where an error is a silent HTTP 500 on the page: they answer."""
    view = EDITS_BEFORE_AN_IMAGE[action](ctx)
    status = panels(view)["status"]
    assert view.state is None and 'role="alert"' in status
    assert "Upload an image first" in status or "malformed" in status
    controls = json.loads(view.prompter["view"])["controls"]
    assert set(controls) == {
        "undo",
        "redo",
        "clear-object",
        "start-over",
        "new-object",
        "segment-everything",
        "load-json",
    }
    assert all("Upload an image first" in why for why in controls.values())


def test_the_views_say_which_buttons_can_run_and_why_not(ctx, uploaded):
    controls = lambda view: json.loads(view.prompter["view"])["controls"]  # noqa: E731
    fresh = on_prompt(ctx, events(uploaded), uploaded)
    assert controls(fresh) == {
        "undo": "Nothing to undo yet.",
        "redo": "Nothing to redo.",
        "clear-object": "Object 1 has no prompt to clear.",
        "start-over": "Nothing to start over from: no object yet.",
        "new-object": "Click on the image first: the current object has no prompt yet.",
        "segment-everything": "",
        "load-json": "",
    }
    clicked = on_prompt(ctx, events(uploaded, point(200, 150)), uploaded)
    assert {controls(clicked)[k] for k in ("undo", "clear-object", "start-over", "new-object")} == {""}
    undone = on_undo(ctx, clicked.state)
    assert controls(undone)["redo"] == "" and controls(undone)["undo"] == "Nothing to undo yet."
    nothing = panels(on_undo(ctx, undone.state))["status"]
    assert 'role="alert"' in nothing and "Nothing to undo" in nothing


def test_skipped_events_are_told_on_the_status_line_and_the_rest_applied(ctx, uploaded):
    view = on_prompt(ctx, events(uploaded, point(200, 150), point(9999, 5), box(10, 10, 10.2, 80)), uploaded)
    status = panels(view)["status"]
    assert 'role="alert"' in status and "outside the 451x300 image" in status and "zero size" in status
    assert view.state.objects[0].points == ((200.0, 150.0, 1),)


def test_an_encode_shows_the_time_left_from_the_last_encodes_time(ctx, monkeypatch):
    import sam_demo.demo.handlers as ui

    told = []
    monkeypatch.setattr(ctx.engine, "_encode_seconds", 0.4)
    view = ui.on_image(ctx, str(PHOTOS / "coffee.png"), progress=lambda fraction, desc: told.append((fraction, desc)))
    assert "encoded" in panels(view)["status"]
    assert any(d.startswith("Encoding the image (~0 s here)") for _, d in told), told
    told.clear()
    with ui._encode_progress(lambda fraction, desc: told.append((fraction, desc)), 0.4, every=0.02):
        time.sleep(0.3)
    assert len(told) >= 2 and [f for f, _ in told] == sorted(f for f, _ in told), "told again and again, forward"
    assert told[0][1] == "Encoding the image (~0 s here): nearly done"


def test_the_details_tell_the_encode_time_and_smaller_checkpoints_where_it_is_slow(ctx, monkeypatch):
    import sam_demo.demo.handlers as ui

    monkeypatch.setattr(ctx.engine, "_encode_seconds", None)
    assert "not measured yet" in ui.encode_note(ctx.engine)
    monkeypatch.setattr(ctx.engine, "_encode_seconds", 2.0)
    assert "about **2.0 s**" in ui.encode_note(ctx.engine) and "--model" not in ui.encode_note(ctx.engine)
    monkeypatch.setattr(ctx.engine, "_encode_seconds", 30.0)  # as ViT-L on a CPU without bf16
    monkeypatch.setattr(ui, "encoder_tflop", lambda config: 2.986)
    note = ui.encode_note(ctx.engine)
    assert "`--model facebook/sam-vit-base` (94M parameters, 358 MiB, about 9.8 s here)" in note
    assert "nielsr/slimsam-77-uniform" in note and "facebook/sam-vit-huge" not in note


def test_a_new_image_stops_segment_everything_on_the_one_it_replaces(ctx, uploaded, monkeypatch):
    import sam_demo.demo.handlers as ui

    seen = {}
    real = ui.generate

    def generate(engine, rgb, config, progress, stop):
        ui.on_image(ctx, str(PHOTOS / "coffee.png"), uploaded)  # the user opens another photo meanwhile
        seen["stopped"] = stop()
        return real(engine, rgb, config, progress, stop)

    monkeypatch.setattr(ui, "generate", generate)
    on_everything_asked(ctx, uploaded)
    view = on_everything(ctx, uploaded)
    assert seen["stopped"], "the job was told to stop"
    assert all(output == gr.skip() for output in view), "nothing of the old image reaches the page"
