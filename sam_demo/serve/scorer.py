"""A Scorer replica of the Serve app: one engine, answering parsed /score requests as the single server does.

torch and the engine are imported when a replica starts, not when this module is imported (the
driver that builds the application never loads them).
"""

from __future__ import annotations

import asyncio

import ray
from ray import serve

from sam_demo.serve.settings import ServeSettings

__all__ = ["Scorer"]


class Scorer:
    """A replica: one engine, answering parsed requests (scoring.answer)."""

    def __init__(self, settings: ServeSettings):
        import torch

        from sam_demo.engine.loading import load_engine
        from sam_demo.engine.utils.heap import map_large_blocks

        map_large_blocks()
        # One torch thread per CPU the replica holds (float32 sums may change with the count).
        torch.set_num_threads(max(1, int(settings.cpus_per_replica)))
        self.engine = load_engine(settings.engine)
        self.settings = settings
        self.slots = asyncio.Semaphore(settings.server.score_concurrency)
        self.replica = serve.get_replica_context().replica_id.unique_id
        self.computing_or_waiting = 0  # only the replica's event loop changes it

    async def score(self, rows: list, route_key: str = "") -> tuple[int, list | dict]:
        """(HTTP status, JSON payload) for a request's parsed rows. `route_key` is for the router."""
        from sam_demo.endpoint.scoring import answer

        server = self.settings.server
        self.computing_or_waiting += 1
        try:
            async with self.slots:
                return await asyncio.to_thread(answer, rows, self.engine, server.fetch, server.limits)
        finally:
            self.computing_or_waiting -= 1

    def record_routing_stats(self) -> dict:
        """This replica in /health (Serve's routing-stats hook, also read by the gateway)."""
        from sam_demo.endpoint.scoring import engine_report

        return {
            "replica": self.replica,
            "node": ray.get_runtime_context().get_node_id(),
            "computing_or_waiting": self.computing_or_waiting,
            **engine_report(self.engine),
        }
