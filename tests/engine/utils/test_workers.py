"""Thread pools on a given number of torch threads, and their ordered map."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from sam_demo.engine.utils.workers import ordered_map, torch_thread_pool


def test_the_pool_runs_on_its_threads_and_leaves_the_default_of_later_threads():
    default = torch.get_num_threads()
    if default == 1:
        pytest.skip("one torch thread by default here: a pool of one-thread workers changes nothing")
    pool = torch_thread_pool(2, 1, "test-pool")
    seen = {pool.submit(lambda: (threading.get_ident(), torch.get_num_threads())).result() for _ in range(20)}
    assert {threads for _, threads in seen} == {1}
    later = []
    thread = threading.Thread(target=lambda: later.append(torch.get_num_threads()))
    thread.start()
    thread.join()
    assert later == [default] and torch.get_num_threads() == default, "a thread started later keeps the default"
    pool.shutdown()


def test_ordered_map_keeps_the_order_and_runs_a_bounded_way_ahead():
    pool = torch_thread_pool(3, 1, "test-map")
    started, lock = [], threading.Lock()

    def work(item: int) -> int:
        with lock:
            started.append(item)
        time.sleep(0.002 * (8 - item % 8))  # later items finish first
        return item * item

    consumed = []
    for item, result in ordered_map(pool, work, range(40), ahead=4):
        assert result == item * item
        with lock:
            assert len(started) <= len(consumed) + 4, "at most `ahead` items from the one consumed on"
        consumed.append(item)
    assert consumed == list(range(40))

    started.clear()
    for item, _ in ordered_map(pool, work, range(40), ahead=4):
        if item == 5:
            break
    pool.shutdown(wait=True)
    assert len(started) <= 5 + 4, "closing early starts nothing more"
