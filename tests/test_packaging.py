"""The package as users get it: a wheel built from this checkout and installed into a
fresh virtual environment reports its version (``wm-async --version``,
``wm_async.__version__``), carries the LICENSE, and publishes no test or benchmark
extras. It builds with pip (fetching hatchling) and installs the dependencies from the
package index: about 8 s."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import wm_async

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str | Path, cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, f"{args}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", out, ROOT, cwd=out)
    [built] = out.glob("wm_async-*.whl")
    return built


def test_the_wheel_carries_the_license_and_no_development_extras(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        [metadata] = [n for n in names if n.endswith(".dist-info/METADATA")]
        text = archive.read(metadata).decode()
        [license_file] = [n for n in names if re.search(r"\.dist-info/(licenses/)?LICENSE$", n)]
        assert "MIT License" in archive.read(license_file).decode()
    assert f"Version: {wm_async.__version__}\n" in text
    assert "License-Expression: MIT\n" in text
    extras = set(re.findall(r"^Provides-Extra: (\S+)$", text, re.MULTILINE))
    assert {"postgres", "aiohttp", "asgi", "fastapi", "quart", "dashboard"} <= extras
    assert not extras & {"test", "tests", "bench", "dev", "docs"}  # requirements-*.txt
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/", "examples/"))]


def test_version_from_a_wheel_in_a_fresh_venv(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    _run(sys.executable, "-m", "pip", "--python", python, "install", "-q", wheel, cwd=tmp_path)

    # Run from an empty folder: nothing of this checkout is importable there.
    printed = _run(python, "-c", "import wm_async; print(wm_async.__version__)", cwd=tmp_path)
    assert printed == f"{wm_async.__version__}\n"
    located = _run(python, "-c", "import wm_async; print(wm_async.__file__)", cwd=tmp_path)
    assert located.startswith(str(venv))
    assert _run(venv / "bin" / "wm-async", "--version", cwd=tmp_path) == (
        f"wm-async {wm_async.__version__}\n"
    )
