"""The real ``corral`` command against a running server."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.tiny_models import cached
from tests.helpers import CORRAL, ServerProcess, register_worker, unique
from tests.integration.test_placement import GIB, join


class Cli:
    def __init__(self, config_dir: Path) -> None:
        self.env = {**os.environ, "CORRAL_CONFIG_DIR": str(config_dir), "COLUMNS": "200"}
        self.env.pop("CORRAL_SERVER_URL", None)
        self.env.pop("CORRAL_API_KEY", None)

    def run(
        self, *args: str, ok: bool = True, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [CORRAL, *args], env=self.env, capture_output=True, text=True, timeout=60, input=stdin
        )
        if ok:
            assert result.returncode == 0, (args, result.stdout, result.stderr)
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "--json").stdout)


@pytest.fixture
def cli(tmp_path: Path, server: ServerProcess) -> Cli:
    c = Cli(tmp_path / "config")
    c.run(
        "login", "--server", server.url, "--username", "admin", "--password", server.admin_password
    )
    return c


def test_login_stores_a_private_profile(cli: Cli, tmp_path: Path, server: ServerProcess) -> None:
    profile = tmp_path / "config" / "cli.json"
    assert stat.S_IMODE(profile.stat().st_mode) == 0o600
    stored = json.loads(profile.read_text())
    assert stored["server_url"] == server.url
    assert stored["api_key"].startswith("corral_")
    keys = cli.json("keys", "list")
    assert any(stored["api_key"].startswith(f"corral_{k['id']}_") for k in keys)


def test_wrong_password_fails_with_one_line(tmp_path: Path, server: ServerProcess) -> None:
    c = Cli(tmp_path / "other")
    r = c.run("login", "--server", server.url, "--password", "not-it-at-all", ok=False)
    assert r.returncode == 1
    assert r.stderr.strip().count("\n") == 0
    assert "wrong username or password" in r.stderr
    assert not (tmp_path / "other" / "cli.json").exists()


def test_commands_without_login_say_so(tmp_path: Path, server: ServerProcess) -> None:
    c = Cli(tmp_path / "nobody")
    c.env["CORRAL_SERVER_URL"] = server.url
    r = c.run("models", "list", ok=False)
    assert r.returncode == 1
    assert "corral login" in r.stderr


def test_models_deploy_list_show_scale_rm(cli: Cli) -> None:
    name = unique("cli-model")
    out = cli.run(
        "models",
        "deploy",
        name,
        "--hf-repo",
        "Qwen/Qwen2.5-0.5B-Instruct-GGUF",
        "--file",
        "*q4_k_m.gguf",
        "--replicas",
        "2",
        "--backend-param=--ctx-size=4096",
        "--env",
        "A=1",
        "--worker-selector",
        "zone=a",
    ).stdout
    assert f"Deployed {name}" in out and "llama.cpp" in out
    assert name in cli.run("models", "list").stdout
    shown = cli.json("models", "show", name)
    assert shown["backend_parameters"] == ["--ctx-size=4096"]
    assert shown["env"] == {"A": "1"} and shown["worker_selector"] == {"zone": "a"}
    assert len(shown["instances"]) == 2
    table = cli.run("models", "show", name).stdout
    assert "2 wanted" in table and "zone=a" in table
    assert "Scaled" in cli.run("models", "scale", name, "3").stdout
    assert len(cli.json("instances", "list", "--model", name)) == 3
    assert name in cli.run("instances", "list", "--model", name).stdout
    cli.run("models", "rm", name)
    r = cli.run("models", "show", name, ok=False)
    assert r.returncode == 1 and f"no model named {name!r}" in r.stderr


def test_vllm_deploy_shows_the_default_selector(cli: Cli) -> None:
    name = unique("cli-vllm")
    model = cli.json(
        "models", "deploy", name, "--hf-repo", "Qwen/Qwen2.5-0.5B-Instruct", "--replicas", "0"
    )
    assert model["backend"] == "vllm"
    assert model["worker_selector"] == {"os": "linux", "arch": "amd64"}


def test_bad_input_exits_1_with_the_servers_message(cli: Cli) -> None:
    r = cli.run("models", "deploy", "bad name", "--local-path", "/m.gguf", ok=False)
    assert r.returncode == 1
    assert "name" in r.stderr and "422" in r.stderr
    r = cli.run("models", "deploy", unique("m"), ok=False)
    assert "exactly one source" in r.stderr
    r = cli.run("models", "scale", "no-such-model", "1", ok=False)
    assert r.returncode == 1 and "no model named" in r.stderr


def test_keys_create_list_rm(cli: Cli, server: ServerProcess) -> None:
    name = unique("key")
    r = cli.run("keys", "create", name, "--expires-in-days", "3")
    key = r.stdout.strip()
    assert key.startswith("corral_") and "not shown again" in r.stderr
    listed = {k["name"]: k for k in cli.json("keys", "list")}
    assert listed[name]["expires_at"] is not None
    other = Cli(Path(cli.env["CORRAL_CONFIG_DIR"]).parent / "with-key")
    other.run("login", "--server", server.url, "--api-key", key)
    assert other.json("models", "list") is not None
    cli.run("keys", "rm", listed[name]["id"])
    assert name not in {k["name"] for k in cli.json("keys", "list")}
    r = other.run("models", "list", ok=False)
    assert r.returncode == 1 and "401" in r.stderr


def test_usage_is_empty_then_says_so(cli: Cli) -> None:
    """No inference went through this server's gateway under this name: the
    table has only its total (the gateway tests check the figures)."""
    report = cli.json("usage", "--model", unique("nothing"), "--by", "model")
    assert report == {
        "items": [],
        "total": {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }
    assert "total" in cli.run("usage", "--by", "day", "--by", "user").stdout
    r = cli.run("usage", "--by", "week", ok=False)
    assert r.returncode == 1 and "--by takes day, user, api_key, model" in r.stderr


def test_users_admin_commands_and_a_users_limits(
    cli: Cli, server: ServerProcess, tmp_path: Path
) -> None:
    name = unique("carol")
    cli.run("users", "create", name, "--password", "password-carol")
    assert name in cli.run("users", "list").stdout
    carol = Cli(tmp_path / "carol")
    carol.run("login", "--server", server.url, "--username", name, "--password", "password-carol")
    r = carol.run("users", "list", ok=False)
    assert r.returncode == 1 and "403" in r.stderr
    r = carol.run("workers", "list", ok=False)
    assert r.returncode == 1 and "403" in r.stderr
    assert carol.json("models", "list") is not None
    cli.run("users", "update", name, "--role", "admin")
    assert {u["username"]: u for u in cli.json("users", "list")}[name]["role"] == "admin"
    cli.run("users", "rm", name)
    assert name not in cli.run("users", "list").stdout


def test_workers_list_and_label(cli: Cli, server: ServerProcess) -> None:
    name = unique("node")
    registered, worker = register_worker(server.url, server.cluster_token, name)
    status = {
        "cpu": {"cores": 8},
        "memory": {"total": 2**34, "used": 0},
        "devices": [
            {
                "index": 0,
                "vendor": "nvidia",
                "name": "L4",
                "memory_total": 24 * 2**30,
                "memory_used": 0,
                "simulated": True,
            }
        ],
    }
    worker.post(f"/api/v1/workers/{registered['worker_id']}/status", json=status)
    table = cli.run("workers", "list").stdout
    assert name in table and "L4" in table and "(simulated)" in table
    out = cli.run("workers", "label", name, "gpu=l4", "team=nlp").stdout
    assert "gpu=l4" in out and "team=nlp" in out
    out = cli.run("workers", "label", name, "team-").stdout
    assert "team=" not in out
    r = cli.run("workers", "label", name, "os=windows", ok=False)
    assert r.returncode == 1 and "set by the worker itself" in r.stderr


def test_logout_revokes_the_key(cli: Cli) -> None:
    cli.run("logout")
    r = cli.run("models", "list", ok=False)
    assert r.returncode == 1 and "corral login" in r.stderr


def test_unreachable_server_is_one_line(tmp_path: Path) -> None:
    c = Cli(tmp_path / "x")
    c.env["CORRAL_SERVER_URL"] = "http://127.0.0.1:9"
    c.env["CORRAL_API_KEY"] = "corral_aaaaaaaaaaaa_" + "a" * 48
    r = c.run("models", "list", ok=False)
    assert r.returncode == 1
    assert "cannot reach the corral server at http://127.0.0.1:9" in r.stderr
    assert "Traceback" not in r.stderr


def test_deploy_dry_run_prints_the_plan_and_creates_nothing(
    cli: Cli, server: ServerProcess, tmp_path: Path
) -> None:
    pool = unique("dry")
    join(server, pool, [8 * GIB])
    name = unique("dry-model")
    path = str(cached().gguf_q8_0)
    args = ["models", "deploy", name, "--local-path", path, "--worker-selector", f"pool={pool}"]
    out = cli.run(*args, "--dry-run").stdout
    assert "llama.cpp: would run: all" in out and "layers on" in out
    assert "GPU 0" in out and "RAM" in out and "command: llama-server" in out
    assert cli.json(*args, "--dry-run")["fits"] is True
    r = cli.run("models", "show", name, ok=False)
    assert r.returncode == 1  # nothing was created
    out = cli.run(*args[:-1], "pool=elsewhere", "--dry-run").stdout
    assert "would wait" in out and "worker_selector wants pool=elsewhere" in out
