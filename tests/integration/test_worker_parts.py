"""The worker's own parts on real processes, ports and files: process groups
stopped and reaped, ports never handed out twice, logs rotated and followed."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from corral.worker.identity import Identity, load_identity, save_identity
from corral.worker.logs import InstanceLog, follow, read_tail
from corral.worker.ports import PortAllocator, PortsExhausted
from corral.worker.processes import ProcessRegistry, Record, spawn

pytestmark = pytest.mark.timeout(60)


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def test_stop_kills_the_whole_group_when_sigterm_is_ignored() -> None:
    child = await spawn(
        ["bash", "-c", 'trap "" TERM; sleep 60 & sleep 60 & wait'], {"PATH": "/usr/bin:/bin"}
    )
    await asyncio.sleep(0.3)  # let bash start its two children
    members = [p.pid for p in psutil.Process(child.pid).children(recursive=True)]
    assert len(members) == 2
    code = await child.stop(grace=0.5)
    assert code == -9
    assert all(_gone(pid) for pid in [child.pid, *members])
    assert await child.stop(grace=0.5) == -9  # twice is fine


async def test_a_new_run_reaps_what_a_dead_run_left(tmp_path: Path) -> None:
    path = tmp_path / "run" / "processes.json"
    # What a dead worker leaves: a process group whose leader is gone and
    # whose member is no child of ours (reaping our own child here would race
    # asyncio's child watcher for its exit status).
    leader = subprocess.run(
        ["setsid", "sh", "-c", "sleep 60 >/dev/null 2>&1 & echo $$ $!"],
        capture_output=True,
        text=True,
        check=True,
    )
    group, member = (int(x) for x in leader.stdout.split())
    assert os.getpgid(member) == group
    started = psutil.Process(member).create_time()
    ProcessRegistry(path).add(Record("instance-1", group, started))
    # A new worker process reads the registry the dead one left.
    found = ProcessRegistry(path).reap_leftovers()
    assert [r.key for r in found] == ["instance-1"]
    deadline = time.monotonic() + 10
    while not _gone(member):
        assert time.monotonic() < deadline, "the left-behind process is still running"
        await asyncio.sleep(0.05)
    assert ProcessRegistry(path).reap_leftovers() == []


async def test_a_recycled_pid_is_not_killed(tmp_path: Path) -> None:
    child = await spawn(["sleep", "60"], {"PATH": "/usr/bin:/bin"})
    path = tmp_path / "processes.json"
    # Recorded as started an hour later than this process: not ours.
    ProcessRegistry(path).add(Record("instance-2", child.pid, child.started + 3600))
    assert ProcessRegistry(path).reap_leftovers() == []
    assert child.process.returncode is None
    await child.stop(grace=1)


def test_ports_are_never_handed_out_twice_and_busy_ones_are_skipped() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        ports = PortAllocator("127.0.0.1", taken, taken + 3)
        got = [ports.allocate() for _ in range(3)]
        assert taken not in got and len(set(got)) == 3
        with pytest.raises(PortsExhausted):
            ports.allocate()
        ports.release(got[1])
        assert ports.allocate() == got[1]


def test_logs_rotate_and_keep_the_last_lines(tmp_path: Path) -> None:
    log = InstanceLog(tmp_path / "i", max_bytes=1000, backups=2)
    for n in range(100):
        log.write_line(f"line {n:03d} {'x' * 20}\n".encode())
    log.close()
    files = sorted(p.name for p in (tmp_path / "i").iterdir())
    assert files == ["instance.log", "instance.log.1", "instance.log.2"]
    assert all((tmp_path / "i" / f).stat().st_size <= 1000 for f in files)
    text, end = read_tail(log.path, 3)
    assert text.decode().splitlines()[-1].startswith("line 099")
    assert len(text.decode().splitlines()) == 3
    assert end == log.path.stat().st_size
    assert log.tail(2).splitlines()[-1].startswith("line 099")


async def test_follow_sees_new_lines_across_a_rotation(tmp_path: Path) -> None:
    log = InstanceLog(tmp_path / "f", max_bytes=200, backups=1)
    log.write_line(b"first\n")
    _, end = read_tail(log.path, 0)
    seen = b""

    async def reader() -> None:
        nonlocal seen
        async for chunk in follow(log.path, end, poll=0.02):
            seen += chunk
            if b"after rotation" in seen:
                return

    task = asyncio.create_task(reader())
    await asyncio.sleep(0.05)
    log.write_line(b"second\n")
    log.write_line(b"y" * 250 + b"\n")  # forces a rotation
    log.write_line(b"after rotation\n")
    await asyncio.wait_for(task, 5)
    assert b"second" in seen and b"after rotation" in seen
    log.close()


def test_the_identity_survives_and_is_private(tmp_path: Path) -> None:
    identity = Identity("http://s:7321", 3, "w", "corral_worker_secret")
    save_identity(tmp_path, identity)
    assert (tmp_path / "identity.json").stat().st_mode & 0o777 == 0o600
    assert load_identity(tmp_path, "http://s:7321") == identity
    assert load_identity(tmp_path, "http://other:7321") is None
    (tmp_path / "identity.json").write_text("{not json")
    assert load_identity(tmp_path, "http://s:7321") is None
