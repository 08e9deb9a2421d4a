"""Labels: the ones a worker sets about itself, and ``key=value`` from the command line."""

from __future__ import annotations

import platform

from pydantic import TypeAdapter, ValidationError

from corral.errors import InvalidInputError
from corral.schemas.common import LabelKey, LabelValue
from corral.schemas.workers import BUILTIN_LABELS

# The names Go and Kubernetes use, which people already write in selectors.
_ARCHES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}

_KEY: TypeAdapter[str] = TypeAdapter(LabelKey)
_VALUE: TypeAdapter[str] = TypeAdapter(LabelValue)


def normalise_arch(machine: str) -> str:
    """``platform.machine()`` as Go names it: x86_64 and AMD64 are amd64,
    aarch64 and arm64 are arm64; anything else lowercased."""
    lowered = machine.strip().lower()
    return _ARCHES.get(lowered, lowered)


def builtin_labels(worker_name: str) -> dict[str, str]:
    """``os``, ``arch`` and ``worker-name``, which users cannot set."""
    return {
        "os": platform.system().lower(),
        "arch": normalise_arch(platform.machine()),
        "worker-name": worker_name,
    }


def parse_label(text: str) -> tuple[str, str]:
    """``key=value`` as a pair. The value may be empty; the key may not, and
    may not be one of the labels the worker sets itself."""
    key, equals, value = text.partition("=")
    if not equals:
        raise InvalidInputError(f"label {text!r}: expected key=value")
    try:
        _KEY.validate_python(key)
    except ValidationError as e:
        raise InvalidInputError(
            f"label {text!r}: {key!r} is not a valid key (letters, digits, '.', '_', '-',"
            " at most 63 characters, optionally after a 'prefix/')"
        ) from e
    if key in BUILTIN_LABELS:
        raise InvalidInputError(f"label {text!r}: {key!r} is set by the worker itself")
    try:
        _VALUE.validate_python(value)
    except ValidationError as e:
        raise InvalidInputError(
            f"label {text!r}: {value!r} is not a valid value (letters, digits, '.', '_', '-',"
            " at most 63 characters, starting and ending with a letter or digit)"
        ) from e
    return key, value
