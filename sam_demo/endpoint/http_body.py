"""Read a request body with a size limit and a deadline, without holding more than the limit in memory."""

from __future__ import annotations

import asyncio

from starlette.requests import Request

__all__ = ["ByteBudget", "OverBudget", "read_limited"]


class OverBudget(Exception):
    """The bodies held at once would pass their `ByteBudget`."""


class ByteBudget:
    """Bytes that request bodies may hold at once, summed over requests: those arriving and those
    read but not yet answered. Used from the event loop's thread only (no lock)."""

    def __init__(self, limit: int):
        self.limit = limit
        self.held = 0

    def reserve(self, size: int) -> None:
        """Count `size` more bytes as held, or raise OverBudget (counting nothing)."""
        if self.held + size > self.limit:
            raise OverBudget(f"{self.held + size:,} bytes of request bodies at once is over {self.limit:,}")
        self.held += size

    def release(self, size: int) -> None:
        self.held -= size


async def read_limited(
    request: Request, limit: int, timeout_s: float | None = None, budget: ByteBudget | None = None
) -> bytes | None:
    """The body's bytes, or None as soon as it (or its declared Content-Length) is over `limit` bytes.

    Raises TimeoutError if the whole body has not arrived within `timeout_s` seconds (a client
    that sends a byte now and then would otherwise hold its place in the queue for ever), and
    OverBudget when its bytes so far would pass `budget`. The bytes returned stay reserved in
    `budget` (the caller releases them once it is done with the body); on any other outcome they
    are released here.
    """
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        return None
    chunks, size, kept = [], 0, False
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                if size + len(chunk) > limit:
                    return None
                if budget is not None:
                    budget.reserve(len(chunk))
                size += len(chunk)
                chunks.append(chunk)
        kept = True
        return b"".join(chunks)
    finally:
        if budget is not None and not kept:
            budget.release(size)
