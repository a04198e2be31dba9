"""Helpers for the tests of a set of images: a handler's status line and strip, a labelled set, the
set's routes, and waiting for the background encodes."""

from __future__ import annotations

import html
import json
import time

from fastapi import FastAPI
from fastapi.testclient import TestClient

from sam_demo.demo.handlers import DemoContext, on_prompt
from sam_demo.demo.routes import add_demo_routes
from sam_demo.demo.workspace_handlers import on_add_images, on_step
from tests.support.demo import events, point, stored


def status(result) -> str:
    """The status line of a handler's outputs (a `View`, or a workspace handler's longer tuple)."""
    return html.unescape(json.loads(result[1]["view"])["panels"]["status"])


def strip(result) -> dict:
    """The strip's update (the images dropdown) of a workspace handler's outputs."""
    return result[3]


def wait_for_background(ctx: DemoContext) -> None:
    deadline = time.monotonic() + 120
    while not ctx.background.idle():
        assert time.monotonic() < deadline, "the background encodes did not finish"
        time.sleep(0.05)


def labelled_set(ctx, photos):
    """The photos added as a set, the category list rocket, cup, and a click on the first: a rocket."""
    session = stored(ctx, on_add_images(ctx, photos, None)[0])
    session.set_categories(["rocket", "cup"])
    ctx.sessions.put(session)
    return on_prompt(
        ctx, events(session, point(160, 120), {"type": "category", "object": 0, "category": "rocket"}), session
    ).state


def two_labelled(ctx, photos):
    """`labelled_set`, then D and a click on the second image: a cup. Returns both images' states."""
    one = labelled_set(ctx, photos)
    two = on_step(ctx, 1, one)[0]
    two = on_prompt(ctx, events(two, point(100, 100), {"type": "category", "object": 0, "category": "cup"}), two).state
    return one, two


def set_client(ctx) -> TestClient:
    """The demo's routes (the set's downloads among them) on `ctx`'s stores."""
    app = FastAPI()
    add_demo_routes(app, ctx.engine, ctx.sessions, ctx.workspaces)
    return TestClient(app)
