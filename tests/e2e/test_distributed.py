"""Distributed llama.cpp: one model over several workers' devices.

Real ``corral server`` and ``corral worker`` processes, real llama-server and
rpc-server engines on the CPU. Each worker declares one SIMULATED GPU (a
devices file) too small to hold the model alone, so the scheduler splits it:
the primary runs llama-server with ``--rpc`` to the helpers' rpc-servers
(which lend the CPU, standing in for the simulated GPU).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.backends import install_llama_cpp
from tests.fixtures.tiny_models import Shape, TinyModels, cached
from tests.helpers import (
    CORRAL,
    ServerProcess,
    client,
    create_user,
    deploy,
    login,
    run_server,
    unique,
)
from tests.workers import (
    WorkerProcess,
    alive,
    api_key_of,
    instances,
    openai_client,
    run_worker,
    wait_for,
    wait_running,
)

pytestmark = pytest.mark.timeout(420)

FAST_LIVENESS = {"CORRAL_HEARTBEAT_TIMEOUT": "3", "CORRAL_RESCHEDULE_GRACE": "3"}
FAST_HEARTBEAT = {"CORRAL_WORKER_HEARTBEAT_INTERVAL": "0.5"}
"""Well inside the server's 3 s: a silent helper is a dead one, never a slow one."""
SPLIT_SHAPE = Shape(hidden=512, intermediate=4096, layers=8, heads=8, kv_heads=4)
"""About 160 MB in f16: layers weigh more than the tied embeddings, so a
split really divides the model. Estimated need per device (bench and test
agree): 587 MiB on one, 492 + 510 on two, 461 + 461 + 494 on three."""
GPU_MIB = 540
"""Too small for the whole model, enough for its share over two workers."""


@pytest.fixture(scope="module")
def split_model() -> TinyModels:
    return cached(SPLIT_SHAPE)


@pytest.fixture(autouse=True, scope="module")
def _engines(tmp_path_factory: pytest.TempPathFactory) -> None:
    install_llama_cpp(tmp_path_factory.mktemp("seed"))  # built once per machine, cached


def small_gpu(path: Path, mib: int = GPU_MIB) -> Path:
    """A devices file declaring one SIMULATED GPU of ``mib`` MiB."""
    path.write_text(f"devices:\n  - name: Simulated small GPU\n    memory: {mib}MiB\n")
    return path


def _admin(server: ServerProcess) -> httpx.Client:
    return client(server.url, login(server.url, "admin", server.admin_password))


def rpc_servers_running() -> list[psutil.Process]:
    """rpc-server processes on this machine (tests run one cluster at a time)."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmdline = p.info["cmdline"] or []
        if cmdline and Path(cmdline[0]).name in ("rpc-server", "ggml-rpc-server"):
            found.append(p)
    return found


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[ServerProcess, dict[str, WorkerProcess]]]:
    gpu = small_gpu(tmp_path / "gpu.yaml")
    with ExitStack() as stack:
        server = stack.enter_context(run_server(tmp_path, env=FAST_LIVENESS))
        workers = {}
        for i, name in enumerate(("w1", "w2", "w3")):
            ports = f"[{42000 + 100 * i}, {42099 + 100 * i}]"
            workers[name] = stack.enter_context(
                run_worker(
                    server,
                    tmp_path,
                    name,
                    devices=gpu,
                    env={"CORRAL_WORKER_BACKEND_PORTS": ports, **FAST_HEARTBEAT},
                )
            )
        yield server, workers


def _ready_workers(admin: httpx.Client, count: int) -> list[dict[str, Any]]:
    def ready() -> list[dict[str, Any]] | None:
        items = [w for w in admin.get("/api/v1/workers").json()["items"] if w["state"] == "ready"]
        return items if len(items) == count else None

    result: list[dict[str, Any]] = wait_for(f"{count} ready workers", ready, timeout=30)
    return result


def _chat(server: ServerProcess, key: str, model: str) -> int:
    with openai_client(server, key) as ai:
        reply = ai.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "Hello"}], max_tokens=8
        )
    assert reply.usage is not None and reply.usage.completion_tokens > 0
    return reply.usage.completion_tokens


def _check_split(instance: dict[str, Any], helper_names: set[str]) -> None:
    """The placement, the rpc-servers and the engine's own report agree."""
    placement = instance["placement"]
    assert placement["kind"] == "distributed"
    assert {h["worker_name"] for h in placement["helpers"]} == helper_names
    rpc = instance["rpc_servers"]
    assert [r["worker_name"] for r in rpc] == [h["worker_name"] for h in placement["helpers"]]
    assert all(r["state"] == "ready" and r["port"] and alive(r["pid"]) for r in rpc)
    # Each helper claims what the estimate put on its device.
    claims = {c["worker_id"]: c for c in instance["claim"]["workers"]}
    for r in rpc:
        assert r["memory"] == claims[r["worker_id"]]["gpus"][str(r["device"])] > 0
    # The planned layers: the helpers' devices first (llama.cpp's order), then the primary's.
    planned = placement["layers"]
    order = [*(r["worker_name"] for r in rpc), instance["worker_name"]]
    assert [s["worker_name"] for s in planned] == order
    total = placement["total_layers"]
    assert sum(s["end"] - s["first"] for s in planned) == total
    # The engine's report: the helpers' layers on RPC devices, the primary's
    # share (its GPU is simulated) on its own CPU, every layer somewhere.
    reported = instance["layers"]
    assert reported, "the primary did not report its layers"
    by_device: dict[str, int] = {}
    for share in reported:
        by_device[share["device"]] = (
            by_device.get(share["device"], 0) + share["end"] - share["first"]
        )
    assert sum(by_device.values()) == total
    for r, plan in zip(rpc, planned, strict=False):
        name = f"RPC0[{r['address']}:{r['port']}]"
        assert by_device.get(name) == plan["end"] - plan["first"], (name, reported)
    assert by_device.get("CPU") == planned[-1]["end"] - planned[-1]["first"]


def test_a_model_too_big_for_each_worker_is_split_recovers_and_leaves_nothing(
    cluster: tuple[ServerProcess, dict[str, WorkerProcess]], split_model: TinyModels
) -> None:
    server, workers = cluster
    with _admin(server) as admin:
        _ready_workers(admin, 3)
        _, user = create_user(admin)
        key = api_key_of(user)
        user.close()
        model = deploy(
            admin,
            name=unique("split"),
            source={"type": "local", "path": str(split_model.gguf_f16)},
        )
        [instance] = wait_running(admin, model["id"], timeout=180)
        helper = instance["placement"]["helpers"][0]["worker_name"]
        _check_split(instance, {helper})
        assert _chat(server, key, model["name"]) > 0
        [rpc] = instance["rpc_servers"]
        assert rpc["address"] == "127.0.0.1"
        assert [p.pid for p in rpc_servers_running()] == [rpc["pid"]]
        # Its log is readable through the server, under the instance.
        r = admin.get(
            f"/api/v1/instances/{instance['id']}/logs", params={"rpc_server": rpc["id"], "tail": 50}
        )
        assert r.status_code == 200 and "rpc-server" in r.text, r.text
        # The CLI shows the helper and both layer tables under the instance.
        token = str(admin.headers["Authorization"]).removeprefix("Bearer ")
        shown = subprocess.run(
            [CORRAL, "instances", "show", str(instance["id"])],
            capture_output=True,
            text=True,
            timeout=30,
            env={
                **os.environ,
                "CORRAL_SERVER_URL": server.url,
                "CORRAL_API_KEY": token,
                "COLUMNS": "200",
            },
        )
        assert shown.returncode == 0, shown.stderr
        assert f"{instance['worker_name']} +{helper}" in shown.stdout
        assert f"127.0.0.1:{rpc['port']}" in shown.stdout
        assert "Layers as the engine reports them" in shown.stdout
        assert f"RPC0[127.0.0.1:{rpc['port']}]" in shown.stdout

        # The rpc-server crashes: its worker starts it again, and the primary,
        # whose engine cannot outlive a device, restarts once it is back.
        psutil.Process(rpc["pid"]).kill()

        def restarted() -> dict[str, Any] | None:
            [i] = instances(admin, model["id"])
            [r] = i["rpc_servers"]
            fresh = i["state"] == "running" and r["state"] == "ready" and r["pid"] != rpc["pid"]
            return i if fresh and i["pid"] != instance["pid"] else None

        instance = wait_for("the rpc-server and the primary restarted", restarted, timeout=60)
        [rpc] = instance["rpc_servers"]
        assert instance["placement"] == wait_running(admin, model["id"])[0]["placement"]
        _check_split(instance, {helper})
        assert _chat(server, key, model["name"]) > 0

        # A restart asked through the API restarts the helper's rpc-server too,
        # in place: same workers, same claim, fresh processes, serving again.
        r = admin.post(f"/api/v1/instances/{instance['id']}/restart")
        assert r.status_code == 200, r.text
        before = instance

        def restarted_on_request() -> dict[str, Any] | None:
            [i] = instances(admin, model["id"])
            [r] = i["rpc_servers"]
            fresh = i["state"] == "running" and r["state"] == "ready" and r["pid"] != rpc["pid"]
            return i if fresh and i["pid"] != before["pid"] else None

        instance = wait_for("a restart of primary and helper", restarted_on_request, timeout=60)
        assert (instance["generation"], instance["claim"]) == (1, before["claim"])
        assert not alive(rpc["pid"]) and not alive(before["pid"])
        [rpc] = instance["rpc_servers"]
        assert _chat(server, key, model["name"]) > 0

        # The helper worker dies: its rpc-server goes with it, and the instance
        # is placed again over the two workers left.
        workers[helper].process.send_signal(signal.SIGKILL)
        workers[helper].process.wait(timeout=10)
        wait_for("the dead helper's rpc-server to go", lambda: not alive(rpc["pid"]), 10)

        def replaced() -> dict[str, Any] | None:
            items = instances(admin, model["id"])
            ok = [
                i
                for i in items
                if i["state"] == "running"
                and i["placement"]
                and helper not in {h["worker_name"] for h in i["placement"]["helpers"]}
                and i["worker_name"] != helper
            ]
            return ok[0] if ok else None

        again = wait_for("the instance placed over the two workers left", replaced, timeout=90)
        survivors = {"w1", "w2", "w3"} - {helper}
        assert {
            again["worker_name"],
            *(h["worker_name"] for h in again["placement"]["helpers"]),
        } == (survivors)
        _check_split(again, survivors - {again["worker_name"]})
        assert _chat(server, key, model["name"]) > 0

        # Deleting the model leaves no rpc-server and no engine behind.
        engine_pid = again["pid"]
        assert admin.delete(f"/api/v1/models/{model['id']}").status_code == 204
        wait_for("no rpc-server left", lambda: not rpc_servers_running(), 30)
        wait_for("the primary's engine to stop", lambda: not alive(engine_pid), 30)


def test_a_helper_outside_the_cluster_network_refuses_and_the_primary_names_it(
    tmp_path: Path, split_model: TinyModels
) -> None:
    """llama.cpp's RPC has no authentication: a worker whose address is not on
    the configured cluster network starts no rpc-server, and says so."""
    gpu = small_gpu(tmp_path / "gpu.yaml")
    env = {
        "CORRAL_WORKER_CLUSTER_NETWORK": "10.99.0.0/24",
        "CORRAL_WORKER_HELPER_TIMEOUT": "2",
        **FAST_HEARTBEAT,
    }
    with (
        run_server(tmp_path, env=FAST_LIVENESS) as server,
        run_worker(server, tmp_path, "w1", devices=gpu, env=env),
        run_worker(server, tmp_path, "w2", devices=gpu, env=env),
        _admin(server) as admin,
    ):
        _ready_workers(admin, 2)
        model = deploy(
            admin,
            name=unique("refused"),
            source={"type": "local", "path": str(split_model.gguf_f16)},
        )

        def refused() -> dict[str, Any] | None:
            [i] = instances(admin, model["id"])
            rpc = i["rpc_servers"]
            done = (
                rpc
                and rpc[0]["state"] == "error"
                and "helpers not ready" in (i["state_message"] or "")
            )
            return i if done else None

        instance = wait_for("the helper's refusal", refused, timeout=60)
        [rpc] = instance["rpc_servers"]
        assert "outside the configured cluster network 10.99.0.0/24" in rpc["state_message"]
        helper = rpc["worker_name"]
        assert f"helpers not ready after 2 s: {helper} GPU 0" in instance["state_message"]
        assert "refused to start" in instance["state_message"]
        assert rpc_servers_running() == []
        assert admin.delete(f"/api/v1/models/{model['id']}").status_code == 204


class Namespaces:
    """Network namespaces joined by a bridge, each with its own address, so
    that the RPC traffic between workers really crosses interfaces. Made by
    the test on a private range; removed afterwards."""

    def __init__(self, count: int) -> None:
        tag = f"{os.getpid() % 10000}"
        self.subnet = f"10.231.{os.getpid() % 200 + 20}"
        self.bridge = f"crlbr{tag}"
        self.names = [f"crl{tag}w{i + 1}" for i in range(count)]
        self.gateway = f"{self.subnet}.1"

    def address(self, i: int) -> str:
        return f"{self.subnet}.{11 + i}"

    def __enter__(self) -> Namespaces:
        try:
            _ip("link", "add", self.bridge, "type", "bridge")
            _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
            for i, ns in enumerate(self.names):
                outside, inside = f"{ns}o", f"{ns}i"
                _ip("netns", "add", ns)
                _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
                _ip("link", "set", inside, "netns", ns)
                _ip("link", "set", outside, "master", self.bridge)
                _ip("link", "set", outside, "up")
                _ip("-n", ns, "addr", "add", f"{self.address(i)}/24", "dev", inside)
                _ip("-n", ns, "link", "set", inside, "up")
                _ip("-n", ns, "link", "set", "lo", "up")
        except (OSError, subprocess.CalledProcessError) as e:
            self.__exit__()
            detail = e.stderr.strip() if isinstance(e, subprocess.CalledProcessError) else str(e)
            reason = f"cannot create network namespaces here: {detail}"
            print(reason)
            pytest.skip(reason)
        return self

    def __exit__(self, *_: object) -> None:
        for ns in self.names:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, check=False)


def _listening_in_namespace_of(pid: int, port: int) -> list[str]:
    """The IPv4 addresses listening on ``port`` in ``pid``'s network namespace
    (``/proc/PID/net/tcp`` shows that namespace's sockets)."""
    found = []
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        address, hex_port = fields[1].split(":")
        if fields[3] == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
            found.append(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    return found


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], capture_output=True, text=True, check=True, timeout=10)


def test_split_across_network_namespaces_crosses_real_interfaces(
    tmp_path: Path, split_model: TinyModels
) -> None:
    """Each worker in its own network namespace with its own address: the
    primary reaches the helper's rpc-server over veth and a bridge, and the
    rpc-server listens on the helper's cluster address only."""
    gpu = small_gpu(tmp_path / "gpu.yaml")
    with ExitStack() as stack:
        nets = stack.enter_context(Namespaces(2))
        server = stack.enter_context(
            run_server(tmp_path, env=FAST_LIVENESS, extra_args=["--host", "0.0.0.0"])
        )
        port = server.url.rsplit(":", 1)[1]
        inside = dataclasses.replace(server, url=f"http://{nets.gateway}:{port}")
        for i, ns in enumerate(nets.names):
            stack.enter_context(
                run_worker(
                    inside,
                    tmp_path,
                    f"n{i + 1}",
                    devices=gpu,
                    env={
                        **FAST_HEARTBEAT,
                        "CORRAL_WORKER_CLUSTER_NETWORK": f"{nets.subnet}.0/24",
                    },
                    prefix=["ip", "netns", "exec", ns],
                    host=nets.address(i),
                )
            )
        admin = stack.enter_context(_admin(server))
        workers = _ready_workers(admin, 2)
        assert sorted(w["address"] for w in workers) == [nets.address(0), nets.address(1)]
        _, user = create_user(admin)
        key = api_key_of(user)
        user.close()
        model = deploy(
            admin, name=unique("netns"), source={"type": "local", "path": str(split_model.gguf_f16)}
        )
        [instance] = wait_running(admin, model["id"], timeout=180)
        [rpc] = instance["rpc_servers"]
        helper = next(w for w in workers if w["name"] == rpc["worker_name"])
        assert rpc["address"] == helper["address"] != "127.0.0.1"
        _check_split(instance, {rpc["worker_name"]})
        assert _chat(server, key, model["name"]) > 0
        # Bound to the cluster address only, never to every interface.
        assert _listening_in_namespace_of(rpc["pid"], rpc["port"]) == [helper["address"]]
        assert admin.delete(f"/api/v1/models/{model['id']}").status_code == 204
        wait_for("no rpc-server left", lambda: not rpc_servers_running(), 30)
