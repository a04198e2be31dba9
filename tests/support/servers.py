"""Servers for tests and benchmarks: an ASGI app on uvicorn in a thread, or `python app.py` in a child process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import uvicorn

REPOSITORY = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RunningServer:
    """Serve an ASGI app with uvicorn in a thread on 127.0.0.1 (for HTTP and browser tests)."""

    def __init__(self, app):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", timeout_graceful_shutdown=1)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=10)


class AppProcess:
    """`python app.py` in a child process, on a free port, until closed."""

    def __init__(self, model: str, dtype: str | None, root: Path | None = None, args: tuple[str, ...] = ()):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "app.py", "--model", model, "--port", str(self.port), *args]
        if dtype:
            cmd += ["--dtype", dtype]
        root = root or REPOSITORY
        self.process = subprocess.Popen(cmd, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited: {self.process.stderr.read().decode()[-2000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.3)
        raise RuntimeError("the server did not start in 300 s")

    def wait_for_examples(self, count: int, timeout_s: float = 600) -> None:
        """Wait for the start-up warm-up: `count` example photos in the embedding cache (encoded or
        read from the store), so that timings that follow do not share the CPU with it."""
        deadline = time.monotonic() + timeout_s
        while httpx.get(self.url + "/health", timeout=30).json()["cache"]["entries"] < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the start-up warm-up did not encode {count} examples in {timeout_s:.0f} s")
            time.sleep(0.5)

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def idle_cpu_rate(self, seconds: float = 2.0) -> float:
        """CPU seconds per second that the server spends while no request comes."""
        before = self.cpu_seconds()
        time.sleep(seconds)
        return (self.cpu_seconds() - before) / seconds

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
