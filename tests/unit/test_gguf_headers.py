"""The header-only GGUF fixtures: small files with real models' tensor tables."""

from __future__ import annotations

import struct
from pathlib import Path

import gguf
import numpy as np
import pytest

from tests.fixtures.gguf_headers import (
    DEEPSEEK_R1,
    GEMMA_3_27B,
    LLAMA_3_1_8B,
    MIXTRAL_8X7B,
    QWEN2_5_72B,
    Arch,
    generate,
    tensors,
)


def _counts(path: Path) -> tuple[int, int]:
    with path.open("rb") as f:
        magic, version, n_tensors, n_kv = struct.unpack("<4sIQQ", f.read(24))
    assert magic == b"GGUF" and version == 3
    return n_tensors, n_kv


def test_files_are_small_and_hold_every_tensor(tmp_path: Path) -> None:
    files = generate(tmp_path)
    for name, arch, file_type in [
        ("llama-3.1-8b-q4_k_m", LLAMA_3_1_8B, "Q4_K_M"),
        ("qwen2.5-72b-q4_k_m", QWEN2_5_72B, "Q4_K_M"),
        ("mixtral-8x7b-q4_k_m", MIXTRAL_8X7B, "Q4_K_M"),
    ]:
        parts = files[name]
        assert all(p.stat().st_size < 100_000 for p in parts)
        assert sum(_counts(p)[0] for p in parts) == len(tensors(arch, file_type))
    assert [p.name for p in files["qwen2.5-72b-q4_k_m"]] == [
        f"Qwen2.5-72B-Instruct-Q4_K_M-0000{i}-of-00003.gguf" for i in (1, 2, 3)
    ]


@pytest.mark.parametrize(
    ("arch", "file_type", "published_bytes"),
    [
        (LLAMA_3_1_8B, "Q4_K_M", 4.92e9),
        (LLAMA_3_1_8B, "F16", 16.07e9),
        (QWEN2_5_72B, "Q4_K_M", 47.42e9),
        (MIXTRAL_8X7B, "Q4_K_M", 26.44e9),
        (GEMMA_3_27B, "Q4_K_M", 16.55e9),
        (DEEPSEEK_R1, "Q4_K_M", 404.43e9),
    ],
)
def test_tensor_tables_add_up_to_the_published_file_sizes(
    arch: Arch, file_type: str, published_bytes: float
) -> None:
    total = 0
    for _, shape, qtype in tensors(arch, file_type):
        block, type_size = gguf.GGML_QUANT_SIZES[qtype]
        assert shape[-1] % block == 0
        total += int(np.prod(shape)) // block * type_size
    assert abs(total - published_bytes) / published_bytes < 0.01
