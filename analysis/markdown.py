"""Markdown helpers: tables and number formatting ("–" for a value that is not there)."""

from __future__ import annotations

import math
import re
from typing import Iterable, Sequence

MISSING = "–"


def number(value, digits: int = 3, scale: float = 1.0) -> str:
    """``value / scale`` to ``digits`` significant figures; "–" for None/NaN, "∞" for inf."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return MISSING if value in (None, "") else str(value)
    if math.isnan(value):
        return MISSING
    if math.isinf(value):
        return "∞" if value > 0 else "−∞"
    return f"{value / scale:.{digits}g}"


def percent(value, digits: int = 0) -> str:
    return MISSING if value is None or not math.isfinite(float(value)) else f"{100 * float(value):.{digits}f} %"


def cell(value) -> str:
    text = MISSING if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ") or MISSING


def table(headers: Sequence[str], rows: Iterable[Sequence]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def slug(text: str) -> str:
    """A safe file-name piece."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", str(text)).strip("-") or "x"
