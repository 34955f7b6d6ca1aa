"""The ``wm-async`` command opens no network port, and any argument it is given ends in
one clear error line, never a traceback (issue: reliability and security)."""

from __future__ import annotations

import re
import socket
import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wm_async.cli import main


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record (and refuse) every attempt to listen on, bind or connect a socket."""
    attempts: list[str] = []

    def refuse(name: str) -> object:
        original = getattr(socket.socket, name)

        def call(self: socket.socket, *args: object) -> object:
            if self.family == socket.AF_UNIX and name == "bind" and args[0][:1] in (b"\0", "\0"):  # type: ignore[index]
                # A manager on SQLite listens for other processes' writes on a Unix
                # socket in Linux's abstract namespace: local only, no port, no file.
                return original(self, *args)
            attempts.append(f"{name}{args}")
            raise OSError(f"test: {name} refused")

        return call

    for name in ("bind", "listen", "connect", "connect_ex"):
        monkeypatch.setattr(socket.socket, name, refuse(name))
    return attempts


def test_the_cli_opens_no_network_port(
    tmp_path: Path, no_network: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'wm.db'}"
    assert main(["demo", "--store", url, "--duration", "2"]) == 0
    for args in (["list"], ["list", "--json"], ["cancel", "--all"], ["prune"]):
        assert main([*args, "--store", url]) == 0, capsys.readouterr().err
    assert no_network == []


_TEXT = st.text(string.printable + "é\u2028\x00'\";", max_size=30)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    command=st.sampled_from(["list", "show", "cancel", "prune", "worker", "demo", "bogus"]),
    args=st.lists(
        st.one_of(
            _TEXT,
            st.sampled_from(
                ["--state", "--tag", "--unique-name", "--older-than", "--json", "--all"]
            ),
        ),
        max_size=4,
    ),
)
def test_any_arguments_end_in_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, args: list[str]
) -> None:
    missing = f"sqlite:///{tmp_path / 'absent' / 'wm.db'}"  # never created: nothing runs
    try:
        code = main([command, *args, "--store", missing])
    except SystemExit as exit_:  # argparse's own exit for --help-like input
        code = int(exit_.code or 0)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if code != 0:
        lines = err.splitlines()
        assert len(lines) == 1, err  # one line, whatever the argument held
        assert re.match(r"wm-async( \w+)?: error: ", lines[0]), err
