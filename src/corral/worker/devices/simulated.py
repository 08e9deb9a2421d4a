"""Simulated GPUs, declared in a YAML file for development, demos and tests.

A worker given ``--devices-file`` reports these instead of detecting
anything, so that a laptop can stand in for a GPU server::

    # simulated GPUs: nothing is detected on this worker, these are reported instead
    devices:
      - name: Simulated RTX 4090
        vendor: nvidia              # nvidia (the default), amd or apple
        memory: 24GiB               # bytes as an integer, or 24 GiB, 16GB, 24576MiB
        used: 512MiB                # optional, default 0
        compute_capability: "8.9"   # optional
      - name: Simulated RTX 4090
        memory: 24GiB

Devices are numbered 0, 1, ... in the order listed; a device may give its
own ``index`` instead, and no two may share one. Each gets a uuid
``SIM-<hash>`` made from its index, vendor, name and size, so it is the same
on every run of the same file. ``devices: []`` is a worker with no GPU.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import yaml

from corral.errors import InvalidInputError
from corral.schemas.workers import Device
from corral.worker.devices.sizes import parse_size
from corral.worker.devices.vendors import Vendor

_KEYS = frozenset({"name", "vendor", "memory", "used", "compute_capability", "index"})


def load_devices_file(path: Path) -> list[Device]:
    """The devices ``path`` declares. Raises InvalidInputError naming the file
    and what is wrong with it."""
    try:
        text = path.read_text()
    except OSError as e:
        raise InvalidInputError(f"devices file {path}: cannot read it: {e.strerror}") from e
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise InvalidInputError(f"devices file {path}: not valid YAML: {e}") from e
    if not isinstance(document, dict) or "devices" not in document:
        raise InvalidInputError(f"devices file {path}: expected a mapping with a 'devices' list")
    if unknown := sorted(set(map(str, document)) - {"devices"}):
        raise InvalidInputError(f"devices file {path}: unknown key {unknown[0]!r}")
    entries = document["devices"]
    if not isinstance(entries, list):
        raise InvalidInputError(f"devices file {path}: 'devices' must be a list")
    devices = [_device(path, position, entry) for position, entry in enumerate(entries)]
    seen: dict[int, int] = {}
    for position, device in enumerate(devices):
        if device.index in seen:
            raise InvalidInputError(
                f"devices file {path}: devices {seen[device.index] + 1} and {position + 1}"
                f" both have index {device.index}"
            )
        seen[device.index] = position
    return sorted(devices, key=lambda d: d.index)


def _device(path: Path, position: int, entry: object) -> Device:
    where = f"devices file {path}, device {position + 1}"
    if not isinstance(entry, dict):
        raise InvalidInputError(f"{where}: expected a mapping with name and memory")
    if unknown := sorted(set(map(str, entry)) - _KEYS):
        raise InvalidInputError(
            f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(_KEYS))})"
        )
    for required in ("name", "memory"):
        if entry.get(required) is None:
            raise InvalidInputError(f"{where}: missing {required!r}")
    name = str(entry["name"]).strip()
    if not name:
        raise InvalidInputError(f"{where}: 'name' is empty")
    vendor = str(entry.get("vendor", Vendor.NVIDIA)).lower()
    if vendor not in set(Vendor):
        raise InvalidInputError(
            f"{where}: vendor {vendor!r} is not one of {', '.join(v.value for v in Vendor)}"
        )
    memory = _size(where, "memory", entry["memory"])
    if memory == 0:
        raise InvalidInputError(f"{where}: 'memory' must be more than 0")
    used = _size(where, "used", entry.get("used", 0))
    if used > memory:
        raise InvalidInputError(f"{where}: 'used' is more than 'memory'")
    index = entry.get("index", position)
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise InvalidInputError(f"{where}: 'index' must be a whole number, 0 or more")
    capability = entry.get("compute_capability")
    if capability is not None and not isinstance(capability, str):
        # Unquoted, YAML reads 8.9 as a number, and 12.10 as 12.1.
        raise InvalidInputError(f'{where}: quote compute_capability, as in "{capability}"')
    return Device(
        index=index,
        uuid=_uuid(index, vendor, name, memory),
        vendor=vendor,
        name=name,
        memory_total=memory,
        memory_used=used,
        compute_capability=capability,
        simulated=True,
    )


def _size(where: str, key: str, value: object) -> int:
    try:
        return parse_size(value)
    except ValueError as e:
        raise InvalidInputError(f"{where}: {key!r}: {e}") from e


def _uuid(index: int, vendor: str, name: str, memory: int) -> str:
    digest = hashlib.sha256(f"{index}\0{vendor}\0{name}\0{memory}".encode()).hexdigest()
    return f"SIM-{digest[:16]}"
