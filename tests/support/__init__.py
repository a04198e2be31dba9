"""Helpers that the tests and the benchmarks share: the example photos, servers (in a thread or a
child process), Chromium's path and flags, request builders, and the transformers reference recipe.
The package (`sam_demo`) never imports this."""
