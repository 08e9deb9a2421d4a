"""One backend process on this machine: start, wait until ready, stop.

Used by ``corral backend run`` and the end-to-end tests; the worker's
supervisor builds on the same pieces (command, readiness probes, log).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

import httpx

from corral.backends.base import BackendDriver, Installation, LaunchRequest, ReadinessProbe
from corral.backends.steps import tail


class BackendExitedError(RuntimeError):
    """The process ended while starting; the message carries its log tail."""


class BackendProcess:
    def __init__(
        self,
        driver: BackendDriver,
        installation: Installation,
        request: LaunchRequest,
        log_path: Path,
    ) -> None:
        self.driver = driver
        self.installation = installation
        self.request = request
        self.log_path = log_path
        self.command = driver.command(installation, request)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        host = "127.0.0.1" if self.request.host in ("0.0.0.0", "") else self.request.host
        return f"http://{host}:{self.request.port}"

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **self.command.env},
                start_new_session=True,  # its own process group: stop() reaches its children
            )

    def log_tail(self, lines: int = 25) -> str:
        return tail(self.log_path, lines)

    def is_ready(self, client: httpx.Client) -> bool:
        headers = {"Authorization": f"Bearer {self.request.api_key}"}
        for probe in self.driver.readiness(self.request):
            try:
                response = client.get(self.base_url + probe.path, headers=headers, timeout=5)
            except httpx.HTTPError:
                return False
            if not probe_passed(probe, response):
                return False
        return True

    def wait_ready(self, timeout: float) -> None:
        """Poll the readiness probes until they pass; raise if the process dies or times out."""
        assert self.process is not None, "start() first"
        deadline = time.monotonic() + timeout
        with httpx.Client() as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise BackendExitedError(
                        f"{self.driver.backend} exited with {self.process.returncode} while "
                        f"starting:\n{self.log_tail()}"
                    )
                if self.is_ready(client):
                    return
                time.sleep(0.25)
        raise TimeoutError(
            f"{self.driver.backend} not ready after {timeout:.0f}s:\n{self.log_tail()}"
        )

    def stop(self, grace: float = 15) -> int | None:
        """SIGTERM the engine, SIGKILL its whole process group after ``grace``
        seconds or once it has exited. Safe to call twice.

        Only the leader gets SIGTERM: vLLM's API server then shuts its engine
        processes down in order, which a group-wide signal would pre-empt.
        """
        if self.process is None or self.process.returncode is not None:
            return None if self.process is None else self.process.returncode
        pgid = self.process.pid
        try:
            self.process.terminate()
            return self.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.killpg(pgid, signal.SIGKILL)
            return self.process.wait()
        except ProcessLookupError:
            return self.process.wait()
        finally:
            with contextlib.suppress(ProcessLookupError):  # children that outlived it
                os.killpg(pgid, signal.SIGKILL)
            _wait_until_gone(pgid)

    def __enter__(self) -> BackendProcess:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def probe_passed(probe: ReadinessProbe, response: httpx.Response) -> bool:
    """Whether an engine's answer to ``probe`` says it is ready."""
    if response.status_code != 200:
        return False
    if probe.expect_model is None:
        return True
    try:
        ids = [m.get("id") for m in response.json().get("data", [])]
    except (ValueError, AttributeError):
        return False
    return probe.expect_model in ids


def _wait_until_gone(pgid: int, timeout: float = 10) -> None:
    """Wait until no process of the group is left, zombies included: orphans
    are reaped by init a moment after their parent dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


@contextmanager
def running(
    driver: BackendDriver,
    installation: Installation,
    request: LaunchRequest,
    log_path: Path,
    *,
    timeout: float,
) -> Iterator[BackendProcess]:
    with BackendProcess(driver, installation, request, log_path) as process:
        process.wait_ready(timeout)
        yield process
