"""Every Python block in README.md and docs/ runs, so that a page cannot rot.

The rules, by the HTML comment on the line just above a block's fence (invisible on the
site and on GitHub):

- **No marker: a program.** The block is written to a file and run with this
  interpreter (``python snippet.py``) in a temporary folder, the page's *project*, with
  ``WM_ASYNC_STORE=sqlite:///wm.db`` and ``WM_ASYNC_PG_DSN`` set; it must exit 0 within
  60 s. A block that defines an app (a web app, a module for ``wm-async worker``) runs
  as a script too: its imports and definitions must work.
- **A file of a project.** A block whose first line is a comment naming a ``.py`` path
  (``# myapp/work.py: …``) is written to that path in the page's project before it runs,
  so that a later block of the same page imports it (``from myapp.work import STORE``).
  The blocks of a page run in order, in one project.
- ``<!-- run: serve METHOD PATH -->``: a web app, served on a free port of 127.0.0.1
  (an ASGI ``app`` by uvicorn; a block calling ``web.run_app`` as a program, which reads
  the port from ``PORT``); one request ``METHOD PATH`` must answer 2xx, and the server
  must stop on SIGINT with exit status 0 (the manager stopped gracefully with it).
- ``<!-- run: excerpt examples/NAME.py -->``: the block is a piece of that example
  (its text occurs in the file verbatim, at some indentation), and the example runs as a program (rule 1).
- A program that imports asyncpg needs the tests' PostgreSQL: without a server it is
  skipped locally (the page's other blocks still run), and fails under ``CI=true``.
- ``<!-- not-run: peer library -->``: the other library's side of a migration guide
  (Celery, arq, APScheduler code), not run (only compiled and linted); allowed only in
  docs/migration/, and the only blocks not run.
- ``<!-- run: django -->``: a file of a Django project (views, a management command).
  It is imported, as Django would, under minimal settings written by the test
  (``django.contrib.auth`` and the project's apps, a SQLite database, migrated,
  ``WM_ASYNC_STORE``): its imports and module-level code run, and, for a module with
  views, each view is called with a request from Django's ``RequestFactory`` and must
  answer 2xx or 404.

Every block, run or not, must also compile and use no undefined name (ruff F821).
"""

from __future__ import annotations

import ast
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").rglob("*.md"))]
TIMEOUT = 60.0
_FENCE = re.compile(r"^(\s*)```python\b.*$")
_MARKER = re.compile(r"^\s*<!--\s*(run|not-run):\s*(.*?)\s*-->\s*$")
_FILE = re.compile(r"^#\s*([\w./-]+\.py)\b")
#: Settings for ``run: django`` blocks; the project's apps are added when present.
_DJANGO_SETTINGS = """
SECRET_KEY = "docs"
ALLOWED_HOSTS = ["testserver"]
INSTALLED_APPS = ["django.contrib.auth", "django.contrib.contenttypes", *APPS]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": "django.db"}}
USE_TZ = True
WM_ASYNC_STORE = "sqlite:///wm.db"
"""
#: Imports the block's module under Django and calls its views (see the docstring).
_DJANGO_DRIVER = """
import importlib, inspect, sys
import django
django.setup()
from django.core.management import call_command
from django.test import RequestFactory
call_command("migrate", verbosity=0)
module = importlib.import_module(sys.argv[1])
for name, view in vars(module).items():
    if not inspect.isfunction(view) or view.__module__ != module.__name__:
        continue
    params = list(inspect.signature(view).parameters)
    if not params or params[0] != "request":
        continue
    request = RequestFactory().post("/", {"email": "ada@example.org"})
    args = ["00000000-0000-7000-8000-000000000000"] * (len(params) - 1)
    answer = view(request, *args)
    assert answer.status_code < 300 or answer.status_code == 404, (name, answer.status_code)
    print(name, answer.status_code)
"""


@dataclass(frozen=True)
class Block:
    page: str
    line: int  # of the opening fence, 1-based
    code: str
    marker: tuple[str, str] | None  # ("run" | "not-run", the rest)

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def file(self) -> str | None:
        """The project path the block's first line names, if any."""
        found = _FILE.match(self.code)
        return found[1] if found else None


def blocks(page: str) -> list[Block]:
    lines = (ROOT / page).read_text().split("\n")
    found: list[Block] = []
    i = 0
    while i < len(lines):
        if _FENCE.match(lines[i]):
            end = i + 1
            while lines[end].strip() != "```":
                end += 1
            above = _MARKER.match(lines[i - 1]) if i else None
            code = textwrap.dedent("\n".join(lines[i + 1 : end])) + "\n"
            marker = (above[1], above[2]) if above else None
            found.append(Block(page, i + 1, code, marker))
            i = end
        i += 1
    return found


ALL = [b for page in PAGES for b in blocks(page)]


def _env(project: Path, **extra: str) -> dict[str, str]:
    dsn = os.environ.get("WM_ASYNC_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(project), str(ROOT)]),
        "WM_ASYNC_STORE": dsn,
        "WM_ASYNC_PG_DSN": dsn,
        "PYTHONDONTWRITEBYTECODE": "1",
        **extra,
    }


def _run_program(path: Path, project: Path, what: str) -> None:
    try:
        done = subprocess.run(
            [sys.executable, str(path)],
            cwd=project,
            env=_env(project),
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{what}: still running after {TIMEOUT:.0f} s\n{exc.stderr!r}")
    assert done.returncode == 0, f"{what}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"


def _postgres_missing(source: str) -> str | None:
    """Why a program that uses the tests' PostgreSQL cannot run here, or None. Under
    ``CI=true`` the server must be there (as for the other PostgreSQL tests)."""
    if "asyncpg" not in source or os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        return None
    try:
        socket.create_connection(("127.0.0.1", 5432), timeout=2).close()
    except OSError as exc:
        return f"no PostgreSQL on 127.0.0.1:5432 ({exc})"
    return None


def _run_django(path: Path, project: Path, what: str) -> None:
    apps = sorted(
        str(folder.name)
        for folder in project.iterdir()
        if (folder / "__init__.py").exists() and folder.name not in ("myproject",)
    )
    (project / "docs_settings.py").write_text(f"APPS = {apps!r}\n" + _DJANGO_SETTINGS)
    driver = project / "docs_django_driver.py"
    driver.write_text(_DJANGO_DRIVER)
    module = ".".join(path.relative_to(project).with_suffix("").parts)
    done = subprocess.run(
        [sys.executable, str(driver), module],
        cwd=project,
        env=_env(project, DJANGO_SETTINGS_MODULE="docs_settings"),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, f"{what}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(block: Block, path: Path, project: Path) -> None:
    assert block.marker is not None
    method, _, route = block.marker[1].removeprefix("serve ").partition(" ")
    port = _free_port()
    if "web.run_app(" in block.code:
        cmd = [sys.executable, str(path)]
    else:
        cmd = [sys.executable, "-m", "uvicorn", f"{path.stem}:app", "--port", str(port)]
        cmd += ["--host", "127.0.0.1", "--log-level", "warning"]
    server = subprocess.Popen(
        cmd,
        cwd=project,
        env=_env(project, PORT=str(port)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + TIMEOUT
        status = None
        while status is None:
            assert server.poll() is None, f"{block.id}: server exited: {server.communicate()}"
            assert time.monotonic() < deadline, f"{block.id}: no answer in {TIMEOUT:.0f} s"
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}{route}",
                method=method,
                data=b"" if method == "POST" else None,
            )
            try:
                with urllib.request.urlopen(request, timeout=5) as answer:
                    status = answer.status
            except urllib.error.HTTPError as exc:
                status = exc.code
            except OSError:
                time.sleep(0.1)  # not listening yet
        assert 200 <= status < 300, f"{block.id}: {method} {route} answered {status}"
    finally:
        server.send_signal(signal.SIGINT)
        try:
            _, err = server.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            server.kill()
            _, err = server.communicate()
    assert server.returncode == 0, f"{block.id}: exit {server.returncode} on SIGINT\n{err}"


def _excerpt_of(code: str, text: str) -> bool:
    """Whether ``code`` occurs in ``text`` verbatim, at some indentation."""
    return any(textwrap.indent(code.strip(), " " * n) in text for n in range(0, 17, 4))


def _check_names(path: Path, what: str) -> None:
    found = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--isolated", "--select", "F821", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert found.returncode == 0, f"{what} uses an undefined name:\n{found.stdout}"


@pytest.mark.parametrize("page", PAGES)
def test_every_block_of_the_page_runs(page: str, tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    ran = 0
    skipped: list[str] = []
    for number, block in enumerate(blocks(page)):
        kind, rest = block.marker or ("run", "")
        if kind == "not-run":
            lint = project / f"not_run_{number}.py"
            lint.write_text(block.code)
            _check_names(lint, block.id)
            lint.unlink()
            continue
        # An excerpt may be the body of an async function (await at its top level).
        flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT if rest.startswith("excerpt ") else 0
        compile(block.code, block.id, "exec", flags=flags)
        name = block.file or f"snippet_{number}.py"
        path = project / name
        path.parent.mkdir(parents=True, exist_ok=True)
        for folder in path.relative_to(project).parents:
            if folder != Path("."):
                (project / folder / "__init__.py").touch()
        path.write_text(block.code)
        if rest.startswith("excerpt "):
            example = ROOT / rest.removeprefix("excerpt ").strip()
            assert _excerpt_of(block.code, example.read_text()), (
                f"{block.id} is not a verbatim piece of {example.relative_to(ROOT)}"
            )
            path = project / example.name
            path.write_text(example.read_text())
        _check_names(path, block.id)
        missing = _postgres_missing(path.read_text())
        if missing is not None:
            skipped.append(f"{block.id}: {missing}")
            continue
        if rest == "django":
            _run_django(path, project, block.id)
        elif rest.startswith("serve "):
            _serve(block, path, project)
        else:
            _run_program(path, project, block.id)
        ran += 1
    assert ran or not blocks(page) or all(b.marker for b in blocks(page))
    if skipped:
        pytest.skip("; ".join(skipped))


def test_markers_are_known_and_in_their_place() -> None:
    for block in ALL:
        if block.marker is None:
            continue
        kind, rest = block.marker
        if kind == "not-run":
            assert rest == "peer library", f"{block.id}: {rest!r}"
            assert block.page.startswith("docs/migration/"), block.id
        else:
            assert rest.split(" ")[0] in ("serve", "excerpt", "django"), f"{block.id}: {rest!r}"


def test_only_peer_code_is_not_run() -> None:
    not_run = [b for b in ALL if b.marker is not None and b.marker[0] == "not-run"]
    assert {b.page for b in not_run} <= {
        f"docs/migration/{name}.md" for name in ("celery", "arq", "apscheduler")
    }
    assert sum(1 for b in ALL if b.marker is None or b.marker[0] == "run") >= 40


def test_a_broken_block_fails(tmp_path: Path) -> None:
    """The harness is not vacuous: a block that raises fails its page's test."""
    page = tmp_path / "broken.md"
    page.write_text("text\n\n```python\nraise SystemExit(3)\n```\n")
    (block,) = blocks(str(page))  # absolute: ROOT / page is page
    path = tmp_path / "snippet.py"
    path.write_text(block.code)
    with pytest.raises(AssertionError, match="exit 3"):
        _run_program(path, tmp_path, block.id)


def test_postgres_store_imports_from_the_stores_package() -> None:
    from wm_async.stores import PostgresStore, SQLiteStore
    from wm_async.stores.postgres import PostgresStore as direct
    from wm_async.stores.sqlite import SQLiteStore as sqlite_direct

    assert PostgresStore is direct
    assert SQLiteStore is sqlite_direct
    with pytest.raises(AttributeError):
        _ = __import__("wm_async.stores", fromlist=["x"]).NoSuchStore
