"""Launch command lines: defaults, caps, placements, and the user's parameters winning."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from corral.backends.base import Installation, LaunchRequest, Placement
from corral.backends.llama_cpp.driver import LlamaCppDriver, rpc_server_launch
from corral.backends.vllm.driver import VllmDriver
from corral.estimate.vllm import IMAGES_PER_PROMPT, images_per_prompt
from corral.schemas.models import Backend, ModelCategory

LLAMA_FLAGS = frozenset({"--kv-unified", "--no-webui", "--fit", "--log-verbosity", "LLAMA_API_KEY"})
LLAMA = Installation(
    Backend.LLAMA_CPP,
    "0.3.36",
    "cuda",
    Path("/opt/l"),
    Path("/opt/l/bin/llama-server"),
    "0.5.0",
    LLAMA_FLAGS,
)
OLD_LLAMA = Installation(
    Backend.LLAMA_CPP,
    "b3000",
    "external",
    Path("/usr/bin"),
    Path("/usr/bin/llama-server"),
    "b3000",
    frozenset(),
)
VLLM_CPU = Installation(
    Backend.VLLM,
    "0.32.0",
    "cpu",
    Path("/opt/v"),
    Path("/opt/v/venv/bin/python"),
    "0.32.0",
    frozenset({"--runner", "--convert"}),
    launcher=("/opt/v/venv/bin/python", "-m", "vllm.entrypoints.openai.api_server"),
)
VLLM_GPU = Installation(
    Backend.VLLM,
    "0.32.0",
    "cuda",
    Path("/opt/g"),
    Path("/opt/g/venv/bin/vllm"),
    "0.32.0",
    frozenset({"--task"}),
    launcher=("/opt/g/venv/bin/vllm", "serve"),
)


def request(**kw: object) -> LaunchRequest:
    base: dict[str, object] = {
        "model_name": "tiny",
        "model_path": Path("/m/tiny.gguf"),
        "host": "10.0.0.5",
        "port": 40001,
        "api_key": "sekret",
    }
    return LaunchRequest(**(base | kw))  # type: ignore[arg-type]


def value(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_llama_defaults_on_cpu() -> None:
    cmd = LlamaCppDriver().command(LLAMA, request())
    argv = cmd.argv
    assert argv[0] == "/opt/l/bin/llama-server"
    assert value(argv, "--model") == "/m/tiny.gguf" and value(argv, "--alias") == "tiny"
    assert value(argv, "--host") == "10.0.0.5" and value(argv, "--port") == "40001"
    assert value(argv, "--ctx-size") == "8192" and value(argv, "--parallel") == "4"
    assert value(argv, "--n-gpu-layers") == "0"
    assert {"--metrics", "--no-webui", "--kv-unified"} <= set(argv)
    assert value(argv, "--fit") == "off"
    assert value(argv, "--log-verbosity") == "4"
    assert "sekret" not in argv and cmd.env["LLAMA_API_KEY"] == "sekret"
    assert cmd.env["CUDA_VISIBLE_DEVICES"] == ""  # a CPU placement hides the GPUs
    assert "--embeddings" not in argv and "--rpc" not in argv and "--tensor-split" not in argv


@pytest.mark.parametrize(
    ("trained", "expected"), [(2048, "2048"), (131072, "8192"), (None, "8192")]
)
def test_llama_context_is_the_models_capped_at_8192(trained: int | None, expected: str) -> None:
    argv = LlamaCppDriver().command(LLAMA, request(context_length=trained)).argv
    assert value(argv, "--ctx-size") == expected


@pytest.mark.parametrize(
    ("category", "flag"),
    [(ModelCategory.EMBEDDING, "--embeddings"), (ModelCategory.RERANKER, "--reranking")],
)
def test_llama_pooling_models(category: ModelCategory, flag: str) -> None:
    argv = LlamaCppDriver().command(LLAMA, request(categories=frozenset({category}))).argv
    assert flag in argv and value(argv, "--parallel") == "1" and "--kv-unified" not in argv


def test_llama_multi_gpu_split() -> None:
    placement = Placement(
        gpu_indices=(0, 2), gpu_vendor="nvidia", tensor_split=(0.6, 0.4), main_gpu=0
    )
    cmd = LlamaCppDriver().command(LLAMA, request(placement=placement))
    assert value(cmd.argv, "--n-gpu-layers") == "999"
    assert value(cmd.argv, "--tensor-split") == "0.6,0.4"
    assert value(cmd.argv, "--main-gpu") == "0"
    assert cmd.env["CUDA_VISIBLE_DEVICES"] == "0,2"


def test_llama_partial_offload_and_amd() -> None:
    placement = Placement(gpu_indices=(1,), gpu_vendor="amd", gpu_layers=17)
    cmd = LlamaCppDriver().command(LLAMA, request(placement=placement))
    assert value(cmd.argv, "--n-gpu-layers") == "17"
    assert cmd.env["HIP_VISIBLE_DEVICES"] == "1" and "CUDA_VISIBLE_DEVICES" not in cmd.env


def test_llama_distributed_over_rpc() -> None:
    placement = Placement(
        gpu_indices=(0,),
        gpu_vendor="nvidia",
        tensor_split=(1, 2, 2),
        rpc_endpoints=("10.0.0.6:50052", "10.0.0.7:50052"),
    )
    argv = LlamaCppDriver().command(LLAMA, request(placement=placement)).argv
    assert value(argv, "--rpc") == "10.0.0.6:50052,10.0.0.7:50052"
    assert value(argv, "--tensor-split") == "1,2,2"
    assert value(argv, "--n-gpu-layers") == "999"


def test_llama_projector_and_user_parameters_win() -> None:
    cmd = LlamaCppDriver().command(
        LLAMA,
        request(
            mmproj_path=Path("/m/mmproj.gguf"),
            backend_parameters=("--ctx-size", "32768", "--n-gpu-layers=5"),
            env={"CUDA_VISIBLE_DEVICES": "3", "LLAMA_ARG_THREADS": "4"},
        ),
    )
    assert value(cmd.argv, "--mmproj") == "/m/mmproj.gguf"
    # llama.cpp takes the last occurrence: the user's values come last.
    assert cmd.argv[-3:] == ["--ctx-size", "32768", "--n-gpu-layers=5"]
    assert cmd.env["CUDA_VISIBLE_DEVICES"] == "3" and cmd.env["LLAMA_ARG_THREADS"] == "4"


def test_old_llama_server_gets_only_flags_it_knows() -> None:
    cmd = LlamaCppDriver().command(OLD_LLAMA, request())
    assert value(cmd.argv, "--api-key") == "sekret" and "LLAMA_API_KEY" not in cmd.env
    assert "--fit" not in cmd.argv and "--no-webui" not in cmd.argv
    assert "--kv-unified" not in cmd.argv and "--log-verbosity" not in cmd.argv
    assert cmd.env == {}  # an unknown build: no visible-devices guess


def test_rpc_server_serves_one_gpu_with_the_tensor_cache(tmp_path: Path) -> None:
    cmd = rpc_server_launch(
        LLAMA,
        "10.0.0.6",
        50052,
        gpu_index=3,
        gpu_vendor="nvidia",
        flags=frozenset({"--cache", "--threads"}),
        cache_dir=tmp_path,
        threads=4,
    )
    assert cmd.argv == [
        "/opt/l/bin/rpc-server",
        "--host",
        "10.0.0.6",
        "--port",
        "50052",
        "--threads",
        "4",
        "--cache",
    ]
    assert cmd.env == {
        "LLAMA_CACHE": str(tmp_path),
        "CUDA_VISIBLE_DEVICES": "3",
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
    }


def test_rpc_server_for_a_simulated_gpu_hides_every_gpu(tmp_path: Path) -> None:
    """A simulated device stands for the CPU; an old build without ``--cache`` gets none."""
    cmd = rpc_server_launch(
        LLAMA,
        "10.0.0.6",
        50052,
        gpu_index=None,
        gpu_vendor=None,
        flags=frozenset(),
        cache_dir=tmp_path,
        threads=2,
    )
    assert "--cache" not in cmd.argv
    assert cmd.env == {"CUDA_VISIBLE_DEVICES": "", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}


def hf_request(**kw: object) -> LaunchRequest:
    return request(model_path=Path("/m/tiny-hf"), **kw)


def test_vllm_cpu_module_entry_point_and_defaults() -> None:
    cmd = VllmDriver().command(VLLM_CPU, hf_request(context_length=131072))
    argv = cmd.argv
    assert argv[:4] == [
        "/opt/v/venv/bin/python",
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
    ]
    assert value(argv, "--served-model-name") == "tiny"
    assert value(argv, "--max-model-len") == "8192"
    assert value(argv, "--gpu-memory-utilization") == "0.9"
    assert "--tensor-parallel-size" not in argv
    assert "sekret" not in argv and cmd.env["VLLM_API_KEY"] == "sekret"
    assert cmd.env["HF_HUB_OFFLINE"] == "1"


def test_vllm_serve_with_tensor_parallel() -> None:
    placement = Placement(gpu_indices=(0, 1, 2, 3), gpu_vendor="nvidia", tensor_parallel_size=4)
    cmd = VllmDriver().command(VLLM_GPU, hf_request(context_length=4096, placement=placement))
    assert cmd.argv[:3] == ["/opt/g/venv/bin/vllm", "serve", "/m/tiny-hf"]
    assert value(cmd.argv, "--tensor-parallel-size") == "4"
    assert value(cmd.argv, "--max-model-len") == "4096"
    assert cmd.env["CUDA_VISIBLE_DEVICES"] == "0,1,2,3"


def test_vllm_users_values_replace_the_defaults() -> None:
    placement = Placement(gpu_indices=(0, 1), tensor_parallel_size=2)
    params = (
        "--max-model-len=32768",
        "--tensor-parallel-size",
        "1",
        "--gpu-memory-utilization",
        "0.5",
    )
    argv = (
        VllmDriver()
        .command(
            VLLM_GPU,
            hf_request(context_length=131072, placement=placement, backend_parameters=params),
        )
        .argv
    )
    assert argv.count("--tensor-parallel-size") == 1
    assert argv.count("--gpu-memory-utilization") == 1
    assert not any(a.startswith("--max-model-len") and a != "--max-model-len=32768" for a in argv)
    assert argv[-5:] == list(params)


@pytest.mark.parametrize(
    ("install", "category", "expected"),
    [
        (VLLM_CPU, ModelCategory.EMBEDDING, ["--runner", "pooling", "--convert", "embed"]),
        (VLLM_CPU, ModelCategory.RERANKER, ["--runner", "pooling", "--convert", "score"]),
        (VLLM_GPU, ModelCategory.EMBEDDING, ["--task", "embed"]),
    ],
)
def test_vllm_pooling_in_each_spelling(
    install: Installation, category: ModelCategory, expected: list[str]
) -> None:
    argv = VllmDriver().command(install, hf_request(categories=frozenset({category}))).argv
    start = argv.index(expected[0])
    assert argv[start : start + len(expected)] == expected


def test_vllm_is_ready_only_when_it_lists_the_model() -> None:
    probes = VllmDriver().readiness(hf_request())
    assert [(p.path, p.expect_model) for p in probes] == [("/health", None), ("/v1/models", "tiny")]


def test_vllm_vision_models_get_an_image_limit_unless_the_user_sets_one() -> None:
    vision = frozenset({ModelCategory.LLM, ModelCategory.VISION})
    install = replace(VLLM_CPU, flags=VLLM_CPU.flags | {"--limit-mm-per-prompt"})
    argv = VllmDriver().command(install, hf_request(categories=vision)).argv
    assert json.loads(value(argv, "--limit-mm-per-prompt")) == {"image": IMAGES_PER_PROMPT}
    assert "--limit-mm-per-prompt" not in VllmDriver().command(install, hf_request()).argv
    own = ("--limit-mm-per-prompt", '{"image": 1}')
    argv = VllmDriver().command(install, hf_request(categories=vision, backend_parameters=own)).argv
    assert argv.count("--limit-mm-per-prompt") == 1 and argv[-2:] == list(own)
    assert images_per_prompt(own) == 1
    assert images_per_prompt(("--limit-mm-per-prompt", '{"image": {"count": 2}}')) == 2
    # An older vLLM without the flag is not given it.
    assert (
        "--limit-mm-per-prompt"
        not in VllmDriver().command(VLLM_CPU, hf_request(categories=vision)).argv
    )
