"""Vision models' projectors: which file is picked (server and worker share
the rule), what the user's parameters say, and where the estimate puts the
projector's memory."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.errors import InvalidInputError
from corral.estimate.gguf import read_gguf_model
from corral.estimate.llama_cpp.memory import estimate
from corral.estimate.llama_cpp.projector import check_projector, projector_compute
from corral.estimate.llama_cpp.settings import settings_for
from corral.estimate.source import LocalFile
from corral.schemas.models import Backend, LocalSource
from corral.sources.projectors import pick_mmproj, user_projector
from corral.worker.files.local import check_local
from corral.worker.files.result import ModelFilesError
from corral.worker.files.selection import RepoEntry, select_gguf
from tests.fixtures.gguf_headers import generate, write_projector_header

REPO = [
    "gemma-3-4b-it-Q4_K_M.gguf",
    "gemma-3-4b-it-Q8_0.gguf",
    "mmproj-model-bf16.gguf",
    "mmproj-model-f16.gguf",
    "mmproj-model-f32.gguf",
    "README.md",
]


def test_the_f16_projector_is_preferred_unless_the_precision_matches() -> None:
    assert pick_mmproj(REPO, "gemma-3-4b-it-Q4_K_M.gguf") == "mmproj-model-f16.gguf"
    assert pick_mmproj([*REPO, "mmproj-Q8_0.gguf"], "gemma-3-4b-it-Q8_0.gguf") == "mmproj-Q8_0.gguf"
    assert pick_mmproj(["a.gguf", "b.gguf"], "a.gguf") is None


def test_the_users_name_or_glob_wins() -> None:
    assert pick_mmproj(REPO, "gemma-3-4b-it-Q4_K_M.gguf", "*f32*") == "mmproj-model-f32.gguf"
    assert pick_mmproj(REPO, "x.gguf", "mmproj-model-bf16.gguf") == "mmproj-model-bf16.gguf"
    assert pick_mmproj(REPO, "x.gguf", "nothing-*.gguf") is None
    entries = [RepoEntry(n, 1) for n in REPO]
    chosen = select_gguf(entries, "*Q4_K_M.gguf", "repo a/b", mmproj="*bf16*")
    assert chosen.mmproj == "mmproj-model-bf16.gguf"
    assert select_gguf(entries, "*Q4_K_M.gguf", "repo a/b", projector=False).mmproj is None
    with pytest.raises(ModelFilesError, match="projector name"):
        select_gguf(entries, "*Q4_K_M.gguf", "repo a/b", mmproj="none-such.gguf")


@pytest.mark.parametrize(
    ("parameters", "expected"),
    [
        ((), None),
        (("--ctx-size", "4096"), None),
        (("--no-mmproj",), False),
        (("--mmproj", "/p/m.gguf"), "/p/m.gguf"),
        (("--mmproj=/p/m.gguf",), "/p/m.gguf"),
        (("-mm", "/p/m.gguf", "--no-mmproj"), False),
    ],
)
def test_what_the_backend_parameters_say(
    parameters: tuple[str, ...], expected: str | bool | None
) -> None:
    assert user_projector(parameters) == expected


def test_a_local_model_gets_the_projector_in_its_directory(tmp_path: Path) -> None:
    model = tmp_path / "tiny-f16.gguf"
    model.write_bytes(b"GGUF")
    source = LocalSource(type="local", path=str(model))
    assert check_local(source, Backend.LLAMA_CPP).mmproj is None
    (tmp_path / "mmproj-tiny-f16.gguf").write_bytes(b"GGUF")
    assert check_local(source, Backend.LLAMA_CPP).mmproj == tmp_path / "mmproj-tiny-f16.gguf"
    assert check_local(source, Backend.LLAMA_CPP, projector=False).mmproj is None
    named = LocalSource(type="local", path=str(model), mmproj=str(tmp_path / "other.gguf"))
    with pytest.raises(ModelFilesError, match="does not exist"):
        check_local(named, Backend.LLAMA_CPP)


def test_a_projector_sits_with_the_first_gpu_or_in_ram(tmp_path: Path) -> None:
    paths = generate(tmp_path / "models")
    model = read_gguf_model([LocalFile(p) for p in paths["llama-3.1-8b-q4_k_m"]])
    projector = read_gguf_model([LocalFile(write_projector_header(tmp_path / "mmproj.gguf"))])
    check_projector(projector, "mmproj.gguf")
    extra = projector.tensor_bytes + projector_compute(projector)
    # SigLIP at 896 px: 4,096 patches; the scores alone are 4096² x 16 heads x 4 bytes.
    assert projector_compute(projector) >= 4096 * 4096 * 16 * 4
    settings = settings_for(8192)
    plain = estimate(model, settings, ("CUDA0", "CUDA1"))
    vision = estimate(model, settings, ("CUDA0", "CUDA1"), projector=projector)
    full = plain.layers
    assert vision.full_offload.devices[0].total == plain.full_offload.devices[0].total + extra
    assert vision.full_offload.devices[1].total == plain.full_offload.devices[1].total
    assert vision.host(full).total == plain.host(full).total
    assert vision.host(0).total == plain.host(0).total + extra
    # With RPC devices first, the projector goes to the first local GPU.
    rpc = vision.device_usage(full, ["RPC0[10.0.0.2:5000]", "CUDA0"])
    assert rpc[1].total - rpc[0].total >= extra - 2 * plain.compute
    # --no-mmproj-offload keeps it in RAM.
    kept = estimate(
        model,
        settings_for(8192, parameters=["--no-mmproj-offload"]),
        ("CUDA0",),
        projector=projector,
    )
    assert kept.host(full).total == plain.host(full).total + extra


def test_a_file_that_is_no_projector_is_refused(tmp_path: Path) -> None:
    paths = generate(tmp_path / "models")
    model = read_gguf_model([LocalFile(p) for p in paths["llama-3.1-8b-q4_k_m"]])
    with pytest.raises(InvalidInputError, match="not a multimodal projector"):
        check_projector(model, "llama.gguf")
    audio = read_gguf_model(
        [LocalFile(write_projector_header(tmp_path / "audio.gguf", vision=False))]
    )
    with pytest.raises(InvalidInputError, match="no vision encoder"):
        check_projector(audio, "audio.gguf")
