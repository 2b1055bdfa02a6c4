"""The Markdown report: ``build_report(results_dir, out_dir)`` writes ``index.md``, ``predicted.md``,
``tokenomics.md`` (+ CSV) and one ``<slug>/report.md`` per device (with PNG figures and ``fits.csv``), from
result files alone (no GPU needed).

The report owns what it writes and nothing else: each build is written aside (a hidden folder in the output
folder) and swapped in only when complete, so a build that fails leaves the previous report as it was; its
files are listed in a manifest, and the next build removes those it did not write again, so no stale page or
image survives and no file the report did not make is ever touched. Figures carry no software version or date:
the same results give the same bytes.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import tempfile
from pathlib import Path

import pandas as pd

from analysis import sections, sections_fits, sections_moe, sections_node, sections_theory, sections_tokenomics
from analysis.ceilings import DeviceRoofs, derive_ceilings
from analysis.comparison import comparison
from analysis.devices import match_device
from analysis.frames import timed, unsteady
from analysis.markdown import exact, number, plural, slug, table
from analysis.sections import Device, figure, figure_failures
from analysis.sweeps import fit_sweeps
from bench.results import REPORT_MANIFEST, REPORT_STAGING, load_results, read_sidecar
from kernels.errors import UsageError

MANIFEST = REPORT_MANIFEST
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
        device.pooled, device.sweeps = fit_sweeps(points, roofs.caps)  # unsteady rows: drawn hollow, not fitted
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
                  sections_fits.quant_section(device, out_dir), sections_moe.device_section(device, out_dir),
                  "## Decode step from this device's kernels\n\nThe decode-step model with this device's fitted "
                  "kernels (MEASURED terms) beside its datasheet prediction: [../tokenomics.md](../tokenomics.md).\n"]
    parts += [sections_node.health_section(sorted(device.frame["source"].unique())),
              sections.failures_section(device), sections.interpret_section(device)]
    path = out_dir / "report.md"
    path.write_text("\n".join(p for p in parts if p))
    return path


# ---------------------------------------------------------------------------------------------
# The output folder: refuse what cannot be written, build aside, swap in, remove what the last build wrote
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


def _owned(out_dir: Path) -> list[Path]:
    """The files the previous build wrote: its manifest's, else a pre-manifest report's."""
    try:
        return [out_dir / str(name) for name in json.loads((out_dir / MANIFEST).read_text())["files"]]
    except (OSError, ValueError, KeyError, TypeError):
        return _legacy(out_dir)


def prepare(results_dir: Path, out_dir: Path) -> Path:
    """Check the folder can hold the report (one line if not); return an empty folder to build in.

    The build folder is inside ``out_dir`` (same file system, so each file's swap is a rename); one left by a
    build that was killed is removed."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"report --out {out_dir}: is a file; give a directory for the report")
    if results_dir.resolve().is_relative_to(out_dir.resolve()):
        raise UsageError(f"report --out {out_dir}: holds the --results {results_dir} it would report on; give a "
                         f"folder of its own (default {Path('results') / 'report'}), e.g. --out {results_dir / 'report'}")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"report --out {out_dir}: cannot create it ({exc.strerror or exc})") from None
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise UsageError(f"report --out {out_dir}: not writable")
    for stale in out_dir.glob(f"{REPORT_STAGING}*"):
        shutil.rmtree(stale, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=REPORT_STAGING, dir=out_dir))


def _remove(out_dir: Path, stale: list[Path]) -> None:
    root = out_dir.resolve()
    for path in stale:
        if path.resolve().is_relative_to(root) and path.is_file():
            path.unlink()
    for folder in sorted({p.parent for p in stale}, key=lambda p: -len(p.parts)):
        if folder != out_dir and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def swap(stage: Path, out_dir: Path) -> None:
    """Move the finished build into ``out_dir`` file by file, remove what the previous build wrote and this one
    did not, and record this build's files in the manifest (last, so it never lists a file not yet there)."""
    written = sorted(p.relative_to(stage).as_posix() for p in _files(stage))
    previous = _owned(out_dir)
    for name in written:
        (out_dir / name).parent.mkdir(parents=True, exist_ok=True)
        os.replace(stage / name, out_dir / name)
    _remove(out_dir, [p for p in previous if p.relative_to(out_dir).as_posix() not in written])
    (stage / MANIFEST).write_text(json.dumps({"files": written}, indent=1) + "\n")
    os.replace(stage / MANIFEST, out_dir / MANIFEST)


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


def _unsteady_summary(devices) -> str:
    """First-page count of timed rows kept out of the ceilings and fits, per device."""
    counts = [(d, int(unsteady(d.points).sum())) for d in devices if d.timed]
    counts = [(d, n) for d, n in counts if n]
    if not counts:
        return ""
    listed = "; ".join(f"{d.name} (`{d.slug}`): {n} of {len(d.points)}" for d, n in counts)
    return (f"**Not converged or thermally throttled:** {listed} timed rows — their stopping rule was not met "
            "(two modes, drift, or a wide interval at the timeout) or heat or a hardware slowdown held the clocks "
            "down. They stay in the tables, are drawn hollow in every figure, and are left out of the measured "
            "ceilings and the fits.\n")


def build_report(results_dir: Path | str, out_dir: Path | str, bad: list[tuple[Path, str]] | None = None,
                 failed: list[tuple[Path, str]] | None = None) -> Path:
    """Write the report into ``out_dir`` from the runs under ``results_dir``; return the index path.

    Files that cannot be read are listed in the index (and appended to ``bad`` when given); the rest are
    reported. Figures that cannot be drawn are named on their pages and in the index (and appended to
    ``failed`` as (path under ``out_dir``, reason)). The report is built aside and swapped in only when
    complete: a build that fails leaves the previous report as it was."""
    results_dir, out_dir = Path(results_dir), Path(out_dir)
    bad = [] if bad is None else bad
    failed = [] if failed is None else failed
    frame = load_results(results_dir, bad, skip=(out_dir,))  # one line when results_dir does not exist
    stage = prepare(results_dir, out_dir)
    token = figure_failures.set([])
    try:
        _write_report(results_dir, stage, frame, bad)
        failed += [(path.relative_to(stage), reason) for path, reason in figure_failures.get()]
        swap(stage, out_dir)
    finally:
        figure_failures.reset(token)
        shutil.rmtree(stage, ignore_errors=True)
    return out_dir / "index.md"


def _comparison(slow: Device, fast: Device, out_dir: Path) -> str:
    """Two devices' comparison (its table and figure); a line naming its figure when it cannot be drawn."""
    done: list[str] = []
    path = out_dir / (slug(f"compare-{slow.slug}-vs-{fast.slug}") + ".png")
    line = figure(path, lambda _: done.append(comparison(slow, fast, out_dir)), f"{fast.name} vs {slow.name}")
    return done[0] if done else f"### {fast.name} vs {slow.name}\n\n{line}"


def _figures_section(out_dir: Path) -> str:
    failed = figure_failures.get() or []
    if not failed:
        return ""
    lines = [f"## Figures not drawn ({len(failed)})\n", "Each is named on its page with the reason; the report's "
             "tables still hold its numbers:\n"]
    lines += [f"- `{path.relative_to(out_dir).as_posix()}`: {reason}" for path, reason in failed]
    return "\n".join(lines) + "\n"


def _write_report(results_dir: Path, out_dir: Path, frame: pd.DataFrame, bad: list[tuple[Path, str]]) -> None:
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
             _unsteady_summary(devices), sections_theory.index_summary(devices), _claims_summary(claims_table)]
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
        parts += [_comparison(a, b, out_dir) for a, b in itertools.combinations(ordered, 2)]
    parts.append(sections_node.static_section(results_dir) if results_dir.is_dir() else "")
    parts.append(_figures_section(out_dir))
    index.write_text("\n".join(p for p in parts if p))
