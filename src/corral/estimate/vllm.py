"""What vLLM needs for a Hugging Face checkpoint: from ``config.json`` and
the safetensors headers, before any weight is downloaded.

vLLM pre-allocates ``gpu_memory_utilization`` (0.9 by default) of every GPU
it runs on and fills what the weights and activations leave with KV cache.
So a placement needs, on each of its ``tp`` GPUs: ``utilization · total``
free, and within that the weights' share, the activation peak, the runtime
overhead, and at least one sequence of ``max_model_len`` tokens of KV cache.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from corral.errors import InvalidInputError, InvalidModelFile
from corral.estimate.safetensors import SafeTensor

MAX_MODEL_LEN_CAP = 8192
GPU_MEMORY_UTILIZATION = 0.9
MAX_NUM_BATCHED_TOKENS = 8192
"""The token budget vLLM profiles its activation peak with (its v1 default)."""
RUNTIME_OVERHEAD = 1024**3
"""CUDA context, NCCL buffers and CUDA graphs per GPU; not measured here (no GPU)."""
IMAGES_PER_PROMPT = 4
"""What corral passes as ``--limit-mm-per-prompt`` for a vision model (vLLM's
own default, 999, makes it profile memory for far more images than anyone sends)."""
VISION_PREFIXES = (
    "visual.", "model.visual.", "vision_tower.", "model.vision_tower.", "vision_model.",
    "model.vision_model.", "multi_modal_projector.", "model.multi_modal_projector.",
    "mm_projector.", "model.mm_projector.", "vpm.", "resampler.", "vision_embed_tokens.",
)  # fmt: skip
"""Where checkpoints keep the vision encoder and projector's tensors."""

_DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "half": 2, "float": 4}
_KV_DTYPE_BYTES = {
    "auto": None,
    "fp8": 1,
    "fp8_e4m3": 1,
    "fp8_e5m2": 1,
    "bfloat16": 2,
    "float16": 2,
}
_NO_SCALING_TYPES = {"llama3", "longrope", "su", "mrope", "default"}


@dataclass(frozen=True)
class TextConfig:
    """The language model's part of a config (``text_config`` for vision models)."""

    architectures: tuple[str, ...]
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    max_position: int
    dtype_bytes: int
    sliding_window: int | None
    sliding_layers: int
    """How many layers use the sliding window (the rest attend to everything)."""
    mla_latent: int | None
    """DeepSeek MLA: the cached width per token and layer (kv_lora_rank + rope dims)."""
    quantization: str | None
    vision: bool
    vision_config: Mapping[str, Any] | None = None


def _int(config: Mapping[str, Any], key: str, default: int | None = None) -> int:
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        if default is not None:
            return default
        raise InvalidModelFile(f"config.json: {key} is missing or not an integer")
    return value


def max_position(config: Mapping[str, Any]) -> int:
    """The longest context the model supports, rope scaling included (as vLLM derives it)."""
    base = _int(config, "max_position_embeddings", 2048)
    scaling = config.get("rope_scaling") or {}
    if isinstance(scaling, dict):
        kind = scaling.get("rope_type") or scaling.get("type") or "default"
        factor = scaling.get("factor")
        if kind not in _NO_SCALING_TYPES and isinstance(factor, int | float) and factor > 1:
            original = scaling.get("original_max_position_embeddings") or base
            return max(base, int(original * factor))
    return base


def read_config(config: Mapping[str, Any]) -> TextConfig:
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else None
    vision = text is not None or "vision_config" in config
    c: Mapping[str, Any] = {**config, **text} if text else config
    layers = _int(c, "num_hidden_layers")
    hidden = _int(c, "hidden_size")
    heads = _int(c, "num_attention_heads")
    head_dim = _int(c, "head_dim", hidden // heads)
    dtype = str(c.get("torch_dtype") or c.get("dtype") or config.get("torch_dtype") or "bfloat16")
    window = c.get("sliding_window") if isinstance(c.get("sliding_window"), int) else None
    if window and c.get("use_sliding_window") is False:
        window = None
    layer_types = c.get("layer_types")
    if window and isinstance(layer_types, list):
        sliding = sum(1 for t in layer_types if t == "sliding_attention")
    elif window:
        pattern = c.get("sliding_window_pattern")
        sliding = layers - layers // pattern if isinstance(pattern, int) and pattern > 1 else layers
    else:
        sliding = 0
    kv_lora = c.get("kv_lora_rank")
    rope = c.get("qk_rope_head_dim")
    quant = config.get("quantization_config")
    return TextConfig(
        architectures=tuple(config.get("architectures") or ()),
        layers=layers,
        hidden=hidden,
        intermediate=_int(c, "intermediate_size", 4 * hidden),
        heads=heads,
        kv_heads=_int(c, "num_key_value_heads", heads),
        head_dim=head_dim,
        vocab=_int(c, "vocab_size", 32000),
        max_position=max_position(c),
        dtype_bytes=_DTYPE_BYTES.get(dtype, 2),
        sliding_window=window,
        sliding_layers=sliding,
        mla_latent=kv_lora + rope if isinstance(kv_lora, int) and isinstance(rope, int) else None,
        quantization=str(quant.get("quant_method")) if isinstance(quant, dict) else None,
        vision=vision,
        vision_config=config["vision_config"]
        if isinstance(config.get("vision_config"), dict)
        else None,
    )


def option(parameters: Sequence[str], *names: str) -> str | None:
    """The value the user gave for a vLLM option (last one wins), if any."""
    found = None
    args = list(parameters)
    for i, arg in enumerate(args):
        flag, sep, value = arg.partition("=")
        if flag in names:
            found = value if sep else (args[i + 1] if i + 1 < len(args) else None)
    return found


@dataclass(frozen=True)
class VllmEstimate:
    config: TextConfig
    weight_bytes: int
    parameters_by_dtype: dict[str, int]
    kv_bytes_per_token: int
    max_model_len: int
    tensor_parallel_size: int
    gpu_memory_utilization: float
    per_gpu_weights: int
    per_gpu_activation: int
    per_gpu_kv_min: int
    """One ``max_model_len`` sequence's KV cache on each GPU."""
    per_gpu_overhead: int
    vision_weight_bytes: int = 0
    """The vision encoder's and projector's weights, counted whole on every GPU
    (part of ``per_gpu_weights``)."""
    encoder_activation: int = 0
    """Encoding the largest images profiled, and the encoder cache (part of
    ``per_gpu_activation``)."""

    @property
    def per_gpu_need(self) -> int:
        return (
            self.per_gpu_weights
            + self.per_gpu_activation
            + self.per_gpu_kv_min
            + self.per_gpu_overhead
        )

    def fits(self, gpu_total: int, gpu_free: int) -> bool:
        """Whether one GPU of this size and free memory can take its share."""
        budget = self.gpu_memory_utilization * gpu_total
        return gpu_free >= budget and budget >= self.per_gpu_need

    def kv_tokens(self, kv_space: int) -> int:
        """Tokens of KV cache that ``kv_space`` bytes hold (vLLM's CPU backend sizes
        its cache this way from VLLM_CPU_KVCACHE_SPACE)."""
        return kv_space // self.kv_bytes_per_token if self.kv_bytes_per_token else 0


def tp_allowed(config: TextConfig, tp: int) -> bool:
    """vLLM splits attention heads evenly; KV heads split or are replicated."""
    return (
        tp >= 1
        and config.heads % tp == 0
        and (config.kv_heads % tp == 0 or tp % config.kv_heads == 0)
    )


def _kv_per_token(c: TextConfig, kv_dtype_bytes: int) -> int:
    if c.mla_latent is not None:
        return c.layers * c.mla_latent * kv_dtype_bytes
    return 2 * c.layers * c.kv_heads * c.head_dim * kv_dtype_bytes


def estimate(
    config: Mapping[str, Any],
    tensors: Sequence[SafeTensor],
    *,
    tensor_parallel_size: int = 1,
    parameters: Sequence[str] = (),
) -> VllmEstimate:
    c = read_config(config)
    tp = int(option(parameters, "--tensor-parallel-size", "-tp") or tensor_parallel_size)
    if not tp_allowed(c, tp):
        raise InvalidInputError(
            f"tensor parallel size {tp} does not divide the model's {c.heads} attention heads "
            f"({c.kv_heads} KV heads)"
        )
    utilization = float(option(parameters, "--gpu-memory-utilization") or GPU_MEMORY_UTILIZATION)
    user_len = option(parameters, "--max-model-len")
    max_len = int(user_len) if user_len else min(MAX_MODEL_LEN_CAP, c.max_position)
    kv_dtype = option(parameters, "--kv-cache-dtype") or "auto"
    kv_bytes = _KV_DTYPE_BYTES.get(kv_dtype) or c.dtype_bytes
    by_dtype: Counter[str] = Counter()
    weights = vision_weights = 0
    for t in tensors:
        by_dtype[t.dtype] += t.n_elements
        weights += t.nbytes
        if t.name.startswith(VISION_PREFIXES):
            vision_weights += t.nbytes
    encoder = _encoder_activation(c, parameters) if c.vision else 0
    per_token = _kv_per_token(c, kv_bytes)
    # KV heads split over the GPUs, or replicated when there are fewer heads than GPUs.
    kv_share = max(c.kv_heads // tp, 1) / c.kv_heads if c.mla_latent is None else 1.0
    full_layers = c.layers - c.sliding_layers
    if c.sliding_window and c.mla_latent is None:
        per_layer = per_token // c.layers
        seq_kv = per_layer * (
            full_layers * max_len + c.sliding_layers * min(max_len, c.sliding_window)
        )
    else:
        seq_kv = per_token * max_len
    activation = (
        MAX_NUM_BATCHED_TOKENS * (4 * c.hidden + 2 * c.intermediate // tp) * 2 + 256 * c.vocab * 4
    )
    return VllmEstimate(
        config=c,
        weight_bytes=weights,
        parameters_by_dtype=dict(by_dtype),
        kv_bytes_per_token=per_token,
        max_model_len=max_len,
        tensor_parallel_size=tp,
        gpu_memory_utilization=utilization,
        per_gpu_weights=(weights - vision_weights) // tp + vision_weights,
        per_gpu_activation=activation + encoder,
        per_gpu_kv_min=int(seq_kv * kv_share),
        per_gpu_overhead=RUNTIME_OVERHEAD,
        vision_weight_bytes=vision_weights,
        encoder_activation=encoder,
    )


def images_per_prompt(parameters: Sequence[str]) -> int:
    """Images per prompt vLLM profiles for: corral's default, or the user's
    ``--limit-mm-per-prompt`` (``{"image": N}`` or ``{"image": {"count": N}}``)."""
    raw = option(parameters, "--limit-mm-per-prompt")
    if raw is None:
        return IMAGES_PER_PROMPT
    try:
        value = json.loads(raw)
        image = value.get("image", 999) if isinstance(value, dict) else None
        count = image.get("count", 999) if isinstance(image, dict) else image
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError
    except ValueError:
        raise InvalidInputError(
            f"--limit-mm-per-prompt {raw!r}: expected JSON such as '{{\"image\": 2}}'"
        ) from None
    return count


def _encoder_activation(c: TextConfig, parameters: Sequence[str]) -> int:
    """What encoding images adds to vLLM's profiled peak: the encoder's
    activations for as many of the largest images as one step's token budget
    holds (at most the per-prompt limit), and the encoder cache, which keeps a
    step's worth of encoded image tokens. A rough, deliberately generous
    figure: vLLM measures the real one while it starts."""
    images = images_per_prompt(parameters)
    if images == 0:
        return 0
    v = c.vision_config or {}
    hidden = _int(v, "hidden_size", 1024)
    intermediate = _int(v, "intermediate_size", 4 * hidden)
    patch = _int(v, "patch_size", 14)
    size = v.get("image_size")
    merge = _int(v, "spatial_merge_size", 1)
    if isinstance(size, int) and size > 0:
        patches = (size // patch) ** 2
        tokens = max(patches // (merge * merge), 1)
    else:  # dynamic resolution (Qwen2-VL): the largest image fills the token budget
        tokens = MAX_NUM_BATCHED_TOKENS
        patches = tokens * merge * merge
    at_once = max(1, min(images, MAX_NUM_BATCHED_TOKENS // tokens))
    activation = at_once * patches * (4 * hidden + 2 * intermediate) * c.dtype_bytes
    cache = MAX_NUM_BATCHED_TOKENS * c.hidden * c.dtype_bytes
    return activation + cache


def estimate_by_tp(
    config: Mapping[str, Any],
    tensors: Sequence[SafeTensor],
    *,
    parameters: Sequence[str] = (),
    max_tp: int = 8,
) -> dict[int, VllmEstimate]:
    """The estimate at every tensor-parallel size up to ``max_tp`` the heads
    allow, or only at the size the user fixed with ``--tensor-parallel-size``."""
    if option(parameters, "--tensor-parallel-size", "-tp"):
        e = estimate(config, tensors, parameters=parameters)
        return {e.tensor_parallel_size: e}
    c = read_config(config)
    return {
        tp: estimate(config, tensors, tensor_parallel_size=tp, parameters=parameters)
        for tp in range(1, max_tp + 1)
        if tp_allowed(c, tp)
    }
