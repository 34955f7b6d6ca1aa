"""wm_async side by side with raw asyncio and the peers.

    python -m benchmarks                 # full run (takes a while; see README.md)
    python -m benchmarks --quick         # small sizes, one round: a smoke run
    python -m benchmarks --only throughput --only 'wm-*' --only raw-asyncio
    python -m benchmarks --only throughput --only 'wm-*' --baseline ../wm-base
        # each wm-* system also runs on another checkout's wm_async, interleaved
    python -m benchmarks --headline      # the README's chart: throughput, every system,
                                         # 1 round of 5,000 jobs (about 2 minutes)

Every (workload, system) measurement runs in its own child process, in interleaved
rounds (A B C A B C …). Prints the tables and the targets, writes
``benchmarks/results/results-<time>.json`` (and ``latest.json``, ``latest.md``) and
PNG charts there.
"""

from __future__ import annotations

import argparse
import datetime as dt
import fnmatch
import json
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks import _report
from benchmarks._child import MARK
from benchmarks.systems import SYSTEMS
from benchmarks.systems._base import WORKLOADS

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
#: Where --publish copies the tables and charts: tracked, linked from the README.
PUBLISHED = ROOT / "docs" / "benchmarks"

TITLES = {
    "throughput": "N immediately due trivial async jobs, first enqueue to last completion",
    "enqueue": "N enqueues with nothing running them: one per call, and batched",
    "timers": "jobs due at random times over a few seconds, with pending works; lateness",
    "scale": "pending delayed works: enqueue, memory, first dispatch, SQLite start-up",
    "idle": "CPU used while works are pending and nothing is due",
}

FULL: dict[str, dict[str, Any]] = {
    "throughput": {"n": 20_000, "batch": 1_000, "timeout": 900, "processes": 4},
    "enqueue": {"n": 20_000, "batch": 1_000},
    "timers": {"n": 2_000, "spread": 3.0, "pending": 10_000, "batch": 1_000, "timeout": 120},
    "scale": {"n": 1_000_000, "batch": 10_000},
    "idle": {"pending": 10_000, "seconds": 10.0, "batch": 1_000},
}
QUICK: dict[str, dict[str, Any]] = {
    "throughput": {**FULL["throughput"], "n": 2_000},
    "enqueue": {**FULL["enqueue"], "n": 1_000},
    "timers": {**FULL["timers"], "n": 200, "spread": 1.0, "pending": 1_000},
    "scale": {**FULL["scale"], "n": 20_000},
    "idle": {**FULL["idle"], "pending": 1_000, "seconds": 2.0},
}

#: packages whose versions the report records
PACKAGES = [
    "wm_async",
    "anyio",
    "aiosqlite",
    "attrs",
    "asyncpg",
    "apscheduler",
    "sqlalchemy",
    "huey",
    "arq",
    "saq",
    "taskiq",
    "taskiq-redis",
    "procrastinate",
    "psycopg",
    "redis",
]


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, 1 round (smoke run)")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help=(
            "a workload (" + ", ".join(WORKLOADS) + ") or a system pattern such as 'wm-*' "
            "(systems: " + ", ".join(SYSTEMS) + "); repeat or comma-separate"
        ),
    )
    parser.add_argument("--rounds", type=int, help="rounds per workload (default 3; quick 1)")
    parser.add_argument("--n", type=int, help="throughput N (default 20,000; quick 2,000)")
    parser.add_argument(
        "--child-timeout", type=float, default=1800, help="seconds before a run is given up"
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    parser.add_argument("--no-charts", action="store_true")
    parser.add_argument(
        "--publish",
        action="store_true",
        help=f"also copy latest.md and the charts to {PUBLISHED.relative_to(ROOT)}/ (tracked, "
        "linked from the README); not with --quick, --only or --baseline",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        metavar="CHECKOUT",
        help=(
            "another checkout of wm_async (a git worktree of an earlier commit, say): every "
            "wm-* system also runs on its wm_async, as '<system>@baseline', in the same "
            "interleaved rounds, so the two compare side by side"
        ),
    )
    parser.add_argument(
        "--headline",
        action="store_true",
        help=f"the README's chart: the throughput workload for every system, 1 round of "
        f"N={HEADLINE_N:,} (--rounds and --n override); writes "
        f"{PUBLISHED.relative_to(ROOT)}/headline.png and headline.md (the table, the "
        "command, the machine and its load)",
    )
    args = parser.parse_args(argv)
    if args.headline:
        if args.quick or args.only or args.baseline or args.no_charts or args.publish:
            parser.error(
                "--headline is its own run: not with --quick, --only, --baseline, "
                "--no-charts, --publish"
            )
        args.only = ["throughput"]
        args.rounds = 1 if args.rounds is None else args.rounds
        args.n = HEADLINE_N if args.n is None else args.n
    if args.publish and (args.quick or args.only or args.baseline or args.no_charts):
        parser.error(
            "--publish takes a full run: not with --quick, --only, --baseline, --no-charts"
        )
    tokens = [t for item in args.only for t in item.split(",") if t]
    args.workloads = [w for w in WORKLOADS if w in tokens] or list(WORKLOADS)
    patterns = [t for t in tokens if t not in WORKLOADS]
    args.systems = [
        s for s in SYSTEMS if not patterns or any(fnmatch.fnmatch(s, p) for p in patterns)
    ]
    unknown = [p for p in patterns if not any(fnmatch.fnmatch(s, p) for s in SYSTEMS)]
    if unknown:
        parser.error(f"--only: no workload or system matches {', '.join(unknown)}")
    if args.baseline is not None:
        if not (args.baseline / "wm_async" / "__init__.py").is_file():
            parser.error(f"--baseline: no wm_async package in {args.baseline}")
        args.systems = [
            variant
            for s in args.systems
            for variant in ((s, f"{s}{BASELINE}") if s.startswith("wm-") else (s,))
        ]
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    return args


#: Jobs per system in ``--headline``'s throughput run: short enough for every peer (the
#: slowest, about 100 jobs/s, takes under a minute), long enough that wm_async's run is
#: not over in a few milliseconds.
HEADLINE_N = 5_000

#: Suffix of a system run on the ``--baseline`` checkout's wm_async.
BASELINE = "@baseline"
#: A folder holding only a ``wm_async`` link to the baseline's package (see run_child).
_shim: list[Path] = []


def _baseline_shim(checkout: Path) -> Path:
    if not _shim:
        folder = Path(tempfile.mkdtemp(prefix="wm-bench-baseline-"))
        (folder / "wm_async").symlink_to((checkout / "wm_async").resolve())
        _shim.append(folder)
    return _shim[0]


def run_child(
    system: str,
    workload: str,
    params: dict[str, Any],
    limit: float,
    baseline: Path | None = None,
) -> dict[str, Any]:
    """One measurement in a fresh interpreter; never raises.

    A ``<system>@baseline`` runs the same adapter with the baseline checkout's wm_async:
    the child starts in a folder holding only a link to that package (``python -m`` puts
    the working folder first on the path), and finds ``benchmarks`` here.
    """
    name, marker, _ = system.partition("@")
    cmd = [sys.executable, "-m", "benchmarks._child", name, workload, json.dumps(params)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cwd = ROOT
    if marker:
        assert baseline is not None
        cwd = _baseline_shim(baseline)
        env["PYTHONPATH"] = f"{cwd}{os.pathsep}{ROOT}"
    try:
        proc = subprocess.run(
            cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=limit, check=False
        )
    except subprocess.TimeoutExpired:
        return {"error": f"no result within {limit:.0f} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(MARK):
            return json.loads(line[len(MARK) :])  # type: ignore[no-any-return]
    tail = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    return {"error": f"exit {proc.returncode}: {tail[-1] if tail else 'no output'}"}


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions: dict[str, str | None] = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "sqlite": sqlite3.sqlite_version,
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "packages": versions,
    }


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    params = {w: dict((QUICK if args.quick else FULL)[w]) for w in args.workloads}
    if args.n is not None and "throughput" in params:
        params["throughput"]["n"] = args.n
    started = dt.datetime.now(dt.UTC)
    load_before = os.getloadavg()
    command = "python -m benchmarks " + " ".join(sys.argv[1:] if argv is None else argv)
    log(f"{command}: workloads {args.workloads}, {args.rounds} round(s), load {load_before}")

    # Which systems can run here, and what each does not do (asked of a child, so that
    # no peer is imported in this process).
    available: dict[str, dict[str, Any]] = {}
    for system in args.systems:
        outcome = run_child(system, "check", {}, 120, args.baseline)
        if system.endswith(BASELINE) and "ok" in outcome:
            outcome["ok"]["label"] += " (baseline)"
        available[system] = outcome
        if "ok" not in outcome:
            log(f"  {system}: {next(iter(outcome.values()))}")

    labels, kinds = {}, {}
    loads: list[float] = []  # 1-minute load average before each measurement
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for workload in args.workloads:
        entries = results.setdefault(workload, {})
        runnable = []
        for system in args.systems:
            outcome = available[system]
            if "ok" not in outcome:
                status = "skipped" if "skipped" in outcome else "error"
                entries[system] = {"status": status, "reason": next(iter(outcome.values()))}
                continue
            info = outcome["ok"]
            labels[system], kinds[system] = info["label"], info["kind"]
            if workload in info["unsupported"]:
                entries[system] = {"status": "n/a", "reason": info["unsupported"][workload]}
                continue
            entries[system] = {"rounds": [], "errors": []}
            runnable.append(system)
        for round_no in range(args.rounds):  # interleaved: A B C, A B C, ...
            for system in runnable:
                loads.append(os.getloadavg()[0])
                t0 = time.perf_counter()
                outcome = run_child(
                    system, workload, params[workload], args.child_timeout, args.baseline
                )
                took = time.perf_counter() - t0
                entry = entries[system]
                if "ok" in outcome:
                    entry["rounds"].append(outcome["ok"])
                    shown = ", ".join(f"{k}={_report.fmt(v)}" for k, v in outcome["ok"].items())
                    log(f"  {workload} round {round_no + 1} {system}: {shown} ({took:.0f} s)")
                else:
                    reason = next(iter(outcome.values()))
                    entry["errors"].append(str(reason))
                    log(f"  {workload} round {round_no + 1} {system}: FAILED {reason}")
        for system in runnable:
            entry = entries[system]
            if entry["rounds"]:
                entry["summary"] = _report.aggregate(entry["rounds"])
            else:
                entry["status"] = "error"

    load_after = os.getloadavg()
    target_rows = _report.targets(results, kinds)
    report = {
        "command": command,
        "quick": args.quick,
        "rounds": args.rounds,
        "started": started.isoformat(timespec="seconds"),
        "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "load_average_before": load_before,
        "load_average_after": load_after,
        # The benchmark itself adds about 1 to the load; more means other work is running.
        "load_average_during": {
            "mean": round(sum(loads) / len(loads), 2) if loads else None,
            "max": round(max(loads), 2) if loads else None,
        },
        "machine": machine(),
        "params": params,
        "systems": {s: {"label": labels.get(s, s), "kind": kinds.get(s)} for s in args.systems},
        "results": results,
        "targets": target_rows,
    }

    m = report["machine"]
    print(
        f"\nwm_async benchmarks, {started:%Y-%m-%d %H:%M} UTC: {m['cores']} cores ({m['cpu']}), "
        f"{m['implementation']} {m['python']}, SQLite {m['sqlite']}"
    )
    during = report["load_average_during"]
    print(
        f"load average (1 min): {load_before[0]:.2f} before, {load_after[0]:.2f} after, "
        f"mean {during['mean']} / max {during['max']} during (the benchmark alone adds ~1)"
    )
    if during["max"] is not None and during["max"] > 2.5:
        print("WARNING: the machine was busy with other work: figures are provisional")
    print(f"command: {command}   (figures: median (min-max) of {args.rounds} round(s))")
    if args.quick:
        print("QUICK RUN: sizes are far below the targets' own; figures are indicative only")
    print(_report.text_tables(results, labels, TITLES))
    print("\n== targets")
    print(_report.targets_text(target_rows))

    args.out.mkdir(parents=True, exist_ok=True)
    stamp = started.strftime("%Y%m%d-%H%M%S")
    text = json.dumps(report, indent=1)
    (args.out / f"results-{stamp}.json").write_text(text)
    (args.out / "latest.json").write_text(text)
    markdown = (
        _report.markdown_tables(results, labels, TITLES)
        + "\n### targets\n\n"
        + _report.targets_markdown(target_rows)
    )
    (args.out / "latest.md").write_text(markdown)
    written = [args.out / f"results-{stamp}.json", args.out / "latest.md"]
    if not args.no_charts:
        try:
            written += _report.charts(results, labels, kinds, args.out)
        except ImportError as exc:
            log(f"no charts: {exc} (pip install -r requirements-bench.txt)")
    if args.publish:
        PUBLISHED.mkdir(parents=True, exist_ok=True)
        for path in written[1:]:  # latest.md and the charts, not the raw results
            target = PUBLISHED / path.name
            target.write_bytes(path.read_bytes())
            written.append(target)
    if args.headline:
        written += _publish_headline(report, results, labels, args.out)
    print("\nwritten: " + ", ".join(_shown(p) for p in written))
    return 0


def _publish_headline(
    report: dict[str, Any], results: dict[str, Any], labels: dict[str, str], out: Path
) -> list[Path]:
    """docs/benchmarks/headline.png (the throughput chart) and headline.md (its table,
    with how and where it was measured)."""
    chart = out / "throughput.png"
    if not chart.exists():
        log("no headline chart: matplotlib missing (pip install -r requirements-bench.txt)")
        return []
    PUBLISHED.mkdir(parents=True, exist_ok=True)
    png, md = PUBLISHED / "headline.png", PUBLISHED / "headline.md"
    png.write_bytes(chart.read_bytes())
    m, load = report["machine"], report["load_average_during"]
    n = report["params"]["throughput"]["n"]
    md.write_text(
        f"Measured {report['started'][:16].replace('T', ' ')} UTC with `{report['command']}`"
        f" ({report['rounds']} round of {n:,} jobs per system): {m['cores']} cores "
        f"({m['cpu']}), {m['implementation']} {m['python']}, SQLite {m['sqlite']}; "
        f"1-minute load average {load['mean']} (max {load['max']}) during the run, on a "
        "machine shared with other work, so the figures are indicative.\n\n"
        + _report.markdown_tables(results, labels, {"throughput": TITLES["throughput"]})
    )
    return [png, md]


def _shown(path: Path) -> str:
    """``path`` relative to the repository when it is inside it (``--out`` may not be)."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    sys.exit(main())
