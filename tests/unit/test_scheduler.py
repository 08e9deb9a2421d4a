"""Golden placements: real model shapes (header-only GGUF fixtures, real
Llama configs) on hand-made clusters, with the expected answer worked out
from the estimate independently of the scheduler's search."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.estimate.gguf import GGUFModel, read_gguf_model
from corral.estimate.llama_cpp.memory import LlamaCppEstimate, estimate
from corral.estimate.llama_cpp.settings import settings_for
from corral.estimate.safetensors import SafeTensor
from corral.estimate.source import LocalFile
from corral.estimate.vllm import estimate_by_tp
from corral.scheduler import (
    ClusterSnapshot,
    Placement,
    PlacementKind,
    PlacementRequest,
    Unplaceable,
    VllmNeeds,
    schedule,
)
from corral.schemas.models import Backend, PlacementStrategy
from tests.fixtures.clusters import GIB, cluster, node
from tests.fixtures.gguf_headers import generate
from tests.unit.test_vllm_estimate import LLAMA_8B

LLAMA_8B_TENSORS = [SafeTensor("w", "BF16", (8_030_261_248,))]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, GGUFModel]:
    files = generate(tmp_path_factory.mktemp("sched"))
    return {n: read_gguf_model([LocalFile(Path(p)) for p in paths]) for n, paths in files.items()}


def estimate_for(model: GGUFModel, *parameters: str) -> LlamaCppEstimate:
    ctx = model.arch_value("context_length")
    settings = settings_for(ctx if isinstance(ctx, int) else None, parameters=parameters)
    return estimate(model, settings)


@pytest.fixture(scope="module")
def gguf(models: dict[str, GGUFModel]) -> dict[str, LlamaCppEstimate]:
    return {name: estimate_for(m) for name, m in models.items()}


def llama(e: LlamaCppEstimate, **kw: object) -> PlacementRequest:
    return PlacementRequest(Backend.LLAMA_CPP, e, **kw)  # type: ignore[arg-type]


def vllm(needs: VllmNeeds, **kw: object) -> PlacementRequest:
    kw.setdefault("worker_selector", {"os": "linux", "arch": "amd64"})
    return PlacementRequest(Backend.VLLM, needs, **kw)  # type: ignore[arg-type]


def placed(result: Placement | Unplaceable) -> Placement:
    assert isinstance(result, Placement), result.message()  # type: ignore[union-attr]
    return result


def unplaceable(result: Placement | Unplaceable) -> Unplaceable:
    assert isinstance(result, Unplaceable), result
    return result


def assert_within_free(snapshot: ClusterSnapshot, p: Placement) -> None:
    for claim in p.claims:
        n = snapshot.node(claim.worker_id)
        assert n is not None
        assert claim.ram <= n.ram_free
        for index, nbytes in claim.gpus.items():
            g = n.gpu(index)
            assert g is not None and nbytes <= g.free


def most_layers_on_one_gpu(e: LlamaCppEstimate, free: int) -> int:
    """Independently of the scheduler: scan the estimate's table row by row."""
    return max(n for n in range(e.layers + 1) if e.row(n, ["GPU0"]).devices[0].total <= free)


def test_70b_q4_k_m_on_two_24_gib_gpus_is_split_over_both(
    gguf: dict[str, LlamaCppEstimate],
) -> None:
    e = gguf["llama-3.1-70b-q4_k_m"]
    c = cluster(node("w1", [24, 24]))
    p = placed(schedule(llama(e), c))
    assert p.kind is PlacementKind.MULTI_GPU and p.gpus == (0, 1)
    assert p.gpu_layers == e.layers == 81
    assert p.tensor_split == (24576.0, 24576.0)
    assert_within_free(c, p)


def test_fewest_gpus_first(gguf: dict[str, LlamaCppEstimate]) -> None:
    e = gguf["llama-3.1-70b-q4_k_m"]
    p = placed(schedule(llama(e), cluster(node("w1", [24, 24, 24, 24]))))
    assert len(p.gpus) == 2


def test_70b_on_one_24_gib_gpu_offloads_the_layers_that_fit(
    gguf: dict[str, LlamaCppEstimate],
) -> None:
    e = gguf["llama-3.1-70b-q4_k_m"]
    c = cluster(node("w1", [24], ram=128))
    p = placed(schedule(llama(e), c))
    assert p.kind is PlacementKind.PARTIAL_OFFLOAD
    expected = most_layers_on_one_gpu(e, 24 * GIB)
    assert 30 < expected < 60
    assert p.gpu_layers == expected
    assert f"{expected} of 81 layers" in p.summary
    assert_within_free(c, p)


def test_70b_at_32k_context_over_three_single_gpu_workers_uses_two_helpers(
    models: dict[str, GGUFModel],
) -> None:
    # 39.6 GiB of weights and 10 GiB of KV cache: more than two 24 GiB GPUs hold.
    e = estimate_for(models["llama-3.1-70b-q4_k_m"], "--ctx-size", "32768")
    c = cluster(
        node("a", [24], worker_id=1), node("b", [24], worker_id=2), node("c", [24], worker_id=3)
    )
    p = placed(schedule(llama(e), c))
    assert p.kind is PlacementKind.DISTRIBUTED
    assert len(p.helpers) == 2 and {h.worker_id for h in p.helpers} | {p.worker_id} == {1, 2, 3}
    assert [c.worker_id for c in p.claims] == [p.worker_id, *(h.worker_id for h in p.helpers)]
    assert all(c.gpus[0] > 10 * GIB for c in p.claims)  # every device holds its share
    assert len(p.tensor_split) == 3 and p.gpu_layers == 81
    assert_within_free(c, p)
    two = cluster(node("a", [24]), node("b", [24]))
    assert placed(schedule(llama(e), two)).kind is PlacementKind.PARTIAL_OFFLOAD


def test_each_helper_claims_what_the_estimate_puts_on_its_device(
    gguf: dict[str, LlamaCppEstimate],
) -> None:
    """The claim a helper's rpc-server holds is the estimate's figure for that
    device at the placement's split, and the layer spans cover every layer once."""
    e = gguf["llama-3.1-70b-q4_k_m"]
    c = cluster(node("a", [20], worker_id=1), node("b", [24], worker_id=2))
    p = placed(schedule(llama(e), c))
    assert p.kind is PlacementKind.DISTRIBUTED
    devices = [f"gpu{i}" for i in range(len(p.tensor_split))]
    usage = e.device_usage(p.gpu_layers or 0, devices, p.tensor_split)
    [helper] = p.helpers
    helper_claim = next(cl for cl in p.claims if cl.worker_id == helper.worker_id)
    assert helper_claim.gpus == {0: usage[0].total}  # helpers' devices come first
    assert p.claims[0].gpus == {0: usage[1].total}
    spans = p.layers
    assert [(s.worker_id, s.gpu) for s in spans] == [(helper.worker_id, 0), (p.worker_id, 0)]
    assert spans[0].first == 0 and spans[0].end == spans[1].first and spans[1].end == e.layers
    assert [s.memory for s in spans] == [u.total for u in usage]
    assert p.to_json()["layers"][0]["worker_name"] == helper.worker_name


def test_two_distributed_models_sharing_a_helper_never_double_book_it(
    gguf: dict[str, LlamaCppEstimate],
) -> None:
    """Two workers lend to two primaries; the second placement sees the
    first one's claims (as the placement service applies them) and fits in
    what is left, or does not fit at all."""
    e = gguf["llama-3.1-70b-q4_k_m"]
    c = cluster(
        node("p1", [28], worker_id=1),
        node("p2", [28], worker_id=2),
        node("h", [36], worker_id=3),
    )
    first = placed(schedule(llama(e, model_id=1), c))
    assert first.kind is PlacementKind.DISTRIBUTED
    c.apply(first.claims, 1)
    second = placed(schedule(llama(e, model_id=2), c))
    assert second.kind is PlacementKind.DISTRIBUTED
    assert_within_free(c, second)
    c.apply(second.claims, 2)
    # p1 lends its GPU to both (the second needs every worker's leftovers).
    assert 1 in {h.worker_id for h in first.helpers} & {h.worker_id for h in second.helpers}
    for worker_id, size in ((1, 28), (2, 28), (3, 36)):
        booked = sum(
            cl.gpus.get(0, 0)
            for p in (first, second)
            for cl in p.claims
            if cl.worker_id == worker_id
        )
        assert booked <= size * GIB
        n = c.node(worker_id)
        assert n is not None and (gpu := n.gpu(0)) is not None and gpu.free >= 0
    # A third copy no longer finds room anywhere on the GPUs.
    third = schedule(llama(e, model_id=3, cpu_offloading=False), c)
    assert isinstance(third, Unplaceable)


def test_without_distributed_inference_it_offloads_and_without_offloading_it_waits(
    models: dict[str, GGUFModel],
) -> None:
    e = estimate_for(models["llama-3.1-70b-q4_k_m"], "--ctx-size", "32768")
    c = cluster(node("a", [24]), node("b", [24]), node("c", [24]))
    p = placed(schedule(llama(e, distributed_inference=False), c))
    assert p.kind is PlacementKind.PARTIAL_OFFLOAD
    u = unplaceable(schedule(llama(e, distributed_inference=False, cpu_offloading=False), c))
    fit = most_layers_on_one_gpu(e, 24 * GIB)
    need = e.row(e.layers, ["GPU0"]).devices[0].total / GIB
    assert u.reasons[0] == (
        f"a: 24 GiB simulated (24.0 free), {need:.1f} GiB needed for all 81 layers, "
        f"{fit} fit; cpu_offloading is off"
    )
    assert len(u.reasons) == 3


def test_8b_fits_one_gpu_and_spread_prefers_the_emptier_worker(
    gguf: dict[str, LlamaCppEstimate],
) -> None:
    e = gguf["llama-3.1-8b-q4_k_m"]
    c = cluster(node("a", [24], worker_id=1), node("b", [24], worker_id=2))
    first = placed(schedule(llama(e, model_id=7), c))
    assert first.kind is PlacementKind.ONE_GPU and first.worker_name == "a"
    c.apply(first.claims, 7)
    second = placed(schedule(llama(e, model_id=7), c))
    assert second.worker_name == "b"  # replicas apart
    binpacked = placed(schedule(llama(e, model_id=7, strategy=PlacementStrategy.BINPACK), c))
    assert binpacked.worker_name == "a"  # the fuller GPU that still fits


def test_no_gpu_runs_on_cpu_only_when_offloading_is_allowed(
    gguf: dict[str, LlamaCppEstimate],
) -> None:
    e = gguf["llama-3.1-8b-q4_k_m"]
    c = cluster(node("cpu-box", [], ram=64))
    p = placed(schedule(llama(e), c))
    assert p.kind is PlacementKind.CPU and p.gpu_layers == 0 and p.gpus == ()
    assert p.claims[0].ram == e.host(0).total
    u = unplaceable(schedule(llama(e, cpu_offloading=False), c))
    assert u.reasons == ("cpu-box: no GPU, and cpu_offloading is off",)
    small = cluster(node("tiny", [], ram=2))
    assert "of RAM, 2.0 GiB free" in unplaceable(schedule(llama(e), small)).reasons[0]


def test_gpu_selector_pins_exactly_the_named_gpus(gguf: dict[str, LlamaCppEstimate]) -> None:
    e = gguf["llama-3.1-8b-q4_k_m"]
    c = cluster(node("w1", [24, 24, 24, 24]), node("w2", [80]))
    p = placed(schedule(llama(e, gpu_selector=("w1:1", "w1:3")), c))
    assert (p.worker_name, p.gpus) == ("w1", (1, 3))
    assert set(p.claims[0].gpus) == {1, 3}
    p = placed(schedule(llama(e, gpu_selector=("w1:2",)), c))
    assert (p.worker_name, p.gpus, p.kind) == ("w1", (2,), PlacementKind.ONE_GPU)
    u = unplaceable(schedule(llama(e, gpu_selector=("w3:0",)), c))
    assert "w2: none of its GPUs is in gpu_selector" in u.reasons


def test_selector_readiness_and_disk_are_explained(gguf: dict[str, LlamaCppEstimate]) -> None:
    e = gguf["llama-3.1-8b-q4_k_m"]
    c = cluster(
        node("down", [80], ready=False),
        node("mac", [80], os="darwin"),
        node("full-disk", [80], disk_free=1),
    )
    u = unplaceable(schedule(llama(e, worker_selector={"os": "linux"}, disk_bytes=5 * GIB), c))
    assert set(u.reasons) == {
        "down: worker is not ready",
        "mac: worker_selector wants os=linux, this worker has os=darwin",
        "full-disk: 1.0 GiB free on disk, the model files need 5.0 GiB",
    }
    assert u.summary.startswith("no worker passes the filters")


def test_vllm_8b_bf16_takes_one_24_gib_gpu_at_8k_context_and_two_at_128k() -> None:
    c = cluster(node("w", [24, 24, 24, 24]))
    needs = estimate_by_tp(LLAMA_8B, LLAMA_8B_TENSORS)
    assert sorted(needs) == [1, 2, 4, 8]
    p = placed(schedule(vllm(needs), c))
    assert p.tensor_parallel_size == 1 and p.kind is PlacementKind.ONE_GPU
    assert p.claims[0].gpus == {0: int(0.9 * 24 * GIB)}
    long = estimate_by_tp(LLAMA_8B, LLAMA_8B_TENSORS, parameters=["--max-model-len", "131072"])
    p = placed(schedule(vllm(long), c))
    assert p.tensor_parallel_size == 2 and p.kind is PlacementKind.TENSOR_PARALLEL
    small = cluster(node("w", [16, 16, 16, 16]))
    assert placed(schedule(vllm(needs), small)).tensor_parallel_size == 2


def test_vllm_never_gets_a_tensor_parallel_size_the_heads_do_not_allow() -> None:
    long = estimate_by_tp(LLAMA_8B, LLAMA_8B_TENSORS, parameters=["--max-model-len", "131072"])
    three = cluster(node("w", [24, 24, 24]))
    # tp 2 fits, tp 3 would be "fewer GPUs than 4" but 32 heads do not split in 3.
    assert placed(schedule(vllm(long), three)).tensor_parallel_size == 2
    huge = {tp: e for tp, e in long.items() if tp > 2}  # as if only tp >= 4 could hold it
    u = unplaceable(schedule(vllm(huge), three))
    assert "tp 4:" in u.reasons[0]


def test_vllm_honours_the_users_tensor_parallel_size() -> None:
    needs = estimate_by_tp(LLAMA_8B, LLAMA_8B_TENSORS, parameters=["-tp", "4"])
    assert list(needs) == [4]
    p = placed(schedule(vllm(needs), cluster(node("w", [80, 80, 80, 80, 80]))))
    assert p.tensor_parallel_size == 4 and len(p.gpus) == 4


def test_vllm_only_on_linux() -> None:
    needs = estimate_by_tp(LLAMA_8B, LLAMA_8B_TENSORS)
    c = cluster(node("mac", [64], os="darwin", arch="arm64"))
    u = unplaceable(schedule(vllm(needs, worker_selector={}), c))
    assert u.reasons == ("mac: vLLM runs only on Linux, this worker runs darwin",)


def test_vllm_gpu_selector_sets_the_tensor_parallel_size() -> None:
    needs = estimate_by_tp(LLAMA_8B, LLAMA_8B_TENSORS)
    p = placed(schedule(vllm(needs, gpu_selector=("w:0", "w:2")), cluster(node("w", [80] * 4))))
    assert (p.gpus, p.tensor_parallel_size) == ((0, 2), 2)


def test_vllm_wants_its_share_of_each_gpu_free() -> None:
    needs = estimate_by_tp(LLAMA_8B, LLAMA_8B_TENSORS)
    c = cluster(node("w", [24]))
    c.nodes[0].gpus[0].claimed = 4 * GIB  # 20 GiB free < 90 % of 24 GiB
    u = unplaceable(schedule(vllm(needs), c))
    assert "0 qualify" in u.reasons[0]


def test_vllm_runs_on_a_cpu_only_linux_worker() -> None:
    needs = estimate_by_tp(LLAMA_8B, LLAMA_8B_TENSORS)
    p = placed(schedule(vllm(needs), cluster(node("cpu", [], ram=64))))
    assert p.kind is PlacementKind.CPU and p.gpus == ()


def test_same_snapshot_same_answer(gguf: dict[str, LlamaCppEstimate]) -> None:
    e = gguf["mixtral-8x7b-q4_k_m"]
    make = lambda: cluster(*(node(f"w{i}", [24, 24]) for i in range(5)))  # noqa: E731
    assert schedule(llama(e), make()) == schedule(llama(e), make())


def test_no_workers_at_all() -> None:
    needs = estimate_by_tp(LLAMA_8B, LLAMA_8B_TENSORS)
    assert unplaceable(schedule(vllm(needs), cluster())).summary == "no worker has registered yet"
