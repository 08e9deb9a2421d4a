"""Which multimodal projector (``mmproj``) goes with a GGUF model.

llama.cpp runs a vision GGUF model as two files: the language model and a
projector GGUF (``--mmproj``) holding the image encoder. Hubs ship the
projector beside the model, named with ``mmproj`` in it. The server (to
estimate memory) and the worker (to download and launch) must pick the same
one from a listing, so the rule lives here, pure:

- the user's own choice (a name or glob) when given;
- else, among files with ``mmproj`` in their name ending in ``.gguf``: the
  one in the model file's folder first, then one whose precision tag
  (``f16``, ``bf16``, ``q8_0`` …) equals the model's, then an ``f16`` one
  (llama.cpp's usual projector), then the first in name order.

``--no-mmproj`` among the backend parameters means no projector at all, and
a user's own ``--mmproj PATH`` replaces the one found.
"""

from __future__ import annotations

import fnmatch
import posixpath
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

_PRECISION = re.compile(r"(?<![a-z0-9])(bf16|fp16|fp32|f16|f32|i?q\d+(?:_[a-z0-9]+)*)(?![a-z0-9])")
NO_PROJECTOR_FLAGS = ("--no-mmproj",)
PROJECTOR_FLAGS = ("--mmproj", "-mm", "--mmproj-url", "-mmu")


def is_mmproj(name: str) -> bool:
    return "mmproj" in posixpath.basename(name).lower()


def user_projector(parameters: Sequence[str]) -> str | bool | None:
    """What the backend parameters say: ``False`` for ``--no-mmproj``, the
    path of a ``--mmproj PATH`` (last wins), or ``None`` when they say nothing."""
    found: str | bool | None = None
    args = list(parameters)
    for i, arg in enumerate(args):
        flag, sep, value = arg.partition("=")
        if flag in NO_PROJECTOR_FLAGS:
            found = False
        elif flag in PROJECTOR_FLAGS:
            found = value if sep else (args[i + 1] if i + 1 < len(args) else "")
    return found


def pick_mmproj(names: Iterable[str], model: str, pattern: str | None = None) -> str | None:
    """The projector to load with ``model`` among ``names``, by the module's rule.
    With ``pattern`` (the user's name or glob) only matching files qualify."""
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

    if pattern is not None:
        candidates = [n for n in names if n == pattern or fnmatch.fnmatch(n, pattern)]
    else:
        candidates = [n for n in names if is_mmproj(n) and n.lower().endswith(".gguf")]
    return min(candidates, key=preference) if candidates else None


def projector_beside(model: Path) -> Path | None:
    """The projector in a local model file's directory, by the same rule."""
    names = sorted(p.name for p in model.parent.glob("*.gguf") if p.is_file())
    found = pick_mmproj(names, model.name)
    return model.parent / found if found is not None else None


def _precision(name: str) -> str | None:
    found = _PRECISION.findall(posixpath.basename(name).lower())
    if not found:
        return None
    last: str = found[-1]
    return {"fp16": "f16", "fp32": "f32"}.get(last, last)
