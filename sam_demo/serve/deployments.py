"""The Serve application of `python -m sam_demo.serve`: a Gateway in front of Scorer replicas.

`Gateway` (gateway.py: the HTTP ingress, no model, no torch) runs endpoint/http.py's HTTP layer, the
same as the single server's: API key, admission, body limits, error bodies. It parses the body, so
a bad request is answered there, and sends the parsed rows to a `Scorer` replica (scorer.py) with
the key of the first row's image (affinity.route_key). `ImageAffinityRouter` (router.py) sends each key to its replica,
so the replica's cached embedding is used again. A Scorer holds an engine and answers with
scoring.answer, as the single server does, so the two answer alike, byte for byte.

`/health` lists every live Scorer replica with its engine, its requests and its cache (entries,
hits, misses): each replica's misses are its encoder runs. A replica that dies mid-request costs
that request a 503 (Retry-After); Serve starts another, and meanwhile its images go to the others.
"""

from __future__ import annotations

from ray import serve
from ray.serve.config import RequestRouterConfig

from sam_demo.serve.gateway import Gateway
from sam_demo.serve.router import ImageAffinityRouter
from sam_demo.serve.scorer import Scorer
from sam_demo.serve.settings import SCORER, ServeSettings

__all__ = ["build_app"]


def build_app(settings: ServeSettings) -> serve.Application:
    """The Serve application: a Gateway in front of `settings.replicas` Scorer replicas."""
    server = settings.server
    options = dict(
        name=SCORER,
        ray_actor_options={"num_cpus": settings.cpus_per_replica, "num_gpus": settings.gpus_per_replica},
        max_ongoing_requests=server.score_concurrency + server.score_queue,
        health_check_period_s=2,
        health_check_timeout_s=30,
    )
    if settings.max_replicas and settings.max_replicas > settings.replicas:
        options["autoscaling_config"] = {
            "min_replicas": settings.replicas,
            "max_replicas": settings.max_replicas,
            "target_ongoing_requests": server.score_concurrency,
        }
    else:
        options["num_replicas"] = settings.replicas
    if settings.router == "image":
        options["request_router_config"] = RequestRouterConfig(
            request_router_class=ImageAffinityRouter,
            request_router_kwargs={"max_imbalance": settings.max_imbalance},
        )
    scorer = serve.deployment(Scorer).options(**options).bind(settings)
    gateway = serve.deployment(Gateway).options(
        name="Gateway", ray_actor_options={"num_cpus": 0}, max_ongoing_requests=1000
    )
    return gateway.bind(scorer, settings)
