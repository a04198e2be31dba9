"""The endpoint server's settings: address, API key, body limits, admission, request limits, fetching.

Plain data, no web stack (a command builds them from its flags before anything heavy is loaded).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sam_demo.endpoint.fetch import FetchPolicy
from sam_demo.endpoint.wire import RequestLimits

__all__ = ["ServerConfig"]


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 7860
    api_key: str | None = None  # when set, /score needs "Authorization: Bearer <key>"
    max_body_bytes: int = 64 << 20
    body_timeout_s: float = 30.0  # for the whole /score body; 408 past it
    score_concurrency: int = 2  # /score requests computed at once
    score_queue: int = 16  # /score requests that may wait for them; more get 503 at once
    body_readers: int = 256  # /score bodies that may be arriving at once (each slow one holds little)
    limits: RequestLimits = field(default_factory=RequestLimits)
    fetch: FetchPolicy = field(default_factory=FetchPolicy)
