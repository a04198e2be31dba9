"""Batch work on Ray Data: items as a dataset, SAM in an actor pool, one model per worker.

Used by `python -m sam_demo.batch --engine ray` (the job's rows) and `python -m sam_demo.precompute
--engine ray` (images into the embedding store). Locally it starts Ray on this machine; with
`--ray-address` (or RAY_ADDRESS) it joins a cluster and ships this package to the workers
(`runtime_env` py_modules). Workers get one GPU each where the cluster has GPUs. Results come
back in input order, so the batch job's JSON Lines output is the local engine's, byte for byte.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from functools import partial

from sam_demo.batch.job import BatchRow, run_row
from sam_demo.endpoint.fetch import FetchPolicy
from sam_demo.engine.automatic_mask_generator import EverythingConfig
from sam_demo.engine.config import EngineConfig

# What a worker does with one item: (item, engine, policy) -> a JSON-able result. A module-level
# function (or a partial of one), so Ray can ship it.
Work = Callable[[dict, object, FetchPolicy], dict]


class SamWorker:
    """A Ray Data actor: loads the engine once, then runs `work` on items (batch_size 1)."""

    def __init__(self, config: EngineConfig, policy: FetchPolicy, threads: int, work: Work):
        import torch

        from sam_demo.engine.loading import load_engine

        # Ray sets one thread per actor; the driver's count makes results equal to the local engine's.
        torch.set_num_threads(threads)
        self.engine = load_engine(config)
        self.policy = policy
        self.work = work

    def __call__(self, batch: dict) -> dict:
        return {"record": [json.dumps(self.work(json.loads(item), self.engine, self.policy)) for item in batch["item"]]}


def map_on_ray(
    items: list[dict],
    work: Work,
    config: EngineConfig,
    policy: FetchPolicy,
    workers: int | None = None,
    address: str | None = None,
    threads: int | None = None,
) -> Iterator[dict]:
    """Yield `work(item, engine, policy)` for each JSON-able item, in input order, computed by a
    pool of SAM actors. threads: torch threads per actor (default: this process's count)."""
    import ray
    import torch

    import sam_demo

    if not items:
        return
    if not ray.is_initialized():
        ray.init(address=address, runtime_env={"py_modules": [sam_demo]}, log_to_driver=False)
    gpus = int(ray.cluster_resources().get("GPU", 0))
    if workers is None:
        workers = max(1, gpus)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    dataset = ray.data.from_items([{"item": json.dumps(item)} for item in items]).map_batches(
        SamWorker,
        fn_constructor_kwargs={
            "config": config,
            "policy": policy,
            "threads": threads or torch.get_num_threads(),
            "work": work,
        },
        batch_size=1,
        concurrency=workers,
        num_gpus=1 if gpus else 0,
    )
    for result in dataset.iter_rows():
        yield json.loads(result["record"])


def run_ray(
    rows: list[BatchRow],
    config: EngineConfig,
    policy: FetchPolicy,
    workers: int | None = None,
    address: str | None = None,
    threads: int | None = None,
    everything: EverythingConfig | None = None,
) -> Iterator[dict]:
    """The batch job's rows on Ray: one output dict per row, in input order (see `map_on_ray`)."""
    items = [{"file": r.file, "row": r.row, "values": r.values, "problem": r.problem} for r in rows]
    yield from map_on_ray(items, partial(_answer_row, everything=everything), config, policy, workers, address, threads)


def _answer_row(item: dict, engine, policy: FetchPolicy, everything: EverythingConfig | None) -> dict:
    return run_row(BatchRow(**item), engine, policy, everything)
