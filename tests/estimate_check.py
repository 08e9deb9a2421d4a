"""Comparing an estimate with what llama-server reports: shared by the e2e
accuracy test and ``bench/estimate_accuracy.py`` so both judge alike."""

from __future__ import annotations

MIB = 1024 * 1024

COMPONENTS = {
    "weights": "model",
    "repack": "repack",
    "kv": "kv",
    "compute": "compute",
    "output": "output",
}
"""Estimate field → the buffer kind llama-server logs for it."""


def within(estimated: int, actual: int) -> bool:
    """The target: within 5 % or 32 MiB, whichever is larger."""
    return abs(estimated - actual) <= max(0.05 * actual, 32 * MIB)
