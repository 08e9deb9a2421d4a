"""One model served whole on one worker vs. split over two and three workers.

Every case runs the same ~160 MB f16 model (``tests.e2e.test_distributed``'s
``SPLIT_SHAPE``: 8 layers of hidden 512) through a real ``corral server`` and
real ``corral worker`` processes on this machine. Each worker declares one
SIMULATED GPU (a devices file) sized so that the scheduler picks the case:

* ``whole``  one worker, 1 GiB: every layer on that worker;
* ``split2`` three workers of 540 MiB (too small alone): the primary and one
  helper's rpc-server, layers about half and half;
* ``split3`` three workers of 500 MiB: the primary and two helpers.

A simulated GPU is the CPU (this machine has no GPU): the helpers' rpc-servers
lend their CPU, and the primary keeps its share on its own CPU. For each case
the run measures, through corral's ``/v1`` endpoint:

* deploy → first streamed token (the model posted, placed, helpers' rpc-servers
  started, the primary waiting for them, the engine loading over RPC);
* prompt processing and generation rates over ``--requests`` sequential
  streamed chats (``max_tokens`` tokens each, ``ignore_eos``), from the
  engine's own ``timings`` (what llama-server measured) and end to end.

``whole`` is the baseline of the same run.

    .venv/bin/python bench/distributed.py [--requests 5] [--max-tokens 64] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.backends import install_llama_cpp
from tests.e2e.test_distributed import SPLIT_SHAPE, small_gpu
from tests.fixtures.tiny_models import cached
from tests.helpers import client, create_user, login, run_server, unique
from tests.workers import api_key_of, run_worker

CASES = {
    # name: (workers, MiB per simulated GPU)
    "whole": (1, 1024),
    "split2": (3, 540),
    "split3": (3, 500),
}
ENV = {"CORRAL_HEARTBEAT_TIMEOUT": "10"}
WORKER_ENV = {"CORRAL_WORKER_HEARTBEAT_INTERVAL": "1"}
PROMPT = "Count slowly from one to one hundred, writing every number in words. " * 4


def _stream(url: str, key: str, model: str, max_tokens: int) -> dict[str, float]:
    """One streamed chat: time to first token, end-to-end rates, engine timings."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
        "ignore_eos": True,
        "timings_per_token": False,
    }
    started = time.perf_counter()
    first = None
    timings: dict[str, Any] = {}
    usage: dict[str, Any] = {}
    with httpx.stream(
        "POST",
        f"{url}/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {key}"},
        timeout=120,
    ) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if (
                first is None
                and event.get("choices")
                and event["choices"][0]["delta"].get("content")
            ):
                first = time.perf_counter() - started
            timings = event.get("timings") or timings
            usage = event.get("usage") or usage
    total = time.perf_counter() - started
    completion = int(usage.get("completion_tokens", 0))
    return {
        "ttft_s": first if first is not None else total,
        "e2e_tokens_per_s": completion / total if total else 0.0,
        "engine_prompt_per_s": float(timings.get("prompt_per_second", 0.0)),
        "engine_gen_per_s": float(timings.get("predicted_per_second", 0.0)),
        "completion_tokens": completion,
    }


def _wait_first_token(url: str, key: str, model: str, timeout: float = 300) -> float:
    """Poll until a streamed chat yields a token; returns when it did."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            _stream(url, key, model, 1)
            return time.perf_counter()
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError(f"{model}: no token within {timeout:.0f} s")


def run_case(name: str, model_path: Path, requests: int, max_tokens: int) -> dict[str, Any]:
    workers, mib = CASES[name]
    with tempfile.TemporaryDirectory(prefix=f"corral-bench-{name}-") as tmp, ExitStack() as stack:
        root = Path(tmp)
        server = stack.enter_context(run_server(root, env=ENV))
        gpu = small_gpu(root / "gpu.yaml", mib)
        for i in range(workers):
            ports = f"[{43000 + 100 * i}, {43099 + 100 * i}]"
            stack.enter_context(
                run_worker(
                    server,
                    root,
                    f"w{i + 1}",
                    devices=gpu,
                    env={"CORRAL_WORKER_BACKEND_PORTS": ports, **WORKER_ENV},
                )
            )
        admin = stack.enter_context(
            client(server.url, login(server.url, "admin", "admin-password-1"))
        )
        deadline = time.monotonic() + 30
        while sum(w["state"] == "ready" for w in admin.get("/api/v1/workers").json()["items"]) < (
            workers
        ):
            if time.monotonic() > deadline:
                raise RuntimeError("workers did not become ready")
            time.sleep(0.1)
        _, user = create_user(admin)
        key = api_key_of(user)
        user.close()
        model = unique(f"bench-{name}")
        started = time.perf_counter()
        r = admin.post(
            "/api/v1/models",
            json={"name": model, "source": {"type": "local", "path": str(model_path)}},
        )
        r.raise_for_status()
        first_token = _wait_first_token(server.url, key, model) - started
        [instance] = admin.get("/api/v1/instances", params={"model_id": r.json()["id"]}).json()[
            "items"
        ]
        placement = instance["placement"]
        _stream(server.url, key, model, max_tokens)  # warm-up
        runs = [_stream(server.url, key, model, max_tokens) for _ in range(requests)]
        admin.delete(f"/api/v1/models/{r.json()['id']}")
        return {
            "case": name,
            "workers_used": 1 + len(placement["helpers"]),
            "kind": placement["kind"],
            "layers": [
                f"{s['worker_name']}:{'cpu' if s['gpu'] is None else 'gpu' + str(s['gpu'])}"
                f"[{s['first']},{s['end']})"
                for s in placement["layers"]
            ],
            "deploy_to_first_token_s": first_token,
            **{
                k: statistics.median(run[k] for run in runs)
                for k in ("ttft_s", "e2e_tokens_per_s", "engine_prompt_per_s", "engine_gen_per_s")
            },
            "completion_tokens": runs[0]["completion_tokens"],
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument(
        "--json", type=Path, default=Path(__file__).parent / "results-distributed.json"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as seed:
        install_llama_cpp(Path(seed))
    model_path = cached(SPLIT_SHAPE).gguf_f16
    results = [
        run_case(name, model_path, args.requests, args.max_tokens) for name in args.cases.split(",")
    ]
    base = results[0]
    header = (
        f"{'case':8} {'workers':>7} {'deploy→1st token':>17} {'TTFT':>7} {'gen tok/s':>10} "
        f"{'vs whole':>8} {'prompt tok/s':>12} {'e2e tok/s':>9}"
    )
    print(header)
    for r in results:
        ratio = r["engine_gen_per_s"] / base["engine_gen_per_s"] if base["engine_gen_per_s"] else 0
        print(
            f"{r['case']:8} {r['workers_used']:>7} {r['deploy_to_first_token_s']:>16.2f}s "
            f"{r['ttft_s'] * 1000:>5.0f}ms {r['engine_gen_per_s']:>10.1f} {ratio:>7.0%} "
            f"{r['engine_prompt_per_s']:>12.1f} {r['e2e_tokens_per_s']:>9.1f}"
        )
        print(f"{'':8} layers: {' '.join(r['layers'])}")
    args.json.write_text(
        json.dumps(
            {
                "machine": {"cpus": platform.machine(), "python": platform.python_version()},
                "requests": args.requests,
                "max_tokens": args.max_tokens,
                "results": results,
            },
            indent=2,
        )
        + "\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
