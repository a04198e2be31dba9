"""The endpoint twin on Ray Serve: many replicas, each photo's requests sent to the replica that encoded it.

- `settings.py`: `ServeSettings`; `cli.py`: the command (`python -m sam_demo.serve`) and
  `app_builder`, serve_config.yaml's entry (`import_path: sam_demo.serve:app_builder`);
- `deployments.py`: the application; `gateway.py`: the HTTP ingress (no torch);
  `scorer.py`: a replica with an engine;
- `router.py`: the image-affine request router; `affinity.py`: its rule (rendezvous hashing).

May import: `sam_demo.flags`, `sam_demo.endpoint`, `sam_demo.engine`; never the demo or batch.
`app_builder` is imported on first use, so this package loads neither Ray nor torch by itself.
"""


def __getattr__(name: str):
    if name == "app_builder":
        from sam_demo.serve.cli import app_builder

        return app_builder
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
