"""The built-in signals off Linux (issue 19): ``network`` asks the operating system for a
route where there is no ``/proc/net/route``, ``device_idle`` reads ``os.getloadavg``, and
the network types without a built-in signal are refused at enqueue with what to
register."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import anyio
import pytest

import wm_async as wm
from wm_async import signals
from wm_async.signals import device_idle, has_internet_route, network


def test_has_internet_route_on_a_reachable_and_an_unusable_address() -> None:
    assert has_internet_route([(socket.AF_INET, "127.0.0.1")]) is True
    assert has_internet_route([(socket.AF_INET, "no such address")]) is False
    assert has_internet_route([]) is False


async def test_network_without_proc_asks_the_operating_system(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As on macOS or Windows: no /proc/net/route.
    monkeypatch.setattr(signals, "_LINUX_ROUTES", str(tmp_path / "no-proc" / "route"))
    answers = iter([True, False])
    monkeypatch.setattr(signals, "has_internet_route", lambda: next(answers))
    pred = network()
    with anyio.fail_after(5):
        assert await pred.check() is True
        assert await pred.check() is False


async def test_network_on_linux_reads_the_routing_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    routes = tmp_path / "route"
    routes.write_text("Iface\tDestination\tGateway\tFlags\neth0\t00000000\t0101A8C0\t0003\n")
    monkeypatch.setattr(signals, "_LINUX_ROUTES", str(routes))
    monkeypatch.setattr(signals, "has_internet_route", lambda: pytest.fail("not on Linux"))
    with anyio.fail_after(5):
        assert await network().check() is True


async def test_device_idle_reads_getloadavg_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    loads = iter([(0.2, 0.0, 0.0), (0.9, 0.0, 0.0)])
    monkeypatch.setattr(os, "getloadavg", lambda: next(loads))
    pred = device_idle(max_load_per_cpu=0.3, cpus=1)
    with anyio.fail_after(5):
        assert await pred.check() is True
        assert await pred.check() is False


@pytest.mark.parametrize(
    "network_type",
    [wm.NetworkType.UNMETERED, wm.NetworkType.NOT_ROAMING, wm.NetworkType.METERED],
)
async def test_network_types_without_a_builtin_say_what_to_register(
    network_type: wm.NetworkType,
) -> None:
    name = f"network_{network_type.value.lower()}"
    manager = wm.WorkManager(store="memory://")

    @manager.worker("sync")
    async def sync(ctx: wm.WorkContext) -> None:
        return None

    request = wm.OneTimeWorkRequest(
        "sync", constraints=wm.Constraints(required_network=network_type)
    )
    async with manager:
        with pytest.raises(wm.InvalidRequestError) as raised:
            await manager.enqueue(request)
        message = str(raised.value)
        assert f"no signal is registered as {name!r}" in message
        assert f"{network_type} has no built-in signal" in message
        assert f"manager.register_signal({name!r}, wm.Predicate(your_check))" in message

        manager.register_signal(name, wm.Flag(True))
        await manager.enqueue(request)
        with anyio.fail_after(10):
            info = await manager.wait(request.id)
    assert info.state is wm.WorkState.SUCCEEDED
