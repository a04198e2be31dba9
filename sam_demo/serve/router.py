"""Ray Serve request router that sends requests for one image to one replica (affinity.py's rule).

The gateway calls the scorer's handle with the keyword argument `route_key` (affinity.route_key
of the request's image). This router ranks the live replicas by `affinity.preference`, with the
replicas' queue lengths from Serve's cache, probing those it has no fresh figure for. A request
without a key goes to the least loaded replica. Serve calls `choose_replicas` again, after a
backoff, while every ranked replica is full (at `max_ongoing_requests`), and drops a dead replica
from the candidates: its images move to the others, and no other image moves.
"""

from __future__ import annotations

from ray.serve.request_router import PendingRequest, RequestRouter, RunningReplica

from sam_demo.serve.affinity import DEFAULT_MAX_IMBALANCE, preference

ROUTE_KEY = "route_key"  # the handle call's keyword argument that carries the image's key


class ImageAffinityRouter(RequestRouter):
    def initialize_state(self, max_imbalance: int = DEFAULT_MAX_IMBALANCE) -> None:
        self.max_imbalance = max_imbalance

    async def choose_replicas(
        self, candidate_replicas: list[RunningReplica], pending_request: PendingRequest | None = None
    ) -> list[list[RunningReplica]]:
        if pending_request is None:
            return [candidate_replicas]
        # Every rank below is every candidate: when all are full, wait before asking again.
        pending_request.routing_context.should_backoff = True
        key = pending_request.kwargs.get(ROUTE_KEY)
        if not key:
            return [candidate_replicas]
        by_id = {replica.replica_id.unique_id: replica for replica in candidate_replicas}
        loads = await self._loads(candidate_replicas)
        return [[by_id[unique_id]] for unique_id in preference(key, list(by_id), loads, self.max_imbalance)]

    async def _loads(self, replicas: list[RunningReplica]) -> dict[str, int]:
        """Ongoing requests per replica id: from Serve's queue-length cache, else probed; a replica
        that does not answer the probe is left out (and counts as idle)."""
        loads, unknown = {}, []
        for replica in replicas:
            queue_len = self.replica_queue_len_cache.get(replica.replica_id)
            if queue_len is None:
                unknown.append(replica)
            else:
                loads[replica.replica_id.unique_id] = queue_len
        if unknown:
            for replica, queue_len in await self._probe_queue_lens(unknown, 0):
                if queue_len is not None:
                    loads[replica.replica_id.unique_id] = queue_len
        return loads
