"""Time from deploy to first token, and how much of it is corral's own.

For each tiny model (the GGUF on llama.cpp, the Hugging Face checkpoint on
vLLM's CPU build) the same run measures:

* **through corral**: a real ``corral start`` (server + embedded worker,
  SQLite); the model is deployed over the API and the instance is polled
  every 10 ms, so each phase is timed to ~10 ms: placed (``scheduled``), engine
  spawned (``starting``), ready (``running``), then the first streamed token
  through corral's ``/v1`` endpoint;
* **baseline, the engine alone**: the same engine and model started directly
  (``corral.backends.process``, readiness polled every 10 ms) and its first
  streamed token — what any system must pay.

corral's overhead = deploy-to-first-token through corral - the baseline's
start-to-first-token. Repeat runs with ``--runs``; figures are medians.

    .venv/bin/python bench/deploy.py [--runs 3] [--models gguf,hf] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import openai

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.backends import install_llama_cpp, install_vllm
from tests.fixtures.tiny_models import cached as tiny_models
from tests.helpers import client, create_user, free_port, login, run_server, unique

from corral.backends.base import LaunchRequest
from corral.backends.process import BackendProcess
from corral.backends.registry import driver
from corral.schemas.models import Backend

VLLM_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1"}
PHASES = ["placed", "spawned", "ready", "first_token"]


def _first_token(base_url: str, key: str, model: str) -> float:
    """Seconds until the first streamed content chunk arrives."""
    started = time.perf_counter()
    with openai.OpenAI(base_url=base_url, api_key=key, max_retries=0) as ai:
        stream = ai.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "Hi"}],
            max_tokens=4,
            stream=True,
        )
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                elapsed = time.perf_counter() - started
                stream.close()
                return elapsed
    raise RuntimeError("no token arrived")


def through_corral(
    admin: httpx.Client, url: str, key: str, kind: str, path: Path
) -> dict[str, float]:
    env = VLLM_ENV if kind == "hf" else {}
    name = unique(f"bench-{kind}")
    started = time.perf_counter()
    r = admin.post(
        "/api/v1/models",
        json={"name": name, "source": {"type": "local", "path": str(path)}, "env": env},
    )
    r.raise_for_status()
    model_id = r.json()["id"]
    seen: dict[str, float] = {}
    deadline = started + 900
    while "ready" not in seen and time.perf_counter() < deadline:
        items = admin.get("/api/v1/instances", params={"model_id": model_id}).json()["items"]
        state = items[0]["state"] if items else "pending"
        now = time.perf_counter() - started
        if state == "error":
            raise RuntimeError(items[0]["state_message"])
        if state != "pending":
            seen.setdefault("placed", now)
        if state in ("starting", "running"):
            seen.setdefault("spawned", now)
        if state == "running":
            seen["ready"] = now
        time.sleep(0.01)
    seen["first_token"] = seen["ready"] + _first_token(f"{url}/v1", key, name)
    admin.delete(f"/api/v1/models/{model_id}")
    return seen


def engine_alone(kind: str, path: Path, data_dir: Path) -> dict[str, float]:
    backend = Backend.VLLM if kind == "hf" else Backend.LLAMA_CPP
    [installation] = driver(backend).installed(data_dir)[-1:]
    request = LaunchRequest(
        model_name="tiny",
        model_path=path,
        host="127.0.0.1",
        port=free_port(),
        api_key=secrets.token_urlsafe(16),
        context_length=2048,
        env=VLLM_ENV if kind == "hf" else {},
    )
    process = BackendProcess(driver(backend), installation, request, data_dir / f"{kind}.log")
    started = time.perf_counter()
    process.start()
    try:
        with httpx.Client() as http:
            while not process.is_ready(http):
                assert process.process is not None and process.process.poll() is None, (
                    process.log_tail()
                )
                time.sleep(0.01)
        ready = time.perf_counter() - started
        first = _first_token(f"{process.base_url}/v1", request.api_key, "tiny")
    finally:
        process.stop()
    return {"ready": ready, "first_token": ready + first}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--models", default="gguf,hf")
    parser.add_argument("--json", type=Path, default=Path("bench/results-deploy.json"))
    args = parser.parse_args()
    kinds = args.models.split(",")
    models = tiny_models()
    paths = {"gguf": models.gguf_f16, "hf": models.hf_dir}
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        install_llama_cpp(tmp / "seed")
        if "hf" in kinds:
            install_vllm(tmp / "seed")
        with run_server(tmp, command="start") as server:
            admin = client(server.url, login(server.url, "admin", server.admin_password))
            _, user = create_user(admin)
            key = str(user.headers["Authorization"]).removeprefix("Bearer ")
            for kind in kinds:
                corral_runs = [
                    through_corral(admin, server.url, key, kind, paths[kind])
                    for _ in range(args.runs)
                ]
                alone_runs = [
                    engine_alone(kind, paths[kind], tmp / "seed") for _ in range(args.runs)
                ]
                results[kind] = {
                    "corral": {p: statistics.median(r[p] for r in corral_runs) for p in PHASES},
                    "engine_alone": {
                        p: statistics.median(r[p] for r in alone_runs)
                        for p in ("ready", "first_token")
                    },
                    "runs": args.runs,
                }
            admin.close()
    print(f"{'model':6} {'placed':>8} {'spawned':>8} {'ready':>8} {'1st tok':>8} "
          f"{'engine ready':>13} {'engine 1st':>11} {'overhead':>9}")  # fmt: skip
    for kind, r in results.items():
        c, e = r["corral"], r["engine_alone"]
        overhead = c["first_token"] - e["first_token"]
        r["overhead"] = overhead
        print(
            f"{kind:6} {c['placed']:8.3f} {c['spawned']:8.3f} {c['ready']:8.3f} "
            f"{c['first_token']:8.3f} {e['ready']:13.3f} {e['first_token']:11.3f} {overhead:9.3f}"
        )
    print("seconds from deploy (corral) or from process start (engine alone); medians")
    args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
