"""The Serve app's settings: the engine each replica loads, the HTTP layer's config, the replicas, the router.

Plain data: the command (cli.py) builds them from flags, the deployments (deployments.py) read them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from sam_demo.endpoint.settings import ServerConfig
from sam_demo.engine.config import EngineConfig
from sam_demo.serve.affinity import DEFAULT_MAX_IMBALANCE

__all__ = ["APP_NAME", "ROUTERS", "SCORER", "ServeSettings"]

APP_NAME = "sam"  # the Serve application's name
SCORER = "Scorer"  # the replicas' deployment
ROUTERS = ("image", "default")  # ImageAffinityRouter, or Serve's own (power of two choices)


@dataclass(frozen=True)
class ServeSettings:
    """The Serve app: the engine each replica loads, the HTTP layer's config, and the replicas.

    server.score_concurrency is per replica: requests a replica computes at once; up to
    server.score_queue more wait there. replicas..max_replicas: Serve autoscales between them.
    """

    engine: EngineConfig = field(default_factory=EngineConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    replicas: int = 2
    max_replicas: int | None = None  # above `replicas`: autoscaling on ongoing requests
    router: str = "image"
    max_imbalance: int = DEFAULT_MAX_IMBALANCE
    cpus_per_replica: float = 1.0
    gpus_per_replica: float = 0.0
    request_timeout_s: float = 600.0  # a request not answered by then gets 503

    def __post_init__(self):
        if self.replicas < 1:
            raise ValueError(f"--replicas must be at least 1, got {self.replicas}")
        if self.max_replicas is not None and self.max_replicas < self.replicas:
            raise ValueError(f"--max-replicas ({self.max_replicas}) must be at least --replicas ({self.replicas})")
        if self.router not in ROUTERS:
            raise ValueError(f"--router must be one of {ROUTERS}, got {self.router!r}")
        if self.max_imbalance < 0 or self.cpus_per_replica < 0 or self.gpus_per_replica < 0:
            raise ValueError("--max-imbalance, --cpus-per-replica and --gpus-per-replica must not be negative")
        if self.request_timeout_s <= 0:
            raise ValueError(f"--request-timeout must be positive, got {self.request_timeout_s:g}")

    @property
    def most_replicas(self) -> int:
        return self.max_replicas or self.replicas

    def gateway_config(self) -> ServerConfig:
        """The gateway's admission: every replica's computing slots, then the queue."""
        return replace(self.server, score_concurrency=self.server.score_concurrency * self.most_replicas)
