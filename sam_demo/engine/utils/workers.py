"""Thread pools whose threads run torch on a given number of intra-op threads.

`torch.set_num_threads` called in a thread sets that thread's intra-op threads, and also the count
that every thread not yet started with torch takes up: a pool whose initializer sets 1 leaves every
later thread of the process (an encode's, a request's) on one thread. `torch_thread_pool` starts its
threads at once, then puts that default back.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

import torch

__all__ = ["ordered_map", "torch_thread_pool"]

Item = TypeVar("Item")
Result = TypeVar("Result")


def torch_thread_pool(workers: int, torch_threads: int, name: str) -> ThreadPoolExecutor:
    """A pool of `workers` threads, each running torch on `torch_threads` intra-op threads, started
    now; the process's default for threads started later is left as it was."""
    default = torch.get_num_threads()
    started = threading.Barrier(workers + 1)

    def start() -> None:
        torch.set_num_threads(torch_threads)
        torch.get_num_threads()  # the thread's first torch call: it takes the count, before the default is back
        started.wait()

    pool = ThreadPoolExecutor(workers, thread_name_prefix=name, initializer=start)
    for _ in range(workers):  # each submit starts a thread while the others wait in `start`
        pool.submit(int)
    started.wait()
    torch.set_num_threads(default)
    return pool


def ordered_map(
    pool: ThreadPoolExecutor, fn: Callable[[Item], Result], items: Iterable[Item], ahead: int
) -> Iterator[tuple[Item, Result]]:
    """(item, fn(item)) in the items' order, computed on `pool` at most `ahead` items ahead of the
    consumer. Closing the iterator early cancels what has not started; what has runs to its end and
    is dropped."""
    pending: list[tuple[Item, Future]] = []
    items = iter(items)
    try:
        while True:
            for item in items:
                pending.append((item, pool.submit(fn, item)))
                if len(pending) >= ahead:
                    break
            if not pending:
                return
            item, future = pending.pop(0)
            yield item, future.result()
    finally:
        for _, future in pending:
            future.cancel()
