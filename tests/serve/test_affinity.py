"""Rendezvous hashing with bounded imbalance (affinity.py): who owns an image, what moves, when load wins."""

from __future__ import annotations

from collections import Counter

from sam_demo.serve.affinity import preference, rendezvous_order, route_key

KEYS = [route_key(f"image-{i}") for i in range(2000)]


def owners(replicas: list[str]) -> dict[str, str]:
    return {key: rendezvous_order(key, replicas)[0] for key in KEYS}


def test_owners_are_spread_evenly_and_agree_between_routers():
    replicas = ["a", "b", "c", "d"]
    counts = Counter(owners(replicas).values())
    assert set(counts) == set(replicas) and min(counts.values()) > 0.8 * len(KEYS) / 4
    # Another router, with its replicas listed in another order, picks the same owners.
    assert owners(list(reversed(replicas))) == owners(replicas)


def test_a_replica_that_leaves_moves_only_its_own_images():
    before, after = owners(["a", "b", "c"]), owners(["a", "c"])
    moved = {key for key in KEYS if before[key] != after[key]}
    assert moved == {key for key in KEYS if before[key] == "b"} and moved


def test_a_replica_that_joins_takes_images_only_for_itself():
    before, after = owners(["a", "b", "c"]), owners(["a", "b", "c", "d"])
    moved = {key for key in KEYS if before[key] != after[key]}
    assert moved and all(after[key] == "d" for key in moved)
    assert 0.15 < len(moved) / len(KEYS) < 0.35  # about a quarter


def test_the_owner_keeps_an_image_until_it_is_over_the_imbalance_bound():
    replicas = ["a", "b", "c"]
    key = KEYS[0]
    order = rendezvous_order(key, replicas)
    owner, second, third = order
    assert preference(key, replicas, {}, 4) == order  # no load known: everyone idle
    assert preference(key, replicas, {owner: 4, second: 0, third: 0}, 4)[0] == owner  # at the bound
    # Over it: the next replica in the image's order that is within the bound, then the rest.
    assert preference(key, replicas, {owner: 5, second: 0, third: 0}, 4) == [second, owner, third]
    assert preference(key, replicas, {owner: 9, second: 7, third: 2}, 4) == [third, owner, second]
    assert preference(key, [], {}, 4) == []
