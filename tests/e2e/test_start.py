"""``corral start`` as a new user meets it: first start, restart, bad settings."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.backends import install_llama_cpp
from tests.helpers import CORRAL, free_port, wait_healthy

DEADLINE_S = 60


def _start(data_dir: Path, port: int, log: Path, *extra: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
    env["HF_ENDPOINT"] = "http://127.0.0.1:9"  # nothing reaches the internet
    with log.open("w") as out:
        return subprocess.Popen(
            [CORRAL, "start", "--data-dir", str(data_dir), "--port", str(port), *extra],
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )


def _wait_for(log: Path, text: str) -> str:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        content = log.read_text()
        if text in content:
            return content
        time.sleep(0.05)
    raise AssertionError(f"{text!r} never appeared:\n{log.read_text()}")


def _example(out: str) -> str:
    """The banner's pasteable block: the indented lines after "Try it:" (log
    lines of the embedded worker may follow it)."""
    lines = []
    for line in out.split("Try it:\n", 1)[1].splitlines():
        if line and not line.startswith("  "):
            break
        lines.append(line)
    return "\n".join(lines)


def _json_documents(text: str) -> list[Any]:
    decoder, documents, position = json.JSONDecoder(), [], 0
    text = text.strip()
    while position < len(text):
        document, position = decoder.raw_decode(text, position)
        documents.append(document)
    return documents


def _stop(process: subprocess.Popen[str]) -> None:
    process.terminate()
    process.wait(timeout=20)


def test_first_start_prints_credentials_and_a_working_example(tmp_path: Path) -> None:
    data_dir, port = tmp_path / "data", free_port()
    log = tmp_path / "first.log"
    process = _start(data_dir, port, log)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", process, log)
        out = _wait_for(log, "Try it:")
        assert f"corral is ready at http://127.0.0.1:{port}" in out
        password = re.search(r"Admin password: (\S+)", out)
        assert password is not None
        password_file = data_dir / "initial_admin_password"
        assert password_file.read_text().strip() == password.group(1)
        assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
        assert stat.S_IMODE((data_dir / "cluster_token").stat().st_mode) == 0o600
        # The example is pasted into a shell exactly as printed.
        example = _example(out)
        result = subprocess.run(["bash", "-c", example], capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == '{"items":[]}'
        # The generated password must be changed at first sign-in.
        r = httpx.post(
            f"http://127.0.0.1:{port}/api/v1/auth/login",
            json={"username": "admin", "password": password.group(1)},
        )
        assert r.json()["user"]["password_change_required"] is True
    finally:
        _stop(process)

    log = tmp_path / "second.log"
    process = _start(data_dir, port, log)
    try:
        out = _wait_for(log, "Try it:")
        assert "Admin password" not in out
        assert password.group(1) not in out
        assert (data_dir / "corral.db").exists()
    finally:
        _stop(process)


@pytest.mark.timeout(180)
def test_demo_answers_the_printed_chat_request_without_a_download(tmp_path: Path) -> None:
    install_llama_cpp(tmp_path / "seed")  # built once per machine, cached
    data_dir, port = tmp_path / "data", free_port()
    log = tmp_path / "demo.log"
    process = _start(data_dir, port, log, "--demo")
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, process, log)
        out = _wait_for(log, "Chat with the demo model")
        password = re.search(r"Admin password: (\S+)", out)
        assert password is not None
        token = httpx.post(
            f"{url}/api/v1/auth/login", json={"username": "admin", "password": password.group(1)}
        ).json()["token"]

        def demo_running() -> bool:
            r = httpx.get(f"{url}/api/v1/instances", headers={"Authorization": f"Bearer {token}"})
            return any(i["state"] == "running" for i in r.json()["items"])

        deadline = time.monotonic() + 120
        while not demo_running():
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        # The whole example block is pasted into a shell as printed.
        result = subprocess.run(
            ["bash", "-c", _example(out)], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr
        models, chat = _json_documents(result.stdout)
        assert models["items"][0]["name"] == "demo"
        assert chat["model"] == "demo" and chat["usage"]["completion_tokens"] > 0
        # No network was needed: HF_ENDPOINT points at a closed port.
    finally:
        _stop(process)


def test_bad_settings_fail_fast_with_a_message(tmp_path: Path) -> None:
    config = tmp_path / "corral.toml"
    config.write_text("port = 'seventy'\n")
    for args, message in [
        (["--config", str(config)], "port"),
        (["--config", str(tmp_path / "missing.toml")], "does not exist"),
        (["--log-level", "loud"], "log_level"),
        (["--bootstrap-password", "short"], "at least 8"),
    ]:
        r = subprocess.run(
            [CORRAL, "start", "--data-dir", str(tmp_path / "d"), *args],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert message in r.stderr and "Traceback" not in r.stderr


def test_unreachable_database_exits_non_zero(tmp_path: Path) -> None:
    r = subprocess.run(
        [
            CORRAL,
            "server",
            "--data-dir",
            str(tmp_path / "d"),
            "--port",
            str(free_port()),
            "--database-url",
            "postgresql://nobody@127.0.0.1:1/corral",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 1
    assert "cannot prepare the database postgresql+asyncpg://nobody@127.0.0.1:1/corral" in r.stderr
    assert "Traceback" not in r.stderr
