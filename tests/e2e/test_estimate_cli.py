"""``corral estimate``: local files, Hugging Face repos (over a local stand-in
for the hub, with range requests), and bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.gguf_headers import generate
from tests.fixtures.tiny_models import TinyModels
from tests.helpers import CORRAL
from tests.range_server import Served, serve_files


def _estimate(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CORRAL, "estimate", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture(scope="module")
def headers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    return generate(tmp_path_factory.mktemp("h"))


@pytest.fixture
def hub(tmp_path: Path, tiny_models: TinyModels) -> Iterator[Served]:
    shutil.copy(tiny_models.gguf_q8_0, tmp_path / "tiny-q8_0.gguf")
    for f in tiny_models.hf_dir.iterdir():
        shutil.copy(f, tmp_path / f.name)
    with serve_files(tmp_path) as served:
        yield served


def test_a_local_gguf_table_and_json(headers: dict[str, list[Path]]) -> None:
    [path] = headers["llama-3.1-8b-q4_k_m"]
    r = _estimate(str(path), "--gpus", "8GiB")
    assert r.returncode == 0, r.stderr
    assert "llama, 32 layers; ctx 8192, 4 slots" in r.stdout and "33 <- fits" in r.stdout
    r = _estimate(str(path), "--gpus", "4GiB", "--ctx-size", "4096", "--json")
    data = json.loads(r.stdout)
    assert data["settings"]["ctx_size"] == 4096
    full = data["rows"][-1]["devices"]["GPU0"]
    assert full["kv"] == 512 * 1024**2  # half the 8192-token cache
    assert 0 < data["best_gpu_layers"] < 33


def test_a_split_model_from_any_part(headers: dict[str, list[Path]]) -> None:
    r = _estimate(str(headers["qwen2.5-72b-q4_k_m"][2]), "--json")
    assert json.loads(r.stdout)["layers"] == 80


def test_hugging_face_repo_file_and_checkpoint(hub: Served, tiny_models: TinyModels) -> None:
    env = {"HF_ENDPOINT": hub.url}
    r = _estimate("corral/tiny-GGUF:tiny-q8_0.gguf", "--json", env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["architecture"] == "llama"
    assert hub.bytes_sent < 3 * 1024 * 1024  # the header, not the 16.7 MB file
    r = _estimate("corral/tiny", "--json", "--gpus", "24GiB", env=env)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["backend"] == "vllm" and data["kv_bytes_per_token"] == 1024
    assert data["max_model_len"] == 2048 and data["fits"] == [True]


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("no-such-thing", "neither a path, a URL nor a Hugging Face repo"),
        ("http://127.0.0.1:9/model.gguf", "127.0.0.1:9"),
        ("https://example.invalid/model.bin", "must name a .gguf file"),
    ],
)
def test_bad_sources_are_one_line(source: str, message: str) -> None:
    r = _estimate(source)
    assert r.returncode == 1
    assert message in r.stderr and "Traceback" not in r.stderr


def test_a_broken_gguf_is_refused(tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF\x03\x00\x00\x00" + (1 << 60).to_bytes(8, "little") + bytes(8))
    r = _estimate(str(broken))
    assert r.returncode == 1
    assert "tensor count 1152921504606846976 is impossible" in r.stderr
