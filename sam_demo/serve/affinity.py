"""Which replica should answer a request for an image: rendezvous hashing with bounded imbalance.

A replica that has encoded an image keeps its embedding in its cache (~10 ms per click after,
against 0.1-20 s to encode again). So requests for one image should go to one replica, and that
replica should stay the same while replicas come and go. Rendezvous (highest-random-weight)
hashing does both: each replica gets a pseudo-random weight per image and the heaviest wins, so
a replica that leaves moves only the images it owned, and one that joins takes only the images
it now outweighs. Every router computes the same order with no shared state.

Affinity gives way to load only when it must: if the owner is more than `max_imbalance` requests
busier than the least busy replica, the request goes to the next replica in the image's order
that is within that bound (the least busy one always is), as prefix-aware LLM routers do.
Pure functions on strings and counts; the Ray Serve router (router.py) applies them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

DEFAULT_MAX_IMBALANCE = 8  # ongoing requests; about one encode's time in cache hits


def route_key(image: str) -> str:
    """The routing key of a request's image as sent (base64 text or URL): 32 hex digits."""
    return hashlib.blake2b(image.encode(), digest_size=16).hexdigest()


def _weight(key: str, replica: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{key}|{replica}".encode(), digest_size=8).digest(), "big")


def rendezvous_order(key: str, replicas: Sequence[str]) -> list[str]:
    """`replicas` (ids) from the key's owner down: by weight, heaviest first."""
    return sorted(replicas, key=lambda replica: _weight(key, replica), reverse=True)


def preference(key: str, replicas: Sequence[str], loads: Mapping[str, int], max_imbalance: int) -> list[str]:
    """The order in which to try `replicas` for `key`.

    loads: ongoing requests per replica id; a replica missing from it counts as idle.
    First comes the first replica in the key's rendezvous order whose load is at most
    `max_imbalance` above the least loaded one's; then the others, in rendezvous order.
    """
    order = rendezvous_order(key, replicas)
    if not order:
        return order
    least = min(loads.get(replica, 0) for replica in order)
    chosen = next(replica for replica in order if loads.get(replica, 0) <= least + max_imbalance)
    return [chosen, *(replica for replica in order if replica != chosen)]
