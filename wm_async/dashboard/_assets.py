"""The dashboard's style sheet and its one small script, served from the package (no
build step, nothing from a CDN)."""

from __future__ import annotations

from typing import Final

CSS: Final = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 0; color: #222; background: #fafafa; }
header { background: #263238; color: #fff; padding: 8px 16px; display: flex; gap: 16px;
  align-items: center; }
header a { color: #fff; text-decoration: none; margin-right: 12px; }
header .live { margin-left: auto; font-size: 12px; color: #b0bec5; }
header .live.on { color: #a5d6a7; }
main { padding: 12px 16px; }
h1 { font-size: 20px; margin: 4px 0 12px; }
h2 { font-size: 16px; margin: 18px 0 6px; }
table { border-collapse: collapse; background: #fff; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #eceff1; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
code, pre { font: 12px/1.3 ui-monospace, monospace; }
pre { background: #fff; border: 1px solid #ddd; padding: 6px; margin: 0; max-height: 300px;
  overflow: auto; white-space: pre-wrap; word-break: break-all; }
.state { font-weight: 600; }
.s-SUCCEEDED { color: #2e7d32; } .s-FAILED { color: #c62828; } .s-CANCELLED { color: #757575; }
.s-ENQUEUED { color: #1565c0; } .s-RUNNING { color: #ef6c00; } .s-BLOCKED { color: #6a1b9a; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(360px, 1fr)); gap: 12px; }
.chart { width: 100%; max-width: 720px; background: #fff; border: 1px solid #ddd; }
.graph { background: #fff; border: 1px solid #ddd; max-width: 100%; }
form.inline { display: inline; }
form.filters { display: flex; flex-wrap: wrap; gap: 8px; align-items: end; margin-bottom: 10px; }
form.filters label { display: flex; flex-direction: column; font-size: 12px; }
button { cursor: pointer; }
button.danger { color: #b71c1c; }
.flash { background: #e3f2fd; border: 1px solid #90caf9; padding: 6px 10px; margin-bottom: 10px; }
.flash.error { background: #ffebee; border-color: #ef9a9a; }
.muted { color: #777; }
dl.fields { display: grid; grid-template-columns: max-content 1fr; gap: 2px 12px; margin: 0; }
dl.fields dt { font-weight: 600; }
dl.fields dd { margin: 0; }
ul.timeline { list-style: none; padding: 0; margin: 0; }
ul.timeline li { padding: 2px 0; border-bottom: 1px dotted #ccc; }
.pager { margin-top: 8px; display: flex; gap: 12px; }
"""

#: Live updates: the page names a server-sent events URL (``data-live`` on <body>); each
#: event carries JSON ``{"replace": {element id: html}, "append": {element id: html}}``.
#: Forms with ``data-confirm`` ask first.
JS: Final = """
(function () {
  "use strict";
  var body = document.body;
  var url = body.getAttribute("data-live");
  var badge = document.getElementById("live");
  function apply(data) {
    var replace = data.replace || {};
    Object.keys(replace).forEach(function (id) {
      var el = document.getElementById(id);
      if (el) { el.outerHTML = replace[id]; }
    });
    var append = data.append || {};
    Object.keys(append).forEach(function (id) {
      var el = document.getElementById(id);
      if (el) { el.insertAdjacentHTML("beforeend", append[id]); }
    });
    body.setAttribute("data-updates", String(Number(body.getAttribute("data-updates") || 0) + 1));
  }
  if (url && window.EventSource) {
    var source = new EventSource(url);
    source.addEventListener("update", function (event) { apply(JSON.parse(event.data)); });
    source.onopen = function () {
      if (badge) { badge.textContent = "live"; badge.className = "live on"; }
    };
    source.onerror = function () {
      if (badge) { badge.textContent = "reconnecting…"; badge.className = "live"; }
    };
  }
  document.addEventListener("submit", function (event) {
    var question = event.target.getAttribute("data-confirm");
    if (question && !window.confirm(question)) { event.preventDefault(); }
  });
})();
"""
