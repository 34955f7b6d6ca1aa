"""Real deployments: multi-process web servers on one SQLite file, on loopback.

Each server runs several processes of ``tests/_deploy_app.py``; every process starts a
default ``WorkManager`` on the same file in the framework's lifespan: one schedules and
runs the works, the others stand by. Requests (one connection each, so the kernel hands
them to several processes) enqueue works wherever they land; every work runs exactly
once, in the scheduling process. Then the scheduling process is SIGKILLed while works
run: a standby takes over, the works it was running run again, every work finishes once,
and the server keeps taking new works. The servers stop on SIGTERM and leave no process
behind.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path
from typing import Any, NamedTuple

import anyio
import httpx
import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform != "linux", reason="reads /proc to find the processes"),
]

TESTS = Path(__file__).resolve().parent
#: Bounds every wait on a server or on works (real time; a loaded machine is slow).
TIMEOUT = 45


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _python(*args: str) -> list[str]:
    return [sys.executable, "-m", *args]


#: gunicorn 27 opens a control socket in the home directory unless told not to; a stuck
#: worker is killed after 15 s rather than 30.
GUNICORN = [
    *(["--no-control-socket"] if int(version("gunicorn").split(".")[0]) >= 27 else []),
    "--graceful-timeout", "15",
]  # fmt: skip


class Spec(NamedTuple):
    #: the command line, for a port
    command: Callable[[int], list[str]]
    #: how many worker processes it runs
    workers: int
    #: whether it replaces a worker that died (then the scheduling one is SIGKILLed)
    respawns: bool = True
    #: whether SIGTERM lets every worker stop through its lifespan
    graceful: bool = True


SERVERS = {
    "uvicorn": Spec(
        lambda port: _python(
            "uvicorn", "--workers", "4", "--host", "127.0.0.1", "--port", str(port),
            "--no-access-log", "_deploy_app:starlette_app",
        ),
        4,
    ),
    "gunicorn-uvicorn": Spec(
        lambda port: _python(
            "gunicorn", "-w", "4", "-k", "uvicorn_worker.UvicornWorker", *GUNICORN,
            "-b", f"127.0.0.1:{port}", "_deploy_app:starlette_app",
        ),
        4,
    ),
    "gunicorn-aiohttp": Spec(
        lambda port: _python(
            "gunicorn", "-w", "4", "-k", "aiohttp.GunicornWebWorker", *GUNICORN,
            "-b", f"127.0.0.1:{port}", "_deploy_app:aiohttp_app",
        ),
        4,
    ),
    # hypercorn's master stops all workers when one exits: when one dies (so no
    # SIGKILL trial), and at a SIGTERM as soon as the first has stopped (so the others
    # may be cut short).
    "hypercorn": Spec(
        lambda port: _python(
            "hypercorn", "--workers", "2", "--bind", f"127.0.0.1:{port}",
            "_deploy_app:create_quart_app()",  # it evaluates the expression
        ),
        2,
        respawns=False,
        graceful=False,
    ),
}  # fmt: skip


def processes() -> list[tuple[int, int, int]]:
    """(pid, parent pid, process group) of every live process (zombies left out)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue  # it has just ended
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] != "Z":
            found.append((int(entry), int(fields[1]), int(fields[2])))
    return found


def children(pid: int) -> set[int]:
    return {p for p, parent, _ in processes() if parent == pid}


def group(pgid: int) -> set[int]:
    return {p for p, _, g in processes() if g == pgid}


async def until(condition: Callable[[], bool]) -> None:
    """Poll ``condition`` until it holds (for up to TIMEOUT seconds)."""
    with anyio.fail_after(TIMEOUT):
        while True:
            if condition():
                return
            await anyio.sleep(0.05)


class Server:
    """A server running in a process group of its own, and what its app records."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, tmp: Path) -> None:
        self.proc, self.tmp = proc, tmp
        self.client = httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}",
            headers={"Connection": "close"},  # a connection per request: several processes
            timeout=TIMEOUT,
        )

    def output(self) -> str:
        return (self.tmp / "server.out").read_text(errors="replace")[-6000:]

    def lines(self) -> list[tuple[str, str, int]]:
        """The app's ``(event, subject, pid)`` lines, in the order they were written."""
        log = self.tmp / "runs.log"
        found = []
        for line in log.read_text().splitlines() if log.exists() else []:
            event, subject, pid = line.split()
            found.append((event, subject, int(pid)))
        return found

    def ready(self) -> dict[int, str]:
        """The role of each process whose manager has started, by pid."""
        return {pid: role for event, role, pid in self.lines() if event == "ready"}

    def runs(self) -> dict[str, list[tuple[str, int]]]:
        """Per work id, its ``(event, pid)`` lines in the order they were written."""
        found: dict[str, list[tuple[str, int]]] = {}
        for event, work_id, pid in self.lines():
            if event != "ready":
                found.setdefault(work_id, []).append((event, pid))
        return found

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send it, again after a broken connection (a process killed under it)."""
        with anyio.fail_after(TIMEOUT):
            while True:
                assert self.proc.poll() is None, f"the server exited:\n{self.output()}"
                try:
                    return await self.client.request(method, path, **kwargs)
                except httpx.TransportError:
                    await anyio.sleep(0.1)

    async def enqueue(self, ids: list[str], seconds: float) -> dict[str, Any]:
        """Enqueue a job per id (a retried request finds them stored: 409)."""
        answer = await self.request("POST", "/works", params={"seconds": seconds}, json=ids)
        assert answer.status_code in (202, 409), answer.text
        body: dict[str, Any] = answer.json()
        return body

    async def enqueue_many(self, ids: list[str], seconds: float) -> list[dict[str, Any]]:
        """Enqueue 3 works per request, the requests concurrently."""
        answers: list[dict[str, Any]] = []

        async def post(batch: list[str]) -> None:
            answers.append(await self.enqueue(batch, seconds))

        async with anyio.create_task_group() as tg:
            for start in range(0, len(ids), 3):
                tg.start_soon(post, ids[start : start + 3])
        return answers

    async def works(self) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = (await self.request("GET", "/works")).json()["works"]
        return found

    async def wait_succeeded(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        """Poll until every work of ``ids`` has SUCCEEDED."""
        works: dict[str, dict[str, Any]] = {}
        with anyio.move_on_after(TIMEOUT):
            while True:
                works = await self.works()
                if all(works.get(i, {}).get("state") == "SUCCEEDED" for i in ids):
                    return works
                await anyio.sleep(0.2)
        waiting = {i: works.get(i, {}).get("state") for i in ids} if works else "no answer"
        pytest.fail(f"not every work succeeded: {waiting}\n{self.output()}")

    async def stop(self, graceful: bool) -> None:
        """SIGTERM: the server stops (if ``graceful``, every process's manager stopped
        by the framework), and no process of it is left."""
        await self.client.aclose()
        serving = children(self.proc.pid) & set(self.ready())
        self.proc.send_signal(signal.SIGTERM)
        await until(lambda: self.proc.poll() is not None)
        await until(lambda: not group(self.proc.pid))
        assert self.proc.returncode == 0, self.output()
        stopped = {pid: state for event, state, pid in self.lines() if event == "stopped"}
        if graceful:
            assert stopped == dict.fromkeys(serving, "stopped"), self.output()
        else:
            assert set(stopped.values()) <= {"stopped"}, stopped


@contextmanager
def serving(command: Callable[[int], list[str]], tmp: Path) -> Iterator[Server]:
    """Run the server on a free loopback port, in a process group of its own; kill the
    group whatever happens."""
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(TESTS.parent), str(TESTS)]),
        "WM_DEPLOY_DB": str(tmp / "wm.db"),
        "WM_DEPLOY_LOG": str(tmp / "runs.log"),
    }
    with (tmp / "server.out").open("wb") as out:
        proc = subprocess.Popen(
            command(port),
            cwd=tmp,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: killed as one in the end
        )
    try:
        yield Server(proc, port, tmp)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=TIMEOUT)


def new_ids(count: int) -> list[str]:
    return [str(uuid.uuid4()) for _ in range(count)]


async def enqueue_in_several_processes(server: Server, ids: list[str]) -> list[dict[str, Any]]:
    """Enqueue ``ids`` (0.05 s each) and then more, until requests have landed in two
    processes at least; every id enqueued is appended to ``ids``."""
    answers = await server.enqueue_many(ids, 0.05)
    for _ in range(20):
        if len({a["pid"] for a in answers}) >= 2:
            break
        more = new_ids(15)
        answers += await server.enqueue_many(more, 0.05)
        ids += more
    return answers


@pytest.mark.parametrize("name", list(SERVERS))
async def test_a_multi_process_server_runs_each_work_once_and_survives_its_scheduler(
    tmp_path: Path, name: str
) -> None:
    command, workers, respawns, graceful = SERVERS[name]
    with serving(command, tmp_path) as server:
        await until(lambda: len(server.ready()) == workers)  # every process serves
        [scheduler] = [pid for pid, role in server.ready().items() if role == "scheduler"]

        # Enqueued in several processes, every work runs once, in the scheduling one.
        first = new_ids(60)
        answers = await enqueue_in_several_processes(server, first)
        assert len({a["pid"] for a in answers}) >= 2, answers
        works = await server.wait_succeeded(first)
        runs = server.runs()
        for i in first:
            assert runs[i] == [("start", scheduler), ("end", scheduler)]
            assert works[i]["attempts"] == 1
            assert works[i]["output"] == {"pid": scheduler}
        roles = {(a["pid"], a["role"]) for a in answers}
        assert roles <= {(scheduler, "scheduler")} | {
            (a["pid"], "standby") for a in answers if a["pid"] != scheduler
        }, roles
        assert (await server.request("GET", "/whoami")).json()["role"] in ("scheduler", "standby")

        if respawns:
            await kill_the_scheduler_mid_run(server, scheduler, workers, first)
        await server.stop(graceful)


async def kill_the_scheduler_mid_run(
    server: Server, scheduler: int, workers: int, earlier: list[str]
) -> None:
    """SIGKILL the scheduling process while it runs works: the server completes them all
    and takes new ones."""
    assert set(children(server.proc.pid)) >= {scheduler}
    running = new_ids(30)
    await server.enqueue_many(running, 1.0)
    await until(  # the scheduler runs some of them
        lambda: any(server.runs().get(i) == [("start", scheduler)] for i in running)
    )
    before = set(server.ready())
    os.kill(scheduler, signal.SIGKILL)

    after = new_ids(30)  # new enqueues keep working
    await server.enqueue_many(after, 0.05)
    works = await server.wait_succeeded(earlier + running + after)
    runs = server.runs()

    interrupted = [
        i for i in running if ("start", scheduler) in runs[i] and ("end", scheduler) not in runs[i]
    ]
    assert interrupted, "the kill interrupted no run"
    successors = {pid for i in running + after for _, pid in runs[i] if pid != scheduler}
    assert len(successors) == 1, successors  # one process took over and ran the rest
    [successor] = successors
    for i in running + after:
        mine = [event for event, pid in runs[i] if pid == scheduler]
        theirs = [event for event, pid in runs[i] if pid != scheduler]
        assert works[i]["output"] == {"pid": successor if theirs else scheduler}
        if i in interrupted:  # ran again, and finished once
            assert mine == ["start"]
            assert theirs == ["start", "end"]
            assert works[i]["attempts"] == 2
        elif not mine:  # 2 attempts if the killed process claimed it but had not started it
            assert theirs == ["start", "end"]
            assert works[i]["attempts"] in (1, 2)
        else:  # finished in the killed process (or killed after its last line: ran again)
            assert mine == ["start", "end"]
            assert theirs in ([], ["start", "end"])

    # The server replaced the killed process: a new one's manager started.
    await until(lambda: bool(set(server.ready()) - before))
    serving = children(server.proc.pid) & set(server.ready())
    assert scheduler not in serving
    assert len(serving) == workers
