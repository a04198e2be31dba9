"""The web demo as a person feels it: headless Chromium against a running server (`python -m benchmarks --ui`).

Every time is taken inside the page: from the `pointerdown` of a click to the prompt surface's
`sam-demo:painted` event (new mask pixels on screen), or from the last `pointermove` before the
mouse rests to the painted hover preview. The user clicks as an annotator does: three clicks on the
edited object, then undo, `PAUSE_S` after each mask appears. Server CPU per click is the server
process's CPU time from the click until 0.25 s after its paint, less what the idle server spends
in that time. `--ui-app DIR` runs another checkout's app.py (an older version) in the same harness.
Rows:

- click -> painted, one user, 1 object and 10 objects, unzoomed and zoomed 4x (there the sharp
  layers of the visible region come after the first paint: click -> sharp layers painted too);
- click -> painted while a second browser uploads new photos back to back (each runs the encoder);
- server CPU per click at 10 objects;
- hover: rest -> preview painted, and previews painted per second while the mouse moves slowly;
- D -> the next image of a set on screen, once the background has encoded it;
- click -> painted after the mouse rested on the spot until its preview showed (the decode is reused).

Needs Debian's Chromium (`apt-get install chromium`) and the playwright package.
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from benchmarks.report import Row
from sam_demo.demo.example_photos import example_photos
from tests.support.chromium import CHROMIUM, FLAGS
from tests.support.photos import photo
from tests.support.servers import AppProcess

PAUSE_S = 0.3  # between a mask painted and the next click
PROBE = """() => {
  window.__sd = {down: [], move: [], key: [], click: [], preview: [], detail: [], image: []};
  document.addEventListener('keydown', () => __sd.key.push(performance.now()), true);
  document.addEventListener('pointerdown', () => __sd.down.push(performance.now()), true);
  document.addEventListener('pointermove', () => __sd.move.push(performance.now()), true);
  document.addEventListener('sam-demo:painted', (e) => __sd[e.detail.kind].push(performance.now()));
  // Versions before the painted signal (--ui-app of an older checkout) drew one overlay <img>:
  // count a paint when its new src is decoded and the next frame is drawn.
  const overlay = document.querySelector('#prompter .sd-overlay');
  if (overlay) new MutationObserver(async () => {
    if (overlay.getAttribute('src')) await overlay.decode().catch(() => {});
    requestAnimationFrame(() => { const c = new MessageChannel(); c.port1.onmessage = () => __sd.click.push(performance.now()); c.port2.postMessage(0); });
  }).observe(overlay, {attributes: true, attributeFilter: ['src']});
}"""


def photos(folder: Path, count: int, size=(1800, 1200)) -> list[Path]:
    """`count` distinct JPEG photos of `size` (each one a new image to the encoder)."""
    base = photo(*size).astype(np.int16)
    paths = []
    for i in range(count):
        shifted = np.clip(np.roll(base, 37 * i, axis=1) + (i * 7) % 23, 0, 255).astype(np.uint8)
        paths.append(folder / f"photo-{i}.jpg")
        Image.fromarray(shifted).save(paths[-1], quality=92)
    return paths


class Page:
    """One user's tab: upload, click, hover, with the in-page probe installed."""

    def __init__(self, browser, url: str):
        self.page = browser.new_page(viewport={"width": 1400, "height": 1000})
        self.page.goto(url + "/", wait_until="load")
        self.page.wait_for_selector("#prompter .sd-stage", timeout=120_000)
        self.page.evaluate(PROBE)

    def upload(self, path: Path, timeout_ms: int = 300_000) -> None:
        before = self.page.evaluate("document.querySelector('#prompter .sd-base').getAttribute('src') || ''")
        self.page.set_input_files("#image-input input[type=file]", str(path))
        self.page.wait_for_function(
            "(before) => (document.querySelector('#prompter .sd-base').getAttribute('src') || '') !== before "
            "&& document.querySelector('#status').innerText.includes('encoded')",
            arg=before,
            timeout=timeout_ms,
        )
        self.box = self.page.locator("#prompter .sd-base").bounding_box()

    def at(self, fx: float, fy: float) -> tuple[float, float]:
        return self.box["x"] + self.box["width"] * fx, self.box["y"] + self.box["height"] * fy

    def measure(self) -> None:
        """Where the fitted image is now (a set's strip above it moves and shrinks it)."""
        self.page.wait_for_timeout(300)  # the layout settled
        self.box = self.page.locator("#prompter .sd-base").bounding_box()

    def count(self, kind: str) -> int:
        return self.page.evaluate(f"__sd.{kind}.length")

    def wait_painted(self, kind: str, count: int, timeout_ms: int = 60_000) -> float:
        self.page.wait_for_function(f"__sd.{kind}.length > {count}", timeout=timeout_ms)
        return self.page.evaluate(f"__sd.{kind}[__sd.{kind}.length - 1]")

    def click(self, fx: float, fy: float, rest_first: bool = False, kind: str = "click") -> float:
        """Click at a fraction of the stage; ms from pointerdown to the new mask painted (`kind`
        "detail": to the zoomed-in region's sharp layers painted).

        rest_first: move there and wait for the hover preview first, as a person does who looks
        before clicking (the click then reuses the preview's decode)."""
        if rest_first:
            before = self.count("preview")
            self.page.mouse.move(*self.at(fx, fy))
            self.wait_painted("preview", before, timeout_ms=10_000)
        n = self.count(kind)
        self.page.mouse.click(*self.at(fx, fy))
        painted = self.wait_painted(kind, n)
        return painted - self.page.evaluate("__sd.down[__sd.down.length - 1]")

    def add_images(self, paths: list[Path], timeout_ms: int = 600_000) -> None:
        """Add the photos as a set (#add-images) and wait until the background has encoded them all."""
        with self.page.expect_file_chooser() as chooser:
            self.page.locator("#add-images").click()
        chooser.value.set_files([str(p) for p in paths])
        self.page.wait_for_function(
            "(() => { const t = document.querySelector('#workspace-progress')?.innerText || '';"
            " return t.includes('images encoded') && !t.includes('in the background'); })()",
            timeout=timeout_ms,
        )
        self.measure()

    def next_image(self) -> float:
        """Press D; ms from the key to the next image of the set on screen (its view in: clickable)."""
        n = self.count("image")
        self.page.locator("body").press("d")
        painted = self.wait_painted("image", n)
        took = painted - self.page.evaluate("__sd.key[__sd.key.length - 1]")
        self.measure()
        return took

    def zoom(self, notches: int) -> None:
        """Zoom about the stage's middle by wheel notches up (2x each) or down; 0 fits the image."""
        self.page.mouse.move(*self.at(0.5, 0.5))
        if notches == 0:
            self.page.keyboard.press("0")
        for _ in range(abs(notches)):
            self.page.mouse.wheel(0, -400 if notches > 0 else 400)
        zoom = 2 ** max(0, notches)  # times the fitted size
        self.page.wait_for_function(
            f"document.querySelector('#prompter .sd-stage').dataset.zoom === '{zoom}'", timeout=10_000
        )

    def clicks(
        self,
        spots,
        per_object: int = 3,
        pause_s: float = PAUSE_S,
        server=None,
        rest_first: bool = False,
        kind: str = "click",
    ) -> tuple[list[float], float]:
        """Click each spot, `per_object` clicks on the edited object, then undo them: an annotator's
        few clicks per object, at a steady object count, `pause_s` after each paint (a person looks
        at the mask before the next click). Returns each click's ms to painted, and with `server`
        its CPU ms per click: from the click until its panels are refreshed, less what the idle
        server spends in that time (Gradio's queue polls); undos are not counted."""
        times, cpu = [], 0.0
        idle = server.idle_cpu_rate() if server else 0.0
        for start in range(0, len(spots), per_object):
            group = spots[start : start + per_object]
            for fx, fy in group:
                before, start = (server.cpu_seconds() if server else 0.0), time.perf_counter()
                times.append(self.click(fx, fy, rest_first, kind))
                if server:
                    time.sleep(0.25)  # the panels' refresh
                    cpu += server.cpu_seconds() - before - idle * (time.perf_counter() - start)
                time.sleep(pause_s)
            for _ in group:
                self.press("#undo")
        return times, cpu * 1000 / len(spots)

    def press(self, selector: str) -> None:
        """Click a button that changes the layers on screen, and wait until they are painted."""
        n = self.count("click")
        self.page.locator(selector).click()
        self.wait_painted("click", n)

    def rest(self, fx: float, fy: float, settle_s: float = 0.4) -> float | None:
        """Move there and rest; ms from the last move to the preview painted (None: none came)."""
        self.page.mouse.move(*self.at(fx, fy), steps=3)
        moved = self.page.evaluate("__sd.move[__sd.move.length - 1]")
        time.sleep(settle_s)
        after = [t for t in self.page.evaluate("__sd.preview") if t >= moved]
        return after[-1] - moved if after else None  # the last one shows the resting position


def bench_ui(model: str, dtype: str | None, clicks: int, objects: int = 10, app: Path | None = None) -> list:
    """The UI rows (see the module docstring), as bench.Row. app: a checkout whose app.py to serve
    (an older version, for a before/after table; without hover it gets no hover rows)."""
    from playwright.sync_api import sync_playwright

    rng = np.random.default_rng(0)
    spots = lambda n: rng.uniform(0.1, 0.9, size=(n, 2))  # noqa: E731
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        images = photos(Path(tmp), 16)
        server = AppProcess(model, dtype, app)
        try:
            server.wait_for_examples(len(example_photos()))  # the start-up warm-up's encodes, not beside the clicks
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
                user = Page(browser, server.url)
                user.upload(images[0])
                for fx, fy in spots(3):  # warm-up (first paints, first requests)
                    user.click(fx, fy)
                user.press("#start-over")
                one, _ = user.clicks(spots(clicks))
                rows.append(Row("UI click -> painted, 1 object", "ms", one, None))
                user.zoom(2)
                one, _ = user.clicks(spots(clicks))
                rows.append(Row("UI click -> painted, 1 object, zoomed 4x", "ms", one, None))
                user.zoom(0)
                for fx, fy in spots(objects - 1):
                    user.click(fx, fy)
                    user.press("#new-object")  # the finished object's outline is redrawn thin
                many, cpu = user.clicks(spots(clicks), server=server)
                rows.append(Row(f"UI click -> painted, {objects} objects", "ms", many, None))
                user.zoom(2)
                many, _ = user.clicks(spots(clicks))
                rows.append(Row(f"UI click -> painted, {objects} objects, zoomed 4x", "ms", many, None))
                sharp, _ = user.clicks(spots(clicks), kind="detail")
                rows.append(
                    Row(
                        f"UI click -> sharp layers painted, {objects} objects, zoomed 4x",
                        "ms",
                        sharp,
                        None,
                        note="the visible region's layers at screen resolution, after the first paint",
                    )
                )
                user.zoom(0)
                rows.append(
                    Row(
                        f"UI server CPU per click, {objects} objects",
                        "ms",
                        [cpu],
                        None,
                        note="server process CPU time from each click until its panels are refreshed",
                    )
                )

                rest = [user.rest(fx, fy) for fx, fy in spots(clicks)]
                got = [r for r in rest if r is not None]
                if got:
                    rows.append(
                        Row(
                            "UI hover rest -> preview painted",
                            "ms",
                            got,
                            None,
                            note=f"{len(got)} of {len(rest)} rests got a preview",
                        )
                    )
                    rows.append(
                        Row(
                            "UI hover previews per second, slow move",
                            "1/s",
                            [hover_rate(user)],
                            None,
                            higher_is_better=True,
                        )
                    )
                    rested, _ = user.clicks(spots(clicks), rest_first=True)
                    rows.append(
                        Row(
                            f"UI click after its preview -> painted, {objects} objects",
                            "ms",
                            rested,
                            None,
                            note="the mouse rested until the hover preview showed, then clicked there",
                        )
                    )

                stop = threading.Event()
                uploads = []
                uploader = threading.Thread(target=upload_loop, args=(server.url, images[1:13], stop, uploads))
                uploader.start()
                time.sleep(1.0)
                busy, _ = user.clicks(spots(clicks))
                stop.set()
                uploader.join()
                rows.append(
                    Row(
                        "UI click -> painted, other user uploading",
                        "ms",
                        busy,
                        None,
                        note=f"{len(uploads)} uploads by the other user meanwhile, "
                        f"encode p50 {np.median(uploads) if uploads else float('nan'):.2f} s",
                    )
                )
                user.add_images(images[-3:])  # not among the other user's uploads
                moves = [user.next_image() for _ in range(2)]
                rows.append(
                    Row(
                        "UI D -> next image of a set on screen",
                        "ms",
                        moves,
                        None,
                        note="3 photos added as a set, the background done encoding them; each image opened anew",
                    )
                )
                browser.close()
        finally:
            server.close()
    return rows


def hover_rate(user: Page, seconds: float = 3.0) -> float:
    """Previews painted per second while the mouse crosses the image slowly (~20 moves/s)."""
    start = user.count("preview")
    t0 = time.perf_counter()
    steps = int(seconds * 20)
    for i in range(steps):
        user.page.mouse.move(*user.at(0.15 + 0.7 * i / steps, 0.3 + 0.4 * i / steps))
        time.sleep(max(0.0, t0 + (i + 1) / 20 - time.perf_counter()))
    elapsed = time.perf_counter() - t0
    return (user.count("preview") - start) / elapsed


def upload_loop(url: str, images: list[Path], stop: threading.Event, seconds: list[float]) -> None:
    """Another user: upload the images in turn until `stop`, recording each upload's time."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        other = Page(browser, url)
        i = 0
        while not stop.is_set():
            start = time.perf_counter()
            other.upload(images[i % len(images)])
            seconds.append(time.perf_counter() - start)
            i += 1
        browser.close()


def session_memory(
    model: str, dtype: str | None, sessions: int = 4, objects: int = 10, size=(4000, 3000), app: Path | None = None
) -> list:
    """Server memory per open session: `sessions` tabs each upload a distinct photo of `size`
    (12 MP by default) and make `objects` objects with one click each, then stay open.

    The row is the server's RSS growth over those tabs, less the embedding cache's growth (which
    /health reports; it is shared and bounded on its own), per session, in MiB. A first tab makes
    one object before the baseline is taken, so that what every server loads once is not counted.
    """
    from playwright.sync_api import sync_playwright

    def rss_mib() -> float:
        status = Path(f"/proc/{server.process.pid}/status").read_text()
        return int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1]) / 1024

    def cache_mib() -> float:
        return httpx.get(server.url + "/health", timeout=30).json()["cache"]["bytes"] / 2**20

    spots = np.random.default_rng(0).uniform(0.1, 0.9, size=(objects, 2))
    with tempfile.TemporaryDirectory() as tmp:
        images = photos(Path(tmp), sessions + 1, size)
        server = AppProcess(model, dtype, app)
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
                warm = Page(browser, server.url)
                warm.upload(images[-1])
                warm.click(0.5, 0.5)
                time.sleep(1.0)
                rss, cache = rss_mib(), cache_mib()
                tabs = []
                for path in images[:sessions]:
                    tabs.append(Page(browser, server.url))
                    tabs[-1].upload(path)
                    for fx, fy in spots:
                        tabs[-1].click(fx, fy)
                        tabs[-1].press("#new-object")
                time.sleep(2.0)
                per_session = ((rss_mib() - rss) - (cache_mib() - cache)) / sessions
                health = httpx.get(server.url + "/health", timeout=30).json()
                browser.close()
        finally:
            server.close()
    sessions_mib = health.get("sessions", {}).get("bytes", 0) / 2**20
    return [
        Row(
            f"UI server memory per session, {size[0] * size[1] / 1e6:.0f} MP, {objects} objects",
            "MiB",
            [per_session],
            None,
            note=f"RSS growth less the embedding cache's over {sessions} open tabs; "
            f"the session store counts {sessions_mib:.1f} MiB for all {sessions + 1} sessions",
        )
    ]
