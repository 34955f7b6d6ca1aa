"""Charts and the chain graph as inline SVG (no script, no library, nothing fetched)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from html import escape
from typing import Final

from ..stores._browse import TimeBucket

_W: Final = 720
_H: Final = 160
_PAD: Final = 28
COLOURS: Final = {
    "SUCCEEDED": "#2e7d32",
    "FAILED": "#c62828",
    "CANCELLED": "#757575",
    "ENQUEUED": "#1565c0",
    "RUNNING": "#ef6c00",
    "BLOCKED": "#6a1b9a",
}


def _clock(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%H:%M")


def _axis(buckets: Sequence[TimeBucket], top: float, unit: str) -> str:
    parts = [
        f'<line x1="{_PAD}" y1="{_H - _PAD}" x2="{_W}" y2="{_H - _PAD}" stroke="#999"/>',
        f'<text x="2" y="12" font-size="10" fill="#555">{escape(_num(top))}{unit}</text>',
    ]
    if buckets:
        step = max(1, len(buckets) // 6)
        width = (_W - _PAD) / len(buckets)
        for i in range(0, len(buckets), step):
            x = _PAD + i * width
            parts.append(
                f'<text x="{x:.1f}" y="{_H - 8}" font-size="10" fill="#555">'
                f"{_clock(buckets[i].start)}</text>"
            )
    return "".join(parts)


def _num(value: float) -> str:
    if value >= 100 or value == int(value):
        return f"{value:.0f}"
    return f"{value:.2f}"


def throughput(buckets: Sequence[TimeBucket], *, title: str) -> str:
    """Stacked bars of the works finished per bucket (succeeded, failed, cancelled)."""
    top: float = max((b.succeeded + b.failed + b.cancelled for b in buckets), default=0) or 1
    width = (_W - _PAD) / max(len(buckets), 1)
    scale = (_H - 2 * _PAD) / top
    bars = []
    for i, b in enumerate(buckets):
        y: float = _H - _PAD
        for state, n in (
            ("SUCCEEDED", b.succeeded),
            ("FAILED", b.failed),
            ("CANCELLED", b.cancelled),
        ):
            if not n:
                continue
            h = n * scale
            y -= h
            bars.append(
                f'<rect x="{_PAD + i * width:.1f}" y="{y:.1f}" width="{max(width - 1, 1):.1f}" '
                f'height="{h:.1f}" fill="{COLOURS[state]}"><title>{_clock(b.start)}: {n} '
                f"{state.lower()}</title></rect>"
            )
    return _svg(title, _axis(buckets, top, "") + "".join(bars))


def lateness(buckets: Sequence[TimeBucket], *, title: str) -> str:
    """The mean (bars) and largest (ticks) start lateness per bucket, in seconds."""
    peak = max((b.late_max or 0.0 for b in buckets), default=0.0)
    top = peak if peak > 0 else 1.0
    width = (_W - _PAD) / max(len(buckets), 1)
    scale = (_H - 2 * _PAD) / top
    marks = []
    for i, b in enumerate(buckets):
        if b.late_mean is None or b.late_max is None:
            continue
        x = _PAD + i * width
        mean = max(b.late_mean, 0.0) * scale
        peak = _H - _PAD - max(b.late_max, 0.0) * scale
        marks.append(
            f'<rect x="{x:.1f}" y="{_H - _PAD - mean:.1f}" width="{max(width - 1, 1):.1f}" '
            f'height="{mean:.1f}" fill="#1565c0"><title>{_clock(b.start)}: mean '
            f"{b.late_mean:.3f}s, max {b.late_max:.3f}s over {b.started} run(s)</title></rect>"
            f'<line x1="{x:.1f}" x2="{x + max(width - 1, 1):.1f}" y1="{peak:.1f}" '
            f'y2="{peak:.1f}" stroke="#c62828"/>'
        )
    return _svg(title, _axis(buckets, top, " s") + "".join(marks))


def _svg(title: str, body: str) -> str:
    return (
        f'<svg class="chart" viewBox="0 0 {_W} {_H}" role="img" aria-label="{escape(title)}">'
        f"<title>{escape(title)}</title>{body}</svg>"
    )


def chain(
    nodes: Mapping[str, tuple[str, str]],
    edges: Sequence[tuple[str, str]],
    *,
    focus: str,
    link: str,
) -> str:
    """The chain around ``focus`` as layered boxes and arrows: ``nodes`` maps each id
    to ``(worker, state)``, ``edges`` are ``(prerequisite, dependent)`` pairs; each box
    links to ``link`` + its id."""
    depth: dict[str, int] = {focus: 0}
    changed = True
    rounds = 0
    while changed and rounds < len(nodes) + 1:  # longest-path layering (a DAG)
        changed, rounds = False, rounds + 1
        for p, d in edges:
            if p in depth and depth.get(d, -math.inf) < depth[p] + 1 and d in nodes:
                depth[d] = depth[p] + 1
                changed = True
            if (
                d in depth
                and p in nodes
                and depth.get(p, math.inf) > depth[d] - 1
                and p not in depth
            ):
                depth[p] = depth[d] - 1
                changed = True
    for n in nodes:
        depth.setdefault(n, 0)
    low = min(depth.values())
    layers: dict[int, list[str]] = {}
    for n in sorted(nodes, key=lambda k: (depth[k], k)):
        layers.setdefault(depth[n] - low, []).append(n)
    box_w, box_h, gap_x, gap_y = 150, 36, 40, 14
    pos: dict[str, tuple[float, float]] = {}
    for col, ids in layers.items():
        for row, n in enumerate(ids):
            pos[n] = (10 + col * (box_w + gap_x), 10 + row * (box_h + gap_y))
    width = 20 + len(layers) * (box_w + gap_x)
    height = 20 + max(len(ids) for ids in layers.values()) * (box_h + gap_y)
    parts = [
        (
            '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="6" '
            'markerHeight="6" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#555"/></marker></defs>'
        )
    ]
    for p, d in edges:
        if p in pos and d in pos:
            (x1, y1), (x2, y2) = pos[p], pos[d]
            parts.append(
                f'<line x1="{x1 + box_w:.0f}" y1="{y1 + box_h / 2:.0f}" x2="{x2:.0f}" '
                f'y2="{y2 + box_h / 2:.0f}" stroke="#555" marker-end="url(#arrow)"/>'
            )
    for n, (x, y) in pos.items():
        worker, state = nodes[n]
        stroke = ' stroke="#000" stroke-width="3"' if n == focus else ""
        parts.append(
            f'<a href="{escape(link + n)}"><rect x="{x:.0f}" y="{y:.0f}" width="{box_w}" '
            f'height="{box_h}" rx="4" fill="{COLOURS.get(state, "#999")}"{stroke}/>'
            f'<text x="{x + 6:.0f}" y="{y + 15:.0f}" font-size="11" fill="#fff">'
            f"{escape(worker[:22])}</text>"
            f'<text x="{x + 6:.0f}" y="{y + 29:.0f}" font-size="10" fill="#fff">'
            f"{escape(state)} · …{escape(n[-8:])}</text></a>"
        )
    return (
        f'<svg class="graph" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-label="chain"><title>chain</title>{"".join(parts)}</svg>'
    )
