"""MkDocs hooks (mkdocs.yml ``hooks:``): the docstrings are Sphinx-style, and
mkdocstrings renders their inline roles as text. Turn ``:class:`~a.b.C``` into ``C`` in
code style (the full path without ``~``), and drop a lone ``::`` paragraph (reST's marker
of a literal block, which Markdown renders as the code block that follows anyway)."""

from __future__ import annotations

import re
from typing import Any

_ROLE = re.compile(r":(?:class|meth|func|attr|mod|data|exc|obj):<code>(~?)([\w.]+)</code>")
_LONE_LITERAL = re.compile(r"<p>::</p>")


def _name(found: re.Match[str]) -> str:
    tilde, path = found[1], found[2]
    return f"<code>{path.rsplit('.', 1)[-1] if tilde else path}</code>"


def on_page_content(html: str, **_: Any) -> str:
    """Rewrite each page's HTML after Markdown conversion (mkdocstrings included)."""
    return _LONE_LITERAL.sub("", _ROLE.sub(_name, html))
