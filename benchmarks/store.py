"""The embedding store: a known image's first mask read from the store against a fresh encode,
and the store's own read and write per entry.

- first mask: an image the memory cache does not hold (as after a restart, an eviction or on
  another replica) -> its embedding -> three masks for one click on a 1800x1200 photo. Ours: the
  embedding read from the store; the baseline: encoded, the same engine in the same process,
  interleaved.
- read / write per entry: `EmbeddingStore.get` (read, checksum, tensor) and `put` (serialize,
  fsync, rename under the lock), the entry in the engine's dtype.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from benchmarks.report import Row, timed
from tests.support.photos import photo

CLICK = {"points_xy": np.array([[[900.0, 600.0]]]), "labels": np.array([[1]])}


def store_rows(engine, rounds: int) -> list[Row]:
    """Rows for an engine with a store (`engine.store`, empty)."""
    images = [photo(1800, 1200, name) for name in ("rocket.jpg", "chelsea.png", "coffee.png", "astronaut.png")]
    for image in images:  # the stored side's entries
        engine.embed(image)
    store, features = engine.store, engine.embed(images[0]).features
    keys = [engine.embed(image).key for image in images]
    stored, fresh, reads, writes = [], [], [], []
    for i in range(rounds + 1):
        image = images[i % len(images)]
        engine.cache.clear()
        t_stored = timed(partial(_first_mask, engine, image), engine.device)
        engine.cache.clear()
        real_store, engine.store = engine.store, None  # the same engine, encoding
        t_fresh = timed(partial(_first_mask, engine, image), engine.device)
        engine.store = real_store
        t_read = timed(partial(store.get, keys[i % len(keys)], engine.features_shape, features.dtype), engine.device)
        t_write = timed(partial(store.put, f"bench-{i}", features, (1200, 1800)), engine.device)
        if i >= 1:  # the first round warms up
            stored.append(t_stored * 1000)
            fresh.append(t_fresh * 1000)
            reads.append(t_read * 1000)
            writes.append(t_write * 1000)
    stats = store.stats()
    assert stats.corrupt == 0 and stats.hits >= rounds, stats
    size = f"{features.numel() * features.element_size() / 2**20:.0f} MiB {str(features.dtype).removeprefix('torch.')}"
    return [
        Row("first mask: stored image (vs a fresh encode)", "ms", stored, fresh),
        Row(f"store read per entry ({size})", "ms", reads, None),
        Row(f"store write per entry ({size}, fsynced)", "ms", writes, None),
    ]


def _first_mask(engine, image) -> None:
    prediction = engine.decode(engine.embed(image), **CLICK)
    assert prediction.masks.shape[1] == 3
