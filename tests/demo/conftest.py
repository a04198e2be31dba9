"""Fixtures of the demo's tests: a demo context on the session's engine, and an uploaded photo."""

import pytest

from sam_demo.demo.handlers import DemoContext, on_image
from tests.support.demo import CAT


@pytest.fixture()
def ctx(engine):
    return DemoContext(engine)


@pytest.fixture()
def uploaded(ctx):
    return on_image(ctx, CAT).state
