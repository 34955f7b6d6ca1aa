"""Shared helpers for the benchmarks: printing tables, resident memory."""

from __future__ import annotations

import gc
import os
import statistics
import tempfile
from collections.abc import Sequence
from pathlib import Path


def rss_bytes() -> int:
    """Resident set size of this process, from /proc (Linux)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def settle_memory() -> int:
    """Collect garbage and return the RSS afterwards."""
    gc.collect()
    gc.collect()
    return rss_bytes()


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain aligned text table."""
    cells = [[str(h) for h in headers], *[[_fmt(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for n, row in enumerate(cells):
        lines.append(
            "  ".join(c.rjust(w) if n else c.ljust(w) for c, w in zip(row, widths, strict=True))
        )
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        if value >= 100:
            return f"{value:,.0f}"
        return f"{value:.3g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def summary(values: Sequence[float]) -> tuple[float, float, float]:
    """(median, min, max)."""
    return statistics.median(values), min(values), max(values)


def temp_sqlite_url(tag: str) -> tuple[str, Path]:
    """A fresh SQLite file URL in a temp dir (returned so callers can delete it)."""
    directory = Path(tempfile.mkdtemp(prefix=f"wm_async_bench_{tag}_"))
    return f"sqlite:///{directory / 'bench.db'}", directory
