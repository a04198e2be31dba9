"""The web demo's live sessions by token: thread-safe, bounded in count, expiring when idle.

Gradio keeps each tab's `Session` in `gr.State`; this store also holds the latest one under its
unguessable token, for what runs outside Gradio's events (the click fast path, the hover preview,
the downloads) and
so that two events of one tab that overlap edit the latest state, one after the other, instead
of both editing the same stale copy.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from .render import ViewCache
from .session import Session

DEFAULT_MAX_SESSIONS = 256
DEFAULT_IDLE_SECONDS = 3600.0  # as long as Gradio keeps a closed tab's state


@dataclass
class _Entry:
    session: Session
    view: ViewCache
    touched: float


class SessionStore:
    """token -> the latest `Session` and what its browser was sent (`ViewCache`).

    Least recently used entries go past `max_sessions`, and any entry idle for `idle_seconds`.
    `edits_in_flight` counts edits being decoded now (the hover preview yields to them).
    """

    def __init__(self, max_sessions: int = DEFAULT_MAX_SESSIONS, idle_seconds: float = DEFAULT_IDLE_SECONDS,
                 clock=time.monotonic):
        self.max_sessions = max_sessions
        self.idle_seconds = idle_seconds
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self._edits = 0

    def __len__(self) -> int:
        with self._lock:
            self._expire()
            return len(self._entries)

    def put(self, session: Session) -> None:
        """Record `session` as the latest state of its token."""
        with self._lock:
            entry = self._entries.pop(session.token, None)
            if entry is None:
                entry = _Entry(session, ViewCache(), 0.0)
            entry.session, entry.touched = session, self._clock()
            self._entries[session.token] = entry
            self._expire()

    def get(self, token: str) -> Session | None:
        entry = self._entry(token)
        return None if entry is None else entry.session

    def latest(self, session: Session) -> Session:
        """The newest stored state of `session`'s token, or `session` itself if none is stored."""
        stored = self.get(session.token)
        return session if stored is None else stored

    def view(self, session: Session) -> ViewCache:
        """What `session`'s browser holds (empty for a session not stored: the browser gets everything)."""
        entry = self._entry(session.token)
        return ViewCache() if entry is None else entry.view

    def discard(self, token: str | None) -> None:
        with self._lock:
            self._entries.pop(token, None)

    @contextlib.contextmanager
    def editing(self, session: Session):
        """Hold `session`'s lock and yield a fork of its latest state; counts as an edit in flight."""
        with session.lock:
            with self._lock:
                self._edits += 1
            try:
                yield self.latest(session).fork()
            finally:
                with self._lock:
                    self._edits -= 1

    @property
    def edits_in_flight(self) -> int:
        return self._edits

    def _entry(self, token: str) -> _Entry | None:
        with self._lock:
            self._expire()
            entry = self._entries.get(token)
            if entry is not None:
                entry.touched = self._clock()
                self._entries.move_to_end(token)
            return entry

    def _expire(self) -> None:
        deadline = self._clock() - self.idle_seconds
        while self._entries:
            token, oldest = next(iter(self._entries.items()))
            if len(self._entries) <= self.max_sessions and oldest.touched >= deadline:
                break
            del self._entries[token]
