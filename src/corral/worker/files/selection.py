"""Which of a repository's files a backend needs. Pure: a listing in, names out.

GGUF (llama.cpp, or a ``.gguf`` filename glob):

- the glob (``*.gguf`` when none is given) is matched with :func:`fnmatch.fnmatch`
  against each GGUF file's path in the repo, projectors (``mmproj`` in the name)
  left out; the first match in name order wins, preferring first parts of split
  models, and a split part stands for its whole model: every
  ``name-0000N-of-0000M.gguf`` is fetched and the path is part 1. This is the
  rule the server's ``corral.sources.locate.hf_glob`` uses to estimate, so both
  mean the same file.
- a projector is added when the repo has one: the one in the model file's
  folder first, then one whose precision tag (``f16``, ``bf16``, ``q8_0`` …)
  equals the model's, then an ``f16`` one (llama.cpp's usual projector), then
  the first in name order.

Checkpoint (vLLM): files at the top level of the repo only (so ``original/``
and other folders are left out) that match :data:`CHECKPOINT_FILES`, plus the
weights: every ``*.safetensors`` (``consolidated*.safetensors``, Mistral's
second copy of the weights, is left out when other safetensors exist), or
``*.bin`` / ``*.pt`` / ``*.pth`` only when there are no safetensors. GGUF files
are never part of a checkpoint.
"""

from __future__ import annotations

import fnmatch
import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass

from corral.estimate.gguf import split_part_names
from corral.schemas.models import Backend
from corral.worker.files.result import ModelFilesError

DEFAULT_GGUF_GLOB = "*.gguf"

CHECKPOINT_FILES = (
    "*.json",  # config, generation_config, tokenizer(_config), the weight index, chat_template.json
    "*.jinja",  # chat templates kept as files
    "*.model",  # sentencepiece tokenizers
    "*.tiktoken",
    "merges.txt",
    "vocab.txt",
    "*.py",  # code of trust_remote_code models; run only with --trust-remote-code
)
PICKLE_WEIGHTS = ("*.bin", "*.pt", "*.pth")

_PRECISION = re.compile(r"(?<![a-z0-9])(bf16|fp16|fp32|f16|f32|i?q\d+(?:_[a-z0-9]+)*)(?![a-z0-9])")


@dataclass(frozen=True)
class RepoEntry:
    name: str
    """Path relative to the repo root, ``/``-separated."""
    size: int
    blob: str | None = None
    """The file's name in huggingface_hub's blob store (the LFS sha256, else
    the git blob id), when the hub says."""


@dataclass(frozen=True)
class Selection:
    files: tuple[str, ...]
    """Every file to fetch, in name order."""
    main: str | None
    """The GGUF file to run; ``None`` for a checkpoint (the directory is run)."""
    mmproj: str | None = None


def select(
    entries: Iterable[RepoEntry], backend: Backend, filename: str | None, where: str
) -> Selection:
    """GGUF files for llama.cpp or a ``.gguf`` glob, else a checkpoint; ``filename``
    only applies to GGUF."""
    if backend is Backend.LLAMA_CPP or (filename or "").lower().endswith(".gguf"):
        return select_gguf(entries, filename, where)
    return select_checkpoint(entries, where)


def is_mmproj(name: str) -> bool:
    return "mmproj" in posixpath.basename(name).lower()


def select_gguf(entries: Iterable[RepoEntry], pattern: str | None, where: str) -> Selection:
    """The GGUF model a glob names, its split parts and a projector.
    ``where`` names the repo in error messages ("Hugging Face repo a/b at revision main")."""
    pattern = pattern or DEFAULT_GGUF_GLOB
    names = {e.name for e in entries}
    gguf = sorted(n for n in names if n.lower().endswith(".gguf"))
    matches = [n for n in gguf if fnmatch.fnmatch(n, pattern) and not is_mmproj(n)]
    if not matches:
        models = [n for n in gguf if not is_mmproj(n)]
        listed = ", ".join(models[:8]) + (f" and {len(models) - 8} more" if len(models) > 8 else "")
        raise ModelFilesError(
            f"No GGUF file in {where} matches {pattern!r}; "
            + (f"its GGUF files are {listed}." if models else "it has no GGUF model files.")
        )
    firsts = [n for n in matches if (split_part_names(n) or [n])[0] == n]
    chosen = (firsts or matches)[0]
    parts = split_part_names(chosen) or [chosen]
    missing = [p for p in parts if p not in names]
    if missing:
        raise ModelFilesError(
            f"{where} lacks {missing[0]}: {chosen} is part of a {len(parts)}-part split "
            "model and every part is needed."
        )
    mmproj = pick_mmproj(gguf, parts[0])
    files = sorted({*parts, *([mmproj] if mmproj else [])})
    return Selection(files=tuple(files), main=parts[0], mmproj=mmproj)


def pick_mmproj(names: Iterable[str], model: str) -> str | None:
    """The projector to load with ``model``, by the rule in the module docstring."""
    folder = posixpath.dirname(model)
    precision = _precision(model)

    def preference(name: str) -> tuple[bool, bool, bool, str]:
        own = _precision(name)
        return (
            posixpath.dirname(name) != folder,
            precision is None or own != precision,
            own != "f16",
            name,
        )

    candidates = [n for n in names if is_mmproj(n) and n.lower().endswith(".gguf")]
    return min(candidates, key=preference) if candidates else None


def _precision(name: str) -> str | None:
    found = _PRECISION.findall(posixpath.basename(name).lower())
    if not found:
        return None
    last: str = found[-1]
    return {"fp16": "f16", "fp32": "f32"}.get(last, last)


def select_checkpoint(entries: Iterable[RepoEntry], where: str) -> Selection:
    """The files vLLM loads from a Hugging Face style checkpoint."""
    top = sorted(e.name for e in entries if "/" not in e.name)
    if "config.json" not in top:
        raise ModelFilesError(
            f"{where} has no config.json at its top level, so vLLM cannot load it; "
            "for a GGUF model give a .gguf file name or glob."
        )
    safetensors = [n for n in top if n.endswith(".safetensors")]
    if any(not n.startswith("consolidated") for n in safetensors):
        safetensors = [n for n in safetensors if not n.startswith("consolidated")]
    weights = safetensors or [n for n in top if _matches(n, PICKLE_WEIGHTS)]
    if not weights:
        raise ModelFilesError(
            f"{where} has no weights vLLM can load (*.safetensors, or *.bin / *.pt / *.pth)."
        )
    files = {n for n in top if _matches(n, CHECKPOINT_FILES)} | set(weights)
    return Selection(files=tuple(sorted(files)), main=None)


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)
