"""The Serve gateway's `/health` report of the Scorer replicas, without a cluster: each replica's
answer, or "unreachable" for one that is dead, silent or not yet initialised by Serve."""

from __future__ import annotations

import asyncio

import pytest
from ray.exceptions import RayActorError, RayTaskError

from sam_demo.serve import gateway
from sam_demo.serve.gateway import ServeBackend


class _Replica:
    """A named actor whose `record_routing_stats.remote()` answers `outcome` (a dict, or raises it)."""

    def __init__(self, outcome):
        self.record_routing_stats = self
        self.outcome = outcome

    async def _answer(self):
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        if self.outcome == "silent":
            await asyncio.sleep(60)
        return self.outcome

    def remote(self):
        return self._answer()


@pytest.mark.parametrize(
    "outcome",
    [
        RayTaskError(  # what a replacement replica answered in CI until Serve had initialised it
            "record_routing_stats", "", RuntimeError("`initialize_callable` must be called before ...")
        ),
        RayActorError(),
        ValueError("Failed to look up actor"),
        "silent",
    ],
    ids=["not-initialised", "dead", "gone", "silent"],
)
def test_health_lists_a_replica_that_cannot_report_as_unreachable(monkeypatch, outcome):
    prefix = "SERVE_REPLICA::sam#Scorer#"
    replicas = {prefix + "a": _Replica({"replica": "a", "cache": {}}), prefix + "b": _Replica(outcome)}
    named = [{"name": name, "namespace": "serve"} for name in replicas]
    monkeypatch.setattr(gateway.ray.util, "list_named_actors", lambda all_namespaces: named)
    monkeypatch.setattr(gateway.ray, "get_actor", lambda name, namespace: replicas[name])
    monkeypatch.setattr(gateway, "STATS_TIMEOUT_S", 0.05)
    reports = asyncio.run(ServeBackend(None, None, "sam")._replica_reports())
    assert reports == [{"replica": "a", "cache": {}}, {"replica": "b", "state": "unreachable"}]
