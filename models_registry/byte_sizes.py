"""Sizes a person reads and types ("10 GiB", "500 MB") for a number of bytes the portal stores (the upload quota)."""

from __future__ import annotations

import re
from decimal import Decimal

UNITS = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
# Shown from the largest unit down: binary first (the default quota is 10 GiB), then decimal.
SHOWN = (
    ("TiB", 1024**4),
    ("GiB", 1024**3),
    ("MiB", 1024**2),
    ("KiB", 1024),
    ("TB", 1000**4),
    ("GB", 1000**3),
    ("MB", 1000**2),
    ("KB", 1000),
)
SIZE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*")


class SizeError(ValueError):
    pass


def parse_size(text: str) -> int:
    """Bytes from "10 GiB", "1.5 GB", "500 MiB" or a plain number of bytes; SizeError saying what is wrong."""
    found = SIZE.fullmatch(text or "")
    if found is None:
        raise SizeError(f"'{text[:40]}' is not a size: write a number and a unit, e.g. 10 GiB or 500 MB.")
    number, unit = found.groups()
    scale = UNITS.get(unit.lower() if unit else "b")
    if scale is None:
        raise SizeError(
            f"'{text[:40]}': unknown unit '{unit[:10]}'. Use B, KB, MB, GB, TB (powers of 1000) or KiB, MiB, GiB, TiB "
            "(powers of 1024)."
        )
    return int(Decimal(number) * scale)


def format_size(size: int) -> str:
    """The size in the largest unit that shows it exactly ("10 GiB", "500 GB"), else in bytes."""
    for unit, scale in SHOWN:
        if size and size % scale == 0:
            return f"{size // scale} {unit}"
    return f"{size} B" if size else "0"
