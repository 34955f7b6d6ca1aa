"""Aggregating rounds, the targets, and the outputs: terminal tables, Markdown, charts."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks._common import table

#: what each workload reports, in table order: (metric, column title)
METRICS: dict[str, list[tuple[str, str]]] = {
    "throughput": [("jobs_per_s", "jobs/s")],
    "enqueue": [("single_per_s", "single enqueues/s"), ("batch_per_s", "batched enqueues/s")],
    "timers": [("p50_ms", "p50 ms"), ("p99_ms", "p99 ms"), ("max_ms", "max ms")],
    "scale": [
        ("enqueue_s", "enqueue s"),
        ("bytes_per_work", "RSS bytes/work"),
        ("first_dispatch_ms", "first dispatch ms"),
        ("startup_s", "start-up s"),
        ("file_mb", "file MB"),
    ],
    "idle": [("cpu_pct", "CPU % of one core")],
}


def aggregate(rounds: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Per metric: median, min and max over the rounds that produced it."""
    out: dict[str, dict[str, float]] = {}
    for metric in sorted({m for r in rounds for m in r}):
        values = [r[metric] for r in rounds if metric in r]
        out[metric] = {
            "median": statistics.median(values),
            "min": min(values),
            "max": max(values),
            "n": len(values),
        }
    return out


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def cell(summary: dict[str, float] | None) -> str:
    """``median (min-max)``, or just the value for a single round."""
    if summary is None:
        return "-"
    if summary["n"] == 1 or summary["min"] == summary["max"]:
        return fmt(summary["median"])
    return f"{fmt(summary['median'])} ({fmt(summary['min'])}-{fmt(summary['max'])})"


def rows_for(
    workload: str, results: dict[str, Any], labels: dict[str, str]
) -> tuple[list[list[str]], list[tuple[str, str]]]:
    """Table rows for one workload, and (system, why not) for those not measured."""
    by_system = results.get(workload, {})
    baseline = by_system.get("raw-asyncio", {}).get("summary", {}).get("jobs_per_s")
    rows, others = [], []
    for name, entry in by_system.items():
        label = labels.get(name, name)
        summary = entry.get("summary")
        if not summary:
            status = entry.get("status", "error")
            reason = entry.get("reason") or "; ".join(entry.get("errors", []))[:200]
            others.append((label, f"{status}: {reason}"))
            continue
        row = [label, *[cell(summary.get(m)) for m, _ in METRICS[workload]]]
        if workload == "throughput":
            mine = summary.get("jobs_per_s")
            ratio = mine["median"] / baseline["median"] if mine and baseline else None
            row.append("-" if ratio is None else f"{ratio:.1%}")
        if entry.get("errors"):
            row[0] += f" [{len(entry['errors'])} round(s) failed]"
        rows.append(row)
    return rows, others


def headers_for(workload: str) -> list[str]:
    headers = ["system", *[title for _, title in METRICS[workload]]]
    if workload == "throughput":
        headers.append("vs raw asyncio")
    return headers


def text_tables(results: dict[str, Any], labels: dict[str, str], titles: dict[str, str]) -> str:
    out = []
    for workload in results:
        rows, others = rows_for(workload, results, labels)
        out.append(f"\n== {workload}: {titles[workload]}")
        if rows:
            out.append(table(headers_for(workload), rows))
        out.extend(f"  not measured: {label}: {why}" for label, why in others)
    return "\n".join(out)


def markdown_tables(
    results: dict[str, Any], labels: dict[str, str], titles: dict[str, str]
) -> str:
    out = []
    for workload in results:
        headers = headers_for(workload)
        rows, others = rows_for(workload, results, labels)
        out.append(f"### {workload}: {titles[workload]}\n")
        out.append("| " + " | ".join(headers) + " |")
        out.append("|" + "---|" * len(headers))
        out.extend("| " + " | ".join(row) + " |" for row in rows)
        out.append("")
        out.extend(f"- not measured: {label}: {why}" for label, why in others)
        out.append("")
    return "\n".join(out)


# --- targets -------------------------------------------------------------------------


def _median(results: dict[str, Any], workload: str, system: str, metric: str) -> float | None:
    summary = results.get(workload, {}).get(system, {}).get("summary") or {}
    value = summary.get(metric)
    return None if value is None else value["median"]


def _fastest_peer(
    results: dict[str, Any], kinds: dict[str, str], kind: str
) -> tuple[str, float] | None:
    best = None
    for name in results.get("throughput", {}):
        if name.startswith(("wm-", "raw-")) or kinds.get(name) != kind:
            continue
        value = _median(results, "throughput", name, "jobs_per_s")
        if value is not None and (best is None or value > best[1]):
            best = (name, value)
    return best


def targets(results: dict[str, Any], kinds: dict[str, str]) -> list[dict[str, str]]:
    """Each issue target with the measured figure and PASS, MISS or SKIP."""
    out: list[dict[str, str]] = []

    def add(name: str, measured: float | None, ok: Callable[[float], bool], shown: str) -> None:
        if measured is None:
            out.append({"target": name, "measured": "not measured", "verdict": "SKIP"})
        else:
            out.append(
                {"target": name, "measured": shown, "verdict": "PASS" if ok(measured) else "MISS"}
            )

    def tp(system: str) -> float | None:
        return _median(results, "throughput", system, "jobs_per_s")

    raw, mem, sql, pg = tp("raw-asyncio"), tp("wm-memory"), tp("wm-sqlite"), tp("wm-postgres")
    ratio = mem / raw if mem and raw else None
    add(
        "memory store >= 30% of raw-asyncio jobs/s",
        ratio,
        lambda r: r >= 0.30,
        f"{ratio:.1%} ({fmt(mem)} vs {fmt(raw)})" if ratio else "",
    )
    for system, kind, factor, label in (
        ("wm-memory", "memory", 3, "memory store >= 3x the fastest in-memory peer"),
        ("wm-sqlite", "durable", 10, "SQLite store >= 10x the fastest durable peer"),
    ):
        mine, best = tp(system), _fastest_peer(results, kinds, kind)
        x = mine / best[1] if mine and best else None

        def at_least(v: float, f: int = factor) -> bool:
            return v >= f

        add(
            label,
            x,
            at_least,
            f"{x:.1f}x ({fmt(mine)} vs {best[0]} {fmt(best[1])})" if x and best else "",
        )
    add("SQLite store >= 10,000 jobs/s", sql, lambda v: v >= 10_000, f"{fmt(sql)} jobs/s")
    add("PostgreSQL, 4 processes >= 5,000 jobs/s", pg, lambda v: v >= 5_000, f"{fmt(pg)} jobs/s")
    proc = tp("procrastinate-pg")
    x = pg / proc if pg and proc else None
    add("PostgreSQL >= 10x procrastinate", x, lambda v: v >= 10, f"{x:.1f}x" if x else "")
    for system, label in (("wm-memory", "memory"), ("wm-sqlite", "SQLite")):
        p99 = _median(results, "timers", system, "p99_ms")
        add(
            f"timer lateness p99 <= 5 ms with 10,000 pending ({label})",
            p99,
            lambda v: v <= 5,
            f"{fmt(p99)} ms",
        )
    per = _median(results, "scale", "wm-memory", "bytes_per_work")
    add(
        "1,000,000 pending: <= 1.5 KB RSS per work (memory store)",
        per,
        lambda v: v <= 1536,
        f"{fmt(per)} bytes",
    )
    startup = _median(results, "scale", "wm-sqlite", "startup_s")
    add(
        "SQLite start-up with 1,000,000 pending rows ready to dispatch <= 10 s",
        startup,
        lambda v: v <= 10,
        f"{fmt(startup)} s",
    )
    for system, label in (("wm-memory", "memory"), ("wm-sqlite", "SQLite")):
        cpu = _median(results, "idle", system, "cpu_pct")
        add(
            f"idle <= 1% of one CPU with 10,000 pending ({label})",
            cpu,
            lambda v: v <= 1,
            f"{fmt(cpu)} %",
        )
    return out


def targets_text(rows: Sequence[dict[str, str]]) -> str:
    return table(
        ["target", "measured (median)", ""],
        [[r["target"], r["measured"], r["verdict"]] for r in rows],
    )


def targets_markdown(rows: Sequence[dict[str, str]]) -> str:
    lines = ["| target | measured (median) | |", "|---|---|---|"]
    lines += [f"| {r['target']} | {r['measured']} | **{r['verdict']}** |" for r in rows]
    return "\n".join(lines) + "\n"


# --- charts --------------------------------------------------------------------------

_COLOURS = {"baseline": "#888888", "memory": "#4c72b0", "durable": "#dd8452"}


def charts(
    results: dict[str, Any], labels: dict[str, str], kinds: dict[str, str], directory: Path
) -> list[Path]:
    """throughput.png and lateness.png (log scales); returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    tp = [
        (name, e["summary"]["jobs_per_s"])
        for name, e in results.get("throughput", {}).items()
        if e.get("summary")
    ]
    if tp:
        fig, ax = plt.subplots(figsize=(9, 0.45 * len(tp) + 1.5))
        names = [labels.get(n, n) for n, _ in tp][::-1]
        med = [s["median"] for _, s in tp][::-1]
        err = [
            [s["median"] - s["min"] for _, s in tp][::-1],
            [s["max"] - s["median"] for _, s in tp][::-1],
        ]
        colours = [_COLOURS.get(kinds.get(n, ""), "#55a868") for n, _ in tp][::-1]
        ax.barh(names, med, xerr=err, color=colours, capsize=3)
        ax.set_xscale("log")
        ax.set_xlabel(
            "jobs/s, enqueue to last completion (log scale; bars: median, whiskers: range)"
        )
        ax.set_title("Throughput: trivial async jobs")
        for y, v in enumerate(med):
            ax.text(v, y, f" {v:,.0f}", va="center", fontsize=8)
        fig.tight_layout()
        path = directory / "throughput.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    lt = [(n, e["summary"]) for n, e in results.get("timers", {}).items() if e.get("summary")]
    if lt:
        fig, ax = plt.subplots(figsize=(9, 0.6 * len(lt) + 1.5))
        height = 0.27
        for i, (metric, colour) in enumerate(
            (("p50_ms", "#4c72b0"), ("p99_ms", "#dd8452"), ("max_ms", "#c44e52"))
        ):
            ys = [k + (i - 1) * height for k in range(len(lt))]
            values = [max(s[metric]["median"], 0.01) for _, s in lt]
            ax.barh(ys, values, height=height, color=colour, label=metric.removesuffix("_ms"))
        ax.set_yticks(range(len(lt)), [labels.get(n, n) for n, _ in lt])
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.axvline(5, color="black", linestyle=":", linewidth=1)
        ax.set_xlabel("lateness, ms after the due time (log scale; dotted: the 5 ms target)")
        ax.set_title("Timer accuracy: jobs due at random times, with pending works")
        ax.legend(loc="upper right")  # the top rows (the fastest) leave room there
        fig.tight_layout()
        path = directory / "lateness.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written
