"""`python -m sam_demo.batch`: the batch command (cli.py)."""

from sam_demo.batch.cli import main

main()
