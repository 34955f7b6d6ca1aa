"""The ``wm-async`` command's rough edges (issue 19): ``--version``, ``--traceback``, an
async function as the app, ``--json`` on every admin command, short ids, and the demo's
ids, temporary store and colours. Run in-process through :func:`wm_async.cli.main`."""

from __future__ import annotations

import gc
import json
import re
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest

import wm_async as wm
from wm_async._cli.demo import use_colour
from wm_async.cli import main

_ROW = re.compile(
    r"^\s*\d+\.\d+s\s+(?P<id>[0-9a-f]{8})\s+(?P<worker>\w+)\s+(?:\x1b\[\d+m)?"
    r"(?P<state>[A-Z]+)\s*(?P<reset>\x1b\[0m)?"
)


def _seed(url: str, *requests: wm.OneTimeWorkRequest) -> None:
    async def enqueue() -> None:
        async with wm.WorkManager(store=url, run_work=False) as manager:
            await manager.enqueue(*requests)

    anyio.run(enqueue)


def _json(capsys: pytest.CaptureFixture[str]) -> Any:
    return json.loads(capsys.readouterr().out)


# -- --version and __version__


def test_version_is_printed_by_the_command_and_the_package(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+(\.dev\d+|a\d+|b\d+|rc\d+)?", wm.__version__)
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"wm-async {wm.__version__}\n"


# -- worker: what the app's module does wrong


@pytest.fixture
def app_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_worker_refuses_an_async_function_without_a_never_awaited_warning(
    app_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (app_dir / "async_app.py").write_text(
        "import wm_async as wm\n\n\nasync def make():\n    return wm.WorkManager(store='memory://')\n"
    )
    # filterwarnings = error: a "coroutine was never awaited" warning would fail the test.
    assert main(["worker", "async_app:make"]) == 1
    gc.collect()
    err = capsys.readouterr().err
    assert err == (
        "wm-async: error: async_app:make is an async function; give a WorkManager, or a plain "
        "(not async) function returning one\n"
    )


def test_import_error_hints_at_traceback_which_shows_where_it_failed(
    app_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (app_dir / "broken_app.py").write_text("import os\n\n\nvalue = 1 / 0\n")

    assert main(["worker", "broken_app:manager"]) == 1
    [line] = capsys.readouterr().err.splitlines()
    assert line == (
        "wm-async: error: cannot import 'broken_app': ZeroDivisionError: division by zero "
        "(wm-async --traceback worker ... shows where)"
    )

    sys.modules.pop("broken_app", None)
    assert main(["--traceback", "worker", "broken_app:manager"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):\n")
    assert re.search(r'File ".*broken_app\.py", line 4, in <module>\n\s+value = 1 / 0', err)
    assert err.endswith(f"{line}\n")  # the one line still comes last


def test_traceback_masks_a_password(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = "postgresql://app:hunter2@127.0.0.1:1/nowhere?connect_timeout=1"
    status = main(["--traceback", "list", "--store", url])
    err = capsys.readouterr().err
    assert status != 0
    assert "hunter2" not in err


# -- --json on cancel and prune, as on list and show


def test_cancel_and_prune_print_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path}/wm.db"
    a, b = wm.OneTimeWorkRequest("mail", tags={"t"}), wm.OneTimeWorkRequest("mail")
    _seed(url, a, b)

    assert main(["cancel", "--tag", "t", "--store", url, "--json"]) == 0
    assert _json(capsys) == {"cancelled": [str(a.id)], "running": []}
    assert main(["cancel", str(a.id), "--store", url, "--json"]) == 0  # already finished
    assert _json(capsys) == {"cancelled": [], "running": []}

    assert main(["prune", "--store", url, "--json"]) == 0
    assert _json(capsys) == {"pruned": 1}
    assert main(["list", "--store", url, "--json"]) == 0
    assert [info["id"] for info in _json(capsys)] == [str(b.id)]


# -- short ids


def test_show_and_cancel_take_the_end_of_an_id(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path}/wm.db"
    one = uuid.UUID("01900000-0000-7000-8000-aaaa22221111")
    two = uuid.UUID("01900000-0000-7000-8000-bbbb22221111")
    _seed(url, wm.OneTimeWorkRequest("mail", id=one), wm.OneTimeWorkRequest("mail", id=two))

    assert main(["show", "AAAA22221111", "--store", url, "--json"]) == 0
    assert _json(capsys)["id"] == str(one)

    assert main(["show", "bb1111", "--store", url]) == 2  # under 8 digits: not an id
    assert capsys.readouterr().err == (
        "wm-async: error: expected a work id (a UUID, or its last 8 or more hex digits), "
        "got 'bb1111'\n"
    )
    assert main(["show", "22221111", "--store", url]) == 1
    assert capsys.readouterr().err == (
        "wm-async: error: 2 works have ids ending with 22221111; give more of the id\n"
    )
    assert main(["cancel", "99999999", "--store", url]) == 1
    assert "no work whose id ends with 99999999" in capsys.readouterr().err

    assert main(["cancel", "bbbb22221111", "--store", url, "--json"]) == 0
    assert _json(capsys) == {"cancelled": [str(two)], "running": []}


# -- the demo


def test_demo_shows_distinct_ids_that_show_takes_and_keeps_the_store_if_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert main(["demo", "--keep", "--color", "always", "--duration", "45"]) == 0
    out = capsys.readouterr().out

    rows = [m for m in map(_ROW.match, out.splitlines()) if m]
    ids = {m["worker"]: m["id"] for m in rows}
    assert len(ids) == 7
    assert len(set(ids.values())) == 7  # one id per work, not the shared time prefix
    assert all(m["reset"] for m in rows)  # every state in colour
    assert "\x1b[32mSUCCEEDED" in out
    assert "\x1b[36mRUNNING" in out

    [db] = tmp_path.glob("wm-async-demo-*/demo.db")
    assert out.endswith(f"the store is kept: wm-async list --store sqlite:///{db}\n")
    assert main(["show", ids["flaky"], "--store", f"sqlite:///{db}", "--json"]) == 0
    shown = _json(capsys)
    assert shown["worker"] == "flaky"
    assert shown["id"].replace("-", "").endswith(ids["flaky"])


def test_demo_colours_only_a_terminal_without_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert use_colour("auto")
    monkeypatch.setenv("NO_COLOR", "1")
    assert not use_colour("auto")
    assert use_colour("always")
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False)
    monkeypatch.delenv("NO_COLOR")
    assert not use_colour("auto")
    assert not use_colour("never")
