"""The llama.cpp estimate against what the real llama-server allocates.

A smaller cut of ``bench/estimate_accuracy.py`` that runs with the suite, so a
change that breaks the estimate fails here: every component within 5 % or
32 MiB, the total within 5 %.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.backends.base import Installation
from corral.backends.llama_cpp.driver import LlamaCppDriver
from corral.backends.process import running
from corral.estimate.gguf import read_gguf_model
from corral.estimate.llama_cpp.memory import CpuFeatures, estimate
from corral.estimate.llama_cpp.settings import settings_for
from corral.estimate.source import LocalFile
from corral.schemas.models import ModelCategory
from tests.backends import install_llama_cpp, launch_request
from tests.estimate_check import COMPONENTS, MIB, within
from tests.fixtures.gguf_models import BENCH_MODELS, write_model
from tests.fixtures.tiny_models import TinyModels, read_gpt2_vocab


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Installation:
    return install_llama_cpp(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, tiny_models: TinyModels) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    vocab = read_gpt2_vocab()
    chosen = {
        s.name: s for s in BENCH_MODELS if s.name in ("qwen3-q4_k", "swa-gemma3-q8_0", "moe-q8_0")
    }
    paths = {name: write_model(root / f"{name}.gguf", spec, vocab) for name, spec in chosen.items()}
    return {**paths, "tiny-embed": tiny_models.gguf_embed}


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("qwen3-q4_k", ()),
        ("qwen3-q4_k", ("-ctk", "q8_0", "-ctv", "q8_0", "-np", "2")),
        ("swa-gemma3-q8_0", ("-fa", "off", "-c", "4096")),
        ("moe-q8_0", ("-ub", "1024", "-nkvo")),
        ("tiny-embed", ()),
    ],
)
def test_estimate_matches_llama_server(
    llama: Installation, models: dict[str, Path], tmp_path: Path, name: str, params: tuple[str, ...]
) -> None:
    path = models[name]
    model = read_gguf_model([LocalFile(path)])
    context = model.arch_value("context_length")
    assert isinstance(context, int)
    pooling = name == "tiny-embed"
    predicted = (
        estimate(
            model,
            settings_for(context, pooling=pooling, parameters=params),
            cpu=CpuFeatures.of_this_machine(),
        )
        .rows[0]
        .host
    )
    categories = frozenset({ModelCategory.EMBEDDING if pooling else ModelCategory.LLM})
    request = launch_request(
        path, categories=categories, context_length=context, backend_parameters=params
    )
    with running(LlamaCppDriver(), llama, request, tmp_path / "llama.log", timeout=120):
        pass
    actual = LlamaCppDriver().parse_memory((tmp_path / "llama.log").read_text())
    for ours, theirs in COMPONENTS.items():
        est, act = getattr(predicted, ours), actual.total("CPU", theirs)
        assert within(est, act), (ours, est / MIB, act / MIB)
    total = predicted.total - predicted.footprint
    assert abs(total - actual.total("CPU")) <= 0.05 * actual.total("CPU")
