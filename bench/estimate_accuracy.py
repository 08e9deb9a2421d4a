"""How close corral's llama.cpp memory estimate is to what llama-server allocates.

For GGUF models of several shapes (made by the test fixtures: dense, GQA,
MoE, sliding window, embedding; 15 MB to 0.5 GB; F16, Q8_0, Q4_0, Q4_K) and
several launch settings, start the real llama-server (CPU build, installed
with `corral backend install llama.cpp --gpu cpu`) with exactly the settings
the estimate assumed, read the buffer sizes it reports at start-up and the
process's resident memory, and compare. Target: every component within 5 %
or 32 MiB, whichever is larger; the total within 5 %.

    .venv/bin/python bench/estimate_accuracy.py [--json bench/results/estimate_accuracy.json]
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fixtures.gguf_models import BENCH_MODELS, write_model
from tests.fixtures.tiny_models import cached as tiny_models
from tests.fixtures.tiny_models import read_gpt2_vocab
from tests.helpers import free_port

from corral.backends.base import LaunchRequest
from corral.backends.llama_cpp.driver import LlamaCppDriver, _from_manifest
from corral.backends.llama_cpp.install import DEFAULT_VERSION, Flavour, cached_build
from corral.backends.process import running
from corral.estimate.gguf import read_gguf_model
from corral.estimate.llama_cpp.memory import CpuFeatures, estimate
from corral.estimate.llama_cpp.settings import settings_for
from corral.estimate.source import LocalFile
from corral.schemas.models import ModelCategory

MIB = 1024 * 1024
COMPONENTS = {
    "weights": "model",
    "repack": "repack",
    "kv": "kv",
    "compute": "compute",
    "output": "output",
}
VARIANTS = [
    (),
    ("-ctk", "q8_0", "-ctv", "q8_0"),
    ("-fa", "off", "-c", "4096"),
    ("-np", "1", "-c", "2048"),
    ("-ub", "1024", "-nkvo"),
]


def cpu_features() -> CpuFeatures:
    flags = Path("/proc/cpuinfo").read_text()
    return CpuFeatures(avx2=" avx2" in flags, avx512=" avx512f" in flags)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def within(estimated: int, actual: int) -> bool:
    return abs(estimated - actual) <= max(0.05 * actual, 32 * MIB)


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
    predicted = estimate(model, settings, cpu=cpu_features()).rows[0].host
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, default=Path("bench/results/estimate_accuracy.json"))
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
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"unit": "bytes", "rows": rows}, indent=2))
    print(f"wrote {args.json}")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
