"""The endpoint on Ray Serve (local Ray, 2 CPUs, 2 replicas of the tiny random SAM): it answers as the
single server does, byte for byte; image-affine routing encodes each image once where Serve's default
router does not; and a replica killed in the middle of a burst costs only 503s, never a hung or wrong
answer."""

from __future__ import annotations

import importlib
import json
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import httpx
import numpy as np
import pytest

from sam_demo.endpoint.engine_backend import EngineBackend
from sam_demo.endpoint.http import add_api_routes
from sam_demo.endpoint.settings import ServerConfig
from sam_demo.endpoint.wire import COLUMNS, RequestLimits
from sam_demo.flags import EngineConfig
from sam_demo.serve.affinity import rendezvous_order, route_key
from tests.support.photos import asset, b64_png
from tests.support.servers import REPOSITORY, RunningServer, free_port

ray = pytest.importorskip("ray", reason="Ray is optional: pip install -r requirements-ray.txt")
serve = pytest.importorskip("ray.serve")

from sam_demo.serve.cli import app_builder, settings_from_config  # noqa: E402
from sam_demo.serve.deployments import build_app  # noqa: E402
from sam_demo.serve.settings import APP_NAME, SCORER, ServeSettings  # noqa: E402

ROOT = REPOSITORY
CONFIG = ServerConfig(max_body_bytes=2 << 20, limits=RequestLimits(max_rows=3, max_groups=70))


def engine_config(checkpoint: Path) -> EngineConfig:
    """The single server's and the replicas': conftest's `engine`'s (float32 on CPU)."""
    return EngineConfig(model=str(checkpoint), device="cpu", dtype="float32", exact=True)


def body(rows: list[list]) -> bytes:
    return json.dumps(
        {"input_data": {"columns": list(COLUMNS), "index": list(range(len(rows))), "data": rows}}
    ).encode()


def random_image(seed: int, hw=(120, 160)) -> str:
    return b64_png(np.random.default_rng(seed).integers(0, 256, (*hw, 3), dtype=np.uint8))


def point_request(image: str, x: int = 40, y: int = 30) -> bytes:
    return body([[image, f"[[[{x}, {y}]]]", "", "[[1]]", False]])


@pytest.fixture(scope="module")
def single(checkpoint):
    """The single-process server's /score and /health with the same config, engine config and torch
    threads as a replica (1 per CPU; float32 sums may differ in the last bit with the thread count),
    and an engine of its own (the session's caches embeddings made with other thread counts)."""
    import torch
    from fastapi import FastAPI

    from sam_demo import load_engine

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    engine = load_engine(engine_config(checkpoint))
    app = FastAPI()
    add_api_routes(app, EngineBackend(engine, CONFIG), CONFIG)
    try:
        with RunningServer(app) as running:
            yield running.url
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", configure_logging=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()
    ray.shutdown()


def deploy(checkpoint: Path, router: str) -> None:
    """2 replicas on the 2 CPUs."""
    settings = ServeSettings(
        engine=engine_config(checkpoint),
        server=CONFIG,
        replicas=2,
        router=router,
    )
    serve.run(build_app(settings), name=APP_NAME, route_prefix="/")


@pytest.fixture(scope="module")
def image_routed(cluster, checkpoint):
    deploy(checkpoint, "image")
    return cluster


def health(url: str) -> dict:
    return httpx.get(f"{url}/health", timeout=30).json()


def live_replicas(url: str) -> list[dict]:
    return [r for r in health(url)["replicas"] if "cache" in r]


def encoder_runs(url: str) -> int:
    """Cache misses summed over the live replicas: each is one run of the image encoder."""
    return sum(r["cache"]["misses"] for r in live_replicas(url))


def post(url: str, content: bytes) -> httpx.Response:
    return httpx.post(f"{url}/score", content=content, timeout=120)


def test_serve_answers_as_the_single_server_byte_for_byte(image_routed, single):
    cat, cup = b64_png(asset("chelsea.png")), b64_png(asset("coffee.png"))
    requests = {
        "box": body([[cat, "", "[[10, 10, 300, 250]]", "", False]]),
        "points, multimask, two rows": body(
            [
                [cup, "[[[100, 100], [200, 150]], [[300, 200]]]", "", "[[1, 0], [1]]", True],
                [cat, "[[[5, 5]]]", "", "", False],
            ]
        ),
        "70 boxes": body([[cat, "", json.dumps([[i, i, 200 + i, 150 + i] for i in range(70)]), "", False]]),
        "not JSON": b"{bad",
        "no input_data": b'{"data": []}',
        "a column missing": json.dumps({"input_data": {"columns": ["image"], "data": [[cat]]}}).encode(),
        "a point outside the image": body([[cat, "[[[5000, 10]]]", "", "", False]]),
        "labels that do not match": body([[cat, "[[[5, 5], [6, 6]]]", "", "[[1]]", False]]),
        "too many rows": body([[cat, "", "[[1, 1, 9, 9]]", "", False]] * 4),
        "too many boxes": body([[cat, "", json.dumps([[1, 1, 9, 9]] * 71), "", False]]),
        "not an image": body([["aGVsbG8gd29ybGQ=", "", "[[1, 1, 9, 9]]", "", False]]),
        "an image too thin": body([[b64_png(np.zeros((2, 900, 3), np.uint8)), "", "[[1, 0, 9, 1]]", "", False]]),
        "a body over the limit": b" " * (3 << 20),
    }
    for name, content in requests.items():
        ours, theirs = post(image_routed, content), post(single, content)
        assert (ours.status_code, ours.content) == (theirs.status_code, theirs.content), name
        assert ours.headers.get("retry-after") == theirs.headers.get("retry-after"), name
    assert post(single, requests["box"]).status_code == 200 and post(single, requests["not JSON"]).status_code == 400
    report = health(image_routed)
    assert report["status"] == "ok" and report["router"] == "image" and len(report["replicas"]) == 2
    assert all(r["device"] == "cpu" and r["plan"]["vit_weights"] == "float32" for r in report["replicas"])


def shuffled_burst(url: str, images: list[str], repeats: int, seed: int) -> list[httpx.Response]:
    """Each image's point request `repeats` times, in shuffled order, 8 at a time."""
    requests = [point_request(image) for image in images for _ in range(repeats)]
    random.Random(seed).shuffle(requests)
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(lambda content: post(url, content), requests))


def test_image_routing_runs_the_encoder_once_per_image(image_routed):
    images = [random_image(100 + i) for i in range(4)]
    before = encoder_runs(image_routed)
    responses = shuffled_burst(image_routed, images, repeats=6, seed=1)
    assert [r.status_code for r in responses] == [200] * 24
    assert encoder_runs(image_routed) - before == 4


def test_a_replica_killed_during_a_burst_costs_only_503s(image_routed, single):
    images = [random_image(200 + i) for i in range(6)]
    # Heavier requests (16 boxes, ~0.5 s each), so that some are computing when the replica dies.
    boxes = json.dumps([[i, i, 100 + i, 80 + i] for i in range(16)])
    distinct = [body([[image, "", boxes, "", False]]) for image in images]
    expected = [post(single, content).content for content in distinct]
    order = [i for i in range(len(distinct)) for _ in range(6)]
    random.Random(2).shuffle(order)
    # The victim: the replica that owns most of these images (by the router's rule).
    owners = [
        rendezvous_order(route_key(image), [r["replica"] for r in live_replicas(image_routed)])[0] for image in images
    ]
    victim = max(set(owners), key=owners.count)
    done = threading.Semaphore(0)

    def send(i: int) -> tuple[int, httpx.Response]:
        response = post(image_routed, distinct[i])
        done.release()
        return i, response

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(send, i) for i in order]
        for _ in range(4):
            done.acquire()
        deadline = time.monotonic() + 60
        while not any(r["replica"] == victim and r["computing_or_waiting"] for r in live_replicas(image_routed)):
            assert time.monotonic() < deadline, "the victim never held a request"
            time.sleep(0.01)  # kill it while it holds requests
        ray.kill(ray.get_actor(f"SERVE_REPLICA::{APP_NAME}#{SCORER}#{victim}", namespace="serve"), no_restart=True)
        results = [future.result(timeout=300) for future in as_completed(futures)]
    statuses = [response.status_code for _, response in results]
    print(f"a replica killed during a burst of {len(order)}: {statuses.count(200)} x 200, {statuses.count(503)} x 503")
    assert set(statuses) <= {200, 503}, statuses
    for i, response in results:
        if response.status_code == 200:
            assert response.content == expected[i]  # never a wrong answer
        else:
            assert response.headers["retry-after"] and "stopped" in response.json()["error"]
    assert statuses.count(200) > 4  # requests went on being answered after the kill
    # Serve starts another replica; meanwhile and after, every image is answered.
    deadline = time.monotonic() + 120
    while len(live_replicas(image_routed)) < 2 or victim in {r["replica"] for r in live_replicas(image_routed)}:
        assert time.monotonic() < deadline, health(image_routed)
        time.sleep(1)
    assert [post(image_routed, content).content for content in distinct] == expected


def test_serve_default_router_runs_the_encoder_more_often(cluster, checkpoint, image_routed):
    """The comparison for the routing test: the same burst under Serve's default router."""
    deploy(checkpoint, "default")
    assert health(cluster)["router"] == "default"
    images = [random_image(300 + i) for i in range(4)]
    responses = shuffled_burst(cluster, images, repeats=6, seed=1)
    assert [r.status_code for r in responses] == [200] * 24
    runs = encoder_runs(cluster)
    print(f"encoder runs for 4 images x 6 requests: default router {runs}, image-affine 4")
    assert runs > 4


def test_the_config_file_deploys_the_same_app_as_the_command():
    import yaml  # comes with Ray
    from ray.serve.schema import ServeDeploySchema

    config = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    application = ServeDeploySchema.model_validate(config).applications[0]
    assert application.import_path == "sam_demo.serve:app_builder"
    module, name = application.import_path.split(":")
    assert getattr(importlib.import_module(module), name) is app_builder  # as Serve resolves the path
    settings = settings_from_config(application.args)
    assert settings.gpus_per_replica == 1 and settings.engine.device == "cuda" and settings.router == "image"
    assert settings.replicas == 2 and settings.max_replicas is None
    assert settings_from_config({**application.args, "max_replicas": 8}).max_replicas == 8
    with pytest.raises(ValueError, match="--replicas"):
        settings_from_config({"replicas": 0})


def test_the_router_ranks_replicas_by_the_image_and_their_loads():
    """ImageAffinityRouter's glue, on stand-in replicas: the key from the handle call, loads from Serve's
    queue-length cache or a probe, and affinity.preference's order as one replica per rank."""
    import asyncio

    from ray.serve._private.common import DeploymentHandleSource, DeploymentID, ReplicaID, RequestMetadata
    from ray.serve.request_router import PendingRequest

    from sam_demo.serve.router import ROUTE_KEY, ImageAffinityRouter

    deployment = DeploymentID(name=SCORER, app_name=APP_NAME)

    class Replica:  # what the router reads of a RunningReplica
        def __init__(self, unique_id: str, probed_load: int):
            self.replica_id = ReplicaID(unique_id, deployment)
            self.max_ongoing_requests = 18
            self.probed_load = probed_load

        async def get_queue_len(self, *, deadline_s: float) -> int:
            return self.probed_load

    def request(key: str | None) -> PendingRequest:
        kwargs = {} if key is None else {ROUTE_KEY: key}
        return PendingRequest(args=[], kwargs=kwargs, metadata=RequestMetadata(request_id="r", internal_request_id="r"))

    async def ranks(router, replicas, pending) -> list[list[str]]:
        return [[r.replica_id.unique_id for r in rank] for rank in await router.choose_replicas(replicas, pending)]

    async def scenario():
        router = ImageAffinityRouter(deployment, DeploymentHandleSource.UNKNOWN, use_replica_queue_len_cache=True)
        router.initialize_state(max_imbalance=2)
        key = route_key("some image")
        owner, second, third = order = rendezvous_order(key, ["a", "b", "c"])
        replicas = [Replica(u, probed_load=3 if u == owner else 0) for u in "abc"]
        # No figure cached: every replica is probed; the owner, 3 busier than the least, is over the bound.
        assert await ranks(router, replicas, request(key)) == [[second], [owner], [third]]
        for r in replicas:
            router.replica_queue_len_cache.update(r.replica_id, 0)
        pending = request(key)
        assert await ranks(router, replicas, pending) == [[u] for u in order]
        assert pending.routing_context.should_backoff  # all ranks tried: wait before the next round
        router.replica_queue_len_cache.update(replicas["abc".index(owner)].replica_id, 2)
        assert (await ranks(router, replicas, request(key)))[0] == [owner]  # at the bound, it keeps the image
        assert sorted((await ranks(router, replicas, request(None)))[0]) == ["a", "b", "c"]  # no key: any

    asyncio.run(scenario())


def test_the_command_refuses_bad_flags_in_one_line():
    import subprocess
    import sys

    for flags, message in (
        (["--replicas", "0"], "--replicas must be at least 1"),
        (["--replicas", "3", "--max-replicas", "2"], "--max-replicas (2) must be at least --replicas (3)"),
        (["--request-timeout", "0"], "--request-timeout must be positive"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "sam_demo.serve", *flags], cwd=ROOT, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_a_replica_taking_over_a_killed_owners_image_reads_the_store_not_the_encoder(cluster, checkpoint, tmp_path):
    """Two replicas sharing an embedding store: the owner of an image encodes it once and stores it;
    killed, the replica that takes the image over answers from the store, byte for byte."""
    from dataclasses import replace

    store = tmp_path / "store"
    settings = ServeSettings(
        engine=replace(engine_config(checkpoint), embedding_store=str(store)), server=CONFIG, replicas=2
    )
    serve.run(build_app(settings), name=APP_NAME, route_prefix="/")
    image = random_image(400)
    first = post(cluster, point_request(image))
    assert first.status_code == 200 and health(cluster)["embedding_store"]["writes"] == 1
    owner = rendezvous_order(route_key(image), [r["replica"] for r in live_replicas(cluster)])[0]
    before = {r["replica"]: r["embedding_store"] for r in live_replicas(cluster)}
    assert before[owner]["writes"] == 1, before
    ray.kill(ray.get_actor(f"SERVE_REPLICA::{APP_NAME}#{SCORER}#{owner}", namespace="serve"), no_restart=True)
    deadline = time.monotonic() + 60
    while owner in {r["replica"] for r in live_replicas(cluster)}:
        assert time.monotonic() < deadline, health(cluster)
        time.sleep(0.5)

    again = post(cluster, point_request(image))
    assert again.status_code == 200 and again.content == first.content
    after = {r["replica"]: r["embedding_store"] for r in live_replicas(cluster)}
    taker = [name for name, stats in after.items() if stats["hits"] > before.get(name, {"hits": 0})["hits"]]
    assert len(taker) == 1 and taker[0] != owner, after
    writes = {name: s["writes"] - before.get(name, {"writes": 0})["writes"] for name, s in after.items()}
    assert set(writes.values()) == {0}, f"a replica encoded the image again: {writes}"
    assert len(list(store.glob("*.safetensors"))) == 1
