"""AMD GPUs through ``amd-smi``, or ``rocm-smi`` where amd-smi is missing.

amd-smi (ROCm 6.0 and later) is asked twice: ``static`` once, for names,
serials and gfx targets, which do not change; ``metric --mem-usage`` every
time, for memory in use. Its JSON changed across releases, and the parser
reads all of these:

- the document is a bare list of GPUs (ROCm 6.0 to 6.3) or an object with
  the list under ``gpu_data`` (later releases);
- quantities are bare integers (ROCm 6.0: ``"vram_size_mb": 65520``,
  ``"fb_usage": {"vram_total": 65520}``), strings with a unit
  (``"65520 MB"``), or ``{"value": 65520, "unit": "MB"}`` (ROCm 6.1 on);
- fields a GPU does not support read ``"N/A"``.

amd-smi's "MB" is a mebibyte: it divides bytes by 1024 * 1024 before
printing. The sizes here are therefore read as binary units.

rocm-smi (older ROCm) prints one object per ``cardN`` with sizes in bytes.

For AMD GPUs ``compute_capability`` holds the gfx target (``gfx942``), the
ROCm counterpart of a CUDA compute capability that builds are made for, and
``uuid`` is ``GPU-<unique id>``, the form rocminfo prints and
``HIP_VISIBLE_DEVICES`` accepts.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping

from corral.schemas.workers import Device
from corral.worker.devices.tools import ToolRunner, json_document, run_tool
from corral.worker.devices.vendors import Vendor

logger = logging.getLogger(__name__)

AMD_SMI_STATIC = ("amd-smi", "static", "--json")
AMD_SMI_METRIC = ("amd-smi", "metric", "--mem-usage", "--json")
ROCM_SMI = (
    "rocm-smi",
    "--showproductname",
    "--showmeminfo",
    "vram",
    "--showuniqueid",
    "--json",
)

_UNITS = {"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}
_QUANTITY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?B)?\s*$", re.IGNORECASE)
_CARD = re.compile(r"^card(\d+)$")
_GENERIC_NAME = "AMD GPU"


def parse_amd_smi(static_json: str, metric_json: str) -> list[Device]:
    """Devices from ``amd-smi static --json`` and ``amd-smi metric --mem-usage
    --json``. A GPU with no VRAM size anywhere is left out; one with no usage
    reads as nothing in use (the scheduler counts its own claims, not this)."""
    metrics: dict[int, Mapping[str, object]] = {}
    for position, entry in enumerate(_gpu_entries(json_document(metric_json))):
        metrics[_index(entry, position)] = entry
    devices: list[Device] = []
    for position, entry in enumerate(_gpu_entries(json_document(static_json))):
        index = _index(entry, position)
        metric = metrics.get(index, {})
        asic = _section(entry, "asic")
        usage = _section(metric, "mem_usage")
        legacy_usage = _section(metric, "fb_usage")
        vram = _section(entry, "vram")
        total = (
            _bytes(usage.get("total_vram"))
            or _bytes(vram.get("size"))
            or _bytes(vram.get("vram_size_mb"))
            or _bytes(legacy_usage.get("vram_total"))
        )
        if not total:
            logger.debug("AMD GPU %d left out: amd-smi reports no VRAM size", index)
            continue
        used = _bytes(usage.get("used_vram")) or _bytes(legacy_usage.get("vram_used")) or 0
        name = (
            _known(asic.get("market_name"))
            or _known(_section(entry, "board").get("product_name"))
            or _GENERIC_NAME
        )
        devices.append(
            Device(
                index=index,
                uuid=_hip_uuid(asic.get("asic_serial")),
                vendor=Vendor.AMD,
                name=name,
                memory_total=total,
                memory_used=min(used, total),
                compute_capability=_gfx_target(asic.get("target_graphics_version")),
            )
        )
    return sorted(devices, key=lambda d: d.index)


def parse_rocm_smi(json_text: str) -> list[Device]:
    """Devices from ``rocm-smi --showproductname --showmeminfo vram
    --showuniqueid --json``."""
    document = json_document(json_text)
    if not isinstance(document, dict):
        return []
    devices: list[Device] = []
    for key, info in document.items():
        card = _CARD.match(str(key))
        if card is None or not isinstance(info, dict):
            continue  # "system" and the like
        total = _whole(info.get("VRAM Total Memory (B)"))
        if not total:
            logger.debug("AMD GPU %s left out: rocm-smi reports no VRAM size", key)
            continue
        used = _whole(info.get("VRAM Total Used Memory (B)")) or 0
        # "Card Series" (ROCm 6) was "Card series" before; "Device Name" comes with -i.
        name = next(
            (
                text
                for field in ("Card Series", "Card series", "Device Name")
                if (text := _known(info.get(field)))
            ),
            _GENERIC_NAME,
        )
        devices.append(
            Device(
                index=int(card.group(1)),
                uuid=_hip_uuid(info.get("Unique ID")),
                vendor=Vendor.AMD,
                name=name,
                memory_total=total,
                memory_used=min(used, total),
                compute_capability=_gfx_target(info.get("GFX Version")),
            )
        )
    return sorted(devices, key=lambda d: d.index)


class AmdDetector:
    """amd-smi when it lists GPUs, rocm-smi otherwise; none, and no error,
    when neither is installed."""

    name = "amd"

    def __init__(self, run: ToolRunner = run_tool) -> None:
        self._run = run
        self._static: str | None = None
        self._amd_smi_usable = True

    def detect(self) -> list[Device]:
        if self._amd_smi_usable:
            devices = self._from_amd_smi()
            if devices:
                return devices
            # Not installed, or installed without GPUs it can read (an old
            # release, a container without /dev/kfd): stop asking it.
            logger.debug("amd-smi lists no GPUs; trying rocm-smi")
            self._amd_smi_usable = False
        output = self._run(ROCM_SMI)
        return parse_rocm_smi(output) if output else []

    def close(self) -> None:
        """Nothing is held between calls."""

    def _from_amd_smi(self) -> list[Device]:
        static = self._static if self._static is not None else self._run(AMD_SMI_STATIC)
        if not static:
            return []
        devices = parse_amd_smi(static, self._run(AMD_SMI_METRIC) or "")
        if devices:
            self._static = static  # names and serials do not change
        return devices


def _gpu_entries(document: object) -> list[Mapping[str, object]]:
    if isinstance(document, dict):
        document = document.get("gpu_data")
    if not isinstance(document, list):
        return []
    return [entry for entry in document if isinstance(entry, dict)]


def _index(entry: Mapping[str, object], position: int) -> int:
    value = entry.get("gpu")
    return value if isinstance(value, int) and not isinstance(value, bool) else position


def _section(entry: Mapping[str, object], key: str) -> Mapping[str, object]:
    value = entry.get(key)
    return value if isinstance(value, dict) else {}


def _bytes(value: object, default_unit: str = "MB") -> int | None:
    """A quantity as amd-smi prints it, in bytes; None for "N/A" and the like."""
    unit = default_unit
    if isinstance(value, dict):
        unit = str(value.get("unit") or default_unit)
        value = value.get("value")
    if isinstance(value, str):
        match = _QUANTITY.match(value)
        if match is None:
            return None
        value, unit = float(match.group(1)), match.group(2) or unit
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    factor = _UNITS.get(unit.upper())
    return None if factor is None else int(value * factor)


def _whole(value: object) -> int | None:
    """rocm-smi's byte counts, which it prints as strings of digits."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def _known(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    text = value.strip()
    return text if text and text.upper() != "N/A" else None


def _gfx_target(value: object) -> str | None:
    text = _known(value)
    return text.lower() if text and text.lower().startswith("gfx") else None


def _hip_uuid(serial: object) -> str | None:
    """``0x5C88007D760374F3`` (amd-smi's asic serial, rocm-smi's unique id) as
    ``GPU-5c88007d760374f3``."""
    text = _known(serial)
    if text is None:
        return None
    digits = text.lower().removeprefix("0x")
    if not digits or not all(c in "0123456789abcdef" for c in digits) or not int(digits, 16):
        return None
    return f"GPU-{digits}"
