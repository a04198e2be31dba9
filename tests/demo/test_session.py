"""The object list: select an object to refine it, rename, hide and delete it (undoably), names that
reach every export, and hostile names kept as text."""

from __future__ import annotations

import html
import io
import json
import zipfile

import numpy as np
import pytest
from PIL import Image

from sam_demo import SamPredictor
from sam_demo.demo.handlers import on_image, on_load_saved, on_new_object, on_prompt, on_redo, on_undo
from sam_demo.demo.render import view_json
from sam_demo.demo.session import MAX_NAME_CHARS, MAX_NEW_EVENTS, PALETTE, ObjectPrompts, SavedObject, clean_name
from sam_demo.endpoint.wire import encode_mask_png, read_response
from tests.support.demo import CAT, events, export, panels, point, stored


def obj(kind: str, index: int, **fields) -> dict:
    return {"type": kind, "object": index, **fields}


@pytest.fixture()
def two(ctx, uploaded):
    """Two objects, one click each; the page's events so far, and the session."""
    history = [point(100, 100)]
    session = on_prompt(ctx, events(uploaded, *history), uploaded).state
    session = on_new_object(ctx, session).state
    history.append(point(300, 200))
    return history, on_prompt(ctx, events(session, *history), session).state


def test_selecting_object_1_again_refines_it(ctx, engine, two):
    history, session = two
    history += [obj("select", 0), point(120, 110)]
    session = on_prompt(ctx, events(session, *history), session).state
    assert session.active == 0 and session.objects[0].points == ((100.0, 100.0, 1), (120.0, 110.0, 1))
    assert session.objects[1].points == ((300.0, 200.0, 1),), "object 2 is untouched"
    exported = json.loads(export(ctx, session, "sam-endpoint.json"))
    row = dict(zip(exported["request"]["input_data"]["columns"], exported["request"]["input_data"]["data"][0]))
    assert json.loads(row["input_points"]) == [[[100.0, 100.0], [120.0, 110.0]]]
    predictor = SamPredictor(engine)
    predictor.set_image(np.asarray(Image.open(CAT).convert("RGB")))
    masks, _, _ = predictor.predict(np.array([[100, 100], [120, 110]]), np.array([1, 1]), multimask_output=False)
    assert np.array_equal(read_response(exported["response"])[0][0][0].mask, masks[0])
    view = json.loads(view_json(stored(ctx, session), "status"))
    assert view["active_object"] == 0 and [p[:2] for p in view["points"]] == [[100.0, 100.0], [120.0, 110.0]]


def test_names_reach_the_json_coco_and_file_names(ctx, two):
    history, session = two
    history += [obj("rename", 0, name="cat"), obj("rename", 1, name="  cup\tof  tea ")]
    session = on_prompt(ctx, events(session, *history), session).state
    assert [o.name for o in session.objects] == ["cat", "cup of tea"]
    legend = panels(on_prompt(ctx, events(session, *history), session))["legend"]
    assert 'id="objects"' in legend and legend.count("data-object-index=") == 2 and "<b>cat (" not in legend
    assert [s["name"] for s in json.loads(export(ctx, session, "sam-endpoint.json"))["shown"]] == ["cat", "cup of tea"]
    coco = json.loads(export(ctx, session, "coco.json"))
    assert coco["categories"] == [{"id": 1, "name": "cat"}, {"id": 2, "name": "cup of tea"}]
    assert [a["category_id"] for a in coco["annotations"]] == [1, 2]
    with zipfile.ZipFile(io.BytesIO(export(ctx, session, "masks.zip"))) as archive:
        assert sorted(archive.namelist()) == ["object_01_cat.png", "object_02_cup-of-tea.png"]
    with zipfile.ZipFile(io.BytesIO(export(ctx, session, "cutouts.zip"))) as archive:  # a folder per category
        assert sorted(archive.namelist()) == ["cat/object_01_cat.png", "cup_of_tea/object_02_cup-of-tea.png"]


def test_delete_then_undo_brings_the_object_back_with_its_mask_and_name(ctx, two):
    history, session = two
    history.append(obj("rename", 0, name="cat"))
    session = on_prompt(ctx, events(session, *history), session).state
    mask = stored(ctx, session).results[0].mask.copy()
    history.append(obj("delete", 0))
    session = on_prompt(ctx, events(session, *history), session).state
    assert len(session.objects) == 1 and session.objects[0].points == ((300.0, 200.0, 1),)
    assert session.active == 0, "editing moves to the object that took the deleted one's place"
    assert "2 objects" not in panels(on_prompt(ctx, events(session, *history), session))["exports"]
    session = on_undo(ctx, session).state
    assert [o.name for o in session.objects] == ["cat", ""]
    assert np.array_equal(stored(ctx, session).results[0].mask, mask)


def test_a_hidden_object_is_not_drawn_but_listed_and_exported(ctx, two):
    history, session = two
    history.append(obj("visibility", 0, hidden=True))
    session = on_prompt(ctx, events(session, *history), session).state
    view = json.loads(view_json(stored(ctx, session), "status"))
    assert len(view["order"]) == 1 and len(view["tags"]) == 1
    assert "hidden" in view["panels"]["legend"] and 'data-hide="0" aria-pressed="true"' in view["panels"]["legend"]
    assert len(json.loads(export(ctx, session, "sam-endpoint.json"))["shown"]) == 2


def test_hiding_and_deleting_say_so_and_a_click_on_a_hidden_object_shows_it_again(ctx, two):
    """The edited object deleted, editing moves to the hidden one that takes its place: the status
    line says what happened, and the next click shows that object again rather than refining it
    unseen (found by a fresh-eyes review)."""
    history, session = two
    history.append(obj("visibility", 0, hidden=True))
    view = on_prompt(ctx, events(session, *history), session)
    assert "Object 1 hidden (still exported) · Object 2: IoU" in panels(view)["status"]
    history.append(obj("delete", 1))
    view = on_prompt(ctx, events(view.state, *history), view.state)
    assert "Object 2 deleted (Undo brings it back) · Object 1: IoU" in panels(view)["status"]
    assert stored(ctx, view.state).objects[0].hidden
    history.append(point(120, 80))
    view = on_prompt(ctx, events(view.state, *history), view.state)
    assert "Object 1 shown again · Object 1: IoU" in panels(view)["status"]
    session = stored(ctx, view.state)
    assert not session.objects[0].hidden and len(session.objects[0].points) == 2
    undone = on_undo(ctx, view.state)
    assert "shown again" not in panels(undone)["status"], "what the last events did is told once"
    assert stored(ctx, undone.state).objects[0].hidden


def test_selecting_another_object_drops_an_empty_one(ctx, two):
    history, session = two
    session = on_new_object(ctx, session).state  # object 3, no prompt yet
    history.append(obj("select", 0))
    session = on_prompt(ctx, events(session, *history), session).state
    assert len(session.objects) == 2 and session.active == 0


HOSTILE = {
    "html": ("<img src=x onerror=alert(1)>", "<img src=x onerror=alert(1)>"),
    "controls and bidi marks": ("a\u202eb\x00c\u200fd\nE", "a b c d E"),
    "only spaces": ("   ", ""),
}


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_are_kept_as_text(ctx, two, name):
    given, kept = HOSTILE[name]
    history, session = two
    history.append(obj("rename", 0, name=given))
    view = on_prompt(ctx, events(session, *history), two[1])
    assert view.state.objects[0].name == kept == clean_name(given)
    legend = panels(view)["legend"]
    assert "<img" not in legend and "\x00" not in legend and "\u202e" not in legend
    with zipfile.ZipFile(io.BytesIO(export(ctx, view.state, "masks.zip"))) as archive:
        assert all("/" not in n and "\\" not in n and not n.startswith(".") for n in archive.namelist())


@pytest.mark.parametrize(
    "event, says",
    [
        (obj("rename", 0, name="x" * 10_000), f"at most {MAX_NAME_CHARS} characters"),
        (obj("rename", 0, name=42), "must be text"),
        (obj("select", 7), "there is no object 8; the list has 2"),
        (obj("rename", -1, name="x"), "no object at index -1: objects are numbered from index 0"),
        (obj("delete", 10**400), "there is no object"),
        ({"type": "point", "x": 10**400, "y": 5}, "a malformed prompt event was skipped"),
        ({"type": "point", "x": 5, "y": 5, "label": float("inf")}, "a malformed prompt event was skipped"),
        ({"type": "candidate", "index": float("inf")}, "a malformed prompt event was skipped"),
        (
            {"type": "point", "x": 5, "y": 5, "label": "9" * 5000},
            "a malformed prompt event was skipped",
        ),  # not int()'s words
        ({"type": "candidate", "index": "9" * 5000}, "a malformed prompt event was skipped"),
        (obj("delete", "0"), "an object is given by its index, a whole number, not '0'"),
        (obj("visibility", 0, hidden="yes"), "hidden: true or false"),
    ],
)
def test_bad_object_events_say_what_was_wrong(ctx, two, event, says):
    history, session = two
    view = on_prompt(ctx, events(session, *history, event), session)
    status = html.unescape(panels(view)["status"])
    assert 'role="alert"' in status and says.lower() in status.lower()
    assert [o.name for o in view.state.objects] == ["", ""] and len(view.state.objects) == 2


def test_a_named_objects_tag_shows_its_name(ctx, two):
    history, session = two
    history.append(obj("rename", 1, name="cup"))
    session = on_prompt(ctx, events(session, *history), session).state
    tags = json.loads(view_json(stored(ctx, session), "status"))["tags"]
    assert [t[2].split(" IoU")[0] for t in tags] == ["#1", "cup"]


def test_a_file_that_is_not_a_saved_json_says_what_to_load(ctx, uploaded, tmp_path):
    from sam_demo.demo.handlers import on_load_saved

    for name, content in (("hello.json", b'{"hello": 1}'), ("photo.png", (tmp_path / "x").name.encode() + b"\x89PNG")):
        path = tmp_path / name
        path.write_bytes(content)
        status = html.unescape(panels(on_load_saved(ctx, str(path), uploaded))["status"])
        assert f"{name} was not loaded" in status and 'role="alert"' in status
        assert "Download JSON" in status or "not JSON" in status


def test_new_object_in_the_event_stream_keeps_a_tap_right_after_it_on_the_new_object(ctx, uploaded):
    """The page sends New object as an event among the clicks, so their order is the user's."""
    history = [point(100, 100), {"type": "new"}, point(300, 200)]
    session = on_prompt(ctx, events(uploaded, *history), uploaded).state
    assert [o.points for o in session.objects] == [((100.0, 100.0, 1),), ((300.0, 200.0, 1),)]
    assert session.active == 1
    view = on_prompt(ctx, events(session, *history, {"type": "new"}, {"type": "new"}), session)
    assert "no prompt yet" in panels(view)["status"] and len(view.state.objects) == 3


@pytest.fixture()
def loaded(ctx, two, tmp_path):
    """The two objects saved by Download JSON with names, and a fresh session on the same image that
    loaded that file with object 2's saved mask changed (as if made by another model): object 1
    comes back to refine, object 2 as a fixed mask; the page's events so far, the session, the file."""
    history, session = two
    history += [obj("rename", 0, name="cat"), obj("rename", 1, name="cup")]
    session = on_prompt(ctx, events(session, *history), session).state
    saved = json.loads(export(ctx, session, "sam-endpoint.json"))
    entry = saved["shown"][1]
    other = np.zeros((300, 451), bool)
    other[50:120, 60:200] = True
    saved["response"][entry["row"]]["response"]["predictions"][0]["masks_per_prediction"][entry["mask"]][
        "encoded_binary_mask"
    ] = encode_mask_png(other)
    path = tmp_path / "saved.json"
    path.write_text(json.dumps(saved))
    fresh = on_image(ctx, CAT).state
    view = on_load_saved(ctx, str(path), fresh)
    assert "1 object to refine; 1 fixed mask" in panels(view)["status"]
    return [], view.state, path, other


def test_a_loaded_mask_is_an_object_to_name_hide_delete_and_export(ctx, loaded):
    history, session, _, other = loaded
    kept = stored(ctx, session)
    assert [o.name for o in kept.objects] == ["cat", "cup", ""] and kept.active == 2
    assert kept.objects[0].has_prompts and kept.objects[1].fixed is not None
    assert np.array_equal(kept.objects[1].fixed.mask, other), "shown as saved, not remade"
    legend = panels(on_prompt(ctx, events(session, *history), session))["legend"]
    assert legend.count("data-object-index=") == 3 and "loaded, no prompts" in legend
    history += [obj("rename", 1, name="bowl"), obj("visibility", 1, hidden=True)]
    session = on_prompt(ctx, events(session, *history), session).state
    coco = json.loads(export(ctx, session, "coco.json"))
    assert [c["name"] for c in coco["categories"]] == ["cat", "bowl"] and len(coco["annotations"]) == 2
    with zipfile.ZipFile(io.BytesIO(export(ctx, session, "masks.zip"))) as archive:
        assert archive.namelist() == ["object_01_cat.png", "object_02_bowl.png"]
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(archive.read("object_02_bowl.png")))) > 127, other)
    history.append(obj("delete", 1))
    session = on_prompt(ctx, events(session, *history), session).state
    assert [o.name for o in session.objects] == ["cat", ""]
    session = on_undo(ctx, session).state
    assert session.objects[1].name == "bowl" and np.array_equal(stored(ctx, session).objects[1].fixed.mask, other)


def test_a_click_with_a_loaded_mask_selected_starts_a_new_object(ctx, loaded):
    history, session, _, other = loaded
    history += [obj("select", 1), point(200, 150)]
    view = on_prompt(ctx, events(session, *history), session)
    session = view.state
    assert session.objects[1].fixed is not None and session.objects[1].name == "cup", "the loaded mask stays as it was"
    assert session.objects[-1].points == ((200.0, 150.0, 1),) and session.active == len(session.objects) - 1
    session = on_undo(ctx, session).state
    assert session.objects[-1].fixed is not None, "one undo takes the click back"


def test_loading_masks_counts_each_once_in_the_session_budget(ctx, loaded):
    _, session, path, _ = loaded
    kept = stored(ctx, session)
    fixed = kept.objects[1].fixed
    history = [obj("rename", 1, name=f"cup {k}") for k in range(5)]  # five undo steps that all hold it
    kept = stored(ctx, on_prompt(ctx, events(session, *history), session).state)
    assert sum(o.fixed is fixed for s in kept.undo_stack for o in s.objects) >= 5
    logits = sum(r.nbytes for r in kept.results.values())
    assert kept.nbytes == len(kept.image_bytes) + logits + fixed.nbytes


def test_an_edit_that_changes_nothing_is_no_undo_step_and_keeps_redo(ctx, uploaded):
    history = [point(100, 100)]
    session = on_prompt(ctx, events(uploaded, *history), uploaded).state
    session = on_undo(ctx, session).state  # the click undone: redo can bring it back
    history += [obj("rename", 0, name=""), obj("delete", 0)]  # unnamed already; the only object is empty
    session = on_prompt(ctx, events(session, *history), session).state
    assert not stored(ctx, session).undo_stack, "no undo step for what changed nothing"
    assert on_redo(ctx, session).state.objects[0].points == ((100.0, 100.0, 1),), "redo still brings the click back"


def test_too_many_new_events_at_once_are_refused_and_none_applied(ctx, uploaded):
    flood = [point(10 + k % 400, 10 + k % 280) for k in range(MAX_NEW_EVENTS + 1)]
    view = on_prompt(ctx, events(uploaded, *flood), uploaded)
    assert f"more than the {MAX_NEW_EVENTS} one edit takes" in panels(view)["status"]
    assert view.state.objects[0].is_empty and view.state.consumed_events == 0


def test_categories_colour_objects_reach_exports_and_go_on_to_the_next_image(ctx, two):
    history, session = two
    history += [
        {"type": "categories", "names": ["cat", " cup ", "", "cat", "<b>dog</b>"]},
        obj("category", 0, category="cup"),
        obj("category", 1, category="cup"),
    ]
    view = on_prompt(ctx, events(session, *history), session)
    session = view.state
    assert session.categories == ("cat", "cup", "<b>dog</b>"), "cleaned, blank and repeated names dropped"
    layers = stored(ctx, session).layers()
    assert layers[0].rgb == layers[1].rgb == PALETTE[1], "coloured by their category"
    legend = panels(view)["legend"]
    assert "<b>dog</b>" not in legend and html.escape("<b>dog</b>") in legend, "names are text"
    assert legend.count('class="sd-category"') == 2 and '<option value="cup" selected>' in legend
    assert json.loads(view.prompter["view"])["categories"] == ["cat", "cup", "<b>dog</b>"]
    coco = json.loads(export(ctx, session, "coco.json"))
    assert [c["name"] for c in coco["categories"]] == ["cat", "cup", "<b>dog</b>"]
    assert [a["category_id"] for a in coco["annotations"]] == [2, 2]

    refused = on_prompt(ctx, events(session, *history, obj("category", 0, category="bird")), session)
    assert "The category 'bird' is not in the list" in html.unescape(panels(refused)["status"])
    # Undo takes the list back a step at a time; a new image keeps it.
    undone = on_undo(ctx, on_undo(ctx, on_undo(ctx, refused.state).state).state).state
    assert undone.categories == () and all(o.category == "" for o in undone.objects)
    redone = on_redo(ctx, undone).state
    assert on_image(ctx, CAT, redone).state.categories == ("cat", "cup", "<b>dog</b>")


def test_an_object_keeps_a_category_taken_off_the_list(ctx, two):
    history, session = two
    history += [{"type": "categories", "names": ["cat"]}, obj("category", 0, category="cat")]
    history.append({"type": "categories", "names": ["dog"]})
    view = on_prompt(ctx, events(session, *history), session)
    assert view.state.objects[0].category == "cat" and "cat (not in the list)" in panels(view)["legend"]
    assert [c["name"] for c in json.loads(export(ctx, view.state, "coco.json"))["categories"]] == [
        "dog",
        "cat",
        "object",
    ]


def test_a_saved_files_categories_past_the_lists_bound_add_nothing(ctx, uploaded):
    from sam_demo.demo.session import MAX_CATEGORIES

    session = stored(ctx, uploaded).fork()
    saved = [SavedObject(None, "", ObjectPrompts(box_xyxy=(10.0, 10.0, 90.0, 90.0)), category="cat")]
    names = tuple(f"class {k}" for k in range(MAX_CATEGORIES))
    with pytest.raises(ValueError, match="category list would hold 1,001 names; it takes at most 1,000"):
        session.add_saved(ctx.engine, saved, names)
    assert session.objects == stored(ctx, uploaded).objects and session.categories == ()
