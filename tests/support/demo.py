"""Helpers for the demo's in-process tests: the page's prompt events, its panels, and the downloads."""

from __future__ import annotations

import json

from sam_demo.demo.exports import ExportOptions
from sam_demo.demo.routes import EXPORTS
from tests.support.photos import PHOTOS

CAT = str(PHOTOS / "chelsea.png")  # 451x300


def point(x, y, label=1) -> dict:
    return {"type": "point", "x": x, "y": y, "label": label}


def candidate(index) -> dict:
    return {"type": "candidate", "index": index}


def box(x0, y0, x1, y1) -> dict:
    return {"type": "box", "x0": x0, "y0": y0, "x1": x1, "y1": y1}


def events(session, *items) -> str:
    """The prompter's value after `items`: every event on this image so far (they are cumulative)."""
    return json.dumps({"token": session.token, "events": list(items)})


def panels(view) -> dict:
    """The status line, legend and export links that a handler's view puts on the page (HTML)."""
    return json.loads(view.prompter["view"])["panels"]


def stored(ctx, session):
    """The session's full state in the store (handlers give Gradio's state a light one, without results)."""
    return ctx.sessions.get(session.token)


def export(ctx, session, kind: str, folder=None, tolerance: float | None = None):
    """Build a download as the server does when its link is clicked (with ?tolerance= if given);
    with `folder`, write it there."""
    options = (
        ExportOptions(ctx.engine.max_pixels) if tolerance is None else ExportOptions(ctx.engine.max_pixels, tolerance)
    )
    content = EXPORTS[kind][1](stored(ctx, session), options)
    if folder is None:
        return content
    path = folder / f"saved.{kind}"
    path.write_bytes(content)
    return str(path)
