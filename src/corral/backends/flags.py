"""Reading which command-line flags an engine build accepts, from its --help."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

_FLAG = re.compile(r"(?<![\w-])(--[a-z0-9][a-z0-9-]*)")
_ENV = re.compile(r"\b((?:LLAMA|VLLM)_[A-Z0-9_]+)\b")


def parse_flags(help_text: str) -> frozenset[str]:
    """Every ``--flag`` and every ``LLAMA_…``/``VLLM_…`` variable the help mentions."""
    return frozenset(_FLAG.findall(help_text)) | frozenset(_ENV.findall(help_text))


def read_flags(argv: list[str], *, timeout: float = 120) -> frozenset[str]:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return frozenset()
    return parse_flags(out.stdout + out.stderr)


def has_option(parameters: list[str] | tuple[str, ...], *names: str) -> bool:
    """True when the user's parameters set any of ``names`` (``--x v`` or ``--x=v``)."""
    return any(p in names or p.split("=", 1)[0] in names for p in parameters)


def executable_exists(path: Path) -> bool:
    return path.is_file() and path.stat().st_mode & 0o111 != 0
