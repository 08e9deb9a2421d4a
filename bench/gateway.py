"""What corral's OpenAI-compatible gateway adds: the same load straight at an
engine and through ``corral server``'s ``/v1``, in one run.

Set up once, all on this machine:

* ``corral server`` (fresh data dir, SQLite, ``CORRAL_LOG_LEVEL=warning``);
  this script plays the worker over the HTTP API (registers, reports its
  status, heartbeats, reads its assignments, reports each instance running);
* backend **responder**: ``tests.responder``, a fake engine that answers at
  once, so what is measured through the gateway is the gateway's own cost.
  It writes a stream's 18 events back to back, so they reach the gateway in
  a read or two; a real engine's come one by one (see the llama rows, or
  ``--responder-event-delay 0.001``), each a read, a write and a wake-up;
* backend **llama**: ``llama-server`` on the tiny GGUF, as corral's driver
  starts it plus 64 slots, an HTTP thread per client and one compute thread
  (``llama_parameters``), answering ``max_tokens: 8`` (``ignore_eos``): a
  real engine's pace, runs twice as long;
* a user's API key for the gateway; each engine gets its instance's key.

Each cell (backend x stream x body x clients) runs the load straight at the
engine (**direct**) and through the gateway, alternately (``--rounds``), so
the machine's noise falls on both. The load: N clients in this process
(asyncio, a small HTTP/1.1 client on httptools, one keep-alive connection
each), each sending requests back to back for ``--duration`` seconds after
one untimed request. Streamed requests ask for the usage chunk.

* **added** latency = gateway - direct, at p50 and at p99;
* **throughput** ratio = gateway req/s / direct req/s;
* **gateway CPU**: user+system time of the server process over the timed part
  of a gateway run, less its idle rate (heartbeats, controllers) measured
  over the direct runs; per request, and for streams per relayed event
  (events counted by the client: lines starting with ``data: ``).
* the load generator's own CPU (% of one core): near 100 % it, not the
  system under test, sets the pace, and the cell is flagged ``LG``.

Bodies: **small** is a ~200-byte chat request; **large** adds ~256 KiB. For
the responder the 256 KiB are message text; llama-server must evaluate
message text and 256 KiB do not fit the tiny model's context, so its large
body carries them in a field it ignores (``metadata.padding``): what the
relay handles is the body's size, the same either way.

``--wrk`` also runs ``wrk`` (when on PATH) at 1, 2, 4 … 128 connections
against the responder, both paths, and reports the highest gateway req/s
whose p99 is within 10 ms of the direct p99 at the same connection count.

All processes share this machine's cores: compare ratios, not absolutes.

    .venv/bin/python bench/gateway.py [--quick] [--wrk] [--json bench/results-gateway.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.loadgen import Run, Target, http_request, percentile, run_in_loop, run_load
from tests.backends import install_llama_cpp, launch_request
from tests.fixtures.tiny_models import cached as tiny_models
from tests.helpers import (
    CORRAL,
    Heartbeat,
    ServerProcess,
    client,
    create_user,
    deploy,
    free_port,
    login,
    register_worker,
    unique,
    wait_healthy,
)
from tests.responder import run_responder

from corral.backends.base import Installation
from corral.backends.llama_cpp import install as llama_install
from corral.backends.llama_cpp.driver import LlamaCppDriver
from corral.backends.process import running

Json = dict[str, Any]
GIB = 1024**3
LARGE_BODY = 256 * 1024
LLAMA_SLOTS = 64
LLAMA_MAX_TOKENS = 8
LLAMA_STREAM_MAX_TOKENS = 32
"""Streams are longer, so the per-event cost is measured over many events."""
LLAMA_RUN_FACTOR = 2
"""llama-server's runs last this many times ``--duration``: at ~100 req/s,
a short run at 64 clients would be a request or two per client."""
RESPONDER_MAX_TOKENS = 16
LOAD_GENERATOR_BOUND = 90.0
"""% of one core the load generator may use before a cell is flagged ``LG``."""


# --- the cluster: a server, this script as its worker, two engines -----------


def worker_status() -> Json:
    return {
        "cpu": {"cores": 8},
        "memory": {"total": 64 * GIB, "used": 0},
        "disks": [{"path": "/", "total": 500 * GIB, "used": 0}],
        "devices": [],
    }


@contextmanager
def corral_server(tmp: Path) -> Iterator[ServerProcess]:
    """``corral server`` on SQLite, logging warnings only (so not the
    "shutdown complete" line ``tests.helpers.run_server`` checks for)."""
    port, token, password = free_port(), unique("cluster"), "admin-password-1"
    database_url = f"sqlite:///{tmp / 'corral.db'}"
    args = [CORRAL, "server", "--data-dir", str(tmp / "data"), "--host", "127.0.0.1"]
    args += ["--port", str(port), "--cluster-token", token, "--database-url", database_url]
    args += ["--bootstrap-password", password]
    log_path = tmp / "server.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "HF_ENDPOINT": "http://127.0.0.1:9", "CORRAL_LOG_LEVEL": "warning"},
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process, log_path)
        yield ServerProcess(url, tmp / "data", database_url, password, token, process, log_path)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


@dataclass
class Backend:
    name: str
    """``responder`` or ``llama``."""
    model: str
    """The deployed model's name, sent as ``model`` on both paths."""
    url: str
    api_key: str
    max_tokens: int


@dataclass
class Cluster:
    server: ServerProcess
    user_key: str
    backends: list[Backend]


def _poll(what: str, check: Callable[[], Any], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)
    return result


def llama_parameters(flags: frozenset[str]) -> list[str]:
    """Added to the driver's command line (a later flag wins over its own).

    Enough slots and HTTP threads that the engine does not queue connections:
    llama-server serves each keep-alive connection with one thread, so 256
    clients need 256 threads. One compute thread: with two, on a small machine
    shared with the gateway and the load generator, llama.cpp's spinning
    barrier stalls whenever one of them is preempted (measured on 2 cores, one
    client, 8 tokens: 40 ms to 1.9 s a request with two threads, 11 to 36 ms
    with one)."""
    parameters = ["--parallel", str(LLAMA_SLOTS), "--ctx-size", str(LLAMA_SLOTS * 128)]
    parameters += ["--threads", "1"]
    if "--threads-http" in flags:
        parameters += ["--threads-http", "300"]
    return parameters


def start_responder(stack: ExitStack, event_delay: float) -> tuple[str, int]:
    """The fake engine, for as long as ``stack``; its URL and process id."""
    engine = stack.enter_context(run_responder("--event-delay", str(event_delay)))
    return engine.url, engine.process.pid


def start_llama(
    stack: ExitStack, installation: Installation, model: Path, assignment: Json, tmp: Path
) -> tuple[str, int]:
    """llama-server for one assigned instance (its model name and key), for
    as long as ``stack``; its URL and process id."""
    request = launch_request(
        model,
        model_name=assignment["model_name"],
        api_key=assignment["api_key"],
        backend_parameters=llama_parameters(installation.flags),
    )
    process = stack.enter_context(
        running(LlamaCppDriver(), installation, request, tmp / "llama.log", timeout=120)
    )
    assert process.process is not None
    return process.base_url, process.process.pid


@contextmanager
def cluster(tmp: Path, with_llama: bool, event_delay: float = 0.0) -> Iterator[Cluster]:
    """The server, this script as its worker, the engines reported running,
    and a user's API key: ready once the gateway lists both models."""
    models = tiny_models()
    with ExitStack() as stack:
        installation = install_llama_cpp(tmp / "backends") if with_llama else None
        server = stack.enter_context(corral_server(tmp))
        admin = stack.enter_context(
            client(server.url, login(server.url, "admin", server.admin_password))
        )
        pool = unique("bench")
        registered, worker = register_worker(
            server.url, server.cluster_token, labels={"os": "linux", "pool": pool}
        )
        stack.callback(worker.close)
        wid = registered["worker_id"]
        worker.post(f"/api/v1/workers/{wid}/status", json=worker_status()).raise_for_status()
        stack.enter_context(Heartbeat(server.url, wid, registered["credential"], worker_status))

        names = ["responder", *(["llama"] if with_llama else [])]
        deployed = {
            name: deploy(
                admin,
                name=unique(f"bench-{name}"),
                source={"type": "local", "path": str(models.gguf_f16)},
                worker_selector={"pool": pool},
            )["name"]
            for name in names
        }

        def scheduled() -> dict[str, Json] | None:
            r = worker.get(f"/api/v1/workers/{wid}/assignments")
            r.raise_for_status()
            items = {i["model_name"]: i for i in r.json()["items"] if i["state"] == "scheduled"}
            return items if len(items) == len(names) else None

        assignments = _poll("both models placed on the worker", scheduled)
        backends = []
        for name in names:
            item = assignments[deployed[name]]
            if name == "responder":
                url, pid = start_responder(stack, event_delay)
            else:
                assert installation is not None
                url, pid = start_llama(stack, installation, models.gguf_f16, item, tmp)
            r = worker.post(
                f"/api/v1/workers/{wid}/instances/{item['instance_id']}/status",
                json={"state": "running", "port": httpx.URL(url).port, "pid": pid},
            )
            r.raise_for_status()
            max_tokens = RESPONDER_MAX_TOKENS if name == "responder" else LLAMA_MAX_TOKENS
            backends.append(Backend(name, deployed[name], url, item["api_key"], max_tokens))

        user = stack.enter_context(create_user(admin)[1])
        r = user.post("/api/v1/api-keys", json={"name": "bench"})
        r.raise_for_status()
        key = r.json()["key"]

        def served() -> bool:
            r = httpx.get(f"{server.url}/v1/models", headers={"Authorization": f"Bearer {key}"})
            listed = {m["id"] for m in r.json().get("data", [])} if r.status_code == 200 else set()
            return set(deployed.values()) <= listed

        _poll("the gateway to list both models", served)
        yield Cluster(server, key, backends)


# --- the matrix ----------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    backend: str
    stream: bool
    body: str
    """``small`` or ``large``."""
    clients: int


def padding(size: int) -> str:
    """``size`` characters of words (at least 4 characters each)."""
    return " ".join(f"word{i % 997}" for i in range(size // 4))[:size]


def chat_body(backend: Backend, stream: bool, large: bool) -> bytes:
    content = "Write one short sentence about a herd of llamas grazing in a corral at dawn."
    body: Json = {
        "model": backend.model,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": LLAMA_STREAM_MAX_TOKENS
        if stream and backend.name == "llama"
        else backend.max_tokens,
    }
    if backend.name == "llama":
        body["ignore_eos"] = True  # always max_tokens: the same work each time
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    if large and backend.name == "llama":
        body["metadata"] = {"padding": padding(LARGE_BODY)}
    elif large:
        body["messages"][0]["content"] = padding(LARGE_BODY)
    return json.dumps(body).encode()


def summarise(runs: list[Run]) -> Json:
    latencies = [x for r in runs for x in r.latencies]
    first = [x for r in runs for x in r.first_bytes]
    wall = sum(r.wall for r in runs)
    errors: Counter[str] = Counter()
    for r in runs:
        errors.update(r.errors)
    return {
        "requests": len(latencies),
        "p50_ms": percentile(latencies, 0.5) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "first_byte_p50_ms": percentile(first, 0.5) * 1000,
        "first_byte_p99_ms": percentile(first, 0.99) * 1000,
        "req_per_s": len(latencies) / wall if wall else 0.0,
        "events": sum(r.events for r in runs),
        "errors": dict(errors),
        "retried": sum(r.retried for r in runs),
        "wall_s": wall,
        "client_cpu_pct": 100 * sum(r.client_cpu for r in runs) / wall if wall else 0.0,
        "server_cpu_s": sum(r.server_cpu for r in runs),
    }


def measure(
    cluster: Cluster, cell: Cell, duration: float, rounds: int, cpu: Callable[[], float]
) -> Json:
    """Direct and gateway runs of one cell, alternately; the summary of each
    and what the gateway added."""
    backend = next(b for b in cluster.backends if b.name == cell.backend)
    body = chat_body(backend, cell.stream, cell.body == "large")
    path = "/v1/chat/completions"
    direct = Target(*http_request(backend.url, path, backend.api_key, body), cell.stream)
    gateway = Target(*http_request(cluster.server.url, path, cluster.user_key, body), cell.stream)
    runs: dict[str, list[Run]] = {"direct": [], "gateway": []}
    seconds = duration * (LLAMA_RUN_FACTOR if backend.name == "llama" else 1)
    for _ in range(rounds):
        for name, target in (("direct", direct), ("gateway", gateway)):
            runs[name].append(run_in_loop(run_load(target, cell.clients, seconds, cpu)))
    d, g = summarise(runs["direct"]), summarise(runs["gateway"])
    # The server's CPU while only the engine was loaded: its idle rate.
    idle_rate = d["server_cpu_s"] / d["wall_s"] if d["wall_s"] else 0.0
    gateway_cpu = max(0.0, g["server_cpu_s"] - idle_rate * g["wall_s"])
    return {
        **asdict(cell),
        "body_bytes": len(body),
        "direct": d,
        "gateway": g,
        "added_p50_ms": g["p50_ms"] - d["p50_ms"],
        "added_p99_ms": g["p99_ms"] - d["p99_ms"],
        "throughput_pct": 100 * g["req_per_s"] / d["req_per_s"] if d["req_per_s"] else 0.0,
        "gateway_cpu_us_per_request": 1e6 * gateway_cpu / g["requests"] if g["requests"] else None,
        "gateway_cpu_us_per_event": 1e6 * gateway_cpu / g["events"] if g["events"] else None,
        # Time-based work (periodic flushes, refreshes) shows here, not per request.
        "gateway_cpu_ms_per_s": 1e3 * gateway_cpu / g["wall_s"] if g["wall_s"] else None,
        "server_idle_cpu_ms_per_s": 1e3 * idle_rate,
        "errors": bool(d["errors"] or g["errors"]),
        "load_generator_bound": max(d["client_cpu_pct"], g["client_cpu_pct"])
        > LOAD_GENERATOR_BOUND,
    }


def cpu_probe(pid: int) -> Callable[[], float]:
    """Seconds of CPU (user + system, all threads, not children) that process
    ``pid`` has used so far.

    On Linux, read from the process's CPU-time clock (nanoseconds);
    psutil's figure moves in clock ticks (10 ms), too coarse for a run of a
    second at tens of requests per second. psutil elsewhere.
    """
    clock = ((~pid) << 3) | 2  # the kernel's MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED)
    with contextlib.suppress(OSError, OverflowError):
        time.clock_gettime(clock)
        return lambda: time.clock_gettime(clock)
    process = psutil.Process(pid)

    def seconds() -> float:
        times = process.cpu_times()
        return times.user + times.system

    return seconds


# --- wrk -------------------------------------------------------------------------

WRK_LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {key}"
wrk.body = [==[{body}]==]
"""


def _wrk_ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]


def wrk_once(url: str, key: str, body: bytes, connections: int, seconds: float, tmp: Path) -> Json:
    script = tmp / f"wrk-{abs(hash((url, key)))}.lua"
    script.write_text(WRK_LUA.format(key=key, body=body.decode()))
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    ).stdout
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"^\s+50%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.MULTILINE)
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.MULTILINE)
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    socket = re.search(r"Socket errors: (.*)", out)
    return {
        "req_per_s": float(rate.group(1)) if rate else 0.0,
        "p50_ms": _wrk_ms(*p50.groups()) if p50 else float("nan"),
        "p99_ms": _wrk_ms(*p99.groups()) if p99 else float("nan"),
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": socket.group(1) if socket else "",
    }


def run_wrk(cluster: Cluster, steps: list[int], seconds: float, tmp: Path) -> Json:
    backend = next(b for b in cluster.backends if b.name == "responder")
    body = chat_body(backend, stream=False, large=False)
    rows = []
    for connections in steps:
        direct = wrk_once(
            f"{backend.url}/v1/chat/completions", "x", body, connections, seconds, tmp
        )
        gateway = wrk_once(
            f"{cluster.server.url}/v1/chat/completions",
            cluster.user_key,
            body,
            connections,
            seconds,
            tmp,
        )
        rows.append(
            {
                "connections": connections,
                "direct": direct,
                "gateway": gateway,
                "added_p99_ms": gateway["p99_ms"] - direct["p99_ms"],
            }
        )
    within = [
        r for r in rows if r["added_p99_ms"] <= WRK_ADDED_P99_MS and not r["gateway"]["non_2xx"]
    ]
    best = max(within, key=lambda r: r["gateway"]["req_per_s"], default=None)
    return {
        "backend": "responder",
        "seconds": seconds,
        "steps": rows,
        "sustained_req_per_s": best["gateway"]["req_per_s"] if best else None,
        "sustained_at_connections": best["connections"] if best else None,
    }


# --- report ----------------------------------------------------------------------


def _f(value: float | None, digits: int = 1) -> str:
    return "-" if value is None or value != value else f"{value:.{digits}f}"


def print_table(cells: list[Json]) -> None:
    print(
        f"{'backend':9} {'stream':6} {'body':5} {'clients':>7} | {'direct p50/p99 ms':>17} | "
        f"{'gateway p50/p99 ms':>18} | {'added p50/p99 ms':>16} | {'req/s direct/gw':>15} "
        f"{'ratio%':>6} | {'gw µs/req':>9} {'µs/event':>8} {'marginal':>8} | {'LG cpu%':>7} flags"
    )
    for c in cells:
        d, g = c["direct"], c["gateway"]
        flags = []
        if c["errors"]:
            flags.append("ERR " + json.dumps({"direct": d["errors"], "gateway": g["errors"]}))
        if c["load_generator_bound"]:
            flags.append("LG")
        load = max(d["client_cpu_pct"], g["client_cpu_pct"])
        print(
            f"{c['backend']:9} {'yes' if c['stream'] else 'no':6} {c['body']:5} "
            f"{c['clients']:>7} | {_f(d['p50_ms'], 2):>8}/{_f(d['p99_ms'], 2):<8} | "
            f"{_f(g['p50_ms'], 2):>9}/{_f(g['p99_ms'], 2):<8} | "
            f"{_f(c['added_p50_ms'], 2):>7}/{_f(c['added_p99_ms'], 2):<8} | "
            f"{_f(d['req_per_s'], 0):>7}/{_f(g['req_per_s'], 0):<7} "
            f"{_f(c['throughput_pct'], 0):>6} | {_f(c['gateway_cpu_us_per_request'], 0):>9} "
            f"{_f(c['gateway_cpu_us_per_event'], 1):>8} "
            f"{_f(c.get('gateway_cpu_us_per_event_marginal'), 1):>8} | "
            f"{_f(load, 0):>7} {' '.join(flags)}"
        )


@dataclass(frozen=True)
class Goal:
    """One of issue 7's targets: a figure of some cells, and its limit."""

    text: str
    figure: str
    limit: float
    applies: Callable[[Json], bool]
    at_least: bool = False
    """The figure must reach the limit (else: stay within it)."""

    def check(self, cells: list[Json]) -> Json:
        """Met or not, judged on the worst cell; a cell with errors fails it.
        The worst cell of each backend comes along: the engines differ in
        request rate, and the gateway's cost per request with it."""
        chosen = [c for c in cells if self.applies(c) and _number(c[self.figure])]
        result: Json = {"target": self.text, "limit": self.limit, "met": None, "worst": None}
        if not chosen:
            return result
        per_backend = {
            backend: self._worst([c for c in chosen if c["backend"] == backend])
            for backend in dict.fromkeys(c["backend"] for c in chosen)
        }
        worst = self._worst(chosen)
        value = worst["worst"]
        within = value >= self.limit if self.at_least else value <= self.limit
        return (
            result
            | worst
            | {
                "met": within and not any(c["errors"] for c in chosen),
                "per_backend": per_backend,
            }
        )

    def _worst(self, cells: list[Json]) -> Json:
        cell = (min if self.at_least else max)(cells, key=lambda c: c[self.figure])
        kind = "stream" if cell["stream"] else "plain"
        where = f"{cell['backend']}/{kind}/{cell['body']}/{cell['clients']}"
        return {"worst": cell[self.figure], "cell": where}


def _number(value: Any) -> bool:
    return isinstance(value, float | int) and value == value


GOALS = [
    Goal(
        "added p50 at 1 client (responder) <= 0.5 ms",
        "added_p50_ms",
        0.5,
        lambda c: c["backend"] == "responder" and c["clients"] == 1,
    ),
    Goal(
        "added p99 at 1 client (responder) <= 2 ms",
        "added_p99_ms",
        2.0,
        lambda c: c["backend"] == "responder" and c["clients"] == 1,
    ),
    Goal(
        "gateway CPU per non-streaming request <= 300 µs",
        "gateway_cpu_us_per_request",
        300.0,
        lambda c: not c["stream"],
    ),
    Goal(
        "gateway CPU per relayed stream event (beyond a plain request) <= 50 µs",
        "gateway_cpu_us_per_event_marginal",
        50.0,
        lambda c: c["stream"],
    ),
    Goal(
        "llama-server at 16 and 64 clients: gateway throughput >= 95 % of direct",
        "throughput_pct",
        95.0,
        lambda c: c["backend"] == "llama" and c["clients"] in (16, 64),
        at_least=True,
    ),
]
WRK_ADDED_P99_MS = 10.0
"""wrk: the highest gateway req/s whose p99 stays within this of direct's."""


def add_marginal_event_cost(cells: list[Json]) -> None:
    """Per stream event, the CPU a stream costs beyond a plain request of the
    same backend, body and clients, over its events: what relaying one more
    event costs. (The all-in figure divides the request's fixed cost by the
    events too, which says more about the stream's length than the relay.)"""
    plain = {
        (c["backend"], c["body"], c["clients"]): c["gateway_cpu_us_per_request"]
        for c in cells
        if not c["stream"]
    }
    for c in cells:
        base = plain.get((c["backend"], c["body"], c["clients"]))
        g = c["gateway"]
        per_request = c["gateway_cpu_us_per_request"]
        if not c["stream"] or base is None or per_request is None or not g["events"]:
            c["gateway_cpu_us_per_event_marginal"] = None
            continue
        events_per_request = g["events"] / g["requests"]
        c["gateway_cpu_us_per_event_marginal"] = max(0.0, per_request - base) / events_per_request


def check_targets(cells: list[Json], wrk: Json | None) -> list[Json]:
    results = [goal.check(cells) for goal in GOALS]
    if wrk is not None:
        at = wrk["sustained_at_connections"]
        results.append(
            {
                "target": "wrk: gateway req/s with p99 within 10 ms of direct (reported)",
                "limit": WRK_ADDED_P99_MS,
                "met": None,
                "worst": wrk["sustained_req_per_s"],
                "cell": f"responder/plain/small, {at} connections" if at else "no step",
            }
        )
    return results


def print_targets(results: list[Json]) -> None:
    print("\nIssue 7 targets (worst cell; a cell with errors fails its target):")
    for r in results:
        verdict = {True: "met", False: "NOT MET", None: "-"}[r["met"]]
        print(f"  {verdict:8} {r['target']}: {_f(r['worst'], 2)} ({r.get('cell', 'not measured')})")
        per_backend = r.get("per_backend", {})
        if len(per_backend) > 1:
            worst = "; ".join(f"{w['cell']} {_f(w['worst'], 2)}" for w in per_backend.values())
            print(f"           worst per backend: {worst}")


def print_wrk(wrk: Json) -> None:
    print(f"\nwrk, {wrk['backend']}, plain small chat, {wrk['seconds']:g} s per step:")
    print(f"{'conns':>5} | {'direct req/s':>12} {'p99 ms':>8} | {'gateway req/s':>13} "
          f"{'p99 ms':>8} | {'added p99 ms':>12} errors")  # fmt: skip
    for s in wrk["steps"]:
        d, g = s["direct"], s["gateway"]
        errors = ", ".join(
            f"{name}: {r['non_2xx']} non-2xx {r['socket_errors']}".strip()
            for name, r in (("direct", d), ("gateway", g))
            if r["non_2xx"] or r["socket_errors"]
        )
        print(
            f"{s['connections']:>5} | {d['req_per_s']:>12.0f} {_f(d['p99_ms'], 2):>8} | "
            f"{g['req_per_s']:>13.0f} {_f(g['p99_ms'], 2):>8} | "
            f"{_f(s['added_p99_ms'], 2):>12} {errors}"
        )
    rate = wrk["sustained_req_per_s"]
    print(
        f"one gateway process sustains {_f(rate, 0)} req/s with p99 within 10 ms of direct"
        + (f" (at {wrk['sustained_at_connections']} connections)" if rate else "")
    )


def server_errors(log: str) -> Json | None:
    """How many ERROR lines the server logged, and the first with what follows."""
    lines = log.splitlines()
    found = [i for i, line in enumerate(lines) if " ERROR " in line]
    if not found:
        return None
    first = lines[found[0] : found[0] + 40]
    end = next((n for n, line in enumerate(first[1:], 1) if line[:4].isdigit()), len(first))
    return {"count": len(found), "first": "\n".join(first[:end])}


def json_safe(value: Any) -> str:
    """JSON with NaN (a figure with no samples) written as null."""

    def clean(v: Any) -> Any:
        if isinstance(v, float) and v != v:
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [clean(x) for x in v]
        return v

    return json.dumps(clean(value), indent=2)


# --- main ------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    quick: bool
    duration: float
    rounds: int
    clients: list[int]
    with_llama: bool
    responder_event_delay: float
    wrk_steps: list[int] | None
    """Connection counts for wrk; None: no wrk."""
    json: Path


def parse_options() -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer cells, shorter runs")
    parser.add_argument("--duration", type=float, help="seconds per run (default 2; quick 1)")
    parser.add_argument("--rounds", type=int, help="direct/gateway pairs per cell (2; quick 1)")
    parser.add_argument("--clients", help="comma-separated (1,16,64,256; quick 1,16,64)")
    parser.add_argument("--backends", default="responder,llama")
    parser.add_argument(
        "--responder-event-delay",
        type=float,
        default=0.0,
        metavar="S",
        help="pace the responder's stream events (default 0: each stream in one burst)",
    )
    parser.add_argument("--wrk", action="store_true", help="also run wrk against the responder")
    parser.add_argument("--json", type=Path, default=Path("bench/results-gateway.json"))
    args = parser.parse_args()
    with_llama = "llama" in args.backends.split(",")
    build = llama_install.cached_build(llama_install.DEFAULT_VERSION, llama_install.Flavour.CPU)
    if with_llama and build is None:
        print("llama-server skipped: llama.cpp is not installed (run `make backends`)")
        with_llama = False
    wrk = args.wrk and shutil.which("wrk") is not None
    if args.wrk and not wrk:
        print("wrk skipped: `wrk` is not on PATH (Debian: apt-get install wrk)")
    clients = args.clients or ("1,16,64" if args.quick else "1,16,64,256")
    return Options(
        quick=args.quick,
        duration=args.duration or (1.0 if args.quick else 2.0),
        rounds=args.rounds or (1 if args.quick else 2),
        clients=[int(n) for n in clients.split(",")],
        with_llama=with_llama,
        responder_event_delay=args.responder_event_delay,
        wrk_steps=([1, 4, 16, 64] if args.quick else [1, 2, 4, 8, 16, 32, 64, 128])
        if wrk
        else None,
        json=args.json,
    )


def run_bench(options: Options) -> tuple[list[Json], Json | None, str]:
    """Set up, measure every cell (then wrk), tear down; the cells' results,
    wrk's, and the server's log."""
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp_name:
        tmp = Path(tmp_name)
        with cluster(tmp, options.with_llama, options.responder_event_delay) as running_cluster:
            cpu = cpu_probe(running_cluster.server.process.pid)
            cells = [
                Cell(b.name, stream, body, n)
                for b in running_cluster.backends
                for stream in (False, True)
                for body in ("small", "large")
                for n in options.clients
            ]
            results = []
            for i, cell in enumerate(cells, 1):
                print(f"[{i}/{len(cells)}] {cell}", file=sys.stderr, flush=True)
                results.append(
                    measure(running_cluster, cell, options.duration, options.rounds, cpu)
                )
            wrk = None
            if options.wrk_steps:
                print("wrk …", file=sys.stderr, flush=True)
                wrk = run_wrk(running_cluster, options.wrk_steps, options.duration, tmp)
            return results, wrk, running_cluster.server.log()


def main() -> int:
    options = parse_options()
    started = time.monotonic()
    results, wrk, server_log = run_bench(options)
    add_marginal_event_cost(results)
    targets = check_targets(results, wrk)
    print_table(results)
    print(
        f"\n{options.duration:g} s (llama-server {options.duration * LLAMA_RUN_FACTOR:g} s) "
        f"x {options.rounds} round(s) per path and cell; latencies over successful requests "
        "(streams: until [DONE]); added = gateway - direct; gw µs = the server process's CPU "
        "less its idle rate; LG cpu% = the load generator's, of one core"
    )
    print_targets(targets)
    if wrk is not None:
        print_wrk(wrk)
    logged = server_errors(server_log)
    if logged:
        print(f"\nthe server logged {logged['count']} errors; the first:\n{logged['first']}")
    settings = asdict(options) | {
        "json": str(options.json),
        "llama_slots": LLAMA_SLOTS,
        "llama_run_factor": LLAMA_RUN_FACTOR,
        "max_tokens": {"responder": RESPONDER_MAX_TOKENS, "llama": LLAMA_MAX_TOKENS},
        "large_body_bytes": LARGE_BODY,
    }
    machine = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_average": os.getloadavg(),
    }
    options.json.parent.mkdir(parents=True, exist_ok=True)
    options.json.write_text(
        json_safe(
            {
                "settings": settings,
                "machine": machine,
                "elapsed_s": time.monotonic() - started,
                "cells": results,
                "targets": targets,
                "wrk": wrk,
                "server_errors": logged,
            }
        )
    )
    print(f"\nwritten: {options.json} ({time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
