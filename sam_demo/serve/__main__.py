"""`python -m sam_demo.serve`: the endpoint on Ray Serve (cli.py)."""

from sam_demo.serve.cli import main

main()
