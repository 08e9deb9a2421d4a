"""The hyperparameters of a GGUF model that memory depends on."""

from __future__ import annotations

from dataclasses import dataclass

from corral.errors import InvalidModelFile
from corral.estimate.gguf import GGUFModel, Value

# Sliding-window layer patterns llama.cpp applies when the file gives none:
# every Nth layer attends to the full context, the others to the window.
_SWA_PATTERNS = {"gemma2": 2, "gemma3": 6, "gemma3n": 5, "cohere2": 4}
# Architectures without a KV cache (encoders) or whose FFN is not gated.
ENCODERS = frozenset({"bert", "nomic-bert", "jina-bert-v2", "modern-bert", "t5encoder"})
UNGATED_FFN = frozenset({"bert", "nomic-bert", "gpt2", "starcoder", "phi2", "bloom", "falcon"})


@dataclass(frozen=True)
class HParams:
    arch: str
    n_layer: int
    n_embd: int
    n_ff: int
    n_head: int
    n_head_kv: tuple[int, ...]
    """Per layer."""
    head_dim_k: int
    head_dim_v: int
    n_vocab: int
    n_ctx_train: int | None
    n_expert: int
    n_expert_used: int
    n_ff_expert: int
    n_swa: int
    swa_layers: frozenset[int]
    mla: bool
    causal: bool

    def is_swa(self, layer: int) -> bool:
        return layer in self.swa_layers


def _int(model: GGUFModel, suffix: str, default: int | None = None) -> int:
    value = model.arch_value(suffix)
    if isinstance(value, list):  # per-layer arrays: the largest is what bounds memory
        value = max((v for v in value if isinstance(v, int)), default=default)
    if isinstance(value, bool) or not isinstance(value, int):
        if default is None:
            raise InvalidModelFile(
                f"{model.parts[0].name}: {model.architecture}.{suffix} is missing or not an integer"
            )
        return default
    return value


def _per_layer(value: Value | None, n_layer: int, default: int) -> tuple[int, ...]:
    if isinstance(value, list):
        ints = [v for v in value if isinstance(v, int) and not isinstance(v, bool)]
        if len(ints) == n_layer:
            return tuple(ints)
    if isinstance(value, int) and not isinstance(value, bool):
        return (value,) * n_layer
    return (default,) * n_layer


def _vocab(model: GGUFModel) -> int:
    value = model.arch_value("vocab_size")
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    tokens = model.metadata.get("tokenizer.ggml.tokens")
    length = getattr(tokens, "length", None) or (len(tokens) if isinstance(tokens, list) else 0)
    if length:
        return int(length)
    embd = next((t for t in model.tensors if t.name == "token_embd.weight"), None)
    if embd is None or len(embd.shape) < 2:
        raise InvalidModelFile(f"{model.parts[0].name}: no vocabulary size")
    return embd.shape[1]


def read_hparams(model: GGUFModel) -> HParams:
    arch = model.architecture
    n_layer = _int(model, "block_count")
    n_embd = _int(model, "embedding_length")
    n_head = _int(model, "attention.head_count", 0) or 1
    n_head_kv = _per_layer(model.arch_value("attention.head_count_kv"), n_layer, n_head)
    head_dim_k = _int(model, "attention.key_length", n_embd // n_head)
    head_dim_v = _int(model, "attention.value_length", n_embd // n_head)
    n_swa = _int(model, "attention.sliding_window", 0)
    swa_layers: frozenset[int] = frozenset()
    if n_swa > 0:
        pattern_value = model.arch_value("attention.sliding_window_pattern")
        if isinstance(pattern_value, list) and len(pattern_value) == n_layer:
            swa_layers = frozenset(i for i, v in enumerate(pattern_value) if v)
        else:
            pattern = (
                pattern_value if isinstance(pattern_value, int) else _SWA_PATTERNS.get(arch, 1)
            )
            if pattern > 1:
                swa_layers = frozenset(i for i in range(n_layer) if i % pattern < pattern - 1)
    causal = model.arch_value("attention.causal")
    return HParams(
        arch=arch,
        n_layer=n_layer,
        n_embd=n_embd,
        n_ff=_int(model, "feed_forward_length", 4 * n_embd),
        n_head=n_head,
        n_head_kv=n_head_kv,
        head_dim_k=head_dim_k,
        head_dim_v=head_dim_v,
        n_vocab=_vocab(model),
        n_ctx_train=_int(model, "context_length", 0) or None,
        n_expert=_int(model, "expert_count", 0),
        n_expert_used=_int(model, "expert_used_count", 0),
        n_ff_expert=_int(model, "expert_feed_forward_length", 0),
        n_swa=n_swa,
        swa_layers=swa_layers,
        # DeepSeek-2/3 files converted for MLA cache one compressed latent per
        # token (key_length = kv_lora_rank + rope dims, one KV head, no V).
        mla=model.arch_value("attention.key_length_mla") is not None,
        causal=arch not in ENCODERS if causal is None else bool(causal),
    )
