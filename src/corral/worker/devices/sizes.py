"""Memory sizes as people write them: ``24GiB``, ``24 GiB``, ``16GB``, ``512MiB``.

GiB, MiB, KiB and TiB are powers of 1024; GB, MB, KB and TB are powers of
1000, as on a GPU vendor's data sheet or a disk label. Case does not matter.
A bare integer is a number of bytes.
"""

from __future__ import annotations

import re

_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$", re.IGNORECASE)


def parse_size(value: object) -> int:
    """``value`` in bytes. Raises ValueError saying what is wrong."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a size like 24GiB")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{value} is negative")
        return value
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a size like 24GiB")
    match = _SIZE.match(value)
    if match is None or match.group(2).lower() not in _UNITS:
        raise ValueError(
            f"{value!r} is not a size like 24GiB, 16GB or 512MiB (units: B, KB, MB, GB, TB,"
            " KiB, MiB, GiB, TiB)"
        )
    number, unit = match.groups()
    if "." in number and unit == "":
        raise ValueError(f"{value!r}: a number of bytes must be whole")
    return round(float(number) * _UNITS[unit.lower()])
