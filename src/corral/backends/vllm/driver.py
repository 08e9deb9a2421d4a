"""vLLM as a corral backend: installed versions, launch commands, logs."""

from __future__ import annotations

import json
import re
from pathlib import Path

from corral.backends.base import (
    Buffer,
    Installation,
    LaunchCommand,
    LaunchRequest,
    MemoryReport,
    ReadinessProbe,
)
from corral.backends.flags import has_option
from corral.backends.paths import install_root
from corral.backends.vllm.install import BACKEND_DIR, MANIFEST
from corral.estimate.vllm import GPU_MEMORY_UTILIZATION, IMAGES_PER_PROMPT, MAX_MODEL_LEN_CAP
from corral.schemas.models import Backend, ModelCategory


class VllmDriver:
    backend = Backend.VLLM

    def installed(self, data_dir: Path) -> list[Installation]:
        found = []
        for manifest in sorted(install_root(data_dir, BACKEND_DIR).glob(f"*/{MANIFEST}")):
            data = json.loads(manifest.read_text())
            launcher = tuple(data["entry_point"])
            found.append(Installation(
                backend=Backend.VLLM, version=data["version"], flavour=data["flavour"],
                path=manifest.parent, executable=Path(launcher[0]),
                reported_version=data["vllm_version"], flags=frozenset(data["flags"]),
                launcher=launcher,
            ))  # fmt: skip
        return found

    def command(self, installation: Installation, request: LaunchRequest) -> LaunchCommand:
        params = list(request.backend_parameters)
        launcher = list(installation.launcher or (str(installation.executable),))
        model = str(request.model_path)
        argv = [*launcher, model] if launcher[-1] == "serve" else [*launcher, "--model", model]
        argv += [
            "--served-model-name", request.model_name,
            "--host", request.host,
            "--port", str(request.port),
        ]  # fmt: skip
        if request.context_length is not None and not has_option(params, "--max-model-len"):
            argv += ["--max-model-len", str(min(MAX_MODEL_LEN_CAP, request.context_length))]
        tp = request.placement.tensor_parallel_size
        if tp and not has_option(params, "--tensor-parallel-size", "-tp"):
            argv += ["--tensor-parallel-size", str(tp)]
        if not has_option(params, "--gpu-memory-utilization"):
            argv += ["--gpu-memory-utilization", str(GPU_MEMORY_UTILIZATION)]
        argv += _pooling(installation.flags, request.categories)
        if (
            ModelCategory.VISION in request.categories
            and "--limit-mm-per-prompt" in installation.flags
            and not has_option(params, "--limit-mm-per-prompt")
        ):
            # vLLM profiles memory for its limit of images (999 by default);
            # the estimate counts the same number.
            argv += ["--limit-mm-per-prompt", json.dumps({"image": IMAGES_PER_PROMPT})]
        argv += params
        env = {
            "VLLM_API_KEY": request.api_key,  # not in argv: /proc/*/cmdline is public
            "HF_HUB_OFFLINE": "1",  # the worker has the files; never reach for the hub
        }
        if request.placement.gpu_indices:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, request.placement.gpu_indices))
            env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"  # the worker's indices are NVML's
        env.update(request.env)
        return LaunchCommand(argv=argv, env=env)

    def readiness(self, request: LaunchRequest) -> list[ReadinessProbe]:
        return [ReadinessProbe("/health"), ReadinessProbe("/v1/models", request.model_name)]

    def parse_memory(self, log: str) -> MemoryReport:
        return parse_memory(log)


def _pooling(flags: frozenset[str], categories: frozenset[ModelCategory]) -> list[str]:
    """Embedding/rerank mode, in whichever spelling this vLLM understands."""
    if ModelCategory.RERANKER in categories:
        task = "score"
    elif ModelCategory.EMBEDDING in categories:
        task = "embed"
    else:
        return []
    if "--runner" in flags:
        return (
            ["--runner", "pooling", "--convert", task]
            if "--convert" in flags
            else ["--runner", "pooling"]
        )
    return ["--task", task]


_GIB = 1024**3
_WEIGHTS = re.compile(r"Model loading took ([\d.]+) (GiB|GB)")
_CHECKPOINT = re.compile(r"Checkpoint size: ([\d.]+) GiB")
_KV_MEMORY = re.compile(r"Available KV cache memory: ([\d.]+) GiB")
_CPU_KV_SPACE = re.compile(r"Explicitly set \(([\d.]+)/[\d.]+\) GiB for KV cache")
_KV_TOKENS = re.compile(r"(GPU|CPU) KV cache size: ([\d,]+) tokens")
_MAX_LEN = re.compile(r"max_seq_len=(\d+)")


def _last(pattern: re.Pattern[str], log: str) -> str | None:
    found = pattern.findall(log)
    if not found:
        return None
    last = found[-1]
    return str(last[0] if isinstance(last, tuple) else last)


def parse_memory(log: str) -> MemoryReport:
    """vLLM logs the weights' size, the KV cache it sized and the context it uses.

    On GPUs: ``Model loading took X GiB`` and ``Available KV cache memory: X GiB``.
    On CPUs: ``Checkpoint size: X GiB`` and ``Explicitly set (X/Y) GiB for KV cache``.
    """
    device = "GPU" if "GPU KV cache size" in log else "CPU"
    buffers = []
    if weights := _WEIGHTS.findall(log):
        size, unit = weights[-1]
        scale = _GIB if unit == "GiB" else 10**9
        buffers.append(Buffer(device=device, kind="weights", bytes=round(float(size) * scale)))
    elif (checkpoint := _last(_CHECKPOINT, log)) is not None:
        buffers.append(Buffer(device=device, kind="weights", bytes=round(float(checkpoint) * _GIB)))
    kv = _last(_KV_MEMORY, log) or _last(_CPU_KV_SPACE, log)
    if kv is not None:
        buffers.append(Buffer(device=device, kind="kv", bytes=round(float(kv) * _GIB)))
    tokens = _KV_TOKENS.findall(log)
    max_len = _last(_MAX_LEN, log)
    return MemoryReport(
        buffers=tuple(buffers),
        context_length=int(max_len) if max_len else None,
        kv_cache_tokens=int(tokens[-1][1].replace(",", "")) if tokens else None,
    )
