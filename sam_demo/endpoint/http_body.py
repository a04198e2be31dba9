"""Read a request body with a size limit and a deadline, without holding more than the limit in memory."""

from __future__ import annotations

import asyncio

from starlette.requests import Request


async def read_limited(request: Request, limit: int, timeout_s: float | None = None) -> bytes | None:
    """The body's bytes, or None as soon as it (or its declared Content-Length) is over `limit` bytes.

    Raises TimeoutError if the whole body has not arrived within `timeout_s` seconds (a client
    that sends a byte now and then would otherwise hold its place in the queue for ever).
    """
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        return None
    chunks, size = [], 0
    async with asyncio.timeout(timeout_s):
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
    return b"".join(chunks)
