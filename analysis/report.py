"""The Markdown report: ``build_report(results_dir, out_dir)`` writes ``index.md``, ``predicted.md``,
``tokenomics.md`` (+ CSV) and one ``<slug>/report.md`` per device (with PNG figures and ``fits.csv``), from
result files alone (no GPU needed).

The report owns what it writes and nothing else: the files of each build are listed in a manifest in the
output folder and removed by the next build before it writes, so no stale page or image survives and no
file the report did not make is ever touched.
"""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

import pandas as pd

from analysis import sections, sections_fits, sections_node, sections_theory, sections_tokenomics
from analysis.ceilings import DeviceRoofs, derive_ceilings
from analysis.comparison import comparison
from analysis.devices import match_device
from analysis.frames import timed
from analysis.markdown import exact, number, plural, slug, table
from analysis.sections import Device
from analysis.sweeps import fit_sweeps
from bench.results import load_results, read_sidecar
from kernels.errors import UsageError

MANIFEST = ".rooflab-report.json"
TITLE = "# rooflab report"


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
    return device


def _device_report(device: Device, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    ds = device.datasheet
    interpret_only = (device.frame["mode"] == "interpret").all()
    heading = (f"Datasheet: {ds.name}. Figures and tables on this page are MEASURED unless marked predicted "
               f"(the datasheet roofs, dashed); the datasheet-only predictions are on [../predicted.md]"
               "(../predicted.md).\n" if ds else
               "Interpreter runs only: no GPU, no timings.\n" if interpret_only else
               "Unknown GPU: measured ceilings only (no datasheet roofs).\n")
    parts = [f"# {device.name} (`{device.slug}`)\n", heading, sections.metadata_section(device)]
    if not device.timed:
        parts.append("**No timed points:** every row here is interpret mode or not ok, so there are no ceilings, "
                     "fits or figures for this device.\n")
    else:
        parts += [sections.ceilings_section(device), sections_fits.roofline_section(device, out_dir),
                  sections_fits.bandwidth_section(device, out_dir), sections_fits.fraction_section(device, out_dir),
                  sections_fits.fit_section(device, out_dir), sections_fits.efficiency_section(device, out_dir),
                  sections_fits.quant_section(device, out_dir),
                  "## Decode step from this device's kernels\n\nThe decode-step model with this device's fitted "
                  "kernels (MEASURED terms) beside its datasheet prediction: [../tokenomics.md](../tokenomics.md).\n"]
    parts += [sections_node.health_section(sorted(device.frame["source"].unique())),
              sections.failures_section(device), sections.interpret_section(device)]
    path = out_dir / "report.md"
    path.write_text("\n".join(p for p in parts if p))
    return path


# ---------------------------------------------------------------------------------------------
# The output folder: refuse what cannot be written, remove what the last build wrote
# ---------------------------------------------------------------------------------------------


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def _legacy(out_dir: Path) -> list[Path]:
    """A report written before the manifest existed: its index, device pages and figures (nothing else)."""
    index = out_dir / "index.md"
    if not index.is_file() or not index.read_text(errors="replace").startswith(TITLE):
        return []
    found = [index, *out_dir.glob("*.png")]
    for page in out_dir.glob("*/report.md"):
        found += [page, *page.parent.glob("*.png")]
    return found


def prepare(out_dir: Path) -> set[Path]:
    """Check the folder can be written (one line if not), remove the previous build's files; return the files
    left (not the report's)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"report --out {out_dir}: is a file; give a directory for the report")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"report --out {out_dir}: cannot create it ({exc.strerror or exc})") from None
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise UsageError(f"report --out {out_dir}: not writable")
    manifest = out_dir / MANIFEST
    try:
        owned = [out_dir / name for name in json.loads(manifest.read_text())["files"]]
    except (OSError, ValueError, KeyError, TypeError):
        owned = _legacy(out_dir)
    root = out_dir.resolve()
    for path in owned:
        if path.resolve().is_relative_to(root) and path.is_file():
            path.unlink()
    for folder in sorted({p.parent for p in owned}, key=lambda p: -len(p.parts)):
        if folder != out_dir and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    return _files(out_dir)


def finish(out_dir: Path, before: set[Path]) -> None:
    written = sorted(p.relative_to(out_dir).as_posix() for p in _files(out_dir) - before if p.name != MANIFEST)
    (out_dir / MANIFEST).write_text(json.dumps({"files": written}, indent=1) + "\n")


# ---------------------------------------------------------------------------------------------
# The index
# ---------------------------------------------------------------------------------------------


def _bad_section(bad: list[tuple[Path, str]]) -> str:
    if not bad:
        return ""
    lines = [f"## Files not loaded ({len(bad)})\n", "Every other file is in the report; each of these is named with "
             "the reason it was skipped:\n"]
    lines += [f"- `{path}`: {reason.split(': ', 1)[-1] if reason.startswith(str(path)) else reason}"
              for path, reason in bad]
    return "\n".join(lines) + "\n"


def _claims_summary(claims_table: pd.DataFrame) -> str:
    rows = [[r.preset, r.scenario, r.basis, f"{number(r.equal_b1)}×", f"{exact(r.cap_slow)} / {exact(r.cap_fast)}",
             f"{number(r.at_cap)}×"] for r in claims_table.itertuples()]
    return "\n".join([
        "## Decode economics: H200 over H100\n",
        f"Full page with the model, memory caps, figure and CSV: [{sections_tokenomics.PAGE}]"
        f"({sections_tokenomics.PAGE}). The articles claim 1.43× interactivity at equal batch and ≈ 3× lower cost "
        "at the larger batch H200 holds; MLPerf v4.1 measured 1.28–1.35× per GPU on Llama-2-70B.\n",
        table(["preset", "scenario", "basis", "interactivity at batch 1", "max batch H100 / H200",
               "throughput per GPU at each max batch"], rows)])


def build_report(results_dir: Path | str, out_dir: Path | str, bad: list[tuple[Path, str]] | None = None) -> Path:
    """Write the report into ``out_dir`` from the runs under ``results_dir``; return the index path.

    Files that cannot be read are listed in the index (and appended to ``bad`` when given); the rest are
    reported."""
    results_dir, out_dir = Path(results_dir), Path(out_dir)
    bad = [] if bad is None else bad
    frame = load_results(results_dir, bad, skip=(out_dir,))  # one line when results_dir does not exist
    before = prepare(out_dir)
    index = out_dir / "index.md"
    runs = _run_table(frame) if not frame.empty else pd.DataFrame()
    devices = []
    if not runs.empty:
        frame = frame.merge(runs[["source", "slug"]], on="source", how="left")
        devices = [_device(s, runs[runs["slug"] == s], frame[frame["slug"] == s].drop(columns="slug"))
                   for s in sorted(runs["slug"].unique())]
    paths = {d.slug: _device_report(d, out_dir / slug(d.slug)) for d in devices}
    sections_theory.predicted_page(devices, out_dir)
    _, claims_table = sections_tokenomics.tokenomics_page(devices, out_dir)
    measured = [d for d in devices if d.timed]
    if runs.empty:
        built = (f"No runs under `{results_dir}`: nothing measured yet. Run `rooflab run` (or `rooflab ceilings`) "
                 "on a GPU to measure; until then the pages below are predictions from the device table.\n")
    else:
        built = (f"Built from `{results_dir}`: {plural(len(runs), 'run')} on {plural(len(devices), 'device')}"
                 f" ({len(measured)} with timings).\n")
    parts = [f"{TITLE}\n", built,
             "**Measured or predicted?** MEASURED = medians of timed rows under results/ and what is fitted to them; "
             "PREDICTED = the device table's datasheet figures through the roofline (and, for decode economics, "
             "the decode-step model). Every table and figure says which.\n", _bad_section(bad),
             sections_theory.index_summary(devices), _claims_summary(claims_table)]
    if devices:
        parts += ["## Devices\n",
                  table(["device", "slug", "datasheet", "runs", "timed points", "report"],
                        [[d.name, d.slug, d.datasheet.name if d.datasheet else "unknown GPU: measured ceilings only",
                          len(d.runs), len(d.points), f"[report]({paths[d.slug].relative_to(out_dir).as_posix()})"]
                         for d in devices]),
                  "## Runs\n",
                  table(["run", "device", "suite", "mode", "started", "commit", "rows", "ok", "failed", "skipped"],
                        [[r.run_id, r.slug, r.suite, r.mode, r.started, r.commit, r.rows, r.ok, r.failed, r.skipped]
                         for r in runs.itertuples()])]
    if any(r == "interpret" for r in runs.get("mode", [])) and not measured:
        parts.append("Only interpret-mode runs so far: correctness checks without timings.\n")
    ordered = sorted(measured, key=lambda d: d.dram_bandwidth())
    if len(ordered) > 1:
        parts.append("## Device comparison (MEASURED)\n")
        parts += [comparison(a, b, out_dir) for a, b in itertools.combinations(ordered, 2)]
    parts.append(sections_node.static_section(results_dir) if results_dir.is_dir() else "")
    index.write_text("\n".join(p for p in parts if p))
    finish(out_dir, before)
    return index
