"""The descriptor table of one simulation (names with units split out)."""

from __future__ import annotations

import math
import re

UNITS = {"_A2_ps": "Å²/ps", "_cm2_s": "cm²/s", "_S_cm": "S/cm", "_THz": "THz", "_ps": "ps", "_fs": "fs", "_K": "K", "_A": "Å"}


def split_unit(name: str) -> tuple[str, str]:
    for suffix, unit in UNITS.items():
        if name.endswith(suffix):
            return name[: -len(suffix)].replace("_", " "), unit
    return name.replace("_", " "), ""


def fmt(v) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def process_data(descriptors: dict, consistency: dict | None = None) -> list[dict]:
    """Rows {descriptor, value, unit} for a table."""
    rows = []
    for k, v in descriptors.items():
        name, unit = split_unit(k)
        rows.append({"descriptor": name, "value": fmt(v), "unit": unit})
    for k, v in (consistency or {}).items():
        name, unit = split_unit(k)
        rows.append({"descriptor": "consistency: " + re.sub(r"\s+", " ", name), "value": fmt(v), "unit": unit})
    return rows
