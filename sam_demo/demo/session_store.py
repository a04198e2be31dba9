"""The web demo's live sessions by token: thread-safe, bounded in bytes and count, expiring when idle.

Gradio keeps each tab's `Session` in `gr.State`, without its decoded results (`Session.light`);
this store holds the latest full one under its unguessable token, for what runs outside Gradio's
events (the click fast path, the hover preview, the downloads) and so that two events of one tab
that overlap edit the latest state, one after the other, instead of both editing the same stale copy.

Memory: one budget for all sessions. Past it, the least recently used sessions are made light
(their logits go; their prompts, file and fixed masks stay), and the next edit remakes their masks
from the cached embedding at click speed. If light sessions still exceed it, the least recently
used are forgotten here; Gradio's state of their tab still holds their prompts, and the page's own
event resumes from it.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from sam_demo.demo.render import ViewCache
from sam_demo.demo.session import Session

DEFAULT_MAX_SESSIONS = 1024
DEFAULT_IDLE_SECONDS = 3600.0  # Gradio keeps a closed tab's state as long
DEFAULT_BUDGET_FRACTION = 0.25  # of the memory this process may use


def memory_limit_bytes() -> int:
    """Physical memory, or the container's (cgroup v2 / v1) limit where that is lower."""
    limit = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            limit = min(limit, int(Path(path).read_text().strip()))
        except (OSError, ValueError):  # absent, or "max"
            pass
    return limit


def default_budget_bytes() -> int:
    return int(memory_limit_bytes() * DEFAULT_BUDGET_FRACTION)


@dataclass(frozen=True)
class SessionStats:
    sessions: int
    light: int  # of them, made light (no decoded results held)
    bytes: int
    budget_bytes: int
    lightened: int  # times a session was made light to fit the budget
    forgotten: int  # sessions forgotten: idle, or to fit the budget or the count


@dataclass
class _Entry:
    session: Session
    view: ViewCache
    touched: float
    nbytes: int = 0

    def measure(self) -> int:
        self.nbytes = self.session.nbytes + self.view.nbytes
        return self.nbytes


class SessionStore:
    """token -> the latest `Session` and what its browser was sent (`ViewCache`).

    budget_bytes: bound of the sessions' summed `nbytes` (default: a quarter of the memory).
    Least recently used entries are made light, then forgotten, past it; they are forgotten past
    `max_sessions` too, and when idle for `idle_seconds`. `edits_in_flight` counts edits being
    decoded now (the hover preview yields to them).
    """

    def __init__(
        self,
        budget_bytes: int | None = None,
        max_sessions: int = DEFAULT_MAX_SESSIONS,
        idle_seconds: float = DEFAULT_IDLE_SECONDS,
        clock=time.monotonic,
    ):
        self.budget_bytes = default_budget_bytes() if budget_bytes is None else budget_bytes
        self.max_sessions = max_sessions
        self.idle_seconds = idle_seconds
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._bytes = 0
        self._lightened = 0
        self._forgotten = 0
        self._lock = threading.Lock()
        self._edits = 0

    def __len__(self) -> int:
        with self._lock:
            self._expire()
            return len(self._entries)

    def put(self, session: Session) -> None:
        """Record `session` as the latest state of its token (then fit the budget, sparing it)."""
        with self._lock:
            entry = self._entries.pop(session.token, None)
            if entry is None:
                entry = _Entry(session, ViewCache(), 0.0)
            self._bytes -= entry.nbytes
            entry.session, entry.touched = session, self._clock()
            self._bytes += entry.measure()
            self._entries[session.token] = entry
            self._expire()
            self._fit_budget(spare=session.token)

    def stats(self) -> SessionStats:
        with self._lock:
            self._expire()
            light = sum(1 for e in self._entries.values() if not e.session.results)
            return SessionStats(
                len(self._entries), light, self._bytes, self.budget_bytes, self._lightened, self._forgotten
            )

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

    def keep_photo(self, token: str, photo: bytes) -> None:
        """Keep the zoom photo made for `token`'s session in its view (counted in the budget)."""
        with self._lock:
            entry = self._entries.get(token)
            if entry is None:
                return
            self._bytes -= entry.nbytes
            entry.view.photo = photo
            self._bytes += entry.measure()
            self._fit_budget(spare=token)

    def discard(self, token: str | None) -> None:
        with self._lock:
            entry = self._entries.pop(token, None)
            if entry is not None:
                self._bytes -= entry.nbytes

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
            self._forget(token)

    def _fit_budget(self, spare: str) -> None:
        """Past the budget: make the least recently used sessions light, then forget them (not `spare`)."""
        for token, entry in list(self._entries.items()):
            if self._bytes <= self.budget_bytes:
                return
            if token != spare and (entry.session.results or entry.view.preview is not None or entry.view.photo):
                self._bytes -= entry.nbytes
                entry.session = entry.session.light()
                entry.view.preview = entry.view.photo = None
                self._bytes += entry.measure()
                self._lightened += 1
        for token in list(self._entries):
            if self._bytes <= self.budget_bytes:
                return
            if token != spare:
                self._forget(token)

    def _forget(self, token: str) -> None:
        self._bytes -= self._entries.pop(token).nbytes
        self._forgotten += 1
