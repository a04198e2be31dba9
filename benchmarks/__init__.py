"""sam-demo's benchmarks: our paths against the naive transformers recipe, in the same process.

Run from the repository's root: `python -m benchmarks --help`. One module per benchmark, a shared
report (report.py); helpers shared with the tests live in `tests/support/`. Not part of the package.
"""

import sam_demo  # noqa: F401  (before torch loads: the package sets torch's OpenMP spin, as in the app)
