"""Test helpers for real worker agents: ``corral worker`` processes, devices
files of SIMULATED GPUs, and waiting for instances to reach a state."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import psutil

from tests.helpers import CORRAL, ServerProcess, free_port

ENGINE_TIMEOUT_S = 120


def devices_file(path: Path, *gib: int) -> Path:
    """A devices file declaring one simulated GPU per size given."""
    lines = ["devices:"]
    for i, size in enumerate(gib):
        lines += [f"  - name: Simulated GPU {i}", f"    memory: {size}GiB"]
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class WorkerProcess:
    name: str
    data_dir: Path
    port: int
    process: subprocess.Popen[str]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def run_worker(
    server: ServerProcess,
    tmp: Path,
    name: str,
    *,
    devices: Path | None = None,
    extra_args: list[str] | None = None,
    env: dict[str, str] | None = None,
    prefix: list[str] | None = None,
    host: str = "127.0.0.1",
) -> Iterator[WorkerProcess]:
    """Start ``corral worker`` joined to ``server``; stop it (checked) afterwards.

    ``prefix`` runs it through another command (``ip netns exec NS``), whose
    process then gets the signals; ``host`` is where its API listens."""
    port = free_port()
    data_dir = tmp / f"worker-{name}"
    args = [
        *(prefix or []),
        CORRAL,
        "worker",
        "--server-url",
        server.url,
        "--token",
        server.cluster_token,
        "--data-dir",
        str(data_dir),
        "--name",
        name,
        "--host",
        host,
        "--port",
        str(port),
    ]
    if devices is not None:
        args += ["--devices-file", str(devices)]
    args += extra_args or []
    log_path = tmp / f"worker-{name}-{port}.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            env={"HF_ENDPOINT": "http://127.0.0.1:9", **os.environ, **(env or {})},
        )
    worker = WorkerProcess(name, data_dir, port, process, log_path)
    try:
        yield worker
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                code = process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                raise RuntimeError(f"worker {name} did not stop within 30 s") from None
            assert code == 0, f"worker {name} exited with {code}:\n{worker.log()}"


def wait_for(
    what: str, check: Callable[[], Any], timeout: float = ENGINE_TIMEOUT_S, every: float = 0.2
) -> Any:
    """Poll ``check`` until it returns something truthy; fail saying ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last: {last!r}")


def instances(admin: httpx.Client, model_id: int) -> list[dict[str, Any]]:
    r = admin.get("/api/v1/instances", params={"model_id": model_id})
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return items


def wait_running(
    admin: httpx.Client, model_id: int, count: int = 1, timeout: float = ENGINE_TIMEOUT_S
) -> list[dict[str, Any]]:
    def running() -> list[dict[str, Any]] | None:
        items = instances(admin, model_id)
        errors = [i for i in items if i["state"] == "error" and i["restart_count"] > 3]
        assert not errors, f"instance keeps failing: {errors[0]['state_message']}"
        ok = [i for i in items if i["state"] == "running"]
        return ok if len(ok) >= count else None

    result: list[dict[str, Any]] = wait_for(f"{count} running instance(s)", running, timeout)
    return result


def openai_client(server: ServerProcess, api_key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=api_key, max_retries=0, timeout=60)


def api_key_of(user_client: httpx.Client) -> str:
    return str(user_client.headers["Authorization"]).removeprefix("Bearer ")


def listening(port: int) -> bool:
    return any(
        c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN
        for c in psutil.net_connections(kind="tcp")
    )


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
