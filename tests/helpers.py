"""Test helpers: real ``corral`` processes on loopback, and small factories.

Nothing here fakes the server or the database: a test gets a real server
process with a real SQLite or PostgreSQL database and talks HTTP to it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

CORRAL = str(Path(sys.executable).parent / "corral")
STARTUP_TIMEOUT_S = 60


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@dataclass
class ServerProcess:
    url: str
    data_dir: Path
    database_url: str
    admin_password: str
    cluster_token: str
    process: subprocess.Popen[str]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def wait_healthy(url: str, process: subprocess.Popen[str], log_path: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"corral exited with {process.returncode}:\n{log_path.read_text()}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(
        f"corral did not become healthy in {STARTUP_TIMEOUT_S}s:\n{log_path.read_text()}"
    )


@contextmanager
def run_server(
    tmp: Path,
    database_url: str | None = None,
    *,
    command: str = "server",
    extra_args: list[str] | None = None,
    env: Mapping[str, str] | None = None,
    bootstrap_password: str | None = "admin-password-1",
    port: int | None = None,
    cluster_token: str | None = None,
) -> Iterator[ServerProcess]:
    """Start ``corral server`` and stop it (gracefully, checked) afterwards."""
    port = port or free_port()
    data_dir = tmp / "data"
    cluster_token = cluster_token or secrets.token_urlsafe(16)
    args = [
        CORRAL,
        command,
        "--data-dir",
        str(data_dir),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--cluster-token",
        cluster_token,
    ]
    if database_url:
        args += ["--database-url", database_url]
    if bootstrap_password:
        args += ["--bootstrap-password", bootstrap_password]
    args += extra_args or []
    log_path = tmp / f"server-{port}.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            # No test reaches the real Hugging Face: a refused port fails at once.
            env={"HF_ENDPOINT": "http://127.0.0.1:9", **os.environ, **(env or {})},
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process, log_path)
        yield ServerProcess(
            url,
            data_dir,
            database_url or "",
            bootstrap_password or "",
            cluster_token,
            process,
            log_path,
        )
    finally:
        process.terminate()
        try:
            code = process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            raise RuntimeError("corral did not stop within 20 s of SIGTERM") from None
        # uvicorn re-raises the SIGTERM it handled once shutdown is complete,
        # so a clean stop reads as "terminated by SIGTERM"; a crash is exit 1.
        assert code in (0, -signal.SIGTERM), f"corral exited with {code}:\n{log_path.read_text()}"
        assert "Application shutdown complete" in log_path.read_text()


def login(url: str, username: str, password: str) -> str:
    r = httpx.post(f"{url}/api/v1/auth/login", json={"username": username, "password": password})
    assert r.status_code == 200, r.text
    token: str = r.json()["token"]
    return token


def create_user(admin: httpx.Client, role: str = "user") -> tuple[dict[str, Any], httpx.Client]:
    """A new user and a client that acts as them with a fresh API key."""
    username = unique(role)
    password = "password-" + secrets.token_hex(4)
    r = admin.post("/api/v1/users", json={"username": username, "password": password, "role": role})
    assert r.status_code == 201, r.text
    user = r.json()
    token = login(str(admin.base_url), username, password)
    r = httpx.post(
        f"{admin.base_url}/api/v1/api-keys",
        json={"name": "test"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert r.status_code == 201, r.text
    user["password"] = password
    return user, client(str(admin.base_url), r.json()["key"])


def client(url: str, token: str | None = None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=url, headers=headers, timeout=30)


def register_worker(
    url: str, cluster_token: str, name: str | None = None, labels: dict[str, str] | None = None
) -> tuple[dict[str, Any], httpx.Client]:
    """Register a worker the way the worker agent does; returns it and its client."""
    body = {
        "name": name or unique("worker"),
        "address": "127.0.0.1",
        "port": 10150,
        "labels": labels or {"os": "linux", "arch": "amd64"},
    }
    r = httpx.post(
        f"{url}/api/v1/workers/register",
        json=body,
        headers={"Authorization": f"Bearer {cluster_token}"},
    )
    assert r.status_code in (200, 201), r.text
    registered = r.json()
    return registered, client(url, registered["credential"])


def deploy(admin: httpx.Client, **spec: Any) -> dict[str, Any]:
    body = {
        "name": unique("model"),
        "source": {"type": "huggingface", "repo_id": "org/tiny-GGUF", "filename": "*.gguf"},
        **spec,
    }
    r = admin.post("/api/v1/models", json=body)
    assert r.status_code == 201, r.text
    model: dict[str, Any] = r.json()
    return model


class Heartbeat:
    """Reports a worker's status every few seconds, as the agent would, so the
    server keeps a worker that a test (or bench) plays ``ready``."""

    EVERY_S = 3.0

    def __init__(
        self, url: str, worker_id: int, credential: str, status: Callable[[], dict[str, Any]]
    ) -> None:
        self._url = f"{url}/api/v1/workers/{worker_id}/status"
        self._headers = {"Authorization": f"Bearer {credential}"}
        self._status = status
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def _run(self) -> None:
        with httpx.Client(headers=self._headers, timeout=10) as http:
            while not self._stop.wait(self.EVERY_S):
                # A failed beat is followed by the next one; the server logs why.
                with contextlib.suppress(httpx.HTTPError):
                    http.post(self._url, json=self._status())

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=20)
