"""The llama-server launch settings that decide memory, derived exactly as the
launcher derives them: corral's defaults, then the user's parameters.

``corral.backends.llama_cpp`` builds its command line from the same defaults
(``default_context`` and ``default_parallel``), so the estimate and the launch
cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from corral.errors import InvalidInputError

DEFAULT_CONTEXT = 8192
"""Context given to a model whose training context is larger or unknown."""
LLM_SLOTS = 4
POOLING_SLOTS = 1
DEFAULT_BATCH = 2048
DEFAULT_UBATCH = 512
ALL_LAYERS = 999
"""What ``--n-gpu-layers`` gets for "every layer and the output layer"."""

CACHE_TYPES = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1")


def default_context(training_context: int | None) -> int:
    return min(DEFAULT_CONTEXT, training_context or DEFAULT_CONTEXT)


def default_parallel(pooling: bool) -> int:
    """Slots: 4 for LLMs, 1 for embedding and rerank models."""
    return POOLING_SLOTS if pooling else LLM_SLOTS


@dataclass(frozen=True)
class LlamaCppSettings:
    ctx_size: int
    parallel: int
    gpu_layers: int | None = None
    """None: as many as the placement decides (the scheduler's variable)."""
    tensor_split: tuple[float, ...] | None = None
    cache_type_k: str = "f16"
    cache_type_v: str = "f16"
    flash_attn: str = "auto"
    kv_offload: bool = True
    kv_unified: bool = True
    batch: int = DEFAULT_BATCH
    ubatch: int = DEFAULT_UBATCH
    embeddings: bool = False
    mmproj_offload: bool = True
    """The projector on the first GPU (llama.cpp's default) or on the CPU."""


_VALUE_FLAGS = {
    "-c": "ctx_size", "--ctx-size": "ctx_size",
    "-np": "parallel", "--parallel": "parallel",
    "-ngl": "gpu_layers", "--gpu-layers": "gpu_layers", "--n-gpu-layers": "gpu_layers",
    "-ts": "tensor_split", "--tensor-split": "tensor_split",
    "-ctk": "cache_type_k", "--cache-type-k": "cache_type_k",
    "-ctv": "cache_type_v", "--cache-type-v": "cache_type_v",
    "-fa": "flash_attn", "--flash-attn": "flash_attn",
    "-b": "batch", "--batch-size": "batch",
    "-ub": "ubatch", "--ubatch-size": "ubatch",
}  # fmt: skip
_SWITCHES = {
    "-nkvo": ("kv_offload", False), "--no-kv-offload": ("kv_offload", False),
    "-kvo": ("kv_offload", True), "--kv-offload": ("kv_offload", True),
    "-kvu": ("kv_unified", True), "--kv-unified": ("kv_unified", True),
    "-no-kvu": ("kv_unified", False), "--no-kv-unified": ("kv_unified", False),
    "--no-mmproj-offload": ("mmproj_offload", False),
    "--mmproj-offload": ("mmproj_offload", True),
}  # fmt: skip


def settings_for(
    training_context: int | None,
    *,
    pooling: bool = False,
    parameters: Sequence[str] = (),
) -> LlamaCppSettings:
    """Corral's defaults for a model, then the user's backend parameters (the
    last occurrence of a flag wins, as in llama-server)."""
    parallel = default_parallel(pooling)
    base = LlamaCppSettings(
        ctx_size=default_context(training_context),
        parallel=parallel,
        kv_unified=parallel > 1,
        embeddings=pooling,
    )
    return apply_parameters(base, parameters)


def apply_parameters(settings: LlamaCppSettings, parameters: Sequence[str]) -> LlamaCppSettings:
    changes: dict[str, object] = {}
    args = list(parameters)
    i = 0
    while i < len(args):
        flag, sep, inline = args[i].partition("=")
        if flag in _SWITCHES:
            field, value = _SWITCHES[flag]
            changes[field] = value
        elif flag in _VALUE_FLAGS:
            if sep:
                raw = inline
            elif i + 1 < len(args):
                i += 1
                raw = args[i]
            else:
                raise InvalidInputError(f"backend parameter {flag} needs a value")
            field = _VALUE_FLAGS[flag]
            changes[field] = _parse(field, flag, raw)
        i += 1
    return replace(settings, **changes)  # type: ignore[arg-type]


def _parse(field: str, flag: str, raw: str) -> object:
    try:
        if field == "tensor_split":
            parts = tuple(float(x) for x in raw.replace("/", ",").split(","))
            if any(p < 0 for p in parts) or sum(parts) <= 0:
                raise ValueError
            return parts
        if field in ("cache_type_k", "cache_type_v"):
            if raw not in CACHE_TYPES:
                raise ValueError
            return raw
        if field == "flash_attn":
            value = {"1": "on", "0": "off", "true": "on", "false": "off"}.get(raw, raw)
            if value not in ("on", "off", "auto"):
                raise ValueError
            return value
        if field == "gpu_layers":
            return ALL_LAYERS if raw in ("all", "auto") else int(raw)
        number = int(raw)
        if number < 0 or (number == 0 and field != "ctx_size"):
            raise ValueError
        return number
    except ValueError:
        raise InvalidInputError(f"backend parameter {flag} has an invalid value {raw!r}") from None
