"""How fast the scheduler decides, and how fast the controller places a backlog.

1. Decisions (pure ``corral.scheduler.schedule``): synthetic clusters of 10,
   100, 1,000 and 5,000 workers with 1-8 simulated GPUs of 8-141 GiB (built
   as workers report themselves), 10,000 running instances' claims spread
   over them, and a mix of requests: Llama-3.1-8B Q4_K_M (one GPU), 70B
   Q4_K_M (a GPU pair or offload), 70B at 32k context (multi-GPU or
   distributed), Llama-8B bf16 on vLLM. p50/p99 per decision; the baseline
   in the same run is a naive first-fit loop over the same snapshot (the
   least any scheduler must do). Target: p99 <= 20 ms at 1,000 x 8 GPUs.
2. End to end (``--e2e``): a real ``corral server`` on SQLite and on
   PostgreSQL (when CORRAL_TEST_POSTGRES_URL is set), workers registered over
   the API, 1,000 models deployed while no worker is ready; then every worker
   reports and the clock runs until all 1,000 instances are placed. Target:
   <= 10 s.

    .venv/bin/python bench/scheduler.py [--e2e] [--workers 10,100,1000,5000] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fixtures.clusters import synthetic_workers
from tests.fixtures.gguf_headers import generate
from tests.helpers import client, login, register_worker, run_server, unique
from tests.unit.test_scheduler import LLAMA_8B, LLAMA_8B_TENSORS

from corral.estimate.gguf import read_gguf_model
from corral.estimate.llama_cpp.memory import LlamaCppEstimate, estimate
from corral.estimate.llama_cpp.settings import settings_for
from corral.estimate.source import LocalFile
from corral.estimate.vllm import estimate_by_tp
from corral.scheduler import ClusterSnapshot, Placement, PlacementRequest, schedule
from corral.scheduler.cluster import node_from_worker
from corral.schemas.models import Backend
from corral.schemas.workers import SystemReserved

GIB = 1024**3
RUNNING = 10_000


def requests(headers: dict[str, list[Path]]) -> list[tuple[str, PlacementRequest]]:
    def gguf(name: str, *params: str) -> LlamaCppEstimate:
        model = read_gguf_model([LocalFile(p) for p in headers[name]])
        return estimate(model, settings_for(131072, parameters=params))

    return [
        ("8B Q4_K_M", PlacementRequest(Backend.LLAMA_CPP, gguf("llama-3.1-8b-q4_k_m"))),
        ("70B Q4_K_M", PlacementRequest(Backend.LLAMA_CPP, gguf("llama-3.1-70b-q4_k_m"))),
        (
            "70B Q4_K_M 32k",
            PlacementRequest(
                Backend.LLAMA_CPP, gguf("llama-3.1-70b-q4_k_m", "--ctx-size", "32768")
            ),
        ),
        (
            "DeepSeek-R1 Q4_K_M",
            PlacementRequest(Backend.LLAMA_CPP, gguf("deepseek-r1-q4_k_m")),
        ),
        (
            "8B bf16 vLLM",
            PlacementRequest(Backend.VLLM, estimate_by_tp(LLAMA_8B, LLAMA_8B_TENSORS)),
        ),
    ]


def snapshot(workers: int, seed: int = 0, gpus_per_worker: int | None = None) -> ClusterSnapshot:
    nodes = [
        node_from_worker(i + 1, name, "ready", labels, status, SystemReserved(vram=GIB // 2))
        for i, (name, labels, status) in enumerate(
            synthetic_workers(workers, seed, gpus=gpus_per_worker)
        )
    ]
    cluster = ClusterSnapshot(nodes)
    rng = random.Random(seed)
    gpus = [(n, g) for n in cluster.nodes for g in n.gpus]
    # Running instances: claims of 2-40 % of a GPU where room is left; a small
    # cluster gets two per GPU, since 10,000 would only fill it to the brim.
    for i in range(min(RUNNING, 2 * len(gpus))):
        n, g = gpus[rng.randrange(len(gpus))]
        take = min(int(g.total * rng.uniform(0.02, 0.4)), g.free)
        g.claimed += take
        g.instances += 1
        n.instances += 1
        n.model_instances[i % 500] = n.model_instances.get(i % 500, 0) + 1
    return cluster


def first_fit(request: PlacementRequest, cluster: ClusterSnapshot) -> bool:
    """The baseline: the first GPU whose free memory holds the model on one GPU."""
    e = request.estimate
    if isinstance(e, LlamaCppEstimate):
        need = e.device_usage(e.layers, ["gpu0"])[0].total
        return any(g.free >= need for n in cluster.nodes if n.ready for g in n.gpus)
    one = e[1]
    return any(one.fits(g.total, g.free) for n in cluster.nodes if n.ready for g in n.gpus)


def time_decisions(
    sizes: list[tuple[int, int | None]], reqs: list[tuple[str, PlacementRequest]]
) -> list[dict[str, Any]]:
    rows = []
    for workers, per_worker in sizes:
        cluster = snapshot(workers, gpus_per_worker=per_worker)
        gpus = sum(len(n.gpus) for n in cluster.nodes)
        rounds = max(20, min(200, 20_000 // workers))
        for label, request in reqs:
            times, base, kinds = [], [], set()
            for _ in range(rounds):
                t0 = time.perf_counter()
                result = schedule(request, cluster)
                times.append(time.perf_counter() - t0)
                kinds.add(result.kind.value if isinstance(result, Placement) else "pending")
                t0 = time.perf_counter()
                first_fit(request, cluster)
                base.append(time.perf_counter() - t0)
            times.sort()
            rows.append({
                "workers": workers, "gpus": gpus, "request": label, "placed_as": sorted(kinds),
                "p50_ms": statistics.median(times) * 1e3,
                "p99_ms": times[min(len(times) - 1, int(len(times) * 0.99))] * 1e3,
                "first_fit_p50_ms": statistics.median(base) * 1e3,
            })  # fmt: skip
            r = rows[-1]
            print(
                f"{workers:>6} {gpus:>6}  {label:<18} {','.join(r['placed_as']):<28} "
                f"{r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {r['first_fit_p50_ms']:10.2f}",
                flush=True,
            )
    return rows


def end_to_end(database: str, url: str | None, workers: int, models: int) -> dict[str, Any]:
    headers = generate(Path(tempfile.mkdtemp()) / "h")
    files = [headers[n][0] for n in ("llama-3.1-8b-q4_k_m", "mixtral-8x7b-q4_k_m")]
    with tempfile.TemporaryDirectory() as tmp, run_server(Path(tmp), url) as server:
        admin = client(server.url, login(server.url, "admin", server.admin_password))
        pool = unique("bench")
        joined = []
        for name, labels, status in synthetic_workers(workers, seed=1):
            reg, worker = register_worker(
                server.url, server.cluster_token, f"{pool}-{name}", {**labels, "pool": pool}
            )
            joined.append((reg["worker_id"], worker, status))

        def deploy(i: int) -> None:
            r = admin.post("/api/v1/models", json={
                "name": f"{pool}-m{i}", "source": {"type": "local", "path": str(files[i % 2])},
                "worker_selector": {"pool": pool},
            })  # fmt: skip
            assert r.status_code == 201, r.text

        t0 = time.perf_counter()
        with ThreadPoolExecutor(8) as ex:
            list(ex.map(deploy, range(models)))
        deployed = time.perf_counter() - t0

        def report(w: tuple[int, Any, Any]) -> None:
            wid, worker, status = w
            r = worker.post(f"/api/v1/workers/{wid}/status", json=status.model_dump())
            assert r.status_code == 200, r.text

        t0 = time.perf_counter()
        with ThreadPoolExecutor(8) as ex:
            list(ex.map(report, joined))
        while True:  # poll what is left (cheap to list once placements progress)
            left = admin.get("/api/v1/instances", params={"state": "pending"}).json()["items"]
            if not left:
                break
            if time.perf_counter() - t0 > 120:
                sample = left[0]["state_message"]
                raise SystemExit(f"{len(left)} of {models} still pending after 120 s: {sample}")
            time.sleep(0.25)
        placed = time.perf_counter() - t0
    row = {"database": database, "workers": workers, "instances": models,
           "deploy_s": deployed, "place_s": placed, "per_second": models / placed}  # fmt: skip
    print(
        f"{database:<11} {workers:>7} {models:>9} {deployed:9.2f} {placed:9.2f} "
        f"{row['per_second']:9.0f}",
        flush=True,
    )
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", default="10,100,1000,5000")
    parser.add_argument("--e2e", action="store_true")
    parser.add_argument("--e2e-workers", type=int, default=200)
    parser.add_argument("--e2e-models", type=int, default=1000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    out: dict[str, Any] = {}
    headers = generate(Path(tempfile.mkdtemp()) / "headers")
    print(f"decisions ({RUNNING} running instances' claims, or 2 per GPU if fewer)")
    print(f"{'WORKERS':>6} {'GPUS':>6}  {'REQUEST':<18} {'PLACED AS':<28} "
          f"{'P50 MS':>8} {'P99 MS':>8} {'FIRST-FIT':>10}")  # fmt: skip
    sizes: list[tuple[int, int | None]] = [(int(w), None) for w in args.workers.split(",")]
    sizes.insert(sum(1 for w, _ in sizes if w <= 1000), (1000, 8))  # the target's cluster
    out["decisions"] = time_decisions(sizes, requests(headers))
    if args.e2e:
        print("\nend to end: all instances pending, then every worker reports")
        print(f"{'DATABASE':<11} {'WORKERS':>7} {'INSTANCES':>9} {'DEPLOY S':>9} "
              f"{'PLACE S':>9} {'PER S':>9}")  # fmt: skip
        dbs: list[tuple[str, str | None]] = [("sqlite", None)]
        if os.environ.get("CORRAL_TEST_POSTGRES_URL"):
            import asyncio

            from sqlalchemy.engine import make_url
            from tests.conftest import POSTGRES_URL, _admin_sql, _async_url

            name = f"corral_bench_{os.getpid()}"
            asyncio.run(_admin_sql(f'CREATE DATABASE "{name}"'))
            dbs.append(("postgresql", _async_url(
                make_url(POSTGRES_URL).set(database=name).render_as_string(False))))  # fmt: skip
        try:
            out["end_to_end"] = [
                end_to_end(db, url, args.e2e_workers, args.e2e_models) for db, url in dbs
            ]
        finally:
            if len(dbs) > 1:
                asyncio.run(_admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
