"""The endpoint's batch CSV jobs, run locally or on Ray Data (`python -m sam_demo.batch`).

- `job.py`: reading the rows, answering them, resuming, writing JSON Lines;
- `precompute.py`: images (a folder, or a job's CSV) encoded into the embedding store;
- `ray_runner.py`: the same rows, or images, on a Ray Data actor pool (imports the job, never the reverse);
- `cli.py`: the commands (`python -m sam_demo.precompute` is a shim over it).

May import: `sam_demo.flags`, `sam_demo.endpoint`, `sam_demo.engine`; never the demo or serve.
"""
