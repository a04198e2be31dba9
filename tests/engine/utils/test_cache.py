"""The embedding cache: content-keyed, bounded in bytes, thread-safe, single-flight."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from sam_demo import EngineConfig, SamPredictor, load_engine
from sam_demo.engine.utils.cache import ByteLRUCache


@pytest.fixture()
def counted_engine(checkpoint, monkeypatch):
    """A fresh engine (empty cache of 3 embeddings) whose encoder calls are counted."""
    engine = load_engine(EngineConfig(model=str(checkpoint), device="cpu", dtype="float32", exact=True))
    entry_bytes = engine.embed(image(99)).nbytes
    engine.cache.clear()
    engine.cache.max_bytes = 3 * entry_bytes
    calls = []
    original = engine.model.get_image_embeddings

    def counting(pixel_values):
        calls.append(time.monotonic())
        time.sleep(0.2)  # long enough for a second thread to arrive while this one encodes
        return original(pixel_values)

    monkeypatch.setattr(engine.model, "get_image_embeddings", counting)
    return engine, calls


def image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (60, 80, 3), dtype=np.uint8)


def test_same_image_is_encoded_once(counted_engine):
    engine, calls = counted_engine
    predictor = SamPredictor(engine)
    predictor.set_image(image(0))
    predictor.set_image(image(0).copy())  # equal pixels, another array
    SamPredictor(engine).set_image(image(0))  # another session
    assert len(calls) == 1
    predictor.set_image(image(1))
    assert len(calls) == 2


def test_concurrent_requests_for_a_new_image_encode_once(counted_engine):
    engine, calls = counted_engine
    barrier = threading.Barrier(4)
    results = []

    def worker():
        barrier.wait()
        results.append(engine.embed(image(7)))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert len(results) == 4 and all(r is results[0] for r in results)


def test_cache_is_bounded_in_bytes_and_evicts_lru(counted_engine):
    engine, calls = counted_engine
    for seed in (0, 1, 2):
        engine.embed(image(seed))
    engine.embed(image(0))  # refresh 0: 1 is now the oldest
    engine.embed(image(3))  # evicts 1
    stats = engine.cache_stats()
    assert stats.entries == 3 and stats.bytes <= stats.max_bytes
    assert len(calls) == 4
    engine.embed(image(0))
    assert len(calls) == 4
    engine.embed(image(1))
    assert len(calls) == 5


def test_failed_computation_is_not_cached_and_reaches_every_waiter():
    cache = ByteLRUCache(100, size_of=len)
    with pytest.raises(ZeroDivisionError):
        cache.get_or_compute("k", lambda: 1 / 0)
    assert "k" not in cache
    assert cache.get_or_compute("k", lambda: "value") == "value"
    assert cache.get_or_compute("big", lambda: "x" * 1000) == "x" * 1000  # larger than the bound: not kept
    assert "big" not in cache
