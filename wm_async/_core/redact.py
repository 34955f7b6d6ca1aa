"""Masking credentials in what wm_async shows: reprs, log lines, error messages, the CLI.

A store URL may carry secrets: a password in its userinfo
(``postgresql://user:secret@host/db``) or in a query parameter (``?password=secret``,
``?sslpassword=secret``). Whatever prints a URL passes it through :func:`mask_url`, and
free text that may quote one (a driver's error message, an exception's repr) through
:func:`mask_text`. Each secret becomes ``***``; the rest (scheme, user, host, port,
database, the other parameters) stays readable::

    >>> mask_url("postgresql://app:s3cret@db.internal:5432/jobs?sslpassword=x&schema=q")
    'postgresql://app:***@db.internal:5432/jobs?sslpassword=***&schema=q'

A query parameter, or a ``name=value`` pair in free text, is secret when its name
contains, case-insensitively, one of :data:`SECRET_MARKERS`: ``pass`` (password,
sslpassword, and passfile, a path, masked too for simplicity), ``pwd``, ``secret``,
``token``, ``key`` (sslkey, api_key) or ``credential``.

Masking never raises, whatever the text: a malformed URL is masked as far as it can be
read, erring towards masking too much (a password with a raw ``/``, ``?``, ``#`` or
``@`` in it is still masked whole).
"""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import unquote, unquote_plus

__all__ = ("MASK", "SECRET_MARKERS", "mask_text", "mask_url")

#: What a secret is replaced with.
MASK: Final = "***"

#: A parameter whose name contains one of these (case-insensitively) holds a secret.
SECRET_MARKERS: Final = ("pass", "pwd", "secret", "token", "key", "credential")

# A URL's scheme, and the slashes after it (any number: "postgresql:/u:pw@h" is a typo
# that must not show the password either).
_SCHEME: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]{0,31}:/*")
# A URL inside free text: a scheme and "://" at the start of a word (bounded, so a long
# word costs O(1)), to the next blank, quote or angle bracket.
_URL_IN_TEXT: Final = re.compile(
    r"(?<![A-Za-z0-9+.\-])[A-Za-z][A-Za-z0-9+.\-]{0,31}://[^\s'\"`<>]*"
)
# A name=value pair in free text (libpq's keyword/value form, a log line's key=value).
_PAIR: Final = re.compile(
    r"(?<![\w.\-])([A-Za-z_][\w.\-]{0,63})(?![\w.\-])(\s*=\s*)"
    r"('[^']*(?:'|$)|\"[^\"]*(?:\"|$)|[^\s&;,'\"]+)"
)


def is_secret_name(name: str) -> bool:
    """Whether a parameter called ``name`` (percent-decoded here) holds a secret."""
    lowered = unquote(name).lower()
    return any(marker in lowered for marker in SECRET_MARKERS)


def _secret_spans(url: str) -> list[tuple[int, int]]:
    """The ``(start, end)`` spans of ``url``'s secrets: its userinfo password and the
    values of its secret query parameters (none if ``url`` has no scheme)."""
    match = _SCHEME.match(url)
    if match is None:
        return []
    start = match.end()
    spans: list[tuple[int, int]] = []
    # The authority ends at the first "/", "?" or "#" (as urlsplit reads it); a userinfo
    # ends at its last "@".
    end = len(url)
    for sep in "/?#":
        found = url.find(sep, start)
        if found != -1:
            end = min(end, found)
    at = url.rfind("@", start, end)
    if at == -1 and ":" in url[start:end] and not url.startswith("[", start):
        # "user:pa/ss@host": a password with a raw "/", "?" or "#" (no port is ever
        # written that way). Take the first "@" after it, and any more "@" that follow
        # before the next separator ("user:pa/s@s@host").
        at = url.find("@", end)
        while at != -1:
            following = url.find("@", at + 1)
            if following == -1 or any(sep in url[at + 1 : following] for sep in "/?#"):
                break
            at = following
    authority_end = end
    if at != -1:
        colon = url.find(":", start, at)
        if colon != -1 and colon + 1 < at:
            spans.append((colon + 1, at))
        authority_end = max(end, at)
    # Everything after the first "?" is the query: a "#" in a raw secret does not end it.
    query = url.find("?", authority_end)
    if query != -1:
        position = query + 1
        for pair in url[query + 1 :].split("&"):
            name, eq, value = pair.partition("=")
            if eq and value and is_secret_name(name):
                value_start = position + len(name) + 1
                spans.append((value_start, value_start + len(value)))
            position += len(pair) + 1
    return spans


def mask_url(url: str) -> str:
    """``url`` (all of it one URL) with its secrets replaced by ``***``: the password
    of its userinfo, the values of its secret query parameters; then the rest as
    :func:`mask_text` masks free text (text that is no URL is masked as free text).
    Never raises.
    """
    return mask_text(_mask_spans(url))


def _mask_spans(url: str) -> str:
    out: list[str] = []
    position = 0
    for start, end in _secret_spans(url):
        out.append(url[position:start])
        out.append(MASK)
        position = end
    out.append(url[position:])
    return "".join(out)


def _mask_pairs(text: str) -> str:
    return _PAIR.sub(
        lambda m: m.group(1) + m.group(2) + MASK if is_secret_name(m.group(1)) else m.group(),
        text,
    )


def mask_text(text: str, *, secrets_of: str | None = None) -> str:
    """``text`` with every URL in it masked (:func:`mask_url`) and every secret
    ``name=value`` pair's value replaced by ``***``.

    :param secrets_of: a URL whose secrets are also masked wherever they appear in
        ``text`` by themselves (a driver message quoting a password, percent-decoded or
        not, without its URL)
    """
    masked = _mask_pairs(_URL_IN_TEXT.sub(lambda m: _mask_spans(m.group()), text))
    if secrets_of is not None:
        secrets = set[str]()
        for start, end in _secret_spans(secrets_of):
            raw = secrets_of[start:end]
            secrets.update((raw, unquote(raw), unquote_plus(raw)))
        secrets.discard("")
        for secret in sorted(secrets, key=len, reverse=True):  # longest first
            masked = masked.replace(secret, MASK)
    return masked
