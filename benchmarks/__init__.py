"""wm_async benchmarks: scripts that print figures side by side (``python -m benchmarks.<name>``)."""
