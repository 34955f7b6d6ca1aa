"""wm_async benchmarks: ``python -m benchmarks`` (see benchmarks/README.md)."""
