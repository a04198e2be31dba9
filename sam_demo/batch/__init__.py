"""The endpoint's batch CSV jobs, run locally or on Ray Data (`python -m sam_demo.batch`).

- `job.py`: reading the rows, answering them, resuming, writing JSON Lines;
- `ray_runner.py`: the same rows on a Ray Data actor pool (imports the job, never the reverse);
- `cli.py`: the command.

May import: `sam_demo.flags`, `sam_demo.endpoint`, `sam_demo.engine`; never the demo or serve.
"""
