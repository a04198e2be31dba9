"""The batch job on Ray Data: rows as a dataset, SAM in an actor pool, one model per worker.

Used by `python -m sam_demo.batch --engine ray`. Locally it starts Ray on this machine; with
`--ray-address` (or RAY_ADDRESS) it joins a cluster and ships this package to the workers
(`runtime_env` py_modules). Workers get one GPU each where the cluster has GPUs. Results come
back in input order and are written by the same writer as the local engine, so the JSON Lines
output is identical.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

from sam_demo.batch.job import BatchRow, run_row
from sam_demo.endpoint.fetch import FetchPolicy
from sam_demo.engine.automatic_mask_generator import EverythingConfig
from sam_demo.engine.config import EngineConfig


class SamWorker:
    """A Ray Data actor: loads the engine once, then answers rows (batch_size 1)."""

    def __init__(self, config: EngineConfig, policy: FetchPolicy, threads: int, everything: EverythingConfig | None):
        import torch

        from sam_demo.engine.loading import load_engine

        # Ray sets one thread per actor; the driver's count makes results equal to the local engine's.
        torch.set_num_threads(threads)
        self.engine = load_engine(config)
        self.policy = policy
        self.everything = everything

    def __call__(self, batch: dict) -> dict:
        records = []
        for item in batch["item"]:
            row = BatchRow(**json.loads(item))
            records.append(json.dumps(run_row(row, self.engine, self.policy, self.everything)))
        return {"record": records}


def run_ray(
    rows: list[BatchRow],
    config: EngineConfig,
    policy: FetchPolicy,
    workers: int | None = None,
    address: str | None = None,
    threads: int | None = None,
    everything: EverythingConfig | None = None,
) -> Iterator[dict]:
    """Yield one output dict per row, in input order, computed by a pool of SAM actors.

    threads: torch threads per actor (default: this process's count).
    """
    import ray
    import torch

    import sam_demo

    if not rows:
        return
    if not ray.is_initialized():
        ray.init(address=address, runtime_env={"py_modules": [sam_demo]}, log_to_driver=False)
    gpus = int(ray.cluster_resources().get("GPU", 0))
    if workers is None:
        workers = max(1, gpus)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    items = [
        {"item": json.dumps({"file": r.file, "row": r.row, "values": r.values, "problem": r.problem})} for r in rows
    ]
    dataset = ray.data.from_items(items).map_batches(
        SamWorker,
        fn_constructor_kwargs={
            "config": config,
            "policy": policy,
            "threads": threads or torch.get_num_threads(),
            "everything": everything,
        },
        batch_size=1,
        concurrency=workers,
        num_gpus=1 if gpus else 0,
    )
    for result in dataset.iter_rows():
        yield json.loads(result["record"])
