"""llama.cpp as a corral backend: installed versions, launch commands, logs."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from corral.backends.base import (
    Installation,
    LaunchCommand,
    LaunchRequest,
    MemoryReport,
    ReadinessProbe,
)
from corral.backends.flags import executable_exists, read_flags
from corral.backends.llama_cpp.install import BACKEND_DIR, MANIFEST, server_version
from corral.backends.llama_cpp.memory import parse_memory
from corral.backends.paths import install_root
from corral.backends.steps import InstallError
from corral.estimate.llama_cpp.settings import ALL_LAYERS, default_context, default_parallel
from corral.schemas.models import Backend, ModelCategory

logger = logging.getLogger(__name__)


_VISIBLE_DEVICES = {
    "cuda": "CUDA_VISIBLE_DEVICES",
    "rocm": "HIP_VISIBLE_DEVICES",
    "vulkan": "GGML_VK_VISIBLE_DEVICES",
}
_VENDOR_FLAVOUR = {"nvidia": "cuda", "amd": "rocm"}


class LlamaCppDriver:
    backend = Backend.LLAMA_CPP

    def installed(self, data_dir: Path) -> list[Installation]:
        """Installs under the data dir (built or registered), then ``llama-server`` on PATH."""
        found = []
        root = install_root(data_dir, BACKEND_DIR)
        for manifest in sorted(root.glob(f"*/{MANIFEST}")):
            found.append(_from_manifest(manifest))
        on_path = shutil.which("llama-server")
        if on_path and not any(i.executable == Path(on_path) for i in found):
            try:
                found.append(describe_external(Path(on_path), flavour="path"))
            except InstallError as e:
                logger.warning("ignoring the llama-server on PATH: %s", e.message)
        return found

    def command(self, installation: Installation, request: LaunchRequest) -> LaunchCommand:
        flags = installation.flags
        placement = request.placement
        pooling = bool(request.categories & {ModelCategory.EMBEDDING, ModelCategory.RERANKER})
        # The same defaults the memory estimate assumes (corral.estimate.llama_cpp).
        slots = default_parallel(pooling)
        context = default_context(request.context_length)
        has_devices = bool(placement.gpu_indices or placement.rpc_endpoints)
        layers = placement.gpu_layers
        if layers is None:
            layers = ALL_LAYERS if has_devices else 0

        argv = [
            str(installation.executable),
            "--model", str(request.model_path),
            "--alias", request.model_name,
            "--host", request.host,
            "--port", str(request.port),
            "--ctx-size", str(context),
            "--parallel", str(slots),
            "--n-gpu-layers", str(layers),
        ]  # fmt: skip
        if "--kv-unified" in flags and slots > 1:
            # Slots share one KV cache, so a single request may use the whole context.
            argv.append("--kv-unified")
        if placement.tensor_split:
            argv += ["--tensor-split", ",".join(_ratio(x) for x in placement.tensor_split)]
        if placement.main_gpu is not None:
            argv += ["--main-gpu", str(placement.main_gpu)]
        if placement.rpc_endpoints:
            argv += ["--rpc", ",".join(placement.rpc_endpoints)]
        if request.mmproj_path is not None:
            argv += ["--mmproj", str(request.mmproj_path)]
        if ModelCategory.RERANKER in request.categories:
            argv.append("--reranking")
        elif ModelCategory.EMBEDDING in request.categories:
            argv.append("--embeddings")
        argv.append("--metrics")
        if "--log-verbosity" in flags:
            # Level 4 is what logs each buffer allocated at load (parse_memory reads them);
            # it costs ~30 log lines per request.
            argv += ["--log-verbosity", "4"]
        if "--no-webui" in flags:
            argv.append("--no-webui")
        if "--fit" in flags:
            # Placement decided every argument; don't let llama-server second-guess it.
            argv += ["--fit", "off"]
        env: dict[str, str] = {}
        if "LLAMA_API_KEY" in flags:
            env["LLAMA_API_KEY"] = request.api_key  # not in argv: /proc/*/cmdline is public
        else:
            argv += ["--api-key", request.api_key]
        argv += list(request.backend_parameters)
        env.update(_visible_devices(installation.flavour, request))
        env.update(request.env)
        return LaunchCommand(argv=argv, env=env)

    def readiness(self, request: LaunchRequest) -> list[ReadinessProbe]:
        return [ReadinessProbe("/health")]

    def parse_memory(self, log: str) -> MemoryReport:
        return parse_memory(log)


_RPC_SERVER_NAMES = ("rpc-server", "ggml-rpc-server")
"""What corral's build installs it as, then the name of llama.cpp's own target."""


def rpc_server_path(installation: Installation) -> Path:
    """The rpc-server next to this installation's llama-server."""
    directory = installation.executable.parent
    for name in _RPC_SERVER_NAMES:
        if executable_exists(directory / name):
            return directory / name
    return directory / _RPC_SERVER_NAMES[0]


def rpc_server_launch(
    installation: Installation,
    host: str,
    port: int,
    *,
    gpu_index: int | None,
    gpu_vendor: str | None,
    flags: frozenset[str],
    cache_dir: Path,
    threads: int,
) -> LaunchCommand:
    """``rpc-server`` lending one device of this worker to a primary's llama-server.

    Only that GPU is made visible, so the server exposes exactly one device
    (``gpu_index`` None: no GPU at all, and it exposes the CPU — what a
    simulated GPU stands for). ``flags`` come from its ``--help``: the tensor
    cache (``--cache``) is turned on where the build has it, so a restarted
    primary does not send the weights over the network again.
    """
    argv = [
        str(rpc_server_path(installation)),
        "--host", host,
        "--port", str(port),
        "--threads", str(threads),
    ]  # fmt: skip
    env: dict[str, str] = {}
    if "--cache" in flags:
        argv.append("--cache")
        env["LLAMA_CACHE"] = str(cache_dir)
    flavour = _VENDOR_FLAVOUR.get(gpu_vendor or "", installation.flavour)
    name = _VISIBLE_DEVICES.get(flavour)
    if name is not None:
        env[name] = "" if gpu_index is None else str(gpu_index)
        if flavour == "cuda":
            env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
    return LaunchCommand(argv=argv, env=env)


def describe_external(llama_server: Path, flavour: str = "external") -> Installation:
    """An existing llama-server binary, not built by corral."""
    reported = server_version(llama_server)
    return Installation(
        backend=Backend.LLAMA_CPP,
        version=reported.split()[0],
        flavour=flavour,
        path=llama_server.parent,
        executable=llama_server,
        reported_version=reported,
        flags=read_flags([str(llama_server), "--help"]),
    )


def write_manifest(directory: Path, installation: Installation) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MANIFEST).write_text(json.dumps({
        "backend": "llama.cpp",
        "version": installation.version,
        "flavour": installation.flavour,
        "executable": str(installation.executable),
        "llama_server_version": installation.reported_version,
        "flags": sorted(installation.flags),
    }, indent=2))  # fmt: skip


def _from_manifest(manifest: Path) -> Installation:
    data = json.loads(manifest.read_text())
    directory = manifest.parent
    executable = Path(data.get("executable") or directory / "bin" / "llama-server")
    flags = frozenset(data.get("flags") or ())
    if not flags and executable_exists(executable):
        flags = read_flags([str(executable), "--help"])
    return Installation(
        backend=Backend.LLAMA_CPP,
        version=data["version"],
        flavour=data["flavour"],
        path=directory,
        executable=executable,
        reported_version=data.get("llama_server_version", ""),
        flags=flags,
    )


def _visible_devices(flavour: str, request: LaunchRequest) -> dict[str, str]:
    flavour = _VENDOR_FLAVOUR.get(request.placement.gpu_vendor or "", flavour)
    name = _VISIBLE_DEVICES.get(flavour)
    if name is None:
        return {}
    # An empty list hides every GPU: a CPU placement must not touch one.
    env = {name: ",".join(str(i) for i in request.placement.gpu_indices)}
    if flavour == "cuda":
        # The worker numbers GPUs as NVML does (PCI bus order); CUDA's own
        # default order (fastest first) would make the indices mean other cards.
        env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
    return env


def _ratio(value: float) -> str:
    return f"{value:.6g}"
