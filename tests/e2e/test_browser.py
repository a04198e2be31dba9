"""A real browser (Debian's Chromium, driven by Playwright): upload, click, right-click, drag, download.

The downloaded JSON must hold the prompts where the mouse went (within one display pixel) and
masks equal to the predictor's for those prompts; posting its request to /score replays it.
Screenshots go to $ARTIFACTS_DIR (default: artifacts/).
"""

from __future__ import annotations

import base64
import functools
import io
import json
import math
import os
import zipfile
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from sam_demo import SamPredictor
from sam_demo.demo.detail import sample_indices
from sam_demo.endpoint.wire import read_response
from tests.support.chromium import CHROMIUM, FLAGS
from tests.support.photos import PHOTOS, photo
from tests.support.servers import REPOSITORY

ARTIFACTS = Path(os.environ.get("ARTIFACTS_DIR", REPOSITORY / "artifacts"))

if not Path(CHROMIUM).exists():
    if os.environ.get("CI"):
        raise RuntimeError("CI must run the browser test: apt-get install -y chromium")
    pytest.skip("Chromium is not installed (apt-get install -y chromium)", allow_module_level=True)

sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield browser
        browser.close()


def open_with_image(browser, server, viewport, image: Path):
    page = browser.new_page(viewport=viewport, accept_downloads=True)
    page.goto(server.url + "/", wait_until="load")
    page.wait_for_selector("#prompter .sd-stage", timeout=60_000)
    page.set_input_files("#image-input input[type=file]", str(image))
    page.wait_for_selector("#prompter .sd-stage.has-image", timeout=60_000)
    page.wait_for_function("document.querySelector('#status').innerText.includes('encoded')", timeout=60_000)
    return page


def test_click_drag_download_in_chromium(browser, server, engine):
    image_path = PHOTOS / "chelsea.png"
    rgb = np.asarray(Image.open(image_path).convert("RGB"))
    h, w = rgb.shape[:2]
    page = open_with_image(browser, server, {"width": 1400, "height": 1000}, image_path)
    bb = page.locator("#prompter .sd-base").bounding_box()
    px = w / bb["width"]  # original pixels per display pixel

    def at(fx, fy):
        return bb["x"] + bb["width"] * fx, bb["y"] + bb["height"] * fy

    def to_original(x, y):
        return (x - bb["x"]) * px, (y - bb["y"]) * h / bb["height"]

    clicks = [at(0.4, 0.5), at(0.7, 0.3)]
    page.mouse.click(*clicks[0])
    page.wait_for_function("document.querySelector('#status').innerText.includes('IoU')", timeout=60_000)
    page.mouse.click(*clicks[1], button="right")
    start, end = at(0.15, 0.2), at(0.85, 0.9)
    page.mouse.move(*start)
    page.mouse.down()
    page.mouse.move(*at(0.5, 0.5), steps=4)
    page.mouse.move(*end, steps=4)
    page.mouse.up()
    page.wait_for_function(
        "document.querySelector('#export-status').innerText.includes('1 object, 3 prompts')", timeout=60_000
    )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "demo-1400x1000.png"), full_page=True)
    with page.expect_download(timeout=60_000) as download:
        page.locator("#download-json").click()
    export = json.loads(Path(download.value.path()).read_text())
    page.close()

    (row,) = export["request"]["input_data"]["data"]
    columns = export["request"]["input_data"]["columns"]
    values = dict(zip(columns, row))
    points = np.array(json.loads(values["input_points"]))[0]
    labels = json.loads(values["input_labels"])[0]
    (box,) = json.loads(values["input_boxes"])
    assert labels == [1, 0] and values["multimask_output"] is False
    for got, (cx, cy) in zip(points, clicks):
        assert np.allclose(got, to_original(cx, cy), atol=px + 1e-6)
    assert np.allclose(box, [*to_original(*start), *to_original(*end)], atol=px + 1e-6)

    decoded = read_response(export["response"])
    predictor = SamPredictor(engine)
    predictor.set_image(rgb)
    masks, scores, _ = predictor.predict(points, np.array(labels), box=np.array(box), multimask_output=False)
    assert decoded[0][0][0].mask.shape == (h, w)
    assert np.array_equal(decoded[0][0][0].mask, masks[0]) and decoded[0][0][0].iou_score == float(scores[0])

    replay = httpx.post(f"{server.url}/score", json=export["request"], timeout=60)
    assert replay.status_code == 200
    assert np.array_equal(read_response(replay.json())[0][0][0].mask, masks[0])


def test_narrow_viewport_and_negative_toggle(browser, server):
    page = open_with_image(browser, server, {"width": 390, "height": 844}, PHOTOS / "coffee.png")
    page.locator("#prompter .sd-mode").click()  # touch users: taps subtract
    bb = page.locator("#prompter .sd-base").bounding_box()
    assert bb["width"] <= 390
    page.mouse.click(bb["x"] + bb["width"] * 0.5, bb["y"] + bb["height"] * 0.5)
    page.wait_for_function("document.querySelector('#status').innerText.includes('IoU')", timeout=60_000)
    assert page.locator("#prompter svg circle[fill='#d62728']").count() == 1  # drawn as a negative point
    page.screenshot(path=str(ARTIFACTS / "demo-390x844.png"), full_page=True)
    # An object picked in the list (below the image on a phone) brings the image back into view: the
    # next tap refines it.
    page.locator("#prompter .sd-bar-new").click()  # the phone's bar under the image
    page.wait_for_function(  # object 1 no longer the one edited
        "document.querySelector('#objects [data-select=\"0\"]')?.getAttribute('aria-pressed') === 'false'",
        timeout=30_000,
    )
    page.evaluate("document.querySelector('#objects').scrollIntoView({block: 'start'})")
    assert page.locator("#prompter .sd-base").bounding_box()["y"] + bb["height"] < 120, "scrolled to the list"
    page.locator('#objects [data-select="0"]').click()
    page.wait_for_function("document.querySelector('#legend').innerText.includes('(editing)')", timeout=30_000)
    page.wait_for_function("document.querySelector('#prompter .sd-base').getBoundingClientRect().top >= -1")
    assert page.locator("#prompter .sd-base").bounding_box()["y"] < 844 / 2, "the image in sight"
    page.close()


def click_painted(page, box: dict, fx: float, fy: float) -> None:
    """Click at a fraction of the image's `box` and wait until the new mask is painted (PROBE installed)."""
    before = page.evaluate("window.__painted.click")
    page.mouse.click(box["x"] + box["width"] * fx, box["y"] + box["height"] * fy)
    page.wait_for_function(f"window.__painted.click > {before}", timeout=60_000)


PROBE = """() => {
  window.__painted = {click: 0, preview: 0};
  document.querySelector('#prompter').addEventListener('sam-demo:painted', (e) => { window.__painted[e.detail.kind] += 1; });
}"""


def test_ten_objects_hover_preview_and_a_second_user(browser, server, engine):
    image_path = PHOTOS / "chelsea.png"
    rgb = np.asarray(Image.open(image_path).convert("RGB"))
    h, w = rgb.shape[:2]
    page = open_with_image(browser, server, {"width": 1400, "height": 1000}, image_path)
    page.evaluate(PROBE)
    bb = page.locator("#prompter .sd-base").bounding_box()

    def at(fx, fy):
        return bb["x"] + bb["width"] * fx, bb["y"] + bb["height"] * fy

    def painted(kind):
        return page.evaluate(f"window.__painted.{kind}")

    spots = [(0.1 + 0.08 * i, 0.2 + 0.06 * i) for i in range(10)]
    for i, spot in enumerate(spots):
        before = painted("click")
        page.mouse.click(*at(*spot))
        page.wait_for_function(f"window.__painted.click > {before}", timeout=60_000)
        page.wait_for_function(
            f"document.querySelector('#legend').innerText.includes('Object {i + 1} (editing)')", timeout=60_000
        )
        if i < 9:
            before = painted("click")
            page.locator("#new-object").click()  # the finished object's outline is redrawn thin
            page.wait_for_function(f"window.__painted.click > {before}", timeout=60_000)
            page.wait_for_function(
                f"document.querySelector('#legend').innerText.includes('Object {i + 2} (editing)')", timeout=60_000
            )
    # Nine finished objects are flattened into one canvas; the edited one is its own layer.
    assert page.locator("#prompter .sd-layers canvas").count() == 1
    assert page.locator("#prompter .sd-layers img").count() == 1
    page.wait_for_function(
        "document.querySelector('#export-status').innerText.includes('10 objects, 10 prompts')", timeout=60_000
    )

    # The lone click's candidates: three mask thumbnails in one row; pick one that is not shown (on its image).
    thumbs = page.locator("#candidates [data-candidate] img")
    assert thumbs.count() == 3 and all(
        thumbs.nth(k).evaluate("i => i.complete && i.naturalWidth === 96") for k in range(3)
    )
    assert len({round(thumbs.nth(k).bounding_box()["y"]) for k in range(3)}) == 1, "in one row"
    pick = page.locator("#candidates [data-candidate][aria-pressed=false]").first
    chosen = int(pick.get_attribute("data-candidate"))
    before = painted("click")
    pick.locator("img").click()
    page.wait_for_function(f"window.__painted.click > {before}", timeout=60_000)
    page.wait_for_selector(f"#candidates [data-candidate='{chosen}'][aria-pressed=true]", timeout=60_000)
    page.locator("#candidates").screenshot(path=str(ARTIFACTS / "demo-candidates.png"))

    # Hover: a resting mouse gets a faint preview, and no prompt.
    page.mouse.move(*at(0.5, 0.55), steps=2)
    page.wait_for_function("window.__painted.preview > 0", timeout=60_000)
    assert page.locator("#prompter .sd-preview").get_attribute("src").startswith("blob:")
    assert "10 objects, 10 prompts" in page.locator("#export-status").inner_text()
    page.mouse.move(bb["x"] - 40, bb["y"] - 40)  # leaving the image hides it
    page.wait_for_function("!document.querySelector('#prompter .sd-preview').getAttribute('src')", timeout=10_000)

    # A second user uploads and clicks; the first user's masks stay theirs.
    shown = page.locator("#prompter .sd-layers img").get_attribute("src")
    other = open_with_image(browser, server, {"width": 1400, "height": 1000}, PHOTOS / "coffee.png")
    obb = other.locator("#prompter .sd-base").bounding_box()
    other.mouse.click(obb["x"] + obb["width"] * 0.5, obb["y"] + obb["height"] * 0.5)
    other.wait_for_function("document.querySelector('#status').innerText.includes('IoU')", timeout=60_000)
    other.close()
    assert page.locator("#prompter .sd-layers img").get_attribute("src") == shown
    with page.expect_download(timeout=60_000) as download:
        page.locator("#download-json").click()
    export = json.loads(Path(download.value.path()).read_text())
    page.screenshot(path=str(ARTIFACTS / "demo-10-objects-1400x1000.png"), full_page=True)
    page.close()
    rows = export["request"]["input_data"]["data"]
    assert len(rows) == 10 and export["shown"][9]["mask"] == chosen
    predictor = SamPredictor(engine)
    predictor.set_image(rgb)
    decoded = read_response(export["response"])
    for k, row in enumerate(rows):
        points = np.array(json.loads(row[1]))[0]
        masks, scores, _ = predictor.predict(points, np.array([1]))
        best = export["shown"][k]["mask"]
        assert np.array_equal(decoded[k][0][best].mask, masks[best]), f"object {k + 1}"


@pytest.mark.parametrize("name", ["notes.png", "<img src=x onerror=window.__pwned=1>.png"])
def test_a_file_that_is_not_an_image_gets_a_plain_message_naming_it(browser, server, tmp_path, name):
    notes = tmp_path / name
    notes.write_text("this is not an image")
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(server.url + "/", wait_until="load")
    page.wait_for_selector("#prompter .sd-stage", timeout=60_000)
    page.set_input_files("#image-input input[type=file]", str(notes))
    page.wait_for_function("document.body.innerText.includes('not an image we can read')", timeout=60_000)
    text = page.evaluate("document.body.innerText")
    covered = page.locator("#prompter > .wrap .error").is_visible()  # Gradio's "Error" overlay on an output
    pwned = page.evaluate("window.__pwned")
    page.close()
    assert not covered, "the toast tells the error; nothing covers the prompter's toolbar"
    assert "Could not preprocess" not in text and "UnidentifiedImageError" not in text and "/gradio/" not in text
    assert pwned is None, "a file's name is never markup"
    assert f"{name} is not an image we can read" in text or name.startswith("<"), "which file, when several fail"


DROP = """async ([selector, name, b64]) => {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const transfer = new DataTransfer();
  transfer.items.add(new File([bytes], name, {type: 'image/png'}));
  document.querySelector(selector).dispatchEvent(new DragEvent('drop', {dataTransfer: transfer, bubbles: true, cancelable: true}));
}"""


def test_new_images_by_example_button_and_drop_shown_once_and_fitted(browser, server, tmp_path):
    def encoded(size: str):
        page.wait_for_function(
            f"document.querySelector('#status').innerText.includes('{size} encoded')", timeout=60_000
        )

    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(server.url + "/", wait_until="load")
    page.wait_for_selector("#prompter .sd-example", timeout=60_000)
    assert not page.locator("#image-input").is_visible(), "one upload target: the stage"
    captions = page.locator("#prompter .sd-example").all_inner_texts()
    assert captions == ["Astronaut", "Cat", "Coffee cup", "Rocket launch"], "captioned examples in the empty stage"
    page.locator("#prompter .sd-example").nth(2).click()
    encoded("600×400")
    assert not page.locator("#prompter .sd-example").nth(0).is_visible(), "an image replaces the examples"
    with page.expect_file_chooser() as chooser:
        page.locator("#prompter .sd-change").click()
    chooser.value.set_files(str(PHOTOS / "astronaut.png"))
    encoded("512×512")
    stage = page.locator("#prompter .sd-stage").bounding_box()
    assert stage["y"] + stage["height"] <= 1000, "a square photo fits the window's height"
    rocket = base64.b64encode((PHOTOS / "rocket.jpg").read_bytes()).decode()
    page.evaluate(DROP, ["#prompter .sd-stage", "rocket.jpg", rocket])
    encoded("640×427")
    broken = tmp_path / "broken.png"
    broken.write_bytes((PHOTOS / "coffee.png").read_bytes()[:3000])
    page.set_input_files("#image-input input[type=file]", str(broken))
    page.wait_for_function("document.body.innerText.includes('damaged or truncated')", timeout=60_000)
    page.wait_for_timeout(1000)  # a second event would have answered by now
    text = page.evaluate("document.body.innerText")
    page.close()
    assert text.count("damaged or truncated") == 1, "one upload, one event, one message"
    assert "640×427 encoded" in text, "the image shown before the bad upload stays"


def status(page) -> str:
    return page.locator("#status").inner_text()


def test_edits_that_cannot_run_say_why_on_screen(browser, server, tmp_path):
    """Before an image every button is dimmed with its reason, and a click on one says it on the
    status line (these events skip Gradio's queue, where an error used to be a silent HTTP 500)."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(server.url + "/", wait_until="load")
    page.wait_for_selector("#prompter .sd-stage", timeout=60_000)
    page.wait_for_function("document.getElementById('undo')?.getAttribute('aria-disabled') === 'true'", timeout=30_000)
    for control in ("undo", "redo", "clear-object", "start-over", "new-object", "segment-everything"):
        assert "Upload an image first" in page.locator(f"#{control}").get_attribute("title"), control
    page.locator("#new-object").click(force=True)  # dimmed (aria-disabled), but a person can still click it
    page.wait_for_function("document.querySelector('#status [role=alert]') !== null", timeout=30_000)
    assert "Upload an image first" in status(page)
    height = page.locator("#status").bounding_box()["height"]

    page.set_input_files("#image-input input[type=file]", str(PHOTOS / "chelsea.png"))
    page.wait_for_function("document.querySelector('#status').innerText.includes('encoded')", timeout=60_000)
    assert page.locator("#status").bounding_box()["height"] == height, "the status line keeps its height"
    assert page.locator("#undo").get_attribute("aria-disabled") == "true"
    assert page.locator("#segment-everything").get_attribute("aria-disabled") is None

    other_image = tmp_path / "masks-for-another-image.json"
    other_image.write_text(
        json.dumps(
            [
                {
                    "response": {
                        "predictions": [
                            {
                                "masks_per_prediction": [
                                    {
                                        "encoded_binary_mask": base64.b64encode(_png_mask(100, 100)).decode(),
                                        "iou_score": 0.9,
                                    }
                                ]
                            }
                        ]
                    }
                }
            ]
        )
    )
    not_json = tmp_path / "notes.json"
    not_json.write_text("these are my notes, not JSON")
    for path, says in ((other_image, "the image the masks were made for"), (not_json, "not JSON")):
        with page.expect_file_chooser() as chooser:
            page.locator("#load-json").click()
        chooser.value.set_files(str(path))
        page.wait_for_function(
            f"document.querySelector('#status [role=alert]')?.innerText.includes({json.dumps(says)})", timeout=30_000
        )
        assert f"{path.name} was not loaded" in status(page)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "demo-error-1400x1000.png"), full_page=True)
    page.close()


def _png_mask(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((height, width), 255, np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def test_keyboard_shortcuts_and_cutouts(browser, server, tmp_path):
    page = open_with_image(browser, server, {"width": 1400, "height": 1000}, PHOTOS / "chelsea.png")
    page.evaluate(PROBE)
    bb = page.locator("#prompter .sd-base").bounding_box()

    click = functools.partial(click_painted, page, bb)

    def exported(text: str):
        page.wait_for_function(
            f"document.querySelector('#export-status').innerText.includes({json.dumps(text)})", timeout=60_000
        )

    click(0.4, 0.5)
    exported("1 object, 1 prompt")
    pressed = page.locator("#candidates [aria-pressed=true]").get_attribute("data-candidate")
    page.keyboard.press("c")  # the next candidate
    page.wait_for_selector(
        f"#candidates [data-candidate='{(int(pressed) + 1) % 3}'][aria-pressed=true]", timeout=30_000
    )
    page.keyboard.press("n")
    page.wait_for_function("document.querySelector('#legend').innerText.includes('Object 2 (editing)')", timeout=30_000)
    click(0.7, 0.3)
    exported("2 objects, 2 prompts")
    # Only the edited object's prompt is drawn: one green (+) marker; both objects keep their score tag.
    assert page.locator("#prompter svg circle[fill='#2ca02c']").count() == 1
    assert page.locator("#prompter svg text").count() == 2
    # The mask opacity control scales the layers, and is kept for the next visit.
    page.evaluate(
        "() => { const r = document.querySelector('#prompter .sd-opacity input'); r.value = '40';"
        " r.dispatchEvent(new Event('input', {bubbles: true})); }"
    )
    assert page.evaluate("document.querySelector('#prompter .sd-masks').style.opacity") == "0.4"
    assert page.evaluate("localStorage.getItem('sam-demo-opacity')") == "40"
    page.keyboard.press("Control+z")
    exported("1 object, 1 prompt")
    page.keyboard.press("Control+Shift+z")
    exported("2 objects, 2 prompts")
    page.keyboard.press("Control+z")
    exported("1 object, 1 prompt")
    page.keyboard.press("Control+y")
    exported("2 objects, 2 prompts")

    # Esc cancels a box being drawn: no prompt is added.
    page.mouse.move(bb["x"] + bb["width"] * 0.2, bb["y"] + bb["height"] * 0.2)
    page.mouse.down()
    page.mouse.move(bb["x"] + bb["width"] * 0.6, bb["y"] + bb["height"] * 0.7, steps=4)
    page.keyboard.press("Escape")
    page.mouse.up()
    page.wait_for_timeout(500)
    assert "2 objects, 2 prompts" in page.locator("#export-status").inner_text()

    # `?` lists the keys; typing in a text field is not a shortcut.
    page.keyboard.press("?")
    assert page.locator("#prompter .sd-keys").is_visible()
    assert "segment everything" in page.locator("#prompter .sd-keys").inner_text()
    page.screenshot(path=str(ARTIFACTS / "demo-keys-1400x1000.png"), full_page=True)
    page.keyboard.press("Escape")
    assert not page.locator("#prompter .sd-keys").is_visible()
    page.evaluate("document.body.insertAdjacentHTML('beforeend', '<input id=typing>')")
    page.locator("#typing").type("n")
    page.wait_for_timeout(300)
    assert "Object 3" not in page.locator("#legend").inner_text()

    with page.expect_download(timeout=60_000) as download:
        page.locator("#download-cutouts").click()
    with page.expect_download(timeout=60_000) as masks_download:
        page.locator("#download-zip").click()
    cutouts = zipfile.ZipFile(download.value.path())
    masks = zipfile.ZipFile(masks_download.value.path())
    page.close()
    assert sorted(masks.namelist()) == ["object_01.png", "object_02.png"]
    assert sorted(cutouts.namelist()) == ["object/object_01.png", "object/object_02.png"]  # a folder per category
    for name in masks.namelist():
        mask = np.asarray(Image.open(io.BytesIO(masks.read(name)))) > 127
        cut = Image.open(io.BytesIO(cutouts.read(f"object/{name}")))
        assert cut.mode == "RGBA" and cut.size[0] <= mask.shape[1] and cut.size[1] <= mask.shape[0]
        assert (np.asarray(cut)[..., 3] >= 128).sum() == mask.sum(), "the cut-out's alpha is the exported mask"


def test_the_object_list_selects_renames_hides_deletes_and_undoes(browser, server, engine):
    page = open_with_image(browser, server, {"width": 1400, "height": 1000}, PHOTOS / "chelsea.png")
    page.evaluate(PROBE)
    bb = page.locator("#prompter .sd-base").bounding_box()
    rgb = np.asarray(Image.open(PHOTOS / "chelsea.png").convert("RGB"))
    h, w = rgb.shape[:2]

    def click(fx, fy):
        click_painted(page, bb, fx, fy)
        return fx * w, fy * h

    def exported(text: str):
        page.wait_for_function(
            f"document.querySelector('#export-status').innerText.includes({json.dumps(text)})", timeout=60_000
        )

    first = click(0.3, 0.4)
    page.locator("#new-object").click()
    click(0.7, 0.6)  # at once: New object and the tap travel in one ordered stream, so it lands on object 2
    exported("2 objects, 2 prompts")
    assert page.locator("#objects [data-object-index]").count() == 2

    page.locator('#objects [data-select="0"]').click()  # edit object 1 again
    page.wait_for_function("document.querySelector('#legend').innerText.includes('Object 1 (editing)')", timeout=30_000)
    second = click(0.35, 0.45)
    exported("2 objects, 3 prompts")

    hostile = "<img src=x onerror=window.__pwned=1>"
    page.locator('#objects [data-rename="0"]').fill(hostile)
    page.locator('#objects [data-rename="0"]').press("Enter")
    page.wait_for_function(
        f"document.querySelector('#objects').innerText.includes({json.dumps(hostile)})", timeout=30_000
    )
    assert page.evaluate("window.__pwned") is None and page.locator("#objects img").count() == 0, "a name is text"

    page.locator('#objects [data-hide="1"]').click()
    page.wait_for_function("document.querySelector('#legend').innerText.includes('hidden')", timeout=30_000)
    assert "hidden (still exported)" in status(page), "said on the status line, not only in the list"
    assert page.locator("#prompter .sd-layers canvas, #prompter .sd-layers img").count() == 1
    page.locator('#objects [data-hide="1"]').click()
    page.wait_for_function("!document.querySelector('#legend').innerText.includes('hidden')", timeout=30_000)

    page.locator('#objects [data-delete="1"]').click()
    exported("1 object, 2 prompts")
    assert "deleted (Undo brings it back)" in status(page)
    page.keyboard.press("Control+z")  # undo brings it back
    exported("2 objects, 3 prompts")
    with page.expect_download(timeout=60_000) as download:
        page.locator("#download-json").click()
    saved = json.loads(Path(download.value.path()).read_text())
    page.keyboard.press("Delete")  # the edited object: object 1
    exported("1 object, 1 prompt")
    page.screenshot(path=str(ARTIFACTS / "demo-objects-1400x1000.png"), full_page=True)

    # Clear object takes the edited object's prompts; Start over takes everything; Undo brings all back.
    page.locator("#objects [data-select]").first.click()
    page.locator("#clear-object").click()
    exported("Nothing to export yet")
    page.keyboard.press("Control+z")
    exported("1 object, 1 prompt")
    with page.expect_file_chooser() as chooser:  # the saved file brings object 1 back, refinable
        page.locator("#load-json").click()
    chooser.value.set_files(download.value.path())
    page.wait_for_function(
        "document.querySelector('#status').innerText.includes('1 object to refine; 1 mask already shown, skipped')",
        timeout=60_000,
    )
    exported("2 objects, 3 prompts")  # object 2's mask is shown already: not added twice
    assert hostile in page.locator("#objects").inner_text(), "with its name"
    page.locator("#start-over").click()
    exported("Nothing to export yet")
    assert "Undo" in status(page)
    page.keyboard.press("Control+z")
    exported("2 objects, 3 prompts")
    # Esc deselects: the next click starts a new object, leaving the edited one as it was.
    page.keyboard.press("Escape")
    page.wait_for_function(
        "document.querySelector('#legend').innerText.includes('(editing) — no prompt yet')", timeout=30_000
    )
    click(0.8, 0.2)
    exported("3 objects, 4 prompts")
    page.close()

    assert [s["name"] for s in saved["shown"]] == [hostile, ""]
    row = dict(zip(saved["request"]["input_data"]["columns"], saved["request"]["input_data"]["data"][0]))
    points = np.array(json.loads(row["input_points"]))[0]
    px = w / bb["width"]
    assert np.allclose(points, [first, second], atol=px + 1e-6), "object 1 was refined by the click after selecting it"
    predictor = SamPredictor(engine)
    predictor.set_image(rgb)
    masks, _, _ = predictor.predict(points, np.array([1, 1]), multimask_output=False)
    assert np.array_equal(read_response(saved["response"])[0][0][0].mask, masks[0])


def tap(page, locator):
    """Tap the middle of what `locator` shows, where it is on the screen now."""
    box = locator.bounding_box()
    page.touchscreen.tap(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)


def test_on_a_phone_a_picked_example_is_brought_into_view_with_the_image_near_the_top(browser, server):
    phone = browser.new_context(viewport={"width": 390, "height": 844}, has_touch=True, is_mobile=True)
    page = phone.new_page()
    page.goto(server.url + "/", wait_until="load")
    page.wait_for_selector("#prompter .sd-stage", timeout=60_000)
    assert not page.locator("#plan").is_visible(), "the engine's details are collapsed"
    example = page.locator("#prompter .sd-example").nth(1)
    assert example.bounding_box()["y"] + example.bounding_box()["height"] <= 844, "the examples are on the first screen"
    example.click()
    page.wait_for_function("document.querySelector('#status').innerText.includes('encoded')", timeout=60_000)
    page.wait_for_timeout(300)
    image = page.locator("#prompter .sd-base").bounding_box()
    page.screenshot(path=str(ARTIFACTS / "demo-example-390x844.png"))
    assert 0 <= image["y"] <= 250, f"the image starts {image['y']:.0f} px down the screen"
    assert image["width"] >= 370, "the image takes the screen's width"
    # The bar under the image holds zoom, Undo, Redo and New object; the column's copies are not shown twice.
    new_object = page.locator("#prompter .sd-bar [data-press=new-object]")
    assert new_object.is_visible() and new_object.bounding_box()["y"] + new_object.bounding_box()["height"] <= 844
    assert not page.locator("#new-object").is_visible() and not page.locator("#undo").is_visible()
    page.touchscreen.tap(image["x"] + image["width"] * 0.4, image["y"] + image["height"] * 0.5)
    page.wait_for_function("document.querySelector('#legend').innerText.includes('Object 1 (editing)')", timeout=60_000)
    # Tapped where they are seen (a locator's tap first scrolls a sticky element to its place in the flow).
    tap(page, new_object)
    page.touchscreen.tap(image["x"] + image["width"] * 0.7, image["y"] + image["height"] * 0.3)
    page.wait_for_function(
        "document.querySelector('#export-status').innerText.includes('2 objects, 2 prompts')", timeout=60_000
    )
    tap(page, page.locator("#prompter .sd-bar [data-press=undo]"))
    page.wait_for_function(
        "document.querySelector('#export-status').innerText.includes('1 object, 1 prompt')", timeout=60_000
    )
    page.screenshot(path=str(ARTIFACTS / "demo-phone-bar-390x844.png"))

    # Two fingers spread twice apart zoom 2x about their midpoint; then moved together they pan; a pinch adds no prompt.
    cx, cy = round(image["x"] + image["width"] * 0.5), round(image["y"] + image["height"] * 0.5)
    cdp = phone.new_cdp_session(page)
    fingers(cdp, "touchStart", [(cx - 40, cy), (cx + 40, cy)])
    for k in range(1, 9):
        fingers(cdp, "touchMove", [(cx - 40 - 5 * k, cy), (cx + 40 + 5 * k, cy)])
    page.wait_for_function("document.querySelector('#prompter .sd-stage').dataset.zoom === '2'", timeout=10_000)
    for k in range(1, 5):
        fingers(cdp, "touchMove", [(cx - 80 + 10 * k, cy), (cx + 80 + 10 * k, cy)])
    fingers(cdp, "touchEnd", [])
    page.wait_for_timeout(300)
    matrix = page.evaluate(
        "(() => { const m = new DOMMatrix(getComputedStyle(document.querySelector('#prompter .sd-content')).transform);"
        " return [m.a, m.e]; })()"
    )
    assert matrix[0] == 2 and matrix[1] == pytest.approx(-(cx - image["x"]) + 40, abs=1), (
        "zoomed about the midpoint, then panned"
    )
    assert "1 object, 1 prompt" in page.locator("#export-status").inner_text()
    phone.close()


def fingers(cdp, kind: str, points: list) -> None:
    """A multi-touch event through Chrome's DevTools protocol (Playwright's touchscreen has one finger)."""
    cdp.send(
        "Input.dispatchTouchEvent",
        {"type": kind, "touchPoints": [{"x": x, "y": y, "id": i} for i, (x, y) in enumerate(points)]},
    )


def _detail_answers(page) -> list:
    """Every /sam-demo/detail exchange of `page` from now on: (request JSON, response JSON)."""
    answers = []

    def keep(response):
        if response.url.endswith("/sam-demo/detail") and response.status == 200:
            answers.append((json.loads(response.request.post_data), response.json()))

    page.on("response", keep)
    return answers


def test_zoom_about_the_cursor_click_pan_and_sharp_edges(browser, server, tmp_path):
    big = tmp_path / "big.jpg"
    Image.fromarray(photo(2400, 1600)).save(big, quality=92)
    page = open_with_image(browser, server, {"width": 1400, "height": 1000}, big)
    page.evaluate(PROBE)
    page.evaluate("window.__painted.detail = 0")
    answers = _detail_answers(page)
    bb = page.locator("#prompter .sd-base").bounding_box()
    sx_per, sy_per = 2400 / bb["width"], 1600 / bb["height"]  # image pixels per CSS pixel, unzoomed

    def image_point(sx, sy, z, px, py):
        """The image point under screen point (sx, sy) after zooming by z about (px, py)."""
        return (px - bb["x"] + (sx - px) / z) * sx_per, (py - bb["y"] + (sy - py) / z) * sy_per

    def transform():
        """The view transform (zoom, x and y offset in CSS pixels) as the page applies it."""
        return page.evaluate(
            "(() => { const m = new DOMMatrix(getComputedStyle(document.querySelector('#prompter .sd-content')).transform);"
            " return [m.a, m.e, m.f]; })()"
        )

    # Two wheel notches up about P zoom 4x (each notch at most 2x); the image point under P stays.
    # (Whole CSS pixels: Chromium delivers mouse events at whole pixels.)
    px, py = round(bb["x"] + bb["width"] * 0.62), round(bb["y"] + bb["height"] * 0.41)
    page.mouse.move(px, py)
    for _ in range(2):
        page.mouse.wheel(0, -400)
    page.wait_for_function("document.querySelector('#prompter .sd-stage').dataset.zoom === '4'", timeout=10_000)
    # The zoom button tells the scale of the photo's own pixels: 4x the fit of 2400 px into the stage.
    assert page.locator("#zoom-fit").inner_text() == f"{math.floor(400 * bb['width'] / 2400 + 0.5)}%"
    clicks = [(px, py), (px - 131, py + 77)]
    for sx, sy in clicks:
        before = page.evaluate("window.__painted.click")
        page.mouse.click(sx, sy)
        page.wait_for_function(f"window.__painted.click > {before}", timeout=60_000)
        page.keyboard.press("n")
        page.wait_for_function(f"window.__painted.click > {before + 1}", timeout=60_000)
    with page.expect_download(timeout=60_000) as download:
        page.locator("#download-json").click()
    export = json.loads(Path(download.value.path()).read_text())
    points = [json.loads(row[1])[0][0] for row in export["request"]["input_data"]["data"]]
    for (sx, sy), got in zip(clicks, points):
        want = image_point(sx, sy, 4, px, py)
        assert abs(got[0] - want[0]) <= 0.5 and abs(got[1] - want[1]) <= 0.5, (got, want)

    # Zoomed in, the layers drawn are the full-resolution mask under each screen pixel (not the
    # 1280-px display layer blown up): the last detail answer, against the exported masks.
    page.wait_for_function("window.__painted.detail > 0", timeout=60_000)
    page.wait_for_timeout(500)  # no newer view is coming
    asked = answers[-1][0]  # the page asks only for the layers it lacks for a region: gather them
    drawn_uris = {k: v for a, answer in answers if a["region"] == asked["region"] for k, v in answer["png"].items()}
    x0, y0, x1, y1 = asked["region"]
    z, tx, ty = transform()
    want = [-tx / z * sx_per, -ty / z * sy_per, (bb["width"] - tx) / z * sx_per, (bb["height"] - ty) / z * sy_per]
    assert z == 4 and np.allclose([x0, y0, x1, y1], want, atol=1e-3), "the region is what the viewport shows"
    assert asked["size"] == [round(bb["width"]), round(bb["height"])], "at the screen's resolution"
    with page.expect_download(timeout=60_000) as masks_download:
        page.locator("#download-zip").click()
    masks = zipfile.ZipFile(masks_download.value.path())

    out_w, out_h = asked["size"]
    rows, cols = sample_indices(y0, y1, out_h, 1600), sample_indices(x0, x1, out_w, 2400)
    drawn = [np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))) for uri in drawn_uris.values()]
    full = [np.asarray(Image.open(io.BytesIO(masks.read(name)))) > 127 for name in sorted(masks.namelist())]
    assert len(full) == 2  # (the layers drawn for the region: each object's, edited or not)
    for index in drawn:
        assert index.shape == (out_h, out_w)
    for mask in full:
        sampled = mask[np.ix_(rows, cols)]
        # The fill (index 1) lies inside the mask and the mask inside fill and outline (index 2), but
        # where a logit is within float rounding of 0 (the upscale is computed two ways).
        best = min(np.mean((sampled & (index == 0)) | (~sampled & (index == 1))) for index in drawn)
        assert best < 1e-4, "a drawn layer is the full-resolution mask, pixel for pixel"
    page.screenshot(path=str(ARTIFACTS / "demo-zoomed-1400x1000.png"))

    # Pan with the arrow keys and by space+drag; the view clamps at the image's edges; 0 fits.
    z, tx, ty = transform()
    page.keyboard.press("ArrowRight")
    assert transform()[1] < tx, "ArrowRight shows more of the right"
    # space pans while the mouse is over the image (elsewhere it scrolls the page): the download
    # clicked above scrolled the page to its link, so the image is brought back into view first
    page.locator("#prompter .sd-stage").scroll_into_view_if_needed()
    stage = page.locator("#prompter .sd-stage").bounding_box()
    px, py = stage["x"] + stage["width"] / 2, stage["y"] + stage["height"] / 2
    page.mouse.move(px, py)
    page.keyboard.down(" ")
    page.mouse.down()
    page.mouse.move(px + 5000, py + 5000, steps=3)
    page.mouse.up()
    page.keyboard.up(" ")
    z, tx, ty = transform()
    assert z == 4 and tx == 0 and ty == 0, "dragged past the top-left corner, the view stops there"
    assert "2 objects, 2 prompts" in page.locator("#export-status").inner_text(), "a pan adds no prompt"
    for _ in range(6):
        page.keyboard.press("-")
    assert transform() == [1, 0, 0]
    page.keyboard.press("+")
    page.keyboard.press("0")
    assert (
        transform() == [1, 0, 0]
        and page.locator("#zoom-fit").inner_text() == f"{math.floor(100 * bb['width'] / 2400 + 0.5)}%"
    )
    page.close()


def test_segment_everything_can_be_cancelled_and_undone(browser, server):
    page = open_with_image(browser, server, {"width": 1400, "height": 1000}, PHOTOS / "coffee.png")
    assert "finds no mask" in page.locator("#everything-note").inner_text(), "random weights: said beforehand"
    assert not page.locator("#cancel-everything").is_visible()
    page.keyboard.press("s")
    page.locator("#cancel-everything").click()  # shown as soon as the job is asked for
    page.wait_for_function(  # (one read: while Gradio redraws the job's panel its text can be empty for a moment)
        "(() => { const t = document.querySelector('#status').innerText;"
        " return t.includes('cancelled') && t.includes('Segment everything'); })()",
        timeout=60_000,
    )
    page.wait_for_selector("#cancel-everything", state="hidden", timeout=30_000)
    page.screenshot(path=str(ARTIFACTS / "demo-everything-cancelled-1400x1000.png"), full_page=True)
    page.close()


def test_categories_by_list_keys_and_picker_reach_coco_and_yolo(browser, server, tmp_path):
    page = open_with_image(browser, server, {"width": 1400, "height": 1000}, PHOTOS / "chelsea.png")
    page.evaluate(PROBE)
    bb = page.locator("#prompter .sd-base").bounding_box()

    click = functools.partial(click_painted, page, bb)

    def legend_has(text):
        page.wait_for_function(
            f"document.querySelector('#legend').innerText.includes({json.dumps(text)})", timeout=30_000
        )

    click(0.3, 0.4)
    page.locator("#categories").fill("cat\ncup\n<i>bowl</i>")
    page.locator("#categories").blur()  # the list is sent when it loses focus
    legend_has("<i>bowl</i>")
    assert page.evaluate("document.querySelector('details.sd-categories').open"), "left open, as the user had it"
    page.keyboard.press("2")  # the edited object: the list's second category
    legend_has("Object 1 (cup)")
    page.keyboard.press("n")
    click(0.7, 0.6)
    page.keyboard.press("1")
    legend_has("Object 2 (cat)")
    page.keyboard.press("7")  # past the list: nothing changes, and the status line says why
    page.wait_for_function(
        "document.querySelector('#status').innerText.includes('Key 7 sets category 7, and the list has 3')",
        timeout=10_000,
    )
    legend_has("Object 2 (cat)")
    page.locator('#objects [data-category="1"]').select_option("<i>bowl</i>")  # the picker
    legend_has("Object 2 (<i>bowl</i>)")
    assert page.locator("#objects i").count() == 0, "a category is text"
    page.screenshot(path=str(ARTIFACTS / "demo-categories-1400x1000.png"), full_page=True)
    with page.expect_download(timeout=60_000) as coco_download:
        page.locator("#download-coco-polygons").click()
    with page.expect_download(timeout=60_000) as yolo_download:
        page.locator("#download-yolo").click()
    coco_path, yolo_path = tmp_path / "coco-polygons.json", tmp_path / "yolo-seg.zip"
    coco_download.value.save_as(coco_path)
    yolo_download.value.save_as(yolo_path)
    page.close()
    coco = COCO(str(coco_path))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == ["cat", "cup", "<i>bowl</i>"]
    assert [a["category_id"] for a in coco.loadAnns(coco.getAnnIds())] == [2, 3]
    with zipfile.ZipFile(yolo_path) as archive:
        labels = archive.read("labels/chelsea.txt").decode().splitlines()
    assert [line.split()[0] for line in labels] == ["1", "2"]


def test_a_set_of_images_labelled_with_d_and_keys_and_exported_whole(browser, server, tmp_path):
    """3 images uploaded at once; one click each, moving with D; categories by keys; the whole set's
    COCO holds 3 images and 3 annotations with their file names and categories. Image 2's encode is
    done in the background by the time D is pressed after the first click on image 1."""
    paths = []
    for i, name in enumerate(["rocket.jpg", "coffee.png", "astronaut.png"]):
        path = tmp_path / f"{i + 1}-{name.split('.')[0]}.png"
        Image.fromarray(photo(400, 300, name)).save(path)
        paths.append(str(path))
    page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page.goto(server.url + "/", wait_until="load")
    page.wait_for_selector("#prompter .sd-stage", timeout=60_000)
    page.evaluate(PROBE)
    page.set_input_files("input[type=file]:has(+ #add-images)", paths)
    page.wait_for_function("document.querySelector('#status').innerText.includes('Image 1 of 3')", timeout=60_000)
    page.locator("#categories").fill("rocket\ncup\nperson")
    page.locator("#categories").blur()
    page.wait_for_function("document.querySelector('#legend').innerText.includes('person')", timeout=30_000)
    for k, key in enumerate(["1", "2", "3"]):
        bb = page.locator("#prompter .sd-base").bounding_box()
        click_painted(page, bb, 0.5, 0.5)
        page.keyboard.press(key)
        page.wait_for_function(
            f"document.querySelector('#legend').innerText.includes({json.dumps(['(rocket)', '(cup)', '(person)'][k])})",
            timeout=30_000,
        )
        if k < 2:
            page.keyboard.press("d")
            page.wait_for_function(
                f"document.querySelector('#status').innerText.includes('Image {k + 2} of 3')", timeout=60_000
            )
            assert "(cached embedding" in status(page), "encoded in the background before D"
    page.wait_for_function("document.querySelector('#images input').value.startsWith('3/3')", timeout=30_000)
    page.keyboard.press("a")  # back to image 2: its object shown again
    page.wait_for_function("document.querySelector('#status').innerText.includes('Image 2 of 3')", timeout=60_000)
    page.wait_for_function("document.querySelector('#legend').innerText.includes('(cup)')", timeout=30_000)
    assert "1 object" in status(page)
    # Back on an image that has edits, the next click counts (the session had applied the page's
    # earlier events: the new list started from nothing and its first events were taken as seen).
    bb = page.locator("#prompter .sd-base").bounding_box()
    click_painted(page, bb, 0.3, 0.3)
    page.wait_for_function("document.querySelector('#objects').innerText.includes('2 points')", timeout=30_000)
    page.screenshot(path=str(ARTIFACTS / "demo-workspace-1400x1000.png"), full_page=True)
    with page.expect_download(timeout=60_000) as download:
        page.locator("#download-set-coco").click()
    download.value.save_as(tmp_path / "set.json")
    # The polygon tolerance: out of range, the field says so and nothing downloads; in range, the
    # polygons' link asks for it.
    tolerance = page.locator("#polygon-tolerance")
    tolerance.fill("25")
    tolerance.press("Tab")  # told as the field is left, before any link is clicked
    assert "The polygon tolerance is 0 to 10 pixels" in page.locator("#tolerance-problem").inner_text()
    page.locator("#download-set-coco-polygons").click()
    assert page.evaluate("!document.querySelector('#polygon-tolerance').checkValidity()")
    assert "The polygon tolerance is 0 to 10 pixels" in page.locator("#tolerance-problem").inner_text()
    tolerance.fill("3")
    tolerance.press("Tab")
    assert page.locator("#tolerance-problem").inner_text() == "", "fixed: the message goes"
    tolerance.fill("0")
    with page.expect_download(timeout=60_000) as polygons:
        page.locator("#download-set-coco-polygons").click()
    assert polygons.value.url.endswith("/coco-polygons.json?tolerance=0")
    polygons.value.save_as(tmp_path / "polygons.json")
    page.close()
    assert len(COCO(str(tmp_path / "polygons.json")).getAnnIds()) == 3
    coco = COCO(str(tmp_path / "set.json"))
    assert [i["file_name"] for i in coco.loadImgs(coco.getImgIds())] == [
        "1-rocket.png",
        "2-coffee.png",
        "3-astronaut.png",
    ]
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == ["rocket", "cup", "person"]
    assert [(a["image_id"], a["category_id"]) for a in coco.loadAnns(coco.getAnnIds())] == [(1, 1), (2, 2), (3, 3)]


def test_a_folder_is_added_as_a_set_in_name_order(browser, server, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, name in enumerate(["coffee.png", "rocket.jpg"]):
        Image.fromarray(photo(320, 240, name)).save(folder / f"{2 - i}-{name.split('.')[0]}.png")
    (folder / "notes.txt").write_text("not an image")
    page = browser.new_page(viewport={"width": 390, "height": 844}, color_scheme="dark")
    page.goto(server.url + "/", wait_until="load")
    page.wait_for_selector("#prompter .sd-stage", timeout=60_000)
    page.set_input_files("input[type=file]:has(+ #add-folder)", str(folder))
    page.wait_for_function("document.querySelector('#status').innerText.includes('Image 1 of 2')", timeout=60_000)
    assert "1-rocket.png" in status(page) and page.locator("#images input").input_value().startswith(
        "1/2 · 1-rocket.png"
    )
    page.screenshot(path=str(ARTIFACTS / "demo-workspace-390x844-dark.png"), full_page=True)
    # Remove asks first: dismissed, the image stays; accepted, it goes and the other one opens.
    answers = iter([False, True])
    page.on("dialog", lambda dialog: dialog.accept() if next(answers) else dialog.dismiss())
    page.locator("#next-image").focus()
    assert page.locator("#next-image").get_attribute("aria-label") == "Next image (D)", "named for screen readers"
    page.locator("#remove-image").hover()
    assert page.locator("#remove-image").get_attribute("title") == "Remove this image from the set"
    assert page.locator("#remove-image").get_attribute("aria-label") == "Remove this image from the set"
    page.locator("#remove-image").click()
    page.wait_for_function("document.querySelector('#status').innerText.includes('Kept 1-rocket.png')", timeout=30_000)
    page.locator("#remove-image").click()
    page.wait_for_function(
        "document.querySelector('#status').innerText.includes('Removed 1-rocket.png from the set')", timeout=60_000
    )
    assert "Image 1 of 1: 2-coffee.png" in status(page)
    page.close()
