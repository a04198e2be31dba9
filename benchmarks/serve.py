"""The endpoint on Ray Serve under a burst of clicks on a few images (`python -m benchmarks --serve`).

For 1 replica holding every CPU, and for 2 replicas holding half each, the same shuffled burst
(each of `images` photos clicked `requests / images` times, `clients` requests at once) runs under
the image-affine router ("ours") and under Serve's default router ("naive", power of two choices),
each on a fresh deployment of a local Ray. Rows: requests per second, encoder runs per 100
requests (the replicas' cache misses), and each request's time.
"""

from __future__ import annotations

import os
import random
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np

from benchmarks.report import Row
from tests.support.photos import b64_png
from tests.support.requests import score_body


def _burst(url: str, images: list[str], requests: int, clients: int, seed: int) -> tuple[float, list[float]]:
    """(seconds for the whole burst, each request's seconds); every answer must be a 200."""
    rng = random.Random(seed)
    bodies = [
        score_body(images[i % len(images)], points=f"[[[{rng.randrange(20, 600)}, {rng.randrange(20, 440)}]]]")
        for i in range(requests)
    ]
    rng.shuffle(bodies)

    def send(body: str) -> float:
        start = time.perf_counter()
        response = httpx.post(f"{url}/score", content=body, timeout=600)
        if response.status_code != 200:
            raise RuntimeError(f"/score answered {response.status_code}: {response.text[:200]}")
        return time.perf_counter() - start

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        latencies = list(pool.map(send, bodies))
    return time.perf_counter() - start, latencies


def _encoder_runs(url: str) -> int:
    report = httpx.get(f"{url}/health", timeout=30).json()
    return sum(r["cache"]["misses"] for r in report["replicas"] if "cache" in r)


def serve_rows(model: str, dtype: str | None, requests: int, images: int, clients: int = 8) -> list[Row]:
    import ray
    from ray import serve

    from sam_demo.engine.config import EngineConfig
    from sam_demo.serve.deployments import build_app
    from sam_demo.serve.settings import APP_NAME, ServeSettings

    cores = os.cpu_count() or 2
    rng = np.random.default_rng(0)
    photos = [b64_png(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8), optimize=True) for _ in range(images)]
    port = 8000 + int(rng.integers(100, 900))
    ray.init(num_cpus=cores, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    url = f"http://127.0.0.1:{port}"
    rows = []
    try:
        for replicas in (1, 2):
            results = {}
            for router in ("image", "default"):
                settings = ServeSettings(
                    engine=EngineConfig(model=model, device="cpu", dtype=dtype),
                    replicas=replicas,
                    router=router,
                    cpus_per_replica=cores // replicas,
                )
                serve.run(build_app(settings), name=APP_NAME, route_prefix="/")
                seconds, latencies = _burst(url, photos, requests, clients, seed=replicas)
                results[router] = (requests / seconds, _encoder_runs(url) * 100 / requests, latencies)
                serve.delete(APP_NAME)
            ours, naive = results["image"], results["default"]
            label = f"serve, {replicas} replica{'s' * (replicas > 1)}"
            note = (
                f"{replicas} x {cores // replicas} CPU; {requests} clicks on {images} photos (640x480), "
                f"{clients} at once; naive = Serve's default router"
            )
            rows += [
                Row(f"{label}: throughput", "req/s", [ours[0]], [naive[0]], higher_is_better=True, note=note),
                Row(f"{label}: encoder runs", "per 100 req", [ours[1]], [naive[1]]),
                Row(f"{label}: request", "ms", [s * 1000 for s in ours[2]], [s * 1000 for s in naive[2]]),
            ]
    finally:
        serve.shutdown()
        ray.shutdown()
    return rows
