"""The benchmark; run it from the repository root as `python -m bench.run` (see README.md)."""
