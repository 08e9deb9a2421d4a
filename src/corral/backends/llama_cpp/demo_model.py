"""A tiny Llama model written as GGUF here, so llama-server has something to
serve on a machine without internet.

Two users: ``corral start --demo`` deploys it (:func:`demo_model`), and the
test fixtures (``tests/fixtures/tiny_models.py``) write the same weights as
GGUF for llama-server and as a Hugging Face checkpoint for vLLM.

The weights are random (seeded), so the model writes nonsense, but quickly:
hidden 256, 2 layers, 4 heads of 64, 2 KV heads, tied embeddings. It is
still a real chat model to llama-server: GPT-2's tokenizer (read from the
vocabulary-only GGUF in llama.cpp's source archive, which the llama.cpp
install already caches, so no download is needed) and a ChatML chat template.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import gguf
import numpy as np
import numpy.typing as npt

from corral.backends.llama_cpp.install import DEFAULT_VERSION, source_archive
from corral.backends.paths import exclusive
from corral.backends.steps import Progress

# Bump when the bytes demo_model writes change, so every machine writes it anew.
GENERATOR_VERSION = 1
DEMO_FILE_NAME = "corral-demo-tiny-llama-f16.gguf"

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

Weights = dict[str, npt.NDArray[np.float32]]


@dataclass(frozen=True)
class Shape:
    hidden: int = 256
    intermediate: int = 512
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    context: int = 2048
    rms_eps: float = 1e-5
    rope_theta: float = 10000.0
    seed: int = 1234

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


@dataclass(frozen=True)
class Vocab:
    tokens: list[str]
    token_types: list[int]
    merges: list[str]
    eos_id: int


def read_gpt2_vocab(progress: Progress = lambda _: None) -> Vocab:
    """GPT-2's vocabulary from the GGUF file in llama.cpp's source tree."""
    archive = source_archive(DEFAULT_VERSION, progress)
    with tarfile.open(archive) as tar, tempfile.TemporaryDirectory() as tmp:
        [member] = [m for m in tar.getmembers() if m.name.endswith("models/ggml-vocab-gpt-2.gguf")]
        tar.extractall(tmp, members=[member], filter="data")
        fields = gguf.GGUFReader(Path(tmp) / member.name).fields
        tokens = [
            str(bytes(fields["tokenizer.ggml.tokens"].parts[i]), "utf-8")
            for i in fields["tokenizer.ggml.tokens"].data
        ]
        types = [
            int(fields["tokenizer.ggml.token_type"].parts[i][0])
            for i in fields["tokenizer.ggml.token_type"].data
        ]
        merges = [
            str(bytes(fields["tokenizer.ggml.merges"].parts[i]), "utf-8")
            for i in fields["tokenizer.ggml.merges"].data
        ]
        eos = int(fields["tokenizer.ggml.eos_token_id"].parts[-1][0])
    return Vocab(tokens, types, merges, eos)


def to_bf16_bits(a: npt.NDArray[np.floating]) -> npt.NDArray[np.uint16]:
    """float → bfloat16 bit patterns (round to nearest even), as uint16."""
    bits = a.astype(np.float32).view(np.uint32)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)


def from_bf16_bits(bits: npt.NDArray[np.uint16]) -> npt.NDArray[np.float32]:
    return (bits.astype(np.uint32) << 16).view(np.float32)


def random_weights(shape: Shape, vocab_size: int) -> Weights:
    """Hugging Face tensor names → float32 arrays holding bfloat16 values,
    deterministic for a shape (so a GGUF file and a bfloat16 checkpoint made
    from them hold the same values)."""
    rng = np.random.default_rng(shape.seed)

    def normal(*dims: int) -> npt.NDArray[np.float32]:
        return from_bf16_bits(to_bf16_bits(rng.standard_normal(dims) * 0.02))

    kv = shape.kv_heads * shape.head_dim
    weights = {
        "model.embed_tokens.weight": normal(vocab_size, shape.hidden),
        "model.norm.weight": np.ones(shape.hidden, np.float32),
    }
    for i in range(shape.layers):
        p = f"model.layers.{i}."
        weights |= {
            p + "self_attn.q_proj.weight": normal(shape.hidden, shape.hidden),
            p + "self_attn.k_proj.weight": normal(kv, shape.hidden),
            p + "self_attn.v_proj.weight": normal(kv, shape.hidden),
            p + "self_attn.o_proj.weight": normal(shape.hidden, shape.hidden),
            p + "mlp.gate_proj.weight": normal(shape.intermediate, shape.hidden),
            p + "mlp.up_proj.weight": normal(shape.intermediate, shape.hidden),
            p + "mlp.down_proj.weight": normal(shape.hidden, shape.intermediate),
            p + "input_layernorm.weight": np.ones(shape.hidden, np.float32),
            p + "post_attention_layernorm.weight": np.ones(shape.hidden, np.float32),
        }
    return weights


def add_vocab(writer: gguf.GGUFWriter, vocab: Vocab) -> None:
    """GPT-2's tokenizer and the ChatML template, as llama.cpp reads them."""
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.token_types)
    writer.add_token_merges(vocab.merges)
    writer.add_bos_token_id(vocab.eos_id)
    writer.add_eos_token_id(vocab.eos_id)
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)


def _permute(w: npt.NDArray[np.float32], heads: int) -> npt.NDArray[np.float32]:
    """Hugging Face's rotary layout → llama.cpp's (as its converter does for Llama)."""
    return (
        w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
    )


_LAYER_TENSORS = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
}


def write_gguf(
    path: Path,
    shape: Shape,
    vocab: Vocab,
    weights: Weights,
    qtype: gguf.GGMLQuantizationType,
    *,
    embedding: bool = False,
    name: str = "corral-tiny-llama",
) -> None:
    """``weights`` (from :func:`random_weights`) as a llama GGUF file: matrices
    in ``qtype`` (F16 or Q8_0), norms in F32. ``embedding`` declares a mean-pooling
    embedding model instead of a chat model."""
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(name + ("-embed" if embedding else ""))
    if embedding:
        writer.add_pooling_type(gguf.PoolingType.MEAN)
    writer.add_context_length(shape.context)
    writer.add_embedding_length(shape.hidden)
    writer.add_block_count(shape.layers)
    writer.add_feed_forward_length(shape.intermediate)
    writer.add_head_count(shape.heads)
    writer.add_head_count_kv(shape.kv_heads)
    writer.add_rope_dimension_count(shape.head_dim)
    writer.add_rope_freq_base(shape.rope_theta)
    writer.add_layer_norm_rms_eps(shape.rms_eps)
    writer.add_vocab_size(len(vocab.tokens))
    file_type = {
        gguf.GGMLQuantizationType.F16: gguf.LlamaFileType.MOSTLY_F16,
        gguf.GGMLQuantizationType.Q8_0: gguf.LlamaFileType.MOSTLY_Q8_0,
    }[qtype]
    writer.add_file_type(file_type)
    add_vocab(writer, vocab)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)

    def add(tensor: str, data: npt.NDArray[np.float32]) -> None:
        if data.ndim == 1:
            writer.add_tensor(tensor, data.astype(np.float32))
        elif qtype == gguf.GGMLQuantizationType.F16:
            writer.add_tensor(tensor, data.astype(np.float16))
        else:
            writer.add_tensor(tensor, gguf.quants.quantize(data, qtype), raw_dtype=qtype)

    add("token_embd.weight", weights["model.embed_tokens.weight"])
    add("output_norm.weight", weights["model.norm.weight"])
    for i in range(shape.layers):
        for hf, short in _LAYER_TENSORS.items():
            data = weights[f"model.layers.{i}.{hf}.weight"]
            if short == "attn_q":
                data = _permute(data, shape.heads)
            elif short == "attn_k":
                data = _permute(data, shape.kv_heads)
            add(f"blk.{i}.{short}.weight", data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _demo_key(shape: Shape) -> str:
    identity = {"generator": GENERATOR_VERSION, "llama.cpp": DEFAULT_VERSION, **asdict(shape)}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]


def demo_model(cache_root: Path, progress: Progress = lambda _: None) -> Path:
    """The demo model (f16 GGUF, about 30 MB), written once per machine.

    It lives at ``cache_root/demo-models/<key>/corral-demo-tiny-llama-f16.gguf``,
    the key hashing the generator version, llama.cpp's version (whose source
    archive supplies the vocabulary) and the shape. It is written into a
    staging directory and renamed into place under a cross-process lock, so a
    path this returns always holds a whole file.
    """
    shape = Shape()
    key = _demo_key(shape)
    root = cache_root / "demo-models"
    target = root / key / DEMO_FILE_NAME
    if target.exists():
        return target
    with exclusive(root / f"{key}.lock"):
        if target.exists():  # another process wrote it while this one waited
            return target
        progress("writing the demo model")
        vocab = read_gpt2_vocab(progress)
        staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=root))
        try:
            written = staging / DEMO_FILE_NAME
            weights = random_weights(shape, len(vocab.tokens))
            write_gguf(
                written,
                shape,
                vocab,
                weights,
                gguf.GGMLQuantizationType.F16,
                name="corral-demo-tiny-llama",
            )
            # Durable before it becomes visible: a crash must not leave a torn
            # file that every later call would return.
            with written.open("rb") as f:
                os.fsync(f.fileno())
            shutil.rmtree(target.parent, ignore_errors=True)
            staging.rename(target.parent)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target
