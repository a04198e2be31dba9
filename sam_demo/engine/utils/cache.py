"""A process-wide, thread-safe, byte-bounded LRU cache with single-flight computation.

The engine keys image embeddings by a hash of the image's pixels. Two threads that ask for
the same missing key at once run the computation once: the second waits for the first.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Generic, TypeVar

V = TypeVar("V")
DEFAULT_CACHE_BYTES = 512 << 20  # the engine's embeddings: ~120 of 4 MiB (fp32)


@dataclass(frozen=True)
class CacheStats:
    entries: int
    bytes: int
    max_bytes: int
    hits: int
    misses: int


class ByteLRUCache(Generic[V]):
    """LRU cache bounded by the summed `size_of(value)` of its entries.

    An entry larger than `max_bytes` is computed and returned but not kept.
    """

    def __init__(self, max_bytes: int, size_of: Callable[[V], int]):
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = max_bytes
        self._size_of = size_of
        self._entries: OrderedDict[str, tuple[V, int]] = OrderedDict()
        self._pending: dict[str, Future] = {}
        self._bytes = 0
        self._hits = 0
        self._misses = 0
        self._lock = threading.Lock()

    def get_or_compute(self, key: str, compute: Callable[[], V]) -> V:
        """Return the cached value for `key`, computing it (once across threads) if missing.

        If `compute` raises, every waiter gets the exception and nothing is cached.
        """
        return self.lookup(key, compute)[0]

    def lookup(self, key: str, compute: Callable[[], V]) -> tuple[V, bool]:
        """Like `get_or_compute`, also saying whether this call ran `compute` (a miss)."""
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                self._hits += 1
                return self._entries[key][0], False
            future = self._pending.get(key)
            owner = future is None
            if owner:
                future = self._pending[key] = Future()
                self._misses += 1
            else:
                self._hits += 1
        if not owner:
            return future.result(), False
        try:
            value = compute()
        except BaseException as exc:
            with self._lock:
                del self._pending[key]
            future.set_exception(exc)
            raise
        with self._lock:
            del self._pending[key]
            self._insert(key, value)
        future.set_result(value)
        return value, True

    def _insert(self, key: str, value: V) -> None:
        size = self._size_of(value)
        if size > self.max_bytes:
            return
        self._entries[key] = (value, size)
        self._bytes += size
        while self._bytes > self.max_bytes:
            _, (_, old_size) = self._entries.popitem(last=False)
            self._bytes -= old_size

    @property
    def computing(self) -> int:
        """How many computations are running now (or waiting for the encoder)."""
        with self._lock:
            return len(self._pending)

    def __contains__(self, key: str) -> bool:
        with self._lock:
            return key in self._entries

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(len(self._entries), self._bytes, self.max_bytes, self._hits, self._misses)
