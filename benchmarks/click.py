"""Clicks: a cached embedding -> three full-resolution masks on an 1800x1200 photo, against the naive
recipe (processor per click + model + post_process_masks); and the default dtype's masks against fp32."""

from __future__ import annotations

from functools import partial

import numpy as np

from benchmarks.naive import Naive
from benchmarks.report import Row, timed
from sam_demo.engine.config import EngineConfig
from sam_demo.engine.loading import load_engine
from tests.support.photos import photo


def bench_click(engine, naive: Naive, rounds: int) -> Row:
    image = photo(1800, 1200)
    embedding = engine.embed(image)
    reference = naive.embed(image)
    rng = np.random.default_rng(0)
    clicks = rng.uniform([0, 0], [1800, 1200], size=(rounds + 3, 2))
    ours, base = [], []
    for i, xy in enumerate(clicks):
        t_naive = timed(partial(naive.click, image, reference, xy), engine.device)
        t_ours = timed(
            partial(engine.decode, embedding, xy[None, None], np.ones((1, 1), np.int64), full_frame=False),
            engine.device,
        )
        if i >= 3:  # warm-up
            base.append(t_naive * 1000)
            ours.append(t_ours * 1000)
    return Row("click, 3 masks at 1800x1200", "ms", ours, base)


def agreement(engine, path: str) -> str:
    """Mean mask IoU of the engine's default dtype against fp32, over clicks on one photo."""
    if engine.exact:
        return "the exact mode: bit-equal to the transformers recipe"
    exact = load_engine(EngineConfig(model=path, device=engine.info.device, exact=True))
    image = photo(1800, 1200)
    fast, ref = engine.embed(image), exact.embed(image)
    ious = []
    for xy in np.random.default_rng(1).uniform([0, 0], [1800, 1200], size=(10, 2)):
        a = engine.decode(fast, xy[None, None], np.ones((1, 1), np.int64)).masks[0]
        b = exact.decode(ref, xy[None, None], np.ones((1, 1), np.int64)).masks[0]
        ious += [np.logical_and(x, y).sum() / max(1, np.logical_or(x, y).sum()) for x, y in zip(a, b)]
    return f"{engine.info.dtype} vs float32 masks: mean IoU {np.mean(ious):.3f}, min {np.min(ious):.3f}"
