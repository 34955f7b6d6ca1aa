"""The version of wm_async: the one place it is written (``pyproject.toml`` reads it from
here when a wheel is built; ``wm_async.__version__`` and ``wm-async --version`` show it)."""

from __future__ import annotations

__version__ = "0.1.0.dev0"
