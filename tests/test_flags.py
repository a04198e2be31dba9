"""The shared flags: what they turn into (`EngineConfig`), their defaults from the environment, and
the one-line refusals."""

from __future__ import annotations

import argparse

import pytest

from sam_demo.flags import SPACES_STORE, add_engine_flags, default_embedding_store, engine_config


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_engine_flags(parser)
    return parser.parse_args(argv)


@pytest.mark.parametrize(
    ("argv", "store", "store_bytes"),
    [
        ((), None, 2 << 30),
        (("--embedding-store", "/tmp/s"), "/tmp/s", 2 << 30),
        (("--embedding-store", "/tmp/s", "--embedding-store-gb", "0.5"), "/tmp/s", 1 << 29),
        (("--embedding-store", "/tmp/s", "--embedding-store-gb", "0"), "/tmp/s", 0),
    ],
)
def test_the_store_flags_become_the_engine_config(monkeypatch, argv, store, store_bytes):
    monkeypatch.delenv("SPACE_ID", raising=False)
    config = engine_config(parse(*argv))
    assert (config.embedding_store, config.embedding_store_bytes) == (store, store_bytes)


@pytest.mark.parametrize("gb", ["-1", "inf", "nan", "1e30"])
def test_a_bound_that_is_negative_or_not_finite_is_refused(gb):
    with pytest.raises(ValueError, match="must be from 0 \\(no store\\) to 1,000,000"):
        engine_config(parse("--embedding-store", "/tmp/s", "--embedding-store-gb", gb))


@pytest.mark.parametrize(
    ("space", "data_exists", "expected"),
    [("user/app", True, SPACES_STORE), ("user/app", False, None), (None, True, None)],
)
def test_a_space_with_persistent_storage_keeps_its_embeddings_there(monkeypatch, space, data_exists, expected):
    if space:
        monkeypatch.setenv("SPACE_ID", space)
    else:
        monkeypatch.delenv("SPACE_ID", raising=False)
    monkeypatch.setattr("sam_demo.flags.os.path.isdir", lambda path: data_exists and path == "/data")
    assert default_embedding_store() == expected
