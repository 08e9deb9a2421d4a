"""For random clusters and models: no placement ever claims more than a
device has free, and claims add up to at most what each device has."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corral.estimate.gguf import read_gguf_model
from corral.estimate.llama_cpp.memory import LlamaCppEstimate, estimate
from corral.estimate.llama_cpp.settings import settings_for
from corral.estimate.source import LocalFile
from corral.estimate.vllm import estimate_by_tp
from corral.scheduler import ClusterSnapshot, Placement, PlacementRequest, schedule
from corral.schemas.models import Backend, PlacementStrategy
from tests.fixtures.clusters import GIB, GPU_SIZES_GIB, node
from tests.fixtures.gguf_headers import generate
from tests.unit.test_scheduler import LLAMA_8B, LLAMA_8B_TENSORS

_ESTIMATES: list[LlamaCppEstimate] = []


@pytest.fixture(scope="module", autouse=True)
def _estimates(tmp_path_factory: pytest.TempPathFactory) -> None:
    files = generate(tmp_path_factory.mktemp("prop"))
    for name in ("llama-3.1-8b-q4_k_m", "llama-3.1-8b-f16", "llama-3.1-70b-q4_k_m",
                 "mixtral-8x7b-q4_k_m", "gemma-3-27b-q4_k_m"):  # fmt: skip
        model = read_gguf_model([LocalFile(Path(p)) for p in files[name]])
        _ESTIMATES.append(estimate(model, settings_for(8192)))


VLLM = [
    estimate_by_tp(LLAMA_8B, LLAMA_8B_TENSORS),
    estimate_by_tp(LLAMA_8B, LLAMA_8B_TENSORS, parameters=["--max-model-len", "131072"]),
]

workers = st.lists(
    st.tuples(
        st.lists(st.sampled_from(GPU_SIZES_GIB), max_size=4),
        st.sampled_from([4, 16, 64, 256]),
        st.integers(0, 3),  # GiB already claimed on each GPU
    ),
    min_size=1,
    max_size=6,
)


def _cluster(spec: list[tuple[list[int], int, int]]) -> ClusterSnapshot:
    nodes = []
    for i, (gpus, ram, claimed) in enumerate(spec):
        n = node(f"w{i}", gpus, worker_id=i + 1, ram=ram)
        for g in n.gpus:
            g.claimed = claimed * GIB
            g.reserved = GIB // 2
        nodes.append(n)
    return ClusterSnapshot(nodes)


def _check(c: ClusterSnapshot, p: Placement) -> None:
    for claim in p.claims:
        n = c.node(claim.worker_id)
        assert n is not None
        assert 0 <= claim.ram <= n.ram_free
        for index, nbytes in claim.gpus.items():
            g = n.gpu(index)
            assert g is not None and 0 <= nbytes <= g.free


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    spec=workers,
    model=st.integers(0, 6),
    offload=st.booleans(),
    distributed=st.booleans(),
    binpack=st.booleans(),
)
def test_no_placement_exceeds_free_memory(
    spec: list[tuple[list[int], int, int]],
    model: int,
    offload: bool,
    distributed: bool,
    binpack: bool,
) -> None:
    c = _cluster(spec)
    is_vllm = model >= len(_ESTIMATES)
    request = PlacementRequest(
        Backend.VLLM if is_vllm else Backend.LLAMA_CPP,
        VLLM[model - len(_ESTIMATES)] if is_vllm else _ESTIMATES[model],
        model_id=model,
        cpu_offloading=offload,
        distributed_inference=distributed,
        strategy=PlacementStrategy.BINPACK if binpack else PlacementStrategy.SPREAD,
    )
    for _ in range(8):  # keep placing replicas until the cluster is full
        result = schedule(request, c)
        if not isinstance(result, Placement):
            assert result.reasons
            break
        _check(c, result)
        c.apply(result.claims, model)
    for n in c.nodes:
        assert n.ram_claimed <= n.ram_total
        for g in n.gpus:
            assert g.claimed <= g.total - g.reserved
