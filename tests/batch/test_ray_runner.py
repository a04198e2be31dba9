"""--engine ray on a local Ray: the same JSON Lines as the local engine, row for row."""

from __future__ import annotations

import pytest

from sam_demo import EngineConfig
from sam_demo.batch.job import run_job, run_local
from sam_demo.endpoint.fetch import FetchPolicy

ray = pytest.importorskip("ray", reason="Ray is optional: pip install -r requirements-ray.txt")


def test_ray_output_equals_local_output(engine, checkpoint, job, tmp_path):
    from sam_demo.batch.ray_runner import run_ray

    folder, _ = job
    local, distributed = tmp_path / "local.jsonl", tmp_path / "ray.jsonl"
    run_job(folder, local, lambda rows: run_local(rows, engine, FetchPolicy()), progress=False)
    config = EngineConfig(model=str(checkpoint), device="cpu", dtype="float32", exact=True)
    try:
        summary = run_job(
            folder, distributed, lambda rows: run_ray(rows, config, FetchPolicy(), workers=2), progress=False
        )
    finally:
        ray.shutdown()
    assert summary["written"] == 6 and summary["errors"] == 2
    assert distributed.read_bytes() == local.read_bytes()
