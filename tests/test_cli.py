"""The ``wm-async`` command: the demo end to end, argument errors, and main() in-process."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import attrs
import pytest

from wm_async.cli import main

# One row of the demo's table: time, short id, worker, state, attempts, details.
_ROW = re.compile(
    r"^\s*(?P<time>\d+\.\d+)s\s+(?P<id>[0-9a-f]{8})\s+(?P<worker>\w+)\s+"
    r"(?P<state>ENQUEUED|RUNNING|SUCCEEDED|FAILED|BLOCKED|CANCELLED)\s+(?P<attempts>\d+)"
    r"(?:\s+(?P<details>.*))?$"
)
_DEMO_WORKERS = {"progress", "delayed", "flaky"}


@attrs.frozen
class Row:
    time: float
    state: str
    attempts: int
    details: str


def _rows(stdout: str) -> dict[str, list[Row]]:
    """The demo's state-change rows, per worker, in printed order."""
    rows: dict[str, list[Row]] = {}
    for line in stdout.splitlines():
        m = _ROW.match(line)
        if m:
            row = Row(float(m["time"]), m["state"], int(m["attempts"]), m["details"] or "")
            rows.setdefault(m["worker"], []).append(row)
    return rows


def _next_run_in(details: str) -> float:
    """The seconds in an ENQUEUED row's "next run in 1.0s"."""
    m = re.fullmatch(r"next run in (\d+\.\d)s", details)
    assert m, details
    return float(m[1])


def _run_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # TMPDIR: the demo's default SQLite file goes under tmp_path, not the real /tmp.
    return subprocess.run(
        [sys.executable, "-m", "wm_async", *args],
        cwd=tmp_path,
        env={**os.environ, "TMPDIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_demo_runs_every_work_to_success(tmp_path: Path) -> None:
    proc = _run_cli(tmp_path, "demo", "--duration", "30")  # on the default SQLite store

    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    rows = _rows(proc.stdout)
    assert set(rows) == _DEMO_WORKERS, proc.stdout
    last = {worker: (r[-1].state, r[-1].attempts) for worker, r in rows.items()}
    assert last == {
        "progress": ("SUCCEEDED", 1),
        "delayed": ("SUCCEEDED", 1),
        "flaky": ("SUCCEEDED", 3),
    }, proc.stdout

    # progress: reported while RUNNING, its output shown when it SUCCEEDED
    assert any(r.state == "RUNNING" and '"step": 3' in r.details for r in rows["progress"])
    assert 'output {"items": 3}' in rows["progress"][-1].details

    # flaky: re-ENQUEUED after each failed run, attempts going up 1, 2, then SUCCEEDED at 3
    flaky = rows["flaky"]
    retries = [r for r in flaky if r.state == "ENQUEUED" and r.attempts]
    assert [r.attempts for r in retries] == [1, 2]
    attempts = [r.attempts for r in flaky]
    assert attempts == sorted(attempts)
    # LINEAR backoff of 1 s: the wait after the second failed run is the longer one
    first, second = (_next_run_in(r.details) for r in retries)
    assert first < second

    # delayed: ENQUEUED first, and not started before its 2 s initial delay
    delayed = rows["delayed"]
    assert delayed[0].state == "ENQUEUED"
    assert delayed[0].details.startswith("next run in")
    started = next(r for r in delayed if r.state != "ENQUEUED")
    assert started.time >= 1.95  # the clock starts before enqueue; the delay counts from it

    assert "all finished in" in proc.stdout
    assert "3 succeeded, 0 failed, 0 cancelled, 0 unfinished" in proc.stdout
    [db] = tmp_path.glob("wm-async-demo-*/demo.db")
    assert f"store sqlite:///{db}" in proc.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["demo", "--duration", "-1"], "argument --duration: expected a positive number"),
        (["frob"], "invalid choice: 'frob'"),
        ([], "the following arguments are required: COMMAND"),
    ],
    ids=["negative-duration", "unknown-command", "no-command"],
)
def test_bad_arguments_print_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    proc = _run_cli(tmp_path, *args)

    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    [line] = proc.stderr.splitlines()
    assert line.startswith("wm-async")
    assert ": error: " in line
    assert message in line


def test_main_runs_the_demo_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--store", "memory://", "--duration", "30"]) == 0

    out = capsys.readouterr().out
    assert set(_rows(out)) == _DEMO_WORKERS
    assert "3 succeeded, 0 failed, 0 cancelled, 0 unfinished" in out


def test_demo_stops_at_duration(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--store", "memory://", "--duration", "0.5"]) == 0

    out = capsys.readouterr().out
    # The delayed work (2 s) cannot have run yet; the demo still exits 0.
    assert [r.state for r in _rows(out)["delayed"]] == ["ENQUEUED"]
    assert "stopped by --duration after" in out
    assert "unfinished" in out


def test_main_reports_work_manager_errors_without_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["demo", "--store", "bogus"]) == 2

    err = capsys.readouterr().err
    assert err == (
        "wm-async: error: invalid store='bogus': expected a URL such as sqlite:///wm_async.db\n"
    )


def test_main_returns_a_status_instead_of_exiting(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--duration", "soon"]) == 2
    assert main(["demo", "--help"]) == 0

    captured = capsys.readouterr()
    assert "usage: wm-async demo" in captured.out
    assert "got 'soon'" in captured.err
