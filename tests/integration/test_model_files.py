"""The worker's model files: local paths checked, Hugging Face repos downloaded
from a FAKE hub (``tests/fake_hub.py``: real HTTP over loopback, real
huggingface_hub) into a real cache on disk."""

from __future__ import annotations

import asyncio
import importlib.util
import itertools
import os
import random
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import huggingface_hub.constants
import pytest

from corral.schemas.models import Backend, HuggingFaceSource, LocalSource, ModelScopeSource
from corral.worker.files import ModelFiles, ModelFilesError, fetch_model_files
from tests.fake_hub import FakeHub, commit_sha, serve_hub
from tests.helpers import free_port

TOKEN = "hf_fake_token_for_tests"
SLOW_LINK_DEADLINE_S = 30
SMALL_WRITE = 16 * 1024


def payload(size: int, seed: str) -> bytes:
    return random.Random(seed).randbytes(size)


@pytest.fixture(autouse=True)
def no_ambient_token(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """huggingface_hub sends HF_TOKEN or the token file when given no token;
    neither may leak from the machine into these tests."""
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))


@pytest.fixture
def small_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    """huggingface_hub writes a download to disk 10 MiB at a time; these tests'
    files are a few hundred KiB, so progress could only be seen with 16 KiB."""
    monkeypatch.setattr(huggingface_hub.constants, "DOWNLOAD_CHUNK_SIZE", SMALL_WRITE)


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[FakeHub]:
    with serve_hub(tmp_path / "hub", gated={"org/gated": TOKEN}) as fake:
        yield fake


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "models"


def hf(repo: str, filename: str | None = None, revision: str = "main") -> HuggingFaceSource:
    return HuggingFaceSource(type="huggingface", repo_id=repo, filename=filename, revision=revision)


async def fetch(
    hub: FakeHub,
    source: HuggingFaceSource,
    cache: Path,
    backend: Backend = Backend.LLAMA_CPP,
    **options: Any,
) -> tuple[ModelFiles, list[float]]:
    progress: list[float] = []
    files = await fetch_model_files(
        source, backend, cache, progress.append, hf_endpoint=hub.url, **options
    )
    return files, progress


def downloaded(hub: FakeHub, repo: str) -> set[str]:
    return {r.path.rsplit("/resolve/", 1)[1].split("/", 1)[1] for r in hub.body_gets(repo)}


# --- local paths ----------------------------------------------------------------


async def fetch_local(path: Path, backend: Backend = Backend.LLAMA_CPP) -> ModelFiles:
    progress: list[float] = []
    files = await fetch_model_files(
        LocalSource(type="local", path=str(path)), backend, path.parent, progress.append
    )
    assert progress == [1.0]
    return files


async def test_local_gguf_file(tmp_path: Path) -> None:
    model = tmp_path / "model.gguf"
    model.write_bytes(b"GGUF")
    assert await fetch_local(model) == ModelFiles(path=model, mmproj=None)


async def test_local_path_missing(tmp_path: Path) -> None:
    with pytest.raises(ModelFilesError) as caught:
        await fetch_local(tmp_path / "absent.gguf")
    assert caught.value.message == f"{tmp_path / 'absent.gguf'} does not exist on this worker."


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
async def test_local_file_unreadable(tmp_path: Path) -> None:
    model = tmp_path / "model.gguf"
    model.write_bytes(b"GGUF")
    model.chmod(0)
    with pytest.raises(ModelFilesError, match="may not read") as caught:
        await fetch_local(model)
    assert str(model) in caught.value.message


async def test_local_split_model_needs_every_part(tmp_path: Path) -> None:
    parts = [tmp_path / f"big-0000{n}-of-00003.gguf" for n in (1, 2, 3)]
    for part in parts:
        part.write_bytes(b"GGUF")
    # Any part names the model; llama.cpp is given the first.
    assert (await fetch_local(parts[2])).path == parts[0]
    parts[1].unlink()
    with pytest.raises(ModelFilesError) as caught:
        await fetch_local(parts[0])
    assert caught.value.message.startswith(f"{parts[1]} does not exist on this worker")
    assert "3-part split model" in caught.value.message


async def test_local_directory_needs_config_for_vllm(tmp_path: Path) -> None:
    model = tmp_path / "checkpoint"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"{}")
    with pytest.raises(ModelFilesError) as caught:
        await fetch_local(model, Backend.VLLM)
    assert caught.value.message == f"{model} has no config.json, so vLLM cannot load it."
    (model / "config.json").write_text("{}")
    assert await fetch_local(model, Backend.VLLM) == ModelFiles(path=model)
    with pytest.raises(ModelFilesError, match=r"llama\.cpp needs a \.gguf file"):
        await fetch_local(model, Backend.LLAMA_CPP)


# --- Hugging Face: what is fetched -----------------------------------------------


VISION_REPO = {
    "README.md": b"# a vision model",
    "model-Q4_K_M-00001-of-00002.gguf": payload(40_000, "q4-1"),
    "model-Q4_K_M-00002-of-00002.gguf": payload(30_000, "q4-2"),
    "model-Q8_0.gguf": payload(50_000, "q8"),
    "mmproj-model-bf16.gguf": payload(5_000, "mm-bf16"),
    "mmproj-model-f16.gguf": payload(5_000, "mm-f16"),
    "mmproj-model-f32.gguf": payload(5_000, "mm-f32"),
    "mmproj-model-Q8_0.gguf": payload(5_000, "mm-q8"),
}


@pytest.mark.parametrize(
    ("glob", "model_files", "mmproj"),
    [
        # No Q4_K_M projector: the f16 one, though bf16 comes first by name.
        (
            "*Q4_K_M*.gguf",
            ["model-Q4_K_M-00001-of-00002.gguf", "model-Q4_K_M-00002-of-00002.gguf"],
            "mmproj-model-f16.gguf",
        ),
        # The projector of the model's own precision.
        ("*Q8_0.gguf", ["model-Q8_0.gguf"], "mmproj-model-Q8_0.gguf"),
        # A glob naming the second part still means the whole model, run from part 1.
        (
            "model-Q4_K_M-00002-of-00002.gguf",
            ["model-Q4_K_M-00001-of-00002.gguf", "model-Q4_K_M-00002-of-00002.gguf"],
            "mmproj-model-f16.gguf",
        ),
    ],
)
async def test_gguf_glob_fetches_the_model_its_parts_and_a_projector(
    hub: FakeHub, cache: Path, glob: str, model_files: list[str], mmproj: str
) -> None:
    hub.add_repo("org/vision", VISION_REPO)
    files, progress = await fetch(hub, hf("org/vision", glob), cache)

    snapshot = files.path.parent
    assert snapshot.name == commit_sha("org/vision", "main")
    assert files.path == snapshot / model_files[0]
    assert files.mmproj == snapshot / mmproj
    for name in [*model_files, mmproj]:
        assert (snapshot / name).read_bytes() == VISION_REPO[name]
    assert downloaded(hub, "org/vision") == {*model_files, mmproj}
    assert progress[-1] == 1.0


async def test_gguf_split_part_missing_from_repo(hub: FakeHub, cache: Path) -> None:
    hub.add_repo("org/broken", {"m-00001-of-00002.gguf": b"GGUF"})
    with pytest.raises(ModelFilesError) as caught:
        await fetch(hub, hf("org/broken", "*.gguf"), cache)
    assert caught.value.message == (
        "Hugging Face repo org/broken at revision main lacks m-00002-of-00002.gguf: "
        "m-00001-of-00002.gguf is part of a 2-part split model and every part is needed."
    )
    assert hub.body_gets("org/broken") == []


async def test_glob_matching_nothing_lists_the_repo(hub: FakeHub, cache: Path) -> None:
    hub.add_repo("org/vision", VISION_REPO)
    with pytest.raises(ModelFilesError) as caught:
        await fetch(hub, hf("org/vision", "*Q5_K_M.gguf"), cache)
    assert caught.value.message.startswith(
        "No GGUF file in Hugging Face repo org/vision at revision main matches '*Q5_K_M.gguf'; "
        "its GGUF files are model-Q4_K_M-00001-of-00002.gguf, "
    )
    assert "mmproj" not in caught.value.message


CHECKPOINT_REPO = {
    ".gitattributes": b"*.safetensors filter=lfs",
    "README.md": b"# a checkpoint",
    "config.json": b'{"architectures": ["LlamaForCausalLM"]}',
    # Distinct contents: files with equal bytes share one blob, fetched once.
    "generation_config.json": b'{"temperature": 0.7}',
    "tokenizer.json": b'{"model": {}}',
    "tokenizer_config.json": b'{"bos_token": "<s>"}',
    "special_tokens_map.json": b'{"eos_token": "</s>"}',
    "tokenizer.model": b"sentencepiece",
    "chat_template.jinja": b"{{ messages }}",
    "model.safetensors.index.json": b'{"weight_map": {}}',
    "model-00001-of-00002.safetensors": payload(20_000, "st-1"),
    "model-00002-of-00002.safetensors": payload(20_000, "st-2"),
    "consolidated.safetensors": payload(40_000, "consolidated"),
    "pytorch_model.bin": payload(40_000, "bin"),
    "model-Q4_0.gguf": payload(10_000, "gguf"),
    "original/consolidated.00.pth": payload(40_000, "original"),
    "original/params.json": b'{"dim": 8}',
    "images/logo.png": b"png",
}


async def test_checkpoint_fetches_only_what_vllm_loads(hub: FakeHub, cache: Path) -> None:
    hub.add_repo("org/checkpoint", CHECKPOINT_REPO)
    files, _ = await fetch(hub, hf("org/checkpoint"), cache, Backend.VLLM)

    expected = {
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "tokenizer.model",
        "chat_template.jinja",
        "model.safetensors.index.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    }
    assert downloaded(hub, "org/checkpoint") == expected
    assert files.path.name == commit_sha("org/checkpoint", "main")
    assert {p.name for p in files.path.iterdir()} == expected
    assert files.mmproj is None
    assert (files.path / "config.json").read_bytes() == CHECKPOINT_REPO["config.json"]


async def test_checkpoint_without_safetensors_takes_the_pickles(hub: FakeHub, cache: Path) -> None:
    hub.add_repo(
        "org/old",
        {"config.json": b"{}", "pytorch_model.bin": b"weights", "model.gguf": b"GGUF"},
    )
    await fetch(hub, hf("org/old"), cache, Backend.VLLM)
    assert downloaded(hub, "org/old") == {"config.json", "pytorch_model.bin"}


async def test_revision_is_honoured(hub: FakeHub, cache: Path) -> None:
    hub.add_repo("org/revs", {"model.gguf": b"GGUF main"}, revision="main")
    hub.add_repo("org/revs", {"model.gguf": b"GGUF v2"}, revision="v2")

    v2, _ = await fetch(hub, hf("org/revs", "*.gguf", revision="v2"), cache)
    main, _ = await fetch(hub, hf("org/revs", "*.gguf"), cache)

    assert v2.path.read_bytes() == b"GGUF v2"
    assert v2.path.parent.name == commit_sha("org/revs", "v2")
    assert main.path.read_bytes() == b"GGUF main"
    assert any(r.path == "/api/models/org/revs/revision/v2" for r in hub.requests)

    with pytest.raises(ModelFilesError) as caught:
        await fetch(hub, hf("org/revs", "*.gguf", revision="v3"), cache)
    assert caught.value.message == (
        f"Hugging Face repo org/revs has no revision 'v3' at {hub.url}."
    )


# --- Hugging Face: failures -------------------------------------------------------


async def test_gated_repo_needs_the_token(hub: FakeHub, cache: Path) -> None:
    hub.add_repo("org/gated", {"model.gguf": b"GGUF gated"})

    with pytest.raises(ModelFilesError) as caught:
        await fetch(hub, hf("org/gated", "*.gguf"), cache)
    assert caught.value.message.startswith(
        "Hugging Face repo org/gated at revision main is gated and "
        f"{hub.url} wants a token: set HF_TOKEN"
    )
    with pytest.raises(ModelFilesError, match="the token this worker sent has no access"):
        await fetch(hub, hf("org/gated", "*.gguf"), cache, hf_token="hf_someone_else")

    files, _ = await fetch(hub, hf("org/gated", "*.gguf"), cache, hf_token=TOKEN)
    assert files.path.read_bytes() == b"GGUF gated"
    heads = [r for r in hub.requests if r.method == "HEAD" and "/org/gated/" in r.path]
    assert [r.authorization for r in heads] == [None, "Bearer hf_someone_else", f"Bearer {TOKEN}"]
    gets = hub.body_gets("org/gated", "model.gguf")
    assert [r.authorization for r in gets] == [f"Bearer {TOKEN}"]


async def test_token_from_the_environment(
    hub: FakeHub, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub.add_repo("org/gated", {"model.gguf": b"GGUF gated"})
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    files, _ = await fetch(hub, hf("org/gated", "*.gguf"), cache)
    assert files.path.read_bytes() == b"GGUF gated"


async def test_repo_missing(hub: FakeHub, cache: Path) -> None:
    with pytest.raises(ModelFilesError) as caught:
        await fetch(hub, hf("org/nope", "*.gguf"), cache)
    assert caught.value.message.startswith(
        f"Hugging Face repo org/nope at revision main was not found at {hub.url} (HTTP 404)"
    )


async def test_endpoint_unreachable(cache: Path) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ModelFilesError) as caught:
        await fetch_model_files(
            hf("org/m", "*.gguf"), Backend.LLAMA_CPP, cache, lambda _: None, hf_endpoint=endpoint
        )
    assert caught.value.message.startswith(
        f"Could not reach the Hugging Face endpoint {endpoint} for Hugging Face repo org/m"
    )


async def test_not_enough_disk_downloads_nothing(hub: FakeHub, cache: Path) -> None:
    hub.add_repo("org/m", {"model.gguf": payload(300_000, "m"), "README.md": b"hi"})
    asked: list[Path] = []

    def full_disk(directory: Path) -> int:
        asked.append(directory)
        return 1000

    with pytest.raises(ModelFilesError) as caught:
        await fetch(hub, hf("org/m", "*.gguf"), cache, disk_free=full_disk)
    assert caught.value.message == (
        f"Not enough disk space in {cache}: the model needs 293.0 KiB more, 1000 B free."
    )
    assert asked == [cache]
    assert [r for r in hub.requests if r.path.startswith("/org/m/resolve/")] == []
    assert not list(cache.rglob("*.gguf")) and not list(cache.rglob("blobs/*"))

    # Once the files are there, nothing is missing and a full disk is no obstacle.
    await fetch(hub, hf("org/m", "*.gguf"), cache)
    files, progress = await fetch(hub, hf("org/m", "*.gguf"), cache, disk_free=lambda _: 0)
    assert files.path.stat().st_size == 300_000
    assert progress == [1.0]
    assert len(hub.body_gets("org/m")) == 1


# --- Hugging Face: progress and sharing ------------------------------------------


@pytest.mark.usefixtures("small_writes")
async def test_progress_grows_at_most_twice_a_second_and_ends_at_one(
    hub: FakeHub, cache: Path
) -> None:
    hub.add_repo("org/m", {"model.gguf": payload(512 * 1024, "m")})
    hub.chunk_delay = 0.05  # 32 chunks: about 1.6 s
    reports: list[tuple[float, float]] = []
    await fetch_model_files(
        hf("org/m", "*.gguf"),
        Backend.LLAMA_CPP,
        cache,
        lambda fraction: reports.append((time.monotonic(), fraction)),
        hf_endpoint=hub.url,
    )
    values = [v for _, v in reports]
    assert values[-1] == 1.0 and values.count(1.0) == 1
    assert values == sorted(values) and len(set(values)) == len(values)
    assert len([v for v in values if 0.0 < v < 1.0]) >= 2, values
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(reports[:-1])]  # the end comes when due
    assert all(gap >= 0.45 for gap in gaps), gaps

    # Already cached: just the end.
    again: list[float] = []
    await fetch_model_files(
        hf("org/m", "*.gguf"), Backend.LLAMA_CPP, cache, again.append, hf_endpoint=hub.url
    )
    assert again == [1.0]


async def test_two_fetches_of_one_model_download_it_once(hub: FakeHub, cache: Path) -> None:
    hub.add_repo("org/m", {"model.gguf": payload(256 * 1024, "m")})
    hub.chunk_delay = 0.03  # 16 chunks: about 0.5 s, so the two overlap
    (first, first_progress), (second, second_progress) = await asyncio.gather(
        fetch(hub, hf("org/m", "*.gguf"), cache), fetch(hub, hf("org/m", "*.gguf"), cache)
    )
    assert first == second
    assert first.path.stat().st_size == 256 * 1024
    gets = hub.body_gets("org/m", "model.gguf")
    assert len(gets) == 1
    listings = [r for r in hub.requests if r.path.startswith("/api/models/org/m")]
    assert len(listings) == 2 and all(r.started < gets[0].finished for r in listings)
    assert first_progress[-1] == second_progress[-1] == 1.0


FETCH_IN_ANOTHER_PROCESS = """
import asyncio, sys
from pathlib import Path
import huggingface_hub.constants
from corral.schemas.models import Backend, HuggingFaceSource
from corral.worker.files import fetch_model_files

huggingface_hub.constants.DOWNLOAD_CHUNK_SIZE = int(sys.argv[3])  # see small_writes

source = HuggingFaceSource(type="huggingface", repo_id="org/m", filename="*.gguf")
files = asyncio.run(
    fetch_model_files(source, Backend.LLAMA_CPP, Path(sys.argv[1]), lambda _: None,
                      hf_endpoint=sys.argv[2])
)
print(files.path)
"""


async def test_a_fetch_waits_for_another_process_and_watches_its_download(
    hub: FakeHub, cache: Path
) -> None:
    hub.add_repo("org/m", {"model.gguf": payload(512 * 1024, "m")})
    hub.chunk_delay = 0.1  # 32 chunks: about 3 s
    other = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        FETCH_IN_ANOTHER_PROCESS,
        str(cache),
        hub.url,
        str(SMALL_WRITE),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + SLOW_LINK_DEADLINE_S
        while not list(cache.glob("huggingface/*/blobs/*.incomplete")):
            assert other.returncode is None, await other.communicate()
            assert time.monotonic() < deadline, "the other process never started downloading"
            await asyncio.sleep(0.05)

        files, progress = await fetch(hub, hf("org/m", "*.gguf"), cache)
    finally:
        out, err = await other.communicate()
    assert other.returncode == 0, err.decode()
    assert Path(out.decode().strip()) == files.path
    assert len(hub.body_gets("org/m", "model.gguf")) == 1
    # This fetch downloaded nothing, yet saw the other's download advance.
    assert any(0.0 < v < 1.0 for v in progress), progress
    assert progress[-1] == 1.0


# --- ModelScope -------------------------------------------------------------------


@pytest.mark.skipif(
    importlib.util.find_spec("modelscope") is not None,
    reason="covers workers without the modelscope package; this one has it",
)
async def test_modelscope_needs_its_package(cache: Path) -> None:
    source = ModelScopeSource(type="modelscope", model_id="qwen/Qwen2-0.5B", filename=None)
    with pytest.raises(ModelFilesError) as caught:
        await fetch_model_files(source, Backend.VLLM, cache, lambda _: None)
    assert caught.value.message == (
        "ModelScope sources need the modelscope package on this worker: pip install modelscope"
    )
