"""Report sections about the machine rather than the kernels' speed: the compile check per target and node health.

* STATIC — ``results/static/<arch>.csv`` (``rooflab compile``): every candidate config of the headline
  kernels compiled for each target (sm_90a, sm_100a, sm_103a, sm_120a, gfx942, gfx950) on a CPU, nothing
  run: registers, spills, shared memory (LDS), occupancy, the tensor-core instructions, TMA and 16-byte
  global accesses; one table per target.
* Node health — ``<stem>.health.csv`` beside a ``rooflab ceilings --gpus all`` run: each GPU's ceilings
  against the median of its same-SKU siblings, the slow or throttled ones flagged.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis.markdown import number, percent, table

STATIC_DIR = "static"


def _yes(series: pd.Series) -> pd.Series:
    return series.astype(str).str.strip().str.lower().isin(("true", "1", "yes"))


def _int(series: pd.Series) -> pd.Series:
    return pd.to_numeric(series, errors="coerce").fillna(0).astype(int)


def _mma(group: pd.DataFrame) -> str:
    """Configs per tensor-core instruction family, e.g. "wgmma 8/8", "mfma+scaled 4/4" ("wgmma" column of an
    older sm_90a table when there is no "mma" column)."""
    if "mma" not in group or ((group["mma"] == "").all() and _yes(group["wgmma"]).any()):
        return f"wgmma {_yes(group['wgmma']).sum()}/{len(group)}"
    scaled = _yes(group["scaled_mma"]) if "scaled_mma" in group else pd.Series(False, index=group.index)
    names = group["mma"].where(group["mma"] != "", "none") + scaled.map({True: "+scaled", False: ""})
    return ", ".join(f"{name} {count}/{len(group)}" for name, count in names.value_counts().sort_index().items())


def static_section(results_dir: Path) -> str:
    """One table per arch: per kernel and variant, what its configs compile to."""
    files = sorted((Path(results_dir) / STATIC_DIR).glob("*.csv"))
    if not files:
        return ""
    out = ["## Compile check per target (STATIC: compiled on a CPU, nothing run)\n",
           "Every config each family's pruner keeps for the headline shapes, compiled for each target by "
           "`rooflab compile --arch …` (ptxas from the Triton wheel; the AMDGCN metadata on AMD). Spill bytes "
           "are stores + loads per thread (scratch bytes per lane on AMD); registers are VGPRs on AMD; "
           "16-byte loads or stores = `ld.global.v4`/`st.global.v4` of 32-bit lanes (`*_dwordx4` on AMD) "
           "present (TMA moves tiles without them); tensor-core MMA = the instruction family in the PTX/AMDGCN "
           "(tcgen05, wgmma, mma.sync, mfma; +scaled = block-scaled FP4/FP8 MMA). A memory-bound kernel that "
           "spills or loses its 16-byte loads cannot reach the DRAM roof; CI fails on either, and on a tensor-core "
           "kernel compiled to scalar FMA (`rooflab compile --check`, sm_90a, sm_100a, gfx942).\n"]
    for path in files:
        try:
            rows = pd.read_csv(path, dtype=str).fillna("")
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            out.append(f"`{path}`: unreadable ({str(exc).splitlines()[0]})\n")
            continue
        if rows.empty or "kernel" not in rows:
            continue
        arch = ", ".join(sorted(set(rows.get("arch", pd.Series([path.stem]))))) or path.stem
        triton = ", ".join(sorted(set(rows.get("triton", pd.Series([""]))) - {""})) or "?"
        spills = _int(rows["spill_stores"]) + _int(rows["spill_loads"])
        rows = rows.assign(spill=spills, regs=_int(rows["registers"]), smem=_int(rows["smem_bytes"]),
                           ok=rows["status"] == "ok")
        lines = []
        for (kernel, variant), group in rows.groupby(["kernel", "variant"], sort=True):
            spilled = group[group["spill"] > 0]
            notes = "; ".join(sorted({n for n in spilled.get("note", pd.Series(dtype=str)) if n}))[:160]
            lines.append([kernel, variant, len(group), int((~group["ok"]).sum()), int(group["regs"].max()),
                          f"{len(spilled)} (max {int(spilled['spill'].max())} B)" if len(spilled) else "0",
                          f"{group['smem'].max() / 1024:.0f} KiB", _mma(group),
                          f"{_yes(group['tma']).sum()}/{len(group)}",
                          f"{(_yes(group['ld_global_v4']) | _yes(group.get('st_global_v4', group['ld_global_v4']))).sum()}"
                          f"/{len(group)}", notes])
        out.append(f"### {arch} (Triton {triton}; `{path.as_posix()}`)\n")
        out.append(table(["kernel", "variant", "configs", "not compiled", "max registers", "configs spilling",
                          "max smem", "tensor-core MMA", "TMA", "16-byte loads or stores", "why a spill is kept"], lines))
    return "\n".join(out)


def health_files(sources: list[str]) -> list[Path]:
    """The node-health tables beside a device's runs."""
    folders = {Path(s).parent for s in sources}
    return sorted(p for folder in folders for p in folder.glob("*.health.csv"))


def health_section(sources: list[str]) -> str:
    """Per-GPU ceilings of each `ceilings --gpus` run, flagged against the same-SKU median (MEASURED)."""
    files = health_files(sources)
    if not files:
        return ""
    out = ["## Node health (MEASURED: `rooflab ceilings --gpus all`)\n",
           "Each GPU's ceilings against the median of its same-SKU siblings on the node; a GPU more than the "
           "margin below (launch latency: above) or with throttled rows is flagged.\n"]
    scales = {"dram_bw": (1e9, "GB/s"), "l2_bw": (1e9, "GB/s"), "tensor_flops": (1e12, "TFLOP/s"),
              "vector_flops": (1e12, "TFLOP/s"), "launch_stream_s": (1e-6, "µs"), "launch_graph_s": (1e-6, "µs")}
    for path in files:
        try:
            rows = pd.read_csv(path, dtype={"dtype": str, "reason": str}).fillna({"dtype": "", "reason": ""})
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            out.append(f"`{path}`: unreadable ({str(exc).splitlines()[0]})\n")
            continue
        lines = []
        for row in rows.itertuples():
            scale, unit = scales.get(row.metric, (1.0, ""))
            metric = f"{row.metric} {row.dtype}".strip()
            shown = number(row.value, 4, scale) if unit else str(row.value)
            lines.append([row.gpu, row.name, metric, f"{shown} {unit}".strip(),
                          f"{number(row.median, 4, scale)} {unit}".strip() if unit else "",
                          percent(row.ratio, 1) if unit else "", "**FLAGGED**" if str(row.flagged) == "True" else "",
                          row.reason])
        out.append(f"`{path.name}`\n")
        out.append(table(["GPU", "name", "ceiling", "value", "median of siblings", "ratio", "", "reason"], lines))
    return "\n".join(out)
