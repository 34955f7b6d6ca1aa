"""What the ``wm-async`` subcommands share: the parser that never exits, the error a
command raises to fail with one line, and argument types."""

from __future__ import annotations

import argparse
import math
import re
import sys
from typing import NoReturn

from .._core.errors import WorkManagerError


class Exit(Exception):
    """Raised by the parser instead of ``SystemExit``, so ``main`` returns a status."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class CommandError(WorkManagerError):
    """A command failed; ``main`` prints the message as one line and exits with
    ``status``.

    :ivar status: the exit status (1: the command failed; 2: bad arguments)
    """

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line and which never calls ``sys.exit``."""

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            sys.stderr.write(message)
        raise Exit(status)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see '{self.prog} --help')\n")


def one_line(text: str) -> str:
    """``text`` with line breaks and other control characters escaped, so an error about
    a hostile argument still prints as one line."""
    return "".join(
        c if c.isprintable() or c == " " else c.encode("unicode_escape").decode() for c in text
    )


def unwrap(exc: BaseException) -> BaseException:
    """The single exception inside (nested) exception groups, or ``exc`` itself."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def positive_seconds(text: str) -> float:
    """An argument type: a positive, finite number of seconds."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return seconds


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([smhdw]?)")


def duration(text: str) -> float:
    """An argument type: a duration such as ``90``, ``30s``, ``15m``, ``2h``, ``1d``,
    ``1w`` (a bare number is seconds), in seconds."""
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None:
        raise argparse.ArgumentTypeError(
            f"expected a duration like 30s, 15m, 2h, 1d or 1w, got {text!r}"
        )
    return float(match[1]) * _UNITS[match[2] or "s"]


def format_duration(seconds: float) -> str:
    """``90`` → ``1m30s``; ``0.25`` → ``0.25s``: short, for tables."""
    if seconds < 60:
        return f"{seconds:.2f}".rstrip("0").rstrip(".") + "s"
    parts = []
    remaining = round(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, remaining = divmod(remaining, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts[:2])
