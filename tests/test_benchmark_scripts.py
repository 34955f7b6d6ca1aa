"""The benchmark scripts import (they are not run by the tests: figures come from
``python -m benchmarks`` and friends, never from timed assertions)."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent / "benchmarks"
MODULES = sorted(
    f"benchmarks.{m.name}"
    for m in pkgutil.iter_modules([str(ROOT)])
    if m.name not in ("__main__",)
)


@pytest.mark.parametrize("name", MODULES)
def test_benchmark_module_imports(name: str) -> None:
    module = importlib.import_module(name)
    assert module.__doc__, f"{name} should say what it measures"
