"""Markdown sections of a device report: what ran (device, software, runs), the measured ceilings, failures."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from analysis.ceilings import DeviceRoofs, best
from analysis.devices import Datasheet
from analysis.markdown import MISSING, capability, number, quantity, table
from analysis.sweeps import SweepFit
from analysis.tables import failures


# (figure path, why it could not be drawn) for each figure of the build in progress that failed
figure_failures: ContextVar[list[tuple[Path, str]] | None] = ContextVar("figure_failures", default=None)


def figure(path: Path, draw: Callable[[Path], Any], alt: str) -> str:
    """Draw ``path`` with ``draw``; the Markdown image, or, when it cannot be drawn, one line naming the figure
    and why (the report goes on: its tables hold the figure's numbers)."""
    try:
        draw(path)
    except Exception as exc:  # noqa: BLE001 - one figure must not cost the report
        path.unlink(missing_ok=True)
        text = str(exc).strip().splitlines()
        reason = f"{type(exc).__name__}: {text[0] if text else 'no message'}"
        failed = figure_failures.get()
        if failed is not None:
            failed.append((path, reason))
        return f"**Figure `{path.name}` ({alt}) could not be drawn:** {reason}.\n"
    return f"![{alt}]({path.name})\n"


@dataclass(eq=False)
class Device:
    """Everything the report knows about one device (one results/<slug>/ directory)."""

    slug: str
    name: str
    info: dict  # the newest run's sidecar "device" block
    runs: pd.DataFrame
    frame: pd.DataFrame
    datasheet: Datasheet | None
    roofs: DeviceRoofs
    points: pd.DataFrame  # timed rows
    pooled: list[SweepFit] = field(default_factory=list)
    sweeps: list[SweepFit] = field(default_factory=list)  # per shape

    @property
    def timed(self) -> bool:
        return not self.points.empty

    @property
    def l2_bytes(self) -> float | None:
        value = self.info.get("l2_bytes")
        if value:
            return float(value)
        return self.datasheet.l2_bytes if self.datasheet else None

    def dram_bandwidth(self) -> float:
        """The best measured DRAM ceiling, else the datasheet's, else NaN."""
        measured = best(self.roofs.table, "dram_bw")
        if np.isfinite(measured):
            return measured
        return self.datasheet.bandwidth if self.datasheet else float("nan")


def _value(key: str, value) -> str:
    """A metadata value as a reader wants it: sizes in GB/MiB, clocks in MHz, capability as 9.0."""
    if value is None or value == "":
        return MISSING
    if key.endswith("capability"):
        return capability(value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value)) or MISSING
    if isinstance(value, (int, float)):
        if key.endswith("l2_bytes"):
            return f"{value / 2**20:.3g} MiB"
        if key.endswith("_bytes"):
            return quantity(value, "B")
        if key.endswith("_mhz"):
            return f"{value:.0f} MHz"
        if key.endswith("_s"):
            return quantity(value, "s")
        return number(value, 4) if isinstance(value, float) else str(value)
    return str(value)


def _flatten(prefix: str, data: dict) -> list[tuple[str, str]]:
    pairs = []
    for key, value in sorted(data.items()):
        if isinstance(value, dict):
            pairs += _flatten(f"{prefix}{key}.", value)
        else:
            pairs.append((f"{prefix}{key}", _value(key, value)))
    return pairs


def metadata_section(device: Device) -> str:
    info = device.info
    ds = device.datasheet
    match = f"{ds.name} (datasheet: {ds.source('bandwidth')})" if ds else "unknown GPU: measured ceilings only"
    newest = device.runs.sort_values("started").iloc[-1]["meta"]
    pairs = [("name", info.get("name", device.name)), ("datasheet match", match)]
    pairs += _flatten("", {k: v for k, v in info.items() if k not in ("name", "slug")})
    pairs += _flatten("software.", newest.get("software") or {}) + _flatten("timing.", newest.get("timing") or {})
    pairs += [("git", f"{newest.get('git_commit') or MISSING}" + (" (dirty)" if newest.get("git_dirty") else ""))]
    out = ["## Device and software (newest run)\n", table(["field", "value"], pairs), "## Runs\n",
           table(["run", "suite", "mode", "started", "commit", "rows", "ok", "failed", "skipped", "command"],
                 [[r.run_id, r.suite, r.mode, r.started, r.commit, r.rows, r.ok, r.failed, r.skipped,
                   f"`{r.command}`" if r.command else ""] for r in device.runs.itertuples()])]
    return "\n".join(out)


UNITS = {"B/s": "B/s", "FLOP/s": "FLOP/s", "s": "s"}


def ceilings_section(device: Device) -> str:
    measured = device.roofs.table
    ds = device.datasheet
    out = ["## Measured ceilings vs datasheet (MEASURED beside the datasheet)\n",
           "Rules: analysis/ceilings.py (DRAM: median of the three largest cold sweeps ≥ 4× L2; L2: slope of time "
           "vs bytes over warm sweeps ≤ L2/2; tensor: best square GEMM ≥ 2048, fp32 GEMMs on tf32 tensor cores; "
           "CUDA cores: best fma; launch: per kernel, back-to-back). Ratio = measured / datasheet.\n"]
    if measured.empty:
        out.append("No ceilings measured (run `rooflab ceilings`): " +
                   ("the datasheet's roofs are used instead.\n" if ds else "unknown GPU, so no roofs at all.\n"))
    rows = []
    for r in measured.itertuples():
        sheet = float("nan")
        if ds is not None:
            sheet = {"dram_bw": ds.bandwidth, "tensor_flops": ds.tensor(r.dtype) or np.nan,
                     "vector_flops": ds.fp32_flops if r.dtype == "fp32" else np.nan}.get(r.ceiling, np.nan)
        unit = UNITS[r.unit]
        rows.append([r.ceiling, r.kernel, r.impl, r.dtype, quantity(r.value, unit), quantity(sheet, unit),
                     number(r.value / sheet if np.isfinite(sheet) else np.nan), r.source_rows])
    if rows:
        out.append(table(["ceiling", "kernel", "impl", "dtype", "measured", "datasheet", "ratio", "source rows"], rows))
    return "\n".join(out)


def failures_section(device: Device) -> str:
    bad = failures(device.frame)
    counts = device.frame["status"].value_counts()
    out = ["## Failed and skipped points\n",
           f"ok {int(counts.get('ok', 0))}, failed {int(counts.get('failed', 0))}, "
           f"skipped {int(counts.get('skipped', 0))}.\n"]
    if not bad.empty:
        out.append(table(["status", "kernel", "impl", "dtype", "reason", "count"], bad.itertuples(index=False)))
    throttled = device.points[device.points["throttle"].astype(str).str.strip() != ""]
    if not throttled.empty:
        reasons = ", ".join(f"{reason} ({count})" for reason, count in throttled["throttle"].value_counts().items())
        out.append(f"{len(throttled)} timed points saw clock throttling ({reasons}); they stay in the fits, "
                   "so their kernels' efficiencies include it.\n")
    return "\n".join(out)


def interpret_section(device: Device) -> str:
    rows = device.frame[device.frame["mode"] == "interpret"]
    if rows.empty:
        return ""
    out = ["## Interpreter runs: correctness only, no timings\n",
           "These rows ran under the Triton interpreter on a CPU: they check results, they time nothing.\n"]
    summary = []
    for (kernel, impl, dtype), group in rows.groupby(["kernel", "impl", "dtype"], sort=True):
        counts = group["status"].value_counts()
        summary.append([kernel, impl, dtype, int(counts.get("ok", 0)), int(counts.get("failed", 0)),
                        int(counts.get("skipped", 0)), number(group["rel_err"].max())])
    out.append(table(["kernel", "impl", "dtype", "ok", "failed", "skipped", "max rel. error"], summary))
    return "\n".join(out)
