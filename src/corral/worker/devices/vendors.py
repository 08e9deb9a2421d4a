"""The accelerator vendors a worker can report."""

from __future__ import annotations

from enum import StrEnum


class Vendor(StrEnum):
    """``Device.vendor`` on the wire. The backends key off these strings
    (llama.cpp picks its CUDA or ROCm build by them), so they are lowercase
    and stable."""

    NVIDIA = "nvidia"
    AMD = "amd"
    APPLE = "apple"
