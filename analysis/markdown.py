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
    return significant(value / scale, digits)


def significant(value: float, digits: int = 3) -> str:
    """``digits`` significant figures without exponent notation between 1e-4 and 1e6 (1180, not 1.18e+03)."""
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    rounded = float(f"{value:.{digits}g}")  # rounding first: 99.96 → 100, whose magnitude is then 2
    magnitude = math.floor(math.log10(abs(rounded)))
    if -4 <= magnitude < 6:
        text = f"{rounded:.{max(digits - 1 - magnitude, 0)}f}"
        return text.rstrip("0").rstrip(".") if "." in text else text
    return f"{value:.{digits}g}"


def exact(value) -> str:
    """An axis value as it was measured: 8192, never 8190; 0.5 stays 0.5."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return MISSING if value in (None, "") else str(value)
    if not math.isfinite(value):
        return number(value)
    return str(int(value)) if value.is_integer() else f"{value:g}"


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


def plural(count: int, noun: str, many: str | None = None) -> str:
    """"1 run", "2 runs", "1 device"."""
    return f"{count} {noun if count == 1 else (many or noun + 's')}"


SI_PREFIXES = ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))


def quantity(value, unit: str, digits: int = 3) -> str:
    """A value with an SI prefix and its unit: 3.35 TB/s, 989 TFLOP/s, 80 GB; times as µs/ms/s."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return MISSING
    if not math.isfinite(value):
        return MISSING
    if unit == "s":
        for scale, name in ((1.0, "s"), (1e-3, "ms"), (1e-6, "µs")):
            if abs(value) >= scale:
                return f"{significant(value / scale, digits)} {name}"
        return f"{significant(value * 1e9, digits)} ns"
    for scale, prefix in SI_PREFIXES:
        if abs(value) >= scale:
            return f"{significant(value / scale, digits)} {prefix}{unit}"
    return f"{significant(value, digits)} {unit}"


def capability(value) -> str:
    """[9, 0] or "9.0" → "9.0"."""
    if isinstance(value, (list, tuple)):
        return ".".join(str(v) for v in value)
    return str(value)
