"""Reading GGUF headers over HTTP: only the header crosses the wire."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from corral.estimate.gguf import read_gguf, read_gguf_model
from corral.estimate.source import LocalFile
from corral.sources.http import HttpRangeSource, RemoteFileError
from tests.fixtures.gguf_headers import generate
from tests.fixtures.tiny_models import TinyModels
from tests.range_server import Served, serve_files


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, tiny_models: TinyModels) -> Path:
    root = tmp_path_factory.mktemp("remote")
    generate(root)
    shutil.copy(tiny_models.gguf_q8_0, root / "tiny-q8_0.gguf")
    return root


@pytest.fixture
def server(files: Path) -> Iterator[Served]:
    with serve_files(files) as served:
        yield served


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as c:
        yield c


def test_a_real_model_through_a_resolve_redirect(
    server: Served, client: httpx.Client, files: Path
) -> None:
    url = f"{server.url}/org/tiny-GGUF/resolve/main/tiny-q8_0.gguf"
    source = HttpRangeSource(url, client)
    remote = read_gguf(source)
    local = read_gguf(LocalFile(files / "tiny-q8_0.gguf"))
    assert remote.metadata.keys() == local.metadata.keys()
    assert remote.tensors == local.tensors and remote.file_size == local.file_size
    file_size = (files / "tiny-q8_0.gguf").stat().st_size
    # The header (vocabulary included) is ~1.8 MB of a 16.7 MB file.
    assert source.bytes_fetched == server.bytes_sent
    assert server.bytes_sent < remote.data_offset + 2 * 1024 * 1024 < file_size / 4
    # After the first redirect, reads go straight to the final URL.
    assert sum("/resolve/" in r for r in server.requests) == 1
    assert source.requests >= 3  # reads start small and grow


def test_header_only_files_and_split_models(server: Served, client: httpx.Client) -> None:
    names = [f"Qwen2.5-72B-Instruct-Q4_K_M-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    model = read_gguf_model([HttpRangeSource(f"{server.url}/files/{n}", client) for n in names])
    assert model.arch_value("block_count") == 80
    assert server.bytes_sent < 3 * 64 * 1024


def test_errors_name_the_url(server: Served, client: httpx.Client) -> None:
    with pytest.raises(RemoteFileError, match="HTTP 404"):
        read_gguf(HttpRangeSource(f"{server.url}/files/missing.gguf", client))
    with pytest.raises(RemoteFileError, match="ignores range requests"):
        read_gguf(HttpRangeSource(f"{server.url}/norange/tiny-q8_0.gguf", client))
    with pytest.raises(RemoteFileError, match=r"127\.0\.0\.1:9"):
        read_gguf(HttpRangeSource("http://127.0.0.1:9/x.gguf", client))
