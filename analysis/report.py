"""The Markdown report: ``build_report(results_dir, out_dir)`` writes ``index.md`` and one
``<slug>/report.md`` (with PNG figures) per device, from result files alone (no GPU needed)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pandas as pd

from analysis import decode, plots, sections
from analysis.ceilings import DeviceRoofs, derive_ceilings
from analysis.devices import match_device
from analysis.sweeps import fit_sweeps
from analysis.frames import timed
from analysis.markdown import slug, table
from analysis.sections import Device
from bench.results import load_results, read_sidecar
from kernels.models import MODELS, Model


def _run_table(frame: pd.DataFrame) -> pd.DataFrame:
    runs = []
    for source, rows in frame.groupby("source", sort=True):
        meta = read_sidecar(source)
        device = meta.get("device") or {}
        counts = rows["status"].value_counts()
        runs.append(dict(
            source=source, run_id=meta.get("run_id") or rows["run_id"].iloc[0],
            slug=device.get("slug") or Path(source).parent.name, name=device.get("name") or str(rows["device"].iloc[0]),
            suite=meta.get("suite", ""), mode=meta.get("mode", ""), started=str(meta.get("started", "")),
            commit=str(meta.get("git_commit", ""))[:12], command=meta.get("command", ""), rows=len(rows),
            ok=int(counts.get("ok", 0)), failed=int(counts.get("failed", 0)), skipped=int(counts.get("skipped", 0)),
            meta=meta))
    return pd.DataFrame(runs)


def _device(slug_: str, runs: pd.DataFrame, frame: pd.DataFrame) -> Device:
    newest = runs.sort_values("started").iloc[-1]
    info = newest["meta"].get("device") or {}
    datasheet = match_device(info.get("name", newest["name"]), info.get("memory_bytes"), info.get("sm_count"))
    points = timed(frame)
    roofs = DeviceRoofs(derive_ceilings(points, info.get("l2_bytes")), datasheet)
    device = Device(slug_, newest["name"], info, runs, frame, datasheet, roofs, points)
    if device.timed:
        device.pooled, device.sweeps = fit_sweeps(points, roofs.caps)
        device.decode = _decode(device)
    return device


def _context_for(device: Device, model: Model) -> int:
    rows = device.points[device.points["kernel"] == "attn_decode"]
    if {"heads", "kv_heads", "context"} <= set(rows.columns):
        rows = rows[(rows["heads"] == model.heads) & (rows["kv_heads"] == model.kv_heads)]
        contexts = sorted(int(c) for c in rows["context"].dropna().unique())
        if contexts:
            return 4096 if 4096 in contexts else contexts[len(contexts) // 2]
    return 4096


def _decode(device: Device) -> pd.DataFrame:
    linear = device.points[device.points["kernel"].isin(decode.LINEAR_KERNELS)]
    frames = []
    for dtype, impl in itertools.product(sorted(linear["dtype"].unique()), sorted(linear["impl"].unique())):
        roof = device.roofs.roof("gemm", dtype)
        sheet = device.roofs.sheet("gemm", dtype)
        for model in MODELS:
            frames.append(decode.estimate(device.sweeps, model, impl, dtype, _context_for(device, model),
                                          peak=roof.peak, datasheet=(sheet[1], sheet[0])))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _device_report(device: Device, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    ds = device.datasheet
    interpret_only = (device.frame["mode"] == "interpret").all()
    heading = (f"Datasheet: {ds.name}.\n" if ds else
               "Interpreter runs only: no GPU, no timings.\n" if interpret_only else
               "Unknown GPU: measured ceilings only (no datasheet roofs).\n")
    parts = [f"# {device.name} (`{device.slug}`)\n", heading, sections.metadata_section(device)]
    if not device.timed:
        parts.append("**No timed points:** every row here is interpret mode or not ok, so there are no ceilings, "
                     "fits or figures for this device.\n")
    else:
        parts.append(sections.ceilings_section(device))
        plots.roofline(device.sweeps, sections.plot_ceilings(device), out_dir / "roofline.png",
                       f"{device.name}: empirical roofline")
        parts += ["## Roofline\n", "Measured roofs solid, datasheet dashed; each sweep joined in batch order; "
                  "hollow markers fit in L2; zero-FLOP kernels (copy, fill) are not on a FLOP/s axis.\n",
                  "![roofline](roofline.png)\n",
                  sections.fit_section(device, out_dir), sections.efficiency_section(device, out_dir),
                  sections.quant_section(device, out_dir), sections.decode_section(device)]
    parts += [sections.failures_section(device), sections.interpret_section(device)]
    path = out_dir / "report.md"
    path.write_text("\n".join(p for p in parts if p))
    return path


def build_report(results_dir: Path | str, out_dir: Path | str) -> Path:
    """Write ``<out>/index.md`` and ``<out>/<slug>/report.md`` per device; return the index path."""
    results_dir, out_dir = Path(results_dir), Path(out_dir)
    frame = load_results(results_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    index = out_dir / "index.md"
    if frame.empty:
        index.write_text(f"# rooflab report\n\nNo runs under `{results_dir}`: nothing measured yet. "
                         "Run `rooflab run` (or `rooflab ceilings`) on a GPU first.\n")
        return index
    runs = _run_table(frame)
    frame = frame.merge(runs[["source", "slug"]], on="source", how="left")
    devices = [_device(s, runs[runs["slug"] == s], frame[frame["slug"] == s].drop(columns="slug"))
               for s in sorted(runs["slug"].unique())]
    paths = {d.slug: _device_report(d, out_dir / slug(d.slug)) for d in devices}
    parts = [f"# rooflab report\n\nBuilt from `{results_dir}`: {len(runs)} runs on {len(devices)} devices.\n",
             "## Devices\n",
             table(["device", "slug", "datasheet", "runs", "timed points", "report"],
                   [[d.name, d.slug, d.datasheet.name if d.datasheet else "unknown GPU: measured ceilings only",
                     len(d.runs), len(d.points), f"[report]({paths[d.slug].relative_to(out_dir).as_posix()})"]
                    for d in devices]),
             "## Runs\n",
             table(["run", "device", "suite", "mode", "started", "commit", "rows", "ok", "failed", "skipped"],
                   [[r.run_id, r.slug, r.suite, r.mode, r.started, r.commit, r.rows, r.ok, r.failed, r.skipped]
                    for r in runs.itertuples()])]
    if any(r == "interpret" for r in runs["mode"]) and not any(d.timed for d in devices):
        parts.append("Only interpret-mode runs so far: correctness checks without timings.\n")
    timed_devices = sorted((d for d in devices if d.timed), key=lambda d: d.dram_bandwidth())
    if len(timed_devices) > 1:
        parts.append("## Device comparison\n")
        parts += [sections.comparison(a, b, out_dir) for a, b in itertools.combinations(timed_devices, 2)]
    index.write_text("\n".join(parts))
    return index
