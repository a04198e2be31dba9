"""Encodes: a new image -> its embedding, ours in the default dtype, the naive recipe in fp32."""

from __future__ import annotations

from functools import partial

from benchmarks.naive import Naive
from benchmarks.report import Row, timed
from tests.support.photos import photo


def bench_encode(engine, naive: Naive, rounds: int) -> Row:
    images = [photo(1800, 1200, name) for name in ("rocket.jpg", "chelsea.png", "coffee.png", "astronaut.png")]
    ours, base = [], []
    for i in range(rounds + 1):
        image = images[i % len(images)]
        engine.cache.clear()
        t_ours = timed(partial(engine.embed, image), engine.device)
        t_naive = timed(partial(naive.embed, image), engine.device)
        if i >= 1:
            ours.append(t_ours * 1000)
            base.append(t_naive * 1000)
    return Row(f"encode ({engine.info.dtype} vs float32)", "ms", ours, base)
