"""The verdict of ``rooflab ab`` as a markdown summary (for ``$GITHUB_STEP_SUMMARY``) and an exit code.

Points are listed worst first: HEAD failing the gate, slower (largest ratio first), not judged,
inconclusive, faster, no change, skipped. "Of the roof" is the datasheet roofline time over the
measured median (1 = on the roof) for each side, so a regression reads against what the GPU allows.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from bench.ab_stats import SEVERITY, Verdict, noise_floor


def exit_code(outcomes, threshold: float) -> int:
    """1: a regression (slower, or HEAD fails where BASE passes); else 2: something could not be judged
    (a side missing, failing or dead, or an interval that cannot rule out a threshold slowdown); else 0."""
    if any(o.verdict.regression for o in outcomes):
        return 1
    for o in outcomes:
        if o.verdict is Verdict.NOT_JUDGED:
            return 2
        if o.verdict is Verdict.INCONCLUSIVE and o.estimate is not None and o.estimate.high - 1 >= threshold:
            return 2
    return 0


def _roof_fraction(row: dict, device: dict):
    """Datasheet roofline time / measured median for one side's row (None when unknown or untimed)."""
    try:
        from analysis.ceilings import VECTOR_KERNELS
        from analysis.devices import match_device
        from analysis.roofline import efficiency
    except ImportError:
        return None
    median = row.get("median_s")
    if not median or not device.get("name"):
        return None
    sheet = match_device(device["name"], device.get("memory_bytes"), device.get("sm_count"))
    if sheet is None:
        return None
    peak = sheet.peak_for(row.get("dtype") or "", tensor=row.get("kernel") not in VECTOR_KERNELS)
    value = float(efficiency(row.get("flops") or 0.0, row.get("bytes") or 0.0, median,
                             math.nan if peak is None else peak, sheet.bandwidth))
    return value if math.isfinite(value) and value > 0 else None


def _percent(value) -> str:
    if value is None:
        return "—"
    percent = 100 * value
    return f"{percent:.0f}%" if percent >= 10 else f"{percent:.2g}%"


def _order(outcome) -> tuple:
    ratio = outcome.estimate.ratio if outcome.estimate is not None else 1.0
    return SEVERITY[outcome.verdict], -ratio if outcome.verdict is not Verdict.FASTER else ratio


def headline(code: int, outcomes) -> str:
    regressions = sum(o.verdict.regression for o in outcomes)
    if code == 1:
        return f"{regressions} regression{'s' * (regressions != 1)} — exit 1"
    if code == 2:
        return "could not judge every point — exit 2"
    return "no regression — exit 0"


def summary(outcomes, facts: dict, code: int) -> str:
    """The markdown summary: header, counts, noise floor, one table row per point, worst first."""
    level = f"{facts['confidence']:.0%}"
    device = facts.get("device") or {}
    where = "Triton interpreter (CPU): correctness only" if facts["interpret"] else (
        f"{device.get('name') or 'GPU'} `{facts.get('gpu', '')}`")
    counts = {v: sum(o.verdict is v for o in outcomes) for v in Verdict}
    lines = [f"## rooflab ab: {headline(code, outcomes)}", "",
             f"**BASE** {facts['base']} → **HEAD** {facts['head']} · {where} · "
             f"threshold {facts['threshold']:.0%} · {level} intervals · seed {facts['seed']}", "",
             "; ".join(f"{n} {v.value}" for v, n in counts.items() if n) +
             f" ({len(outcomes)} point{'s' * (len(outcomes) != 1)}).", ""]
    floor = noise_floor([o.estimate for o in outcomes if o.estimate is not None])
    if floor is not None:
        width, aa = floor
        note = (" — above the threshold: this run cannot resolve a change that small; find a quieter GPU"
                if width >= facts["threshold"] else "")
        lines += [f"Noise floor ±{width:.1%}: the median half-width of the points' intervals, the smallest change "
                  f"this run resolves{note}; built-in A/A (same revision within a block) ±{aa:.1%} per block.", ""]
    lines += [f"| point | verdict | HEAD/BASE | {level} interval | of the roof: BASE → HEAD | blocks | why |",
              "|---|---|---|---|---|---|---|"]
    for o in sorted(outcomes, key=_order):
        e = o.estimate
        ratio = f"{e.ratio:.3f}" if e else "—"
        interval = f"{e.low:.3f} … {e.high:.3f}" if e else "—"
        roofs = [_roof_fraction(o.rows.get(side, {}), device) for side in ("base", "head")]
        roof = "—" if roofs == [None, None] else f"{_percent(roofs[0])} → {_percent(roofs[1])}"
        why = (o.why or "").replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {o.name} | **{o.verdict.value}** | {ratio} | {interval} | {roof} | "
                     f"{e.blocks if e else '—'} | {why} |")
    lines += ["", f"HEAD/BASE: ratio of kernel times (> 1: HEAD slower), from ABBA blocks of short repeats on one GPU; "
              f"interval: Student t over the blocks' paired log-ratios. Rows: `{facts['files']['base']}`, "
              f"`{facts['files']['head']}`.", ""]
    return "\n".join(lines)


def write_aside(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename: never half a file."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)
