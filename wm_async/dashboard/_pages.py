"""The dashboard's pages as server-rendered HTML: every value escaped, no inline script
or style (the content security policy forbids both)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from html import escape
from typing import Final
from urllib.parse import urlencode

import attrs

from .._core.explanation import WorkExplanation
from .._core.model import WorkInfo, WorkState
from ..stores._browse import Overview
from . import _charts as charts

STATE_ORDER: Final = ("ENQUEUED", "RUNNING", "BLOCKED", "SUCCEEDED", "FAILED", "CANCELLED")


@attrs.frozen(kw_only=True)
class Page:
    """What every page needs: where the dashboard is mounted, the form token, whether
    actions are offered, a message to show."""

    root: str
    title: str
    csrf: str
    can_act: bool
    read_only: bool
    flash: str = ""
    error: bool = False
    login: bool = False  # a token protects the dashboard: offer to log out


def when(ts: float | datetime | None) -> str:
    """A time as UTC text (``-`` for none)."""
    if ts is None:
        return "-"
    moment = ts if isinstance(ts, datetime) else datetime.fromtimestamp(ts, UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def ago(seconds: float) -> str:
    """A duration in words."""
    seconds = abs(seconds)
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def short(work_id: str) -> str:
    """A work id shortened to its random end (time-ordered ids share their start)."""
    return "…" + work_id[-12:]


def state(value: str) -> str:
    """A state, coloured."""
    return f'<span class="state s-{escape(value)}">{escape(value)}</span>'


def layout(page: Page, heading: str, body: str, *, live: str | None = None) -> str:
    """The whole document around a page's body."""
    r = escape(page.root)
    flash = ""
    if page.flash:
        flash = f'<div class="flash{" error" if page.error else ""}" id="flash">{escape(page.flash)}</div>'
    mode = '<span class="muted">read-only</span>' if not page.can_act else ""
    logout = ""
    if page.login:
        logout = (
            f'<form class="inline" method="post" action="{r}/logout">'
            f'<input type="hidden" name="csrf" value="{escape(page.csrf)}">'
            '<button type="submit">log out</button></form>'
        )
    live_attr = f' data-live="{escape(live)}"' if live else ""
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(heading)} · {escape(page.title)}</title>"
        f'<link rel="stylesheet" href="{r}/static/app.css"></head>'
        f"<body{live_attr}><header><strong>{escape(page.title)}</strong>"
        f'<a href="{r}/">overview</a><a href="{r}/works">works</a>{mode}{logout}'
        f'<span id="live" class="live">{"connecting…" if live else ""}</span></header>'
        f"<main><h1>{escape(heading)}</h1>{flash}{body}</main>"
        f'<script src="{r}/static/app.js"></script></body></html>'
    )


def _form(
    page: Page,
    action: str,
    fields: Mapping[str, str],
    label: str,
    *,
    confirm: str = "",
    danger: bool = False,
    back: str = "",
) -> str:
    hidden = "".join(
        f'<input type="hidden" name="{escape(k)}" value="{escape(v)}">'
        for k, v in {**fields, "csrf": page.csrf, **({"next": back} if back else {})}.items()
    )
    ask = f' data-confirm="{escape(confirm)}"' if confirm else ""
    cls = ' class="danger"' if danger else ""
    return (
        f'<form class="inline" method="post" action="{escape(page.root)}/actions/{action}"{ask}>'
        f'{hidden}<button type="submit"{cls} data-action="{action}">{escape(label)}</button></form>'
    )


def work_link(page: Page, work_id: str, text: str | None = None) -> str:
    """A link to a work's page."""
    return f'<a href="{escape(page.root)}/works/{escape(work_id)}">{escape(text or work_id)}</a>'


def list_link(page: Page, label: str, **params: str) -> str:
    """A link to the list with filters."""
    query = urlencode({k: v for k, v in params.items() if v})
    return f'<a href="{escape(page.root)}/works?{escape(query)}">{escape(label)}</a>'


# -- overview


def overview_body(
    page: Page,
    ov: Overview,
    *,
    window: str,
    windows: Iterable[str],
    paused: frozenset[str],
    slow: Sequence[tuple[WorkInfo, float, float]],
) -> str:
    """The overview's live part (replaced as a whole by each live update)."""
    by_worker: dict[str, dict[str, int]] = {}
    for worker, st, n in ov.counts:
        by_worker.setdefault(worker, {})[st.value] = n
    for name in paused:
        by_worker.setdefault(name, {})
    head = "".join(f"<th>{state(s)}</th>" for s in STATE_ORDER)
    rows = []
    for worker in sorted(by_worker):
        cells = "".join(
            f'<td class="n">{list_link(page, str(by_worker[worker].get(s, 0)), worker=worker, state=s)}</td>'
            for s in STATE_ORDER
        )
        action = ""
        if page.can_act:
            action = (
                _form(page, "resume", {"worker": worker}, "resume", back="/")
                if worker in paused
                else _form(
                    page,
                    "pause",
                    {"worker": worker},
                    "pause",
                    back="/",
                    confirm=f"Pause worker {worker} in every process?",
                )
            )
        mark = ' <span class="muted">(paused)</span>' if worker in paused else ""
        rows.append(
            f'<tr data-worker="{escape(worker)}"><td>{list_link(page, worker, worker=worker)}'
            f"{mark}</td>{cells}<td>{action}</td></tr>"
        )
    workers = (
        f'<table id="counts"><tr><th>worker</th>{head}<th></th></tr>{"".join(rows)}</table>'
        if rows
        else '<p class="muted" id="counts">no works</p>'
    )
    by_tag: dict[str, dict[str, int]] = {}
    for tag, st, n in ov.tag_counts:
        if tag not in by_worker:  # a worker's own name is one of its tags: shown above
            by_tag.setdefault(tag, {})[st.value] = n
    tag_rows = "".join(
        f"<tr><td>{list_link(page, tag, tag=tag)}</td>"
        + "".join(
            f'<td class="n">{list_link(page, str(counts.get(s, 0)), tag=tag, state=s)}</td>'
            for s in STATE_ORDER
        )
        + "</tr>"
        for tag, counts in sorted(by_tag.items())
    )
    tags = (
        f"<table><tr><th>tag</th>{head}</tr>{tag_rows}</table>"
        if tag_rows
        else '<p class="muted">no tags besides worker names</p>'
    )
    due_rows = "".join(
        f"<tr><td>{work_link(page, str(r.id), short(str(r.id)))}</td><td>{escape(r.worker)}</td>"
        f"<td>{when(r.next_run_at)}</td><td class=n>{ago(ov.now - (r.next_run_at or ov.now))}</td></tr>"
        for r in ov.due[:10]
    )
    due = (
        f"<p>{ov.due_count} work(s) due now; the longest waiting:</p><table><tr><th>work</th>"
        f"<th>worker</th><th>due since</th><th>overdue</th></tr>{due_rows}</table>"
        if ov.due
        else "<p class=muted>no work is waiting past its due time</p>"
    )
    slow_rows = "".join(
        f"<tr><td>{work_link(page, str(info.id), short(str(info.id)))}</td><td>{escape(info.worker)}</td>"
        f"<td class=n>{ago(elapsed)}</td><td class=n>{ago(usual)}</td></tr>"
        for info, elapsed, usual in slow
    )
    slow_html = (
        "<table><tr><th>work</th><th>worker</th><th>running for</th><th>usual run</th></tr>"
        f"{slow_rows}</table>"
        if slow
        else "<p class=muted>no work runs longer than usual</p>"
    )
    picks = " ".join(
        f"<strong>{escape(w)}</strong>"
        if w == window
        else f'<a href="{escape(page.root)}/?window={escape(w)}">{escape(w)}</a>'
        for w in windows
    )
    actions = ""
    if page.can_act:
        actions = "<h2>Retention</h2>" + _form(
            page,
            "prune",
            {},
            "prune finished works",
            danger=True,
            back="/",
            confirm="Delete every finished work now?",
        )
    return (
        f'<section id="overview" data-now="{ov.now:.3f}"><p>Window: {picks} · as of {when(ov.now)} UTC. '
        "Counts: every unfinished work, and the works finished in the window.</p>"
        f"<h2>By worker</h2>{workers}<h2>By tag</h2>{tags}"
        f'<div class="grid"><div><h2>Throughput (works finished per bucket)</h2>'
        f"{charts.throughput(ov.buckets, title='works finished')}</div>"
        f"<div><h2>Start lateness (mean bars, max ticks)</h2>"
        f"{charts.lateness(ov.buckets, title='start lateness')}</div></div>"
        f'<div class="grid"><div><h2>Oldest due work</h2>{due}</div>'
        f"<div><h2>Running longer than usual</h2>{slow_html}</div></div>{actions}</section>"
    )


# -- the list


def filter_form(page: Page, params: Mapping[str, str], workers: Iterable[str]) -> str:
    """The list's filters."""

    def field(name: str, label: str, kind: str = "text") -> str:
        return (
            f'<label>{escape(label)}<input type="{kind}" name="{name}" '
            f'value="{escape(params.get(name, ""))}"></label>'
        )

    options = "".join(
        f'<option value="{s}"{" selected" if params.get("state") == s else ""}>{s}</option>'
        for s in STATE_ORDER
    )
    worker_opts = "".join(
        f'<option value="{escape(w)}"{" selected" if params.get("worker") == w else ""}>{escape(w)}</option>'
        for w in sorted(set(workers) | ({params["worker"]} if params.get("worker") else set()))
    )
    return (
        f'<form class="filters" method="get" action="{escape(page.root)}/works">'
        f'<label>state<select name="state"><option value="">any</option>{options}</select></label>'
        f'<label>worker<select name="worker"><option value="">any</option>{worker_opts}</select></label>'
        + field("tag", "tag")
        + field("unique", "unique name")
        + field("q", "id or id prefix")
        + field("since", "enqueued from (UTC)", "datetime-local")
        + field("until", "enqueued before (UTC)", "datetime-local")
        + '<button type="submit">filter</button>'
        f'<a href="{escape(page.root)}/works">clear</a></form>'
    )


def work_row(page: Page, info: WorkInfo, now: float) -> str:
    """One work in the list (replaced by live updates)."""
    wid = str(info.id)
    due = ""
    if info.state is WorkState.ENQUEUED and info.next_schedule_time is not None:
        wait = info.next_schedule_time.timestamp() - now
        due = f"due in {ago(wait)}" if wait > 0 else "due"
    elif info.state is WorkState.RUNNING and info.started_at is not None:
        due = f"running {ago(now - info.started_at.timestamp())}"
    elif info.finished_at is not None:
        due = when(info.finished_at)
    return (
        f'<tr id="w-{escape(wid)}" data-state="{info.state.value}"><td>{work_link(page, wid, wid)}</td>'
        f"<td>{escape(info.worker)}</td><td>{state(info.state.value)}</td>"
        f"<td class=n>{info.run_attempt_count}</td><td>{escape(info.unique_name or '')}</td>"
        f"<td>{escape(', '.join(sorted(t for t in info.tags if t != info.worker)))}</td>"
        f"<td>{when(info.enqueued_at)}</td><td>{escape(due)}</td></tr>"
    )


def works_table(page: Page, infos: Sequence[WorkInfo], now: float) -> str:
    """The list's table."""
    if not infos:
        return '<p class="muted" id="works">no works match</p>'
    rows = "".join(work_row(page, i, now) for i in infos)
    return (
        '<table id="works"><tr><th>id</th><th>worker</th><th>state</th><th>attempts</th>'
        "<th>unique name</th><th>tags</th><th>enqueued (UTC)</th><th>when</th></tr>"
        f"{rows}</table>"
    )


# -- one work


def data_block(value: Mapping[str, object]) -> str:
    """JSON data, pretty-printed."""
    if not value:
        return '<span class="muted">{}</span>'
    return f"<pre>{escape(json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False))}</pre>"


def work_live(
    page: Page,
    info: WorkInfo,
    shown: Mapping[str, Mapping[str, object]],
    explanation: WorkExplanation | None,
    now: float,
) -> str:
    """The parts of a work's page that change (replaced by each live update)."""
    wid = str(info.id)
    fields: list[tuple[str, str]] = [
        ("state", state(info.state.value)),
        ("attempts", str(info.run_attempt_count)),
        ("stop reason", escape(info.stop_reason.value)),
        ("generation", str(info.generation)),
        ("next due", when(info.next_schedule_time)),
        ("started", when(info.started_at)),
        ("finished", when(info.finished_at)),
    ]
    if info.error is not None:
        fields.append(
            ("error", f"<code>{escape(info.error.type)}: {escape(info.error.message)}</code>")
        )
    reasons = "".join(f"<li>{escape(r)}</li>" for r in explanation.reasons) if explanation else ""
    dl = "".join(f"<dt>{escape(k)}</dt><dd>{v}</dd>" for k, v in fields)
    actions = ""
    if page.can_act:
        back = f"/works/{wid}"
        parts = []
        if not info.state.is_finished:
            parts.append(
                _form(
                    page,
                    "cancel",
                    {"id": wid},
                    "cancel",
                    danger=True,
                    back=back,
                    confirm="Cancel this work (and its unfinished dependents)?",
                )
            )
        if info.state is WorkState.ENQUEUED:
            parts.append(_form(page, "run-now", {"id": wid}, "run now", back=back))
        if info.state in (WorkState.FAILED, WorkState.CANCELLED):
            parts.append(
                _form(page, "run-again", {"id": wid}, "run again (as a new work)", back=back)
            )
        actions = f'<p id="actions">{" ".join(parts)}</p>'
    return (
        f'<section id="live-work" data-state="{info.state.value}">{actions}'
        f'<div class="grid"><div><h2>Status</h2><dl class="fields">{dl}</dl>'
        f'<h2>Why (explain)</h2><ul id="explain">{reasons}</ul></div>'
        f'<div><h2>Progress</h2><div id="progress">{data_block(shown["progress"])}</div>'
        f"<h2>Output</h2>{data_block(shown['output'])}</div></div></section>"
    )


def work_static(page: Page, info: WorkInfo, shown: Mapping[str, Mapping[str, object]]) -> str:
    """The parts of a work's page that do not change while it lives (its spec)."""
    p = info.periodicity
    schedule = "one-time"
    if p is not None:
        if p.cron:
            schedule = f"cron {p.cron} ({p.timezone or 'UTC'})"
        elif p.interval is not None and p.flex is not None:
            schedule = (
                f"every {ago(p.interval.total_seconds())}, flex {ago(p.flex.total_seconds())}"
            )
        schedule += f"; {info.period_count} period(s) done"
    c = info.constraints.signal_names()
    fields = [
        ("id", f"<code>{escape(str(info.id))}</code>"),
        ("worker", list_link(page, info.worker, worker=info.worker)),
        ("tags", ", ".join(list_link(page, t, tag=t) for t in sorted(info.tags))),
        (
            "unique name",
            list_link(page, info.unique_name, unique=info.unique_name)
            if info.unique_name
            else "-",
        ),
        ("schedule", escape(schedule)),
        ("priority", str(info.priority)),
        ("constraints", escape(", ".join(sorted(c)) or "none")),
        ("initial delay", ago(info.initial_delay.total_seconds())),
        ("enqueued", when(info.enqueued_at)),
    ]
    dl = "".join(f"<dt>{escape(k)}</dt><dd>{v}</dd>" for k, v in fields)
    return f'<h2>Spec</h2><dl class="fields">{dl}</dl><h2>Input</h2>{data_block(shown["input"])}'


def timeline(entries: Sequence[tuple[float, str]]) -> str:
    """The work's transitions, oldest first."""
    items = "".join(f"<li>{when(t)} — {escape(text)}</li>" for t, text in entries)
    return f'<ul class="timeline" id="timeline">{items}</ul>'


def timeline_item(at: float, text: str) -> str:
    """One timeline entry (appended by live updates)."""
    return f"<li>{when(at)} — {escape(text)}</li>"
