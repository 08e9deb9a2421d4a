"""The llama.cpp memory model on the shapes of real models (header-only
fixtures), against hand-computed numbers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral.errors import InvalidInputError
from corral.estimate.gguf import GGUFModel, read_gguf_model
from corral.estimate.llama_cpp.memory import GPU_FOOTPRINT, CpuFeatures, estimate, layer_ranges
from corral.estimate.llama_cpp.settings import LlamaCppSettings, settings_for
from corral.estimate.source import LocalFile
from tests.fixtures.gguf_headers import generate

GIB = 1024**3


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, GGUFModel]:
    files = generate(tmp_path_factory.mktemp("golden"))
    return {name: read_gguf_model([LocalFile(p) for p in paths]) for name, paths in files.items()}


def _bytes(model: GGUFModel, *names: str) -> int:
    return sum(t.nbytes for t in model.tensors if t.name in names)


def test_llama_3_1_8b_defaults_and_kv(models: dict[str, GGUFModel]) -> None:
    m = models["llama-3.1-8b-q4_k_m"]
    s = settings_for(131072)
    assert (s.ctx_size, s.parallel, s.kv_unified) == (8192, 4, True)
    e = estimate(m, s, ["CUDA0"])
    assert len(e.rows) == 34  # 0..32 repeating layers, plus the output layer
    full = e.full_offload
    gpu = full.device("CUDA0")
    # 32 layers x 8192 cells x 8 KV heads x 128 dims x 2 bytes x (K + V) = 1 GiB exactly.
    assert gpu.kv == GIB and full.host.kv == 0
    embd = _bytes(m, "token_embd.weight")
    assert gpu.weights == m.tensor_bytes - embd  # token embeddings stay on the host
    assert full.host.weights == embd
    assert gpu.footprint == GPU_FOOTPRINT and gpu.compute > 0
    cpu_only = e.rows[0]
    assert cpu_only.device("CUDA0").weights == 0 and cpu_only.host.kv == GIB


def test_output_layer_goes_last_and_partial_offload(models: dict[str, GGUFModel]) -> None:
    m = models["llama-3.1-8b-q4_k_m"]
    e = estimate(m, settings_for(131072), ["CUDA0"])
    output = _bytes(m, "output.weight", "output_norm.weight")
    layer = sum(t.nbytes for t in m.tensors if t.name.startswith("blk.31."))
    assert e.rows[1].device("CUDA0").weights == output  # the output layer first
    assert e.rows[2].device("CUDA0").weights == output + layer
    assert e.rows[2].device("CUDA0").kv == GIB // 32  # one layer's KV
    # Memory only moves from host to device as layers are offloaded.
    device_totals = [r.device("CUDA0").weights for r in e.rows]
    assert device_totals == sorted(device_totals)


def test_tensor_split_over_two_devices(models: dict[str, GGUFModel]) -> None:
    m = models["llama-3.1-8b-q4_k_m"]
    s = settings_for(131072, parameters=["--tensor-split", "1,1"])
    full = estimate(m, s, ["CUDA0", "RPC0[10.0.0.2:50052]"]).full_offload
    a, b = full.device("CUDA0"), full.device("RPC0[10.0.0.2:50052]")
    # llama.cpp: layer i of 33 goes to the first device while i/33 < 0.5.
    assert a.kv == 17 * GIB // 32 and b.kv == 15 * GIB // 32
    assert b.footprint == 0  # an rpc-server's device: its own worker counts that
    assert a.weights + b.weights + full.host.weights == m.tensor_bytes


def test_no_kv_offload_and_cache_types(models: dict[str, GGUFModel]) -> None:
    m = models["llama-3.1-8b-q4_k_m"]
    s = settings_for(131072, parameters=["-nkvo", "-ctk", "q8_0", "-ctv", "q4_0"])
    full = estimate(m, s, ["CUDA0"]).full_offload
    assert full.device("CUDA0").kv == 0
    # K at q8_0 (34 bytes per 32) and V at q4_0 (18 bytes per 32).
    assert full.host.kv == 32 * 8192 * 1024 * (34 + 18) // 32


def test_sliding_window_layers_of_gemma_3(models: dict[str, GGUFModel]) -> None:
    m = models["gemma-3-27b-q4_k_m"]
    e = estimate(m, settings_for(131072), ["CUDA0"])
    # Every 6th layer attends to all 8192 cells; the other 52 to
    # pad256(1024 x 4 slots + 512) = 4608 cells. 16 KV heads x 128 dims x f16.
    per_cell = 16 * 128 * 2 * 2
    assert e.full_offload.device("CUDA0").kv == 10 * 8192 * per_cell + 52 * 4608 * per_cell
    # Tied embeddings: the output layer's device gets its own copy.
    embd = _bytes(m, "token_embd.weight")
    assert e.full_offload.device("CUDA0").weights == m.tensor_bytes - embd + embd


def test_mla_cache_of_deepseek_r1(models: dict[str, GGUFModel]) -> None:
    m = models["deepseek-r1-q4_k_m"]
    assert len(m.parts) == 9
    e = estimate(m, settings_for(163840), ["CUDA0"])
    # One 576-wide latent (512 + 64 rope dims) per token and layer, no V cache.
    assert e.full_offload.device("CUDA0").kv == 61 * 8192 * 576 * 2


def test_qwen_72b_split_file(models: dict[str, GGUFModel]) -> None:
    e = estimate(models["qwen2.5-72b-q4_k_m"], settings_for(32768), ["CUDA0", "CUDA1"])
    kv = sum(d.kv for d in e.full_offload.devices)
    assert kv == 80 * 8192 * 8 * 128 * 2 * 2  # 2.5 GiB


def test_cpu_repack_depends_on_the_cpu(models: dict[str, GGUFModel]) -> None:
    m = models["llama-3.1-8b-q4_k_m"]
    s = settings_for(131072)
    with_avx2 = estimate(m, s, cpu=CpuFeatures(avx2=True)).rows[0].host
    without = estimate(m, s, cpu=CpuFeatures(avx2=False)).rows[0].host
    assert without.repack == 0
    q4k_matrices = sum(
        t.nbytes for t in m.tensors if t.name.startswith("blk.") and t.type.name == "Q4_K"
    )
    assert with_avx2.repack == q4k_matrices


@pytest.mark.parametrize(
    ("params", "field", "expected"),
    [
        (["-c", "4096"], "ctx_size", 4096),
        (["--ctx-size=2048"], "ctx_size", 2048),
        (["-np", "1"], "parallel", 1),
        (["-ngl", "20"], "gpu_layers", 20),
        (["--n-gpu-layers", "all"], "gpu_layers", 999),
        (["-ts", "3,1"], "tensor_split", (3.0, 1.0)),
        (["-fa", "off"], "flash_attn", "off"),
        (["-b", "1024", "-ub", "256"], "ubatch", 256),
        (["--no-kv-offload"], "kv_offload", False),
        (["-c", "4096", "-c", "1024"], "ctx_size", 1024),
    ],
)
def test_user_parameters_change_the_settings(
    params: list[str], field: str, expected: object
) -> None:
    assert getattr(settings_for(131072, parameters=params), field) == expected


@pytest.mark.parametrize(
    "params", [["-c"], ["-ctk", "q3_k"], ["-np", "0"], ["-ts", "a,b"], ["-fa", "maybe"]]
)
def test_bad_parameters_are_named(params: list[str]) -> None:
    with pytest.raises(InvalidInputError, match=params[0]):
        settings_for(8192, parameters=params)


def test_embedding_defaults() -> None:
    s = settings_for(512, pooling=True)
    assert s == LlamaCppSettings(ctx_size=512, parallel=1, kv_unified=False, embeddings=True)


def _naive_layer_devices(n_layer: int, gpu_layers: int, split: list[float]) -> list[int | None]:
    """llama.cpp's rule spelt out per layer: the device of each layer, None for the CPU."""
    from bisect import bisect_right

    start = max(n_layer + 1 - gpu_layers, 0)
    active = min(gpu_layers, n_layer + 1)
    total, running, points = sum(split), 0.0, []
    for s in split:
        running += s
        points.append(running / total)
    return [
        None if il < start else min(bisect_right(points, (il - start) / active), len(split) - 1)
        for il in range(n_layer + 1)
    ]


@given(
    n_layer=st.integers(1, 130),
    gpu_layers=st.integers(0, 140),
    split=st.lists(st.floats(0, 200, allow_nan=False), min_size=1, max_size=9).filter(
        lambda xs: sum(xs) > 0
    ),
)
def test_layer_ranges_match_llama_cpp_rule_layer_by_layer(
    n_layer: int, gpu_layers: int, split: list[float]
) -> None:
    expected = _naive_layer_devices(n_layer, gpu_layers, split)
    got: list[int | None] = [None] * (n_layer + 1)
    for j, (a, b) in enumerate(layer_ranges(n_layer, gpu_layers, split)):
        for il in range(a, b):
            got[il] = j
    assert got == expected
