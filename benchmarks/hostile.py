"""Peak memory and time of single hostile or heavy `/score` requests (`python -m benchmarks --hostile`).

Each request goes to a fresh server, a child process (`python app.py`), warmed up by one small
request. Then its peak RSS is reset (`/proc/<pid>/clear_refs`, 5); the row is VmHWM after the
answer less VmRSS before it: what that one request cost at its peak. `--ui-app DIR` runs another
checkout's app.py in the same harness.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import numpy as np

from benchmarks.report import Row
from tests.support.photos import b64_png
from tests.support.requests import score_body
from tests.support.servers import AppProcess

WARM_UP_IMAGE = np.full((300, 450, 3), 90, dtype=np.uint8)


def cases() -> list[tuple[str, str]]:
    """(name, request body) of each measured request."""

    def ramp(side: int) -> str:  # a side x side PNG that compresses to almost nothing
        row = np.linspace(0, 255, side, dtype=np.uint8)
        return b64_png(np.stack([np.tile(row, (side, 1))] * 3, axis=-1), optimize=True)

    def boxes(n: int, side: int) -> str:  # n boxes over the top-left quarter, each a little to the right
        step, edge = side // 200, side // 60
        return json.dumps([[edge + i * step, edge, side // 2 + i * step, side // 2] for i in range(n)])

    big, mid = ramp(6000), ramp(2000)
    small = b64_png(WARM_UP_IMAGE, optimize=True)
    return [
        ("6000x6000 PNG, 12 boxes", score_body(big, boxes=boxes(12, 6000))),
        ("6000x6000 PNG, 100 boxes", score_body(big, boxes=boxes(100, 6000))),
        ("2000x2000 PNG, 1 box", score_body(mid, boxes=boxes(1, 2000))),
        ("2000x2000 PNG, 64 boxes", score_body(mid, boxes=boxes(64, 2000))),
        ("8 MB Python tuple in input_boxes", score_body(small, boxes="(" + "1, " * 2_700_000 + ")")),
        ("10,000 points in one group (109 kB)", score_body(small, points=json.dumps([[[5, 5]] * 10_000]))),
    ]


def request_memory(model: str, dtype: str | None, app: Path | None = None) -> list:
    def post(text: str) -> httpx.Response:
        return httpx.post(
            server.url + "/score", content=text, timeout=900, headers={"Content-Type": "application/json"}
        )

    def field(name: str) -> float:
        status = Path(f"/proc/{server.process.pid}/status").read_text().splitlines()
        return int(next(line for line in status if line.startswith(name + ":")).split()[1]) / 1024

    rows = []
    warm_up = score_body(b64_png(WARM_UP_IMAGE, optimize=True), boxes="[[10, 10, 200, 200]]")
    for name, text in cases():
        server = AppProcess(model, dtype, app)
        try:
            post(warm_up).raise_for_status()
            Path(f"/proc/{server.process.pid}/clear_refs").write_text("5")
            before = field("VmRSS")
            start = time.perf_counter()
            answer = post(text)
            seconds = time.perf_counter() - start
            peak = field("VmHWM") - before
        finally:
            server.close()
        note = f"HTTP {answer.status_code} in {seconds:.1f} s"
        if answer.status_code >= 400:
            note += f": {answer.json().get('error', '')[:100]}"
        rows.append(Row(f"peak memory: {name}", "MiB", [peak], None, note=note))
    return rows
