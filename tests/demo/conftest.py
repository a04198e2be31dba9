"""Fixtures of the demo's tests: a demo context on the session's engine (with a background encoder for
sets of images), an uploaded photo, and three photos to make a set of."""

import pytest
from PIL import Image

from sam_demo.demo.handlers import DemoContext, on_image
from sam_demo.demo.workspace import BackgroundEncoder
from tests.support.demo import CAT
from tests.support.photos import asset
from tests.support.workspace import wait_for_background


@pytest.fixture()
def ctx(engine):
    return DemoContext(engine)


@pytest.fixture()
def uploaded(ctx):
    return on_image(ctx, CAT).state


@pytest.fixture()
def wctx(engine):
    engine.cache.clear()
    ctx = DemoContext(engine, background=BackgroundEncoder(engine, pause_s=0.01))
    yield ctx
    wait_for_background(ctx)  # no encode left running into the next test (or the interpreter's exit)


@pytest.fixture()
def photos(tmp_path) -> list[str]:
    """Three distinct photos (PNG files), and a text file posing as one."""
    paths = []
    for i, name in enumerate(["rocket.jpg", "coffee.png", "astronaut.png"]):
        path = tmp_path / f"{i + 1}-{name.split('.')[0]}.png"
        Image.fromarray(asset(name)[:240, :320]).save(path)
        paths.append(str(path))
    (tmp_path / "notes.png").write_text("not an image")
    return paths
