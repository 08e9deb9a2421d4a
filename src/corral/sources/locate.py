"""Turning what a user names (a path, a URL, a Hugging Face ``repo[:file]``)
into byte sources for the estimators."""

from __future__ import annotations

import fnmatch
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from corral.errors import InvalidInputError, InvalidModelFile
from corral.estimate.gguf import split_part_names
from corral.estimate.source import ByteSource, LocalFile
from corral.sources.http import HttpRangeSource, RemoteFileError

DEFAULT_HF_ENDPOINT = "https://huggingface.co"


@dataclass(frozen=True)
class GGUFSource:
    parts: list[ByteSource]


@dataclass(frozen=True)
class CheckpointSource:
    config: dict[str, Any]
    shards: list[ByteSource]


def hf_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", DEFAULT_HF_ENDPOINT).rstrip("/")


def _url_parts(url: str, client: httpx.Client, token: str | None) -> list[ByteSource]:
    base, _, name = url.rpartition("/")
    names = split_part_names(name) or [name]
    return [HttpRangeSource(f"{base}/{n}", client, token=token) for n in names]


def _get_json(url: str, client: httpx.Client, token: str | None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        r = client.get(url, headers=headers, follow_redirects=True)
    except httpx.HTTPError as e:
        raise RemoteFileError(f"{url}: {e}") from e
    if r.status_code != 200:
        raise RemoteFileError(f"{url}: HTTP {r.status_code}")
    try:
        return r.json()
    except ValueError as e:
        raise InvalidModelFile(f"{url}: not JSON") from e


def locate(
    source: str, client: httpx.Client, *, revision: str = "main"
) -> GGUFSource | CheckpointSource:
    token = os.environ.get("HF_TOKEN")
    if source.startswith(("http://", "https://")):
        if not source.lower().endswith(".gguf"):
            raise InvalidInputError("a URL must name a .gguf file")
        return GGUFSource(_url_parts(source, client, token))
    path = Path(source)
    if path.exists():
        if path.is_file():
            names = split_part_names(path.name) or [path.name]
            missing = [n for n in names if not (path.parent / n).exists()]
            if missing:
                raise InvalidInputError(f"split model part {missing[0]} is missing")
            return GGUFSource([LocalFile(path.parent / n) for n in names])
        config = path / "config.json"
        if not config.is_file():
            raise InvalidInputError(f"{path} has no config.json")
        return CheckpointSource(json.loads(config.read_text()), _local_shards(path))
    repo, _, file = source.partition(":")
    if repo.count("/") != 1:
        raise InvalidInputError(
            f"{source!r} is neither a path, a URL nor a Hugging Face repo[:file]"
        )
    base = f"{hf_endpoint()}/{repo}/resolve/{revision}"
    if file:
        return GGUFSource(_url_parts(f"{base}/{file}", client, token))
    config = _get_json(f"{base}/config.json", client, token)
    try:
        index = _get_json(f"{base}/model.safetensors.index.json", client, token)
        shards = sorted(set(index["weight_map"].values()))
    except RemoteFileError:
        shards = ["model.safetensors"]
    return CheckpointSource(
        config, [HttpRangeSource(f"{base}/{s}", client, token=token) for s in shards]
    )


def _local_shards(directory: Path) -> list[ByteSource]:
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [LocalFile(directory / n) for n in names]
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise InvalidInputError(f"{directory} has no .safetensors files")
    return [LocalFile(f) for f in files]


def hf_files(repo: str, client: httpx.Client, *, revision: str = "main") -> list[str]:
    """Every file of a Hugging Face repo at a revision, in name order."""
    token = os.environ.get("HF_TOKEN")
    info = _get_json(f"{hf_endpoint()}/api/models/{repo}/revision/{revision}", client, token)
    return sorted(str(s.get("rfilename")) for s in info.get("siblings", []) if isinstance(s, dict))


def hf_url(repo: str, name: str, client: httpx.Client, *, revision: str = "main") -> ByteSource:
    """One file of a Hugging Face repo, read over range requests."""
    base = f"{hf_endpoint()}/{repo}/resolve/{revision}"
    return HttpRangeSource(f"{base}/{name}", client, token=os.environ.get("HF_TOKEN"))


def hf_glob(
    repo: str,
    pattern: str,
    client: httpx.Client,
    *,
    revision: str = "main",
    names: list[str] | None = None,
) -> str:
    """The file of a Hugging Face repo a glob names: the first match in name
    order, and for a split model its first part. ``names``: the repo's
    files, when already listed."""
    if names is None:
        names = hf_files(repo, client, revision=revision)
    matches = [n for n in names if fnmatch.fnmatch(n, pattern) and "mmproj" not in n.lower()]
    if not matches:
        raise InvalidInputError(f"no file in {repo}@{revision} matches {pattern!r}")
    firsts = [n for n in matches if (split_part_names(n) or [n])[0] == n]
    return (firsts or matches)[0]
