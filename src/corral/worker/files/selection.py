"""Which of a repository's files a backend needs. Pure: a listing in, names out.

GGUF (llama.cpp, or a ``.gguf`` filename glob):

- the glob (``*.gguf`` when none is given) is matched with :func:`fnmatch.fnmatch`
  against each GGUF file's path in the repo, projectors (``mmproj`` in the name)
  left out; the first match in name order wins, preferring first parts of split
  models, and a split part stands for its whole model: every
  ``name-0000N-of-0000M.gguf`` is fetched and the path is part 1. This is the
  rule the server's ``corral.sources.locate.hf_glob`` uses to estimate, so both
  mean the same file.
- a projector is added when the repo has one, or the one the user named, by
  the rule of :mod:`corral.sources.projectors` (shared with the server's
  estimate).

Checkpoint (vLLM): files at the top level of the repo only (so ``original/``
and other folders are left out) that match :data:`CHECKPOINT_FILES`, plus the
weights: every ``*.safetensors`` (``consolidated*.safetensors``, Mistral's
second copy of the weights, is left out when other safetensors exist), or
``*.bin`` / ``*.pt`` / ``*.pth`` only when there are no safetensors. GGUF files
are never part of a checkpoint.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass

from corral.estimate.gguf import split_part_names
from corral.schemas.models import Backend
from corral.sources.projectors import is_mmproj, pick_mmproj
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
    entries: Iterable[RepoEntry],
    backend: Backend,
    filename: str | None,
    where: str,
    *,
    mmproj: str | None = None,
    projector: bool = True,
) -> Selection:
    """GGUF files for llama.cpp or a ``.gguf`` glob, else a checkpoint; ``filename``
    only applies to GGUF, and so do ``mmproj`` (the user's projector name or
    glob) and ``projector`` (False: fetch none)."""
    if backend is Backend.LLAMA_CPP or (filename or "").lower().endswith(".gguf"):
        return select_gguf(entries, filename, where, mmproj=mmproj, projector=projector)
    return select_checkpoint(entries, where)


def select_gguf(
    entries: Iterable[RepoEntry],
    pattern: str | None,
    where: str,
    *,
    mmproj: str | None = None,
    projector: bool = True,
) -> Selection:
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
    chosen_projector = pick_mmproj(gguf, parts[0], mmproj) if projector else None
    if projector and mmproj is not None and chosen_projector is None:
        raise ModelFilesError(f"No GGUF file in {where} matches the projector name {mmproj!r}.")
    files = sorted({*parts, *([chosen_projector] if chosen_projector else [])})
    return Selection(files=tuple(files), main=parts[0], mmproj=chosen_projector)


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
