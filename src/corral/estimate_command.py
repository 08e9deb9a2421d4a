"""``corral estimate SOURCE``: the memory a model will need, before deploying it."""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from typing import Annotated

import httpx
import typer
from rich.console import Console
from rich.table import Table

from corral.errors import CorralError
from corral.estimate.gguf import read_gguf_model
from corral.estimate.llama_cpp.memory import LlamaCppEstimate, OffloadRow, Usage, estimate
from corral.estimate.llama_cpp.settings import settings_for
from corral.estimate.safetensors import read_safetensors
from corral.estimate.vllm import VllmEstimate, tp_allowed
from corral.estimate.vllm import estimate as estimate_vllm
from corral.sources.locate import CheckpointSource, GGUFSource, locate

GIB = 1024**3
_SIZE = re.compile(r"^\s*([\d.]+)\s*(GiB|GB|MiB|MB|G|M)?\s*$", re.IGNORECASE)
_UNITS = {None: GIB, "gib": GIB, "g": GIB, "gb": 10**9, "mib": 1024**2, "m": 1024**2, "mb": 10**6}


def parse_sizes(text: str) -> list[int]:
    sizes = []
    for part in text.split(","):
        match = _SIZE.match(part)
        if match is None:
            raise typer.BadParameter(f"{part!r} is not a size like 24GiB")
        sizes.append(int(float(match.group(1)) * _UNITS[(match.group(2) or "").lower() or None]))
    return sizes


def _gib(n: int) -> str:
    return f"{n / GIB:.2f}"


def _usage_json(u: Usage) -> dict[str, int]:
    return {**{k: v for k, v in asdict(u).items() if k != "device"}, "total": u.total}


def _show_gguf(e: LlamaCppEstimate, gpus: list[int], as_json: bool) -> None:
    def fits(row: OffloadRow) -> bool:
        return all(d.total <= cap for d, cap in zip(row.devices, gpus, strict=True))

    best = max((r for r in e.rows if fits(r)), key=lambda r: r.gpu_layers, default=None)
    if as_json:
        typer.echo(json.dumps({
            "backend": "llama.cpp", "architecture": e.hparams.arch, "layers": e.hparams.n_layer,
            "settings": asdict(e.settings), "devices": list(e.devices),
            "best_gpu_layers": best.gpu_layers if best else None,
            "rows": [{"gpu_layers": r.gpu_layers, "host": _usage_json(r.host),
                      "devices": {d.device: _usage_json(d) for d in r.devices}}
                     for r in e.rows],
        }, indent=2))  # fmt: skip
        return
    s = e.settings
    typer.echo(
        f"llama.cpp: {e.hparams.arch}, {e.hparams.n_layer} layers; ctx {s.ctx_size}, "
        f"{s.parallel} slots, KV {s.cache_type_k}/{s.cache_type_v}, "
        f"flash attention {s.flash_attn}"
    )
    table = Table(
        "GPU LAYERS",
        *(f"{d} GiB" for d in e.devices),
        "RAM GiB",
        "RAM: WEIGHTS",
        "KV",
        "COMPUTE",
        box=None,
        header_style="bold",
    )
    step = max(1, len(e.rows) // 8)
    shown = sorted(
        {0, len(e.rows) - 1, *range(0, len(e.rows), step), *([best.gpu_layers] if best else [])}
    )
    for n in shown:
        r = e.rows[n]
        mark = " <- fits" if best is not None and n == best.gpu_layers and gpus else ""
        table.add_row(
            f"{n}{mark}",
            *(_gib(d.total) for d in r.devices),
            _gib(r.host.total),
            _gib(r.host.weights + r.host.repack),
            _gib(r.host.kv),
            _gib(r.host.compute),
        )
    Console().print(table)
    if gpus and best is None:
        typer.echo("Not even the CPU-only row fits the GPUs given (they hold the runtime).")


def _show_vllm(e: VllmEstimate, gpus: list[int], as_json: bool) -> None:
    c = e.config
    options = [tp for tp in (1, 2, 4, 8) if tp_allowed(c, tp)]
    if as_json:
        typer.echo(json.dumps({
            "backend": "vllm", "weights": e.weight_bytes, "parameters": e.parameters_by_dtype,
            "kv_bytes_per_token": e.kv_bytes_per_token, "max_model_len": e.max_model_len,
            "model_max_context": c.max_position, "tensor_parallel_size": e.tensor_parallel_size,
            "allowed_tensor_parallel_sizes": options, "per_gpu_need": e.per_gpu_need,
            "gpu_memory_utilization": e.gpu_memory_utilization,
            "fits": [e.fits(g, g) for g in gpus],
        }, indent=2))  # fmt: skip
        return
    params = ", ".join(f"{n / 1e9:.2f}B {d}" for d, n in e.parameters_by_dtype.items())
    typer.echo(
        f"vLLM: {', '.join(c.architectures) or 'model'}; {params}; weights "
        f"{_gib(e.weight_bytes)} GiB{' (' + c.quantization + ')' if c.quantization else ''}"
    )
    typer.echo(
        f"context: model {c.max_position}, --max-model-len {e.max_model_len}; KV "
        f"{e.kv_bytes_per_token / 1024:.1f} KiB per token"
    )
    typer.echo(
        f"per GPU at tp={e.tensor_parallel_size}: weights {_gib(e.per_gpu_weights)} + "
        f"activations {_gib(e.per_gpu_activation)} + one sequence of KV "
        f"{_gib(e.per_gpu_kv_min)} + runtime {_gib(e.per_gpu_overhead)} = "
        f"{_gib(e.per_gpu_need)} GiB, within {e.gpu_memory_utilization:.0%} of each GPU"
    )
    typer.echo(f"tensor parallel sizes the heads allow: {', '.join(map(str, options))}")
    for i, g in enumerate(gpus):
        typer.echo(f"GPU{i} {_gib(g)} GiB: {'fits' if e.fits(g, g) else 'does not fit'}")


def estimate_cmd(
    source: Annotated[
        str, typer.Argument(help="A path, a URL to a .gguf, or a Hugging Face repo[:file].")
    ],
    ctx_size: Annotated[int | None, typer.Option(help="llama.cpp context size.")] = None,
    parallel: Annotated[int | None, typer.Option(help="llama.cpp slots.")] = None,
    cache_type: Annotated[str | None, typer.Option(help="KV cache type, e.g. q8_0.")] = None,
    gpus: Annotated[str | None, typer.Option(help="GPU sizes, e.g. 24GiB,24GiB.")] = None,
    tp: Annotated[int, typer.Option(help="vLLM tensor parallel size.")] = 1,
    backend_parameter: Annotated[
        list[str] | None, typer.Option(help="A backend parameter, as deployed (repeat).")
    ] = None,
    revision: Annotated[str, typer.Option()] = "main",
    json_output: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Estimate a model's memory from its metadata, without downloading the weights."""
    sizes = parse_sizes(gpus) if gpus else []
    params = list(backend_parameter or [])
    for flag, value in (
        ("--ctx-size", ctx_size),
        ("--parallel", parallel),
        ("--cache-type-k", cache_type),
        ("--cache-type-v", cache_type),
    ):
        if value is not None:
            params += [flag, str(value)]
    try:
        with httpx.Client(timeout=30) as client:
            located = locate(source, client, revision=revision)
            if isinstance(located, GGUFSource):
                model = read_gguf_model(located.parts)
                context = model.arch_value("context_length")
                settings = settings_for(
                    context if isinstance(context, int) else None, parameters=params
                )
                devices = [f"GPU{i}" for i in range(len(sizes))]
                _show_gguf(estimate(model, settings, devices), sizes, json_output)
            else:
                assert isinstance(located, CheckpointSource)
                tensors = [t for shard in located.shards for t in read_safetensors(shard)]
                result = estimate_vllm(
                    located.config, tensors, tensor_parallel_size=tp, parameters=params
                )
                _show_vllm(result, sizes, json_output)
    except CorralError as e:
        typer.echo(f"corral: {e.message}", err=True)
        raise typer.Exit(1) from None


def register(app: typer.Typer) -> None:
    app.command("estimate")(estimate_cmd)
