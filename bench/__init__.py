"""Benchmark harness for videosvc: `python -m bench.run --help`."""
