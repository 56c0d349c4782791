"""The benchmark of issue 13 (see bench/run.py and the README's Benchmark section)."""
