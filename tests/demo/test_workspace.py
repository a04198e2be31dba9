"""A set of images in one page (in-process): added many at once or as a zip, moved through with D / A
keeping each image's objects, encoded ahead in the background, exported whole (read back by
pycocotools and a YOLO reader), and bad files, zips and limits refused by name."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from unittest.mock import patch

import gradio as gr
import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from sam_demo.demo.handlers import DemoContext, on_everything, on_prompt
from sam_demo.demo.workspace import WorkspaceLimits, read_uploads, read_yolo_uploads, too_many_members, zip_members
from sam_demo.demo.workspace_handlers import on_add_images, on_pick, on_step, on_upload
from tests.support.demo import CAT, events, point, stored
from tests.support.photos import asset
from tests.support.workspace import labelled_set, set_client, status, strip, two_labelled, wait_for_background


def test_images_added_at_once_open_the_first_and_name_what_is_not_an_image(wctx, photos):
    result = on_add_images(wctx, photos + [photos[0].replace("1-rocket", "notes")], None)
    session = result[0]
    assert session.workspace is not None and session.name == "1-rocket.png"
    assert "Added 3 images (not added: notes.png: not an image" in status(result)
    assert "Image 1 of 3: 1-rocket.png" in status(result)
    labels = [label for label, _ in strip(result)["choices"]]
    assert labels[0] == "1/3 · 1-rocket.png · 0 objects" and labels[1].startswith("2/3 · 2-coffee.png")
    assert strip(result)["value"] == 0 and result[6]["visible"] is True


def test_moving_with_d_and_a_keeps_each_images_objects_and_categories(wctx, photos):
    first = labelled_set(wctx, photos)
    mask = stored(wctx, first).results[0].mask.copy()
    second = on_step(wctx, 1, first)
    assert second[0].token != first.token and second[0].name == "2-coffee.png"
    assert second[0].categories == ("rocket", "cup"), "the category list goes on"
    assert "Image 2 of 3" in status(second) and second[1]["image_url"].startswith("data:image")
    assert [label for label, _ in strip(second)["choices"]][0] == "1/3 · 1-rocket.png · 1 object"
    back = on_step(wctx, -1, second[0])
    assert back[0].token == first.token and "1 object" in status(back)
    shown = json.loads(back[1]["view"])
    assert shown["order"] and set(shown["order"]) <= set(shown["png"]), "every layer sent again: the page starts afresh"
    restored = stored(wctx, back[0])
    assert restored.objects[0].category == "rocket" and np.array_equal(restored.results[0].mask, mask)
    assert "This is the first image of the 3." in status(on_step(wctx, -1, back[0]))
    last = on_pick(wctx, 2, back[0])
    assert last[0].name == "3-astronaut.png" and "This is the last image of the 3." in status(on_step(wctx, 1, last[0]))


def test_the_background_encodes_the_next_images_so_moving_costs_no_encode(wctx, photos):
    session = on_add_images(wctx, photos, None)[0]
    wait_for_background(wctx)
    misses = wctx.engine.cache_stats().misses
    for step in (1, 1):
        result = on_step(wctx, step, session)
        session = result[0]
        assert "(cached embedding" in status(result)
    assert wctx.engine.cache_stats().misses == misses, "no encode when moving"
    assert "3 of 3 images encoded" in result[4]["value"]


def test_a_single_upload_replaces_the_image_until_there_is_a_set_then_joins_it(wctx, photos):
    single = on_upload(wctx, CAT, None)
    assert single[0].workspace is None and single[6]["visible"] is False
    replaced = on_upload(wctx, photos[0], single[0])
    assert replaced[0].workspace is None and stored(wctx, single[0]) is None, "as before: replaced"
    made = on_add_images(wctx, photos[1:], replaced[0])
    assert [label.split(" · ")[1] for label, _ in strip(made)["choices"]] == [
        "1-rocket.png",
        "2-coffee.png",
        "3-astronaut.png",
    ]
    joined = on_upload(wctx, CAT, made[0])
    assert joined[0].name == "chelsea.png" and len(strip(joined)["choices"]) == 4 and strip(joined)["value"] == 3


def test_an_upload_in_place_of_an_image_with_objects_keeps_them_in_a_set(wctx, photos):
    """Change image (or a drop or paste) on an image with objects used to throw them away, with no
    undo: the two images become a set, the new one opened, the old one's objects kept."""
    single = on_upload(wctx, CAT, None)
    clicked = on_prompt(wctx, events(single[0], point(200, 150)), single[0])
    mask = stored(wctx, clicked.state).results[0].mask.copy()
    replaced = on_upload(wctx, photos[0], clicked.state)
    assert replaced[0].name == "1-rocket.png" and replaced[0].workspace is not None
    assert "chelsea.png and its 1 object kept in a set with it (◀ goes back)" in status(replaced)
    assert [label for label, _ in strip(replaced)["choices"]] == [
        "1/2 · chelsea.png · 1 object",
        "2/2 · 1-rocket.png · 0 objects",
    ]
    back = on_step(wctx, -1, replaced[0])
    assert back[0].name == "chelsea.png" and np.array_equal(stored(wctx, back[0]).results[0].mask, mask)


def test_moving_to_another_image_stops_segment_everything_on_the_one_left(wctx, photos):
    """Its progress went on over the next image, and its result, when it came, showed the image
    left again: now the job is stopped, and a result that comes after the move is dropped, said so."""
    first = on_add_images(wctx, photos, None)[0]
    assert wctx.jobs.ask(first.token)
    second = on_step(wctx, 1, first)[0]
    assert wctx.jobs.flag(first.token).is_set(), "the job on the image left was told to stop"
    wctx.jobs.done(first.token)
    with patch.object(gr, "Info") as told:
        late = on_everything(wctx, first)
    assert all(isinstance(part, dict) and part.get("__type__") == "update" and len(part) == 1 for part in late[:3])
    told.assert_called_once_with(
        "Segment everything on 1-rocket.png stopped: another image was opened. Run it there again."
    )
    assert second.name == "2-coffee.png" and not stored(wctx, first).auto_masks


def test_the_whole_sets_coco_and_yolo_exports_hold_every_image(wctx, photos, tmp_path):
    one, two = two_labelled(wctx, photos)
    client = set_client(wctx)
    answer = client.get(f"/sam-demo/export-set/{two.token}/coco.json")
    assert answer.status_code == 200 and 'filename="images.coco.json"' in answer.headers["content-disposition"]
    (tmp_path / "set.json").write_bytes(answer.content)
    coco = COCO(str(tmp_path / "set.json"))
    assert [i["file_name"] for i in coco.loadImgs(coco.getImgIds())] == [
        "1-rocket.png",
        "2-coffee.png",
        "3-astronaut.png",
    ]
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == ["rocket", "cup"]
    anns = coco.loadAnns(coco.getAnnIds())
    assert [(a["image_id"], a["category_id"], a["id"]) for a in anns] == [(1, 1, 1), (2, 2, 2)]
    for ann, state in zip(anns, (one, two)):
        assert np.array_equal(coco.annToMask(ann).astype(bool), stored(wctx, state).results[0].mask)
    yolo = zipfile.ZipFile(io.BytesIO(client.get(f"/sam-demo/export-set/{two.token}/yolo-seg.zip").content))
    names = sorted(yolo.namelist())
    assert names == [
        "data.yaml",
        "images/1-rocket.png",
        "images/2-coffee.png",
        "images/3-astronaut.png",
        "labels/1-rocket.txt",
        "labels/2-coffee.txt",
        "labels/3-astronaut.txt",
    ]
    assert yolo.read("labels/1-rocket.txt").decode().startswith("0 ") and yolo.read(
        "labels/2-coffee.txt"
    ).decode().startswith("1 ")
    assert yolo.read("labels/3-astronaut.txt") == b""
    assert client.get(f"/sam-demo/export-set/{two.token}/nope").status_code == 404
    assert client.get("/sam-demo/export-set/no-such/coco.json").status_code == 404


def test_a_set_not_labelled_yet_exports_its_images_with_no_annotation(wctx, photos, tmp_path):
    session = on_add_images(wctx, photos, None)[0]
    answer = set_client(wctx).get(f"/sam-demo/export-set/{session.token}/coco.json")
    assert answer.status_code == 200
    (tmp_path / "empty.json").write_bytes(answer.content)
    coco = COCO(str(tmp_path / "empty.json"))
    assert len(coco.getImgIds()) == 3 and coco.getAnnIds() == []


def test_names_are_made_unique_on_upload_so_coco_and_yolo_agree(wctx, photos):
    twice = on_add_images(wctx, [photos[0], photos[0], photos[1]], None)
    assert [label.split(" · ")[1] for label, _ in strip(twice)["choices"]] == [
        "1-rocket.png",
        "1-rocket_2.png",
        "2-coffee.png",
    ]


def test_yolo_file_names_keep_their_suffix_and_never_share_a_labels_file():
    from sam_demo.demo.exports import ExportOptions
    from sam_demo.demo.set_exports import SetImage, set_export_chunks

    names = ["a.png", "A.jpg", "L" * 200 + ".png", "<x>.png"]
    files = [SetImage(name, (1, 1), str(k).encode(), None) for k, name in enumerate(names)]
    chunks = set_export_chunks("yolo-seg.zip", files, lambda s: s, ExportOptions())
    with zipfile.ZipFile(io.BytesIO(b"".join(chunks))) as archive:
        names = sorted(archive.namelist())
    assert names == sorted(
        ["data.yaml", "images/a.png", "labels/a.txt", "images/A_2.jpg", "labels/A_2.txt"]
        + ["images/" + "L" * 100 + ".png", "labels/" + "L" * 100 + ".txt", "images/x_.png", "labels/x_.txt"]
    )


def zip_of(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def png(i: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.roll(asset("coffee.png")[:64, :64], i, axis=1)).save(buffer, "PNG")
    return buffer.getvalue()


def test_a_zips_members_are_counted_from_its_end_record_before_zipfile_reads_them(tmp_path):
    """zipfile makes an object per member first (2 M empty members: 1.1 GB): the end record's count,
    ZIP64's too, and the directory's size (whatever the count says) are read first."""
    members = {f"{i}.txt": b"" for i in range(30)}
    assert zip_members(io.BytesIO(zip_of(members))) == (30, 30 * 50 + sum(len(f"{i}") for i in range(30)))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("a.txt", b"x")
        with archive.open("b.txt", "w", force_zip64=True) as member:
            member.write(b"y")
    assert zip_members(io.BytesIO(buffer.getvalue()))[0] == 2
    spoofed = bytearray(zip_of(members))
    end = spoofed.rfind(b"PK\x05\x06")
    spoofed[end + 8 : end + 12] = (1).to_bytes(2, "little") * 2  # "1 member"
    assert too_many_members(io.BytesIO(bytes(spoofed)), 2) == 3, "the directory's 1,550 bytes say more"
    assert too_many_members(io.BytesIO(bytes(spoofed)), 30) is None
    images, problems = read_uploads([("many.zip", zip_of(members))], WorkspaceLimits(max_images=2))
    assert images == [] and problems == ["many.zip: 30 files, too many to be a set of images (--max-images)"]
    labels = tmp_path / "labels.zip"
    labels.write_bytes(zip_of(members))
    with pytest.raises(ValueError, match="labels.zip holds 30 files, too many to be a set's labels \\(at most 20\\)"):
        read_yolo_uploads([labels], 1 << 20, 10)


def test_a_zip_is_read_by_base_names_in_memory_and_a_bomb_stops_at_the_limit(tmp_path):
    members = {
        "../../evil.png": png(1),
        "a/b/deep.png": png(2),
        "/abs.png": png(3),
        "notes.txt": b"x",
        ".hidden.png": png(4),
    }
    images, problems = read_uploads([("set.zip", zip_of(members))], WorkspaceLimits())
    assert [i.name for i in images] == ["evil.png", "deep.png", "abs.png"]
    assert problems == ["set.zip: 1 file not an image skipped (notes.txt)"], "hidden files are not named"
    bomb = zip_of({"zeros.png": b"\0" * (50 << 20)})
    assert len(bomb) < 1 << 20
    images, problems = read_uploads([("bomb.zip", bomb)], WorkspaceLimits(max_bytes=8 << 20))
    assert images == [] and "zeros.png and the files after it: a workspace holds at most 8 MB" in problems[0]
    images, problems = read_uploads([("bomb.zip", bomb)], WorkspaceLimits())  # room for it: its header is read
    assert images == [] and problems == [
        "bomb.zip: zeros.png: not an image this app reads (PNG, JPEG, WebP, BMP, TIFF, GIF)"
    ]
    nested = zip_of({"inner.zip": zip_of({"x.png": png(1)}), "y.png": png(2)})
    images, problems = read_uploads([("nested.zip", nested)], WorkspaceLimits())
    assert [i.name for i in images] == ["y.png"] and "inner.zip is a zip inside the zip; it was not opened" in problems[
        0
    ]
    images, problems = read_uploads([("docs.zip", zip_of({"a.txt": b"x"}))], WorkspaceLimits())
    assert images == [] and problems[0].startswith("docs.zip: holds no image files")
    many = zip_of({f"{i}.png": png(i) for i in range(5)})
    images, problems = read_uploads([("many.zip", many)], WorkspaceLimits(max_images=3))
    assert (
        len(images) == 3
        and "3.png and the files after it: a workspace holds at most 3 images (--max-images)" in problems[0]
    )
    images, problems = read_uploads([("broken.zip", b"PK\3\4 not really")], WorkspaceLimits())
    assert images == [] and "broken.zip: not a readable zip" in problems[0]


def test_limits_name_their_flag_and_the_rest_loads(wctx, photos):
    limited = DemoContext(wctx.engine, limits=WorkspaceLimits(max_images=2))
    result = on_add_images(limited, photos, None)
    assert len(strip(result)["choices"]) == 2 and "--max-images" in status(result)
    nothing = on_add_images(limited, [photos[0]], result[0])
    assert "No image was added" in status(nothing) and "--max-images" in status(nothing)


def test_sets_past_the_memory_bound_are_forgotten_oldest_first():
    from sam_demo.demo.workspace import Workspace, WorkspaceImage, WorkspaceStore

    store = WorkspaceStore(max_bytes=250)
    sets = [Workspace([WorkspaceImage(f"{i}.png", b"x" * 100, (1, 1))]) for i in range(4)]
    for workspace in sets:
        store.put(workspace)
    assert [store.get(w.token) is not None for w in sets] == [False, False, True, True]
    huge = Workspace([WorkspaceImage("big.png", b"x" * 1000, (1, 1))])
    store.put(huge)
    assert store.get(huge.token) is huge, "the set being added is kept"


def test_a_sets_coco_loads_back_into_a_new_set_of_the_same_images(wctx, photos, tmp_path):
    """The round trip: label a set, download its COCO, add the same images as a new set (in another
    order, one never opened), load the file: every image gets its objects back, with categories,
    names and masks; images the file names and the set lacks are named."""
    from sam_demo.demo.workspace_handlers import on_load

    one = labelled_set(wctx, photos)
    two = on_step(wctx, 1, one)[0]
    history = [point(100, 100), {"type": "category", "object": 0, "category": "cup"}]
    history.append({"type": "rename", "object": 0, "name": "espresso"})
    two = on_prompt(wctx, events(two, *history), two).state
    masks = [stored(wctx, one).results[0].mask, stored(wctx, two).results[0].mask]
    coco = json.loads(set_client(wctx).get(f"/sam-demo/export-set/{two.token}/coco.json").content)
    coco["images"].append({"id": 9, "file_name": "elsewhere/missing.png", "width": 5, "height": 5})
    (tmp_path / "set.json").write_text(json.dumps(coco))

    fresh = DemoContext(wctx.engine, background=None)  # a new page: nothing opened but the first image
    start = on_add_images(fresh, [photos[2], photos[1], photos[0]], None)[0]
    loaded = on_load(fresh, str(tmp_path / "set.json"), start)
    assert "Loaded from set.json: 2 objects into 2 images of the set. Not in the set: missing.png." in status(loaded)
    assert [label.split(" · ")[2] for label, _ in strip(loaded)["choices"]] == ["0 objects", "1 object", "1 object"]
    rocket = on_pick(fresh, 2, loaded[0])[0]
    state = stored(fresh, rocket)
    assert state.categories[:2] == ("rocket", "cup") and state.objects[0].category == "rocket"
    assert np.array_equal(state.results[0].mask, masks[0]), "the click's prompts remake its mask: refinable"
    coffee = stored(fresh, on_pick(fresh, 1, rocket)[0])
    assert (coffee.objects[0].category, coffee.objects[0].name) == ("cup", "espresso")
    assert np.array_equal(coffee.results[0].mask, masks[1])


# (what is wrong with a set's COCO file, what the refusal says)
SET_COCO_REFUSED = {
    "an image of another size": (
        lambda coco: coco["images"][1].update(width=999),
        "bad.json was not loaded (nothing was added): 2-coffee.png: it annotates a 999x240 image",
    ),
    "16 MB of empty lists (240 MB parsed)": (
        lambda coco: coco.update(padding=[[]] * 4_000_001),
        "JSON lists and objects, more than the 4,000,000 that load at once",
    ),
}


@pytest.mark.parametrize("case", SET_COCO_REFUSED)
def test_a_sets_coco_that_cannot_load_adds_nothing_saying_why(wctx, photos, tmp_path, case):
    from sam_demo.demo.workspace_handlers import on_load

    change, says = SET_COCO_REFUSED[case]
    one = labelled_set(wctx, photos)
    coco = json.loads(set_client(wctx).get(f"/sam-demo/export-set/{one.token}/coco.json").content)
    change(coco)
    (tmp_path / "bad.json").write_text(json.dumps(coco))
    fresh = DemoContext(wctx.engine)
    start = on_add_images(fresh, photos, None)[0]
    refused = on_load(fresh, str(tmp_path / "bad.json"), start)
    assert says in status(refused)
    assert all(label.endswith(("0 objects", "encoded")) for label, _ in strip(refused)["choices"])


def test_the_whole_sets_masks_label_images_and_cutouts(wctx, photos):
    one, two = two_labelled(wctx, photos)
    client = set_client(wctx)
    masks = zipfile.ZipFile(io.BytesIO(client.get(f"/sam-demo/export-set/{two.token}/masks.zip").content))
    assert sorted(masks.namelist()) == [
        "label_images/1-rocket.png",
        "label_images/2-coffee.png",
        "masks/1-rocket/object_01_rocket.png",
        "masks/2-coffee/object_01_cup.png",
    ]
    for state, stem in ((one, "1-rocket"), (two, "2-coffee")):
        mask = stored(wctx, state).results[0].mask
        labels = np.asarray(Image.open(io.BytesIO(masks.read(f"label_images/{stem}.png"))))
        np.testing.assert_array_equal(labels, mask.astype(np.uint8))
    cutouts = zipfile.ZipFile(io.BytesIO(client.get(f"/sam-demo/export-set/{two.token}/cutouts.zip").content))
    assert sorted(cutouts.namelist()) == ["cup/2-coffee_object_01_cup.png", "rocket/1-rocket_object_01_rocket.png"]
    cut = Image.open(io.BytesIO(cutouts.read("cup/2-coffee_object_01_cup.png")))
    assert cut.mode == "RGBA" and (np.asarray(cut)[..., 3] >= 128).sum() == stored(wctx, two).results[0].mask.sum()
    unlabelled = on_add_images(wctx, photos, None)[0]  # a new set, nothing labelled: empty, valid zips
    for kind in ("masks.zip", "cutouts.zip"):
        answer = client.get(f"/sam-demo/export-set/{unlabelled.token}/{kind}")
        assert answer.status_code == 200 and zipfile.ZipFile(io.BytesIO(answer.content)).namelist() == []


def test_a_coco_detection_file_segments_its_boxes_across_the_set(wctx, photos, tmp_path):
    from sam_demo import SamPredictor
    from sam_demo.demo.workspace_handlers import on_load

    start = on_add_images(wctx, photos, None)[0]
    detections = {
        "images": [
            {"id": k + 1, "file_name": f"some/dir/{Path(p).name}", "width": 320, "height": 240}
            for k, p in enumerate(photos)
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 7, "bbox": [10, 20, 150, 100]},
            {"id": 2, "image_id": 3, "category_id": 8, "bbox": [100, 40, 200, 190]},
        ],
        "categories": [{"id": 7, "name": "rocket"}, {"id": 8, "name": "person"}],
    }
    (tmp_path / "detections.json").write_text(json.dumps(detections))
    loaded = on_load(wctx, str(tmp_path / "detections.json"), start)
    assert "2 objects into 2 images of the set" in status(loaded)
    third = stored(wctx, on_pick(wctx, 2, loaded[0])[0])
    assert third.objects[0].category == "person" and third.objects[0].box_xyxy == (100.0, 40.0, 300.0, 230.0)
    predictor = SamPredictor(wctx.engine)
    predictor.set_image(np.asarray(Image.open(photos[2]).convert("RGB")))
    expected, _, _ = predictor.predict(box=np.array([100.0, 40.0, 300.0, 230.0]), multimask_output=False)
    assert np.array_equal(third.results[0].mask, expected[0])


def test_a_folders_images_are_added_and_its_other_files_skipped(wctx, photos, tmp_path):
    from sam_demo.demo.workspace_handlers import on_add_folder

    (tmp_path / "labels.txt").write_text("0 0.5 0.5 0.1 0.1")
    (tmp_path / "data.yaml").write_text("names: [a]")
    folder = photos + [str(tmp_path / "labels.txt"), str(tmp_path / "data.yaml")]
    result = on_add_folder(wctx, folder, None)
    assert len(strip(result)["choices"]) == 3 and "Added 3 images. Image 1 of 3" in status(result)
    nothing = on_add_folder(wctx, [str(tmp_path / "labels.txt")], result[0])
    assert "The folder holds no image files" in status(nothing) and len(strip(nothing)["choices"]) == 3


def test_every_download_of_a_set_names_an_image_alike(wctx, tmp_path):
    """Two images whose stems clash (same.png, then same.jpg), only the second labelled: YOLO, masks
    and cut-outs all call it same_2."""
    paths = [tmp_path / "same.png", tmp_path / "same.jpg"]
    Image.fromarray(asset("coffee.png")[:200, :200]).save(paths[0])
    Image.fromarray(asset("rocket.jpg")[:200, :200]).save(paths[1], quality=95)
    first = on_add_images(wctx, [str(p) for p in paths], None)[0]
    second = on_step(wctx, 1, first)[0]
    on_prompt(wctx, events(second, point(100, 100)), second)
    client = set_client(wctx)

    def names(kind):
        return sorted(
            zipfile.ZipFile(io.BytesIO(client.get(f"/sam-demo/export-set/{second.token}/{kind}").content)).namelist()
        )

    assert "labels/same_2.txt" in names("yolo-seg.zip") and "images/same_2.jpg" in names("yolo-seg.zip")
    assert names("masks.zip") == ["label_images/same_2.png", "masks/same_2/object_01.png"]
    assert names("cutouts.zip") == ["object/same_2_object_01.png"]


def test_yolo_label_files_segment_their_boxes_into_the_images_of_their_names(wctx, photos, tmp_path):
    from sam_demo import SamPredictor
    from sam_demo.demo.workspace_handlers import on_load

    start = on_add_images(wctx, photos, None)[0]
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "1-rocket.txt").write_text("0 0.3 0.4 0.25 0.4\n")
    (tmp_path / "labels" / "3-astronaut.txt").write_text("1 0.5 0.5 0.5 0.6\n1 0.2 0.2 0.1 0.1 0.93\n")
    (tmp_path / "labels" / "other.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    (tmp_path / "labels" / "data.yaml").write_text("names:\n  0: rocket\n  1: person\n")
    files = [str(p) for p in sorted((tmp_path / "labels").iterdir())]
    loaded = on_load(wctx, files, start)
    assert "3 objects into 2 images of the set. Not in the set: other.txt." in status(loaded)
    assert stored(wctx, loaded[0]).categories[:2] == ("rocket", "person")
    third = stored(wctx, on_pick(wctx, 2, loaded[0])[0])
    assert [o.category for o in third.objects if o.has_prompts] == ["person", "person"]
    box = (80.0, 48.0, 240.0, 192.0)  # 0.5 0.5 0.5 0.6 of 320x240
    assert third.objects[0].box_xyxy == box
    predictor = SamPredictor(wctx.engine)
    predictor.set_image(np.asarray(Image.open(photos[2]).convert("RGB")))
    expected, _, _ = predictor.predict(box=np.array(box), multimask_output=False)
    assert np.array_equal(third.results[0].mask, expected[0])


def test_a_sets_yolo_zip_loads_back_into_a_new_set_of_the_same_images(wctx, photos):
    from sam_demo.demo.workspace_handlers import on_load

    one, two = two_labelled(wctx, photos)
    answer = set_client(wctx).get(f"/sam-demo/export-set/{two.token}/yolo-seg.zip", params={"tolerance": "0"})
    saved = Path(photos[0]).parent / "dataset.yolo-seg.zip"
    saved.write_bytes(answer.content)
    fresh = on_add_images(wctx, photos, None)[0]
    loaded = on_load(wctx, [str(saved)], fresh)
    assert "2 objects into 2 images of the set" in status(loaded)
    for k, before in ((0, one), (1, two)):
        again = stored(wctx, on_pick(wctx, k, loaded[0])[0])
        (layer,) = again.shown()
        assert layer.category == ("rocket", "cup")[k]
        mask = stored(wctx, before).results[0].mask
        assert (layer.source.mask & mask).sum() / (layer.source.mask | mask).sum() > 0.6  # speckles of a random model


@pytest.mark.parametrize(
    ("files", "says"),
    [
        ({"1-rocket.txt": "0 0.5 0.5 0.2", "2-coffee.txt": "0 0.5 0.5 0.2 0.2"}, "1-rocket.txt: line 1 has 4 numbers"),
        ({"2-coffee.txt": "0 0.5 0.5 0.2 0.2\n0 1.5 1.5 0.2 0.2"}, "2-coffee.txt: line 2's box"),
        ({"2-coffee.txt": "\xff\xfe", "x.txt": ""}, "2-coffee.txt is not UTF-8 text"),
        ({"2-coffee.txt": "0 .5 .5 .2 .2", "data.yaml": "names: 7"}, "data.yaml has no 'names' list"),
        ({"nope.txt": "0 .5 .5 .2 .2", "nada.txt": ""}, "no label file (nope.txt, nada.txt) is named as an image"),
        ({"1-rocket.txt": "0 .5 .5 .2 .2", "2-coffee.txt": "0 .5 .5 1e-17 1e-17"}, "2-coffee.txt: line 1's box"),
        ({"1-rocket.txt": "0 .5 .5 .2 .2", "2-coffee.txt": "0 .5 .5 .5 .5 .5 .5"}, "2-coffee.txt: line 1: the polygon"),
        ({"2-coffee.txt": "0 .5 .5 .2 .2", "data.yaml": "names: " + "[" * 600 + "]" * 600}, "data.yaml is not YAML"),
        (
            {"2-coffee.txt": "0 .5 .5 .2 .2", "data.yaml": "names: [" + "x, " * 1001 + "]"},
            "a category list takes at most",
        ),
    ],
)
def test_yolo_label_files_that_do_not_fit_add_nothing_and_name_the_file_and_line(wctx, photos, tmp_path, files, says):
    from sam_demo.demo.workspace_handlers import on_load

    start = on_add_images(wctx, photos, None)[0]
    paths = []
    for name, text in files.items():
        (tmp_path / name).write_bytes(text.encode("latin-1"))
        paths.append(str(tmp_path / name))
    refused = on_load(wctx, paths, start)
    assert says in status(refused) and " not loaded" in status(refused)
    assert all(label.endswith(("not encoded", "encoded", "0 objects")) for label, _ in strip(refused)["choices"])


def test_a_yolo_zip_loads_back_into_images_whose_names_clash_or_are_not_safe(wctx, tmp_path):
    """same.png and same.jpg export as same / same_2, "photo (1).png" as photo_1_: each comes back to
    its own image; a category named in emoji survives data.yaml."""
    from sam_demo.demo.workspace_handlers import on_load

    paths = [tmp_path / "same.png", tmp_path / "same.jpg", tmp_path / "photo (1).png"]
    for k, path in enumerate(paths):
        Image.fromarray(np.roll(asset("coffee.png")[:200, :200], 40 * k, axis=1)).save(path, quality=95)
    first = on_add_images(wctx, [str(p) for p in paths], None)[0]
    state = stored(wctx, first)
    state.set_categories(["🐱 cat"])
    wctx.sessions.put(state)
    masks = []
    for k in range(3):
        opened = on_pick(wctx, k, first)[0]
        clicked = on_prompt(
            wctx,
            events(opened, point(60 + 40 * k, 100), {"type": "category", "object": 0, "category": "🐱 cat"}),
            opened,
        ).state
        masks.append(stored(wctx, clicked).results[0].mask)
    answer = set_client(wctx).get(f"/sam-demo/export-set/{first.token}/yolo-seg.zip", params={"tolerance": "0"})
    (tmp_path / "set.zip").write_bytes(answer.content)
    fresh = on_add_images(wctx, [str(p) for p in paths], None)[0]
    loaded = on_load(wctx, [str(tmp_path / "set.zip")], fresh)
    assert "3 objects into 3 images of the set." in status(loaded) and "Not in the set" not in status(loaded)
    for k in range(3):
        (layer,) = stored(wctx, on_pick(wctx, k, loaded[0])[0]).shown()
        assert layer.category == "🐱 cat"
        iou = (layer.source.mask & masks[k]).sum() / (layer.source.mask | masks[k]).sum()
        assert iou > 0.6, (k, iou)  # its own image's mask (the random model's speckles lose corners)


def test_only_the_topmost_data_yaml_of_a_zip_is_read_and_label_files_are_counted(tmp_path):
    from sam_demo.demo.workspace import read_yolo_uploads

    archive = tmp_path / "labels.zip"
    with zipfile.ZipFile(archive, "w") as out:
        out.writestr("deep/er/data.yaml", "names: [" * 600)  # never parsed
        out.writestr("data.yaml", "names: [a, b]")
        out.writestr("labels/x.txt", "0 .5 .5 .2 .2")
        out.writestr("labels/y.txt", "")
    labels = read_yolo_uploads([archive], 1 << 20, 10)
    assert labels.names == ["a", "b"] and sorted(labels.texts) == ["x", "y"]
    with pytest.raises(ValueError, match="at most 2 label files load at once"):
        read_yolo_uploads([archive], 1 << 20, 2)
    with pytest.raises(ValueError, match="over 0 MB together"):
        read_yolo_uploads([archive], 10, 10)
    (tmp_path / "folder.txt").mkdir()
    with pytest.raises(ValueError, match=r"^folder.txt cannot be read \(Is a directory\)$"):
        read_yolo_uploads([tmp_path / "folder.txt"], 1 << 20, 10)


def test_a_yolo_load_that_fails_on_a_later_image_leaves_the_earlier_ones_as_they_were(
    wctx, photos, tmp_path, monkeypatch
):
    from sam_demo.demo.session import Session
    from sam_demo.demo.workspace_handlers import on_load

    start = on_add_images(wctx, photos, None)[0]
    for name in ("1-rocket", "2-coffee"):
        (tmp_path / f"{name}.txt").write_text("0 .5 .5 .2 .2\n")
    add_saved = Session.add_saved

    def failing(self, engine, objects, categories=()):
        if self.name == "2-coffee.png":
            raise ValueError("the store is full")
        return add_saved(self, engine, objects, categories)

    monkeypatch.setattr(Session, "add_saved", failing)
    refused = on_load(wctx, [str(tmp_path / "1-rocket.txt"), str(tmp_path / "2-coffee.txt")], start)
    assert "not loaded (nothing was added): 2-coffee.png: the store is full" in status(refused)
    assert stored(wctx, on_pick(wctx, 0, refused[0])[0]).object_count == 0


def test_remove_takes_the_image_and_its_objects_out_of_the_set_once_confirmed(wctx, photos):
    from sam_demo.demo.workspace_handlers import on_remove

    first = labelled_set(wctx, photos)
    kept = on_remove(wctx, False, first)
    assert "Kept 1-rocket.png in the set." in status(kept) and len(strip(kept)["choices"]) == 3
    removed = on_remove(wctx, True, kept[0])
    assert "Removed 1-rocket.png and its 1 object from the set. Image 1 of 2: 2-coffee.png" in status(removed)
    assert [label.split(" · ")[1] for label, _ in strip(removed)["choices"]] == ["2-coffee.png", "3-astronaut.png"]
    assert wctx.sessions.get(first.token) is None, "its session is let go"
    last = on_step(wctx, 1, removed[0])[0]
    back = on_remove(wctx, True, last)
    assert "Removed 3-astronaut.png from the set. Image 1 of 1: 2-coffee.png" in status(back)
    only = on_remove(wctx, True, back[0])
    assert "it is the set's only image" in status(only)
    coco = json.loads(set_client(wctx).get(f"/sam-demo/export-set/{back[0].token}/coco.json").content)
    assert [i["file_name"] for i in coco["images"]] == ["2-coffee.png"] and coco["annotations"] == []


def test_a_lone_label_file_named_as_no_image_goes_to_the_image_shown_and_says_so_and_twice_adds_nothing(
    wctx, photos, tmp_path
):
    from sam_demo.demo.workspace_handlers import on_load

    start = on_add_images(wctx, photos, None)[0]
    (tmp_path / "dog.txt").write_text("0 .5 .5 .2 .2\n")
    once = on_load(wctx, [str(tmp_path / "dog.txt")], start)
    assert "Loaded from dog.txt into 1-rocket.png (it names no image of the set): 1 object to refine." in status(once)
    twice = on_load(wctx, [str(tmp_path / "dog.txt")], once[0])
    assert "1 mask already shown, skipped" in status(twice) and stored(wctx, twice[0]).object_count == 1
