"""How close corral's llama.cpp memory estimate is to what llama-server allocates.

For GGUF models of several shapes (made by the test fixtures: dense, GQA,
MoE, sliding window, embedding; 15 MB to 0.5 GB; F16, Q8_0, Q4_0, Q4_K) and
several launch settings, start the real llama-server (CPU build, installed
with `corral backend install llama.cpp --gpu cpu`) with exactly the settings
the estimate assumed, read the buffer sizes it reports at start-up and the
process's resident memory, and compare. Target: every component within 5 %
or 32 MiB, whichever is larger; the total within 5 %.

With ``--vllm``, the same for vLLM's CPU build on two tiny checkpoints: the
weights, and the KV cache (tokens that 1 GiB of ``VLLM_CPU_KVCACHE_SPACE``
holds) and context length vLLM reports, against the estimate.

    .venv/bin/python bench/estimate_accuracy.py [--vllm] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.estimate_check import COMPONENTS, MIB, within
from tests.fixtures.gguf_models import BENCH_MODELS, write_model
from tests.fixtures.tiny_models import Shape, read_gpt2_vocab
from tests.fixtures.tiny_models import cached as tiny_models
from tests.helpers import free_port

from corral.backends.base import LaunchRequest
from corral.backends.llama_cpp.driver import LlamaCppDriver, _from_manifest
from corral.backends.llama_cpp.install import DEFAULT_VERSION, Flavour, cached_build
from corral.backends.process import running
from corral.backends.registry import driver
from corral.backends.vllm import install as vllm_install
from corral.estimate.gguf import read_gguf_model
from corral.estimate.llama_cpp.memory import CpuFeatures, estimate
from corral.estimate.llama_cpp.settings import settings_for
from corral.estimate.safetensors import read_safetensors
from corral.estimate.source import LocalFile
from corral.estimate.vllm import estimate as estimate_vllm
from corral.schemas.models import ModelCategory

VARIANTS = [
    (),
    ("-ctk", "q8_0", "-ctv", "q8_0"),
    ("-fa", "off", "-c", "4096"),
    ("-np", "1", "-c", "2048"),
    ("-ub", "1024", "-nkvo"),
]


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def measure(
    model_path: Path, params: tuple[str, ...], pooling: bool, work: Path
) -> dict[str, object]:
    installation = _from_manifest(
        cached_build(DEFAULT_VERSION, Flavour.CPU).path / "corral-install.json"  # type: ignore[union-attr]
    )
    model = read_gguf_model([LocalFile(model_path)])
    context = model.arch_value("context_length")
    settings = settings_for(
        context if isinstance(context, int) else None, pooling=pooling, parameters=params
    )
    predicted = estimate(model, settings, cpu=CpuFeatures.of_this_machine()).rows[0].host
    categories = frozenset({ModelCategory.EMBEDDING if pooling else ModelCategory.LLM})
    request = LaunchRequest(
        model_name="m",
        model_path=model_path,
        host="127.0.0.1",
        port=free_port(),
        api_key=secrets.token_urlsafe(8),
        categories=categories,
        context_length=context if isinstance(context, int) else None,
        backend_parameters=params,
    )
    log = work / f"{model_path.stem}-{len(params)}-{secrets.token_hex(2)}.log"
    with running(LlamaCppDriver(), installation, request, log, timeout=300) as process:
        assert process.process is not None
        rss = rss_bytes(process.process.pid)
    report = LlamaCppDriver().parse_memory(log.read_text())
    row: dict[str, object] = {"model": model_path.stem, "params": " ".join(params) or "(defaults)"}
    ok = True
    for ours, theirs in COMPONENTS.items():
        est, act = getattr(predicted, ours), report.total("CPU", theirs)
        row[ours] = {"estimate": est, "actual": act}
        ok &= within(est, act)
    est_total = predicted.total - predicted.footprint
    act_total = report.total("CPU")
    row["total"] = {"estimate": est_total, "actual": act_total}
    row["rss"] = {"estimate": predicted.total, "actual": rss}
    row["ok"] = ok and abs(est_total - act_total) <= 0.05 * act_total
    return row


VLLM_SHAPES = [
    Shape(),
    Shape(hidden=512, intermediate=1024, layers=4, heads=8, kv_heads=2, context=4096, seed=7),
]


def measure_vllm(shape: Shape, work: Path) -> dict[str, object]:
    # Links the cached environment into the work dir (installs it first if need be).
    vllm_install.install(
        work,
        vllm_install.DEFAULT_VERSION,
        vllm_install.detect_flavour(),
        lambda message: print(message, file=sys.stderr),
    )
    installs = driver("vllm").installed(work)
    checkpoint = tiny_models(shape).hf_dir
    config = json.loads((checkpoint / "config.json").read_text())
    tensors = read_safetensors(LocalFile(checkpoint / "model.safetensors"))
    predicted = estimate_vllm(config, tensors)
    request = LaunchRequest(
        model_name="m",
        model_path=checkpoint,
        host="127.0.0.1",
        port=free_port(),
        api_key=secrets.token_urlsafe(8),
        context_length=config["max_position_embeddings"],
        env={"VLLM_CPU_KVCACHE_SPACE": "1"},
    )
    log = work / f"vllm-{shape.hidden}-{shape.layers}.log"
    with running(driver("vllm"), installs[0], request, log, timeout=900):
        pass
    report = driver("vllm").parse_memory(log.read_text())
    weights = report.total("CPU", "weights")
    tokens = report.kv_cache_tokens or 0
    return {
        "checkpoint": f"{shape.layers}x{shape.hidden} h{shape.heads}/kv{shape.kv_heads}",
        "weights": {"estimate": predicted.weight_bytes, "actual": weights},
        "kv_tokens_per_gib": {"estimate": predicted.kv_tokens(1024**3), "actual": tokens},
        "max_model_len": {"estimate": predicted.max_model_len, "actual": report.context_length},
        "ok": within(predicted.weight_bytes, weights)
        and predicted.kv_tokens(1024**3) == tokens
        and predicted.max_model_len == report.context_length,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, default=Path("bench/results/estimate_accuracy.json"))
    parser.add_argument("--vllm", action="store_true", help="also measure vLLM (minutes)")
    args = parser.parse_args()
    if cached_build(DEFAULT_VERSION, Flavour.CPU) is None:
        print("llama.cpp is not installed: run `corral backend install llama.cpp --gpu cpu`")
        return 2
    work = Path(tempfile.mkdtemp(prefix="estimate-bench-"))
    tiny = tiny_models()
    vocab = read_gpt2_vocab()
    cases: list[tuple[Path, tuple[str, ...], bool]] = [
        (tiny.gguf_q8_0, (), False),
        (tiny.gguf_f16, ("-c", "1024"), False),
        (tiny.gguf_embed, (), True),
    ]
    for spec in BENCH_MODELS:
        path = write_model(work / f"{spec.name}.gguf", spec, vocab)
        pooling = spec.pooling is not None
        variants = [()] if pooling else VARIANTS
        cases += [(path, v, pooling) for v in variants]

    rows = [measure(path, params, pooling, work) for path, params, pooling in cases]
    header = (
        f"{'model':18} {'params':24} "
        + " ".join(f"{c:>17}" for c in COMPONENTS)
        + f" {'total':>17} {'ratio':>6} {'rss est/act':>17} ok"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        cells = []
        for c in [*COMPONENTS, "total"]:
            v = row[c]
            assert isinstance(v, dict)
            cells.append(f"{v['estimate'] / MIB:8.1f}/{v['actual'] / MIB:8.1f}")
        total = row["total"]
        rss = row["rss"]
        assert isinstance(total, dict) and isinstance(rss, dict)
        ratio = total["estimate"] / total["actual"] if total["actual"] else 0
        print(
            f"{row['model']:18} {row['params']:24} "
            + " ".join(f"{c:>17}" for c in cells)
            + f" {ratio:6.3f} {rss['estimate'] / MIB:8.1f}/{rss['actual'] / MIB:8.1f}"
            + f" {'yes' if row['ok'] else 'NO'}"
        )
    print(
        "(MiB, estimate/actual; 'total' is the sum of llama.cpp's buffers; rss adds the "
        "estimate's fixed footprint)"
    )
    vllm_rows = [measure_vllm(shape, work) for shape in VLLM_SHAPES] if args.vllm else []
    if vllm_rows:
        print()
        print(
            f"{'vLLM checkpoint':22} {'weights MiB est/act':>22} {'KV tokens/GiB est/act':>24} "
            f"{'max len est/act':>16} ok"
        )
        for row in vllm_rows:
            w, k, m = row["weights"], row["kv_tokens_per_gib"], row["max_model_len"]
            assert isinstance(w, dict) and isinstance(k, dict) and isinstance(m, dict)
            print(
                f"{row['checkpoint']:22} {w['estimate'] / MIB:10.1f}/{w['actual'] / MIB:<10.1f} "
                f"{k['estimate']:>11}/{k['actual']:<11} {m['estimate']:>7}/{m['actual']:<7} "
                f"{'yes' if row['ok'] else 'NO'}"
            )
        print("(vLLM logs its checkpoint size rounded to 0.01 GiB)")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps({"unit": "bytes", "llama.cpp": rows, "vllm": vllm_rows}, indent=2)
    )
    print(f"wrote {args.json}")
    return 0 if all(r["ok"] for r in rows + vllm_rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
