"""Result files: one tidy CSV row per (point, impl) and a JSON sidecar per run.

Layout: ``results/<device-slug>/<run_id>.csv`` + ``<run_id>.json``. Rows are appended and flushed as
points finish, so an interrupted sweep keeps everything it measured. Loading validates the schema
and fails with one line naming the file and the problem. Only pandas is needed to read results,
so reports build on machines without torch or a GPU.
"""

from __future__ import annotations

import csv
import io
import json
import math
from enum import Enum
from pathlib import Path
from typing import Any, Iterable, Mapping

import pandas as pd

from kernels.errors import UsageError

SCHEMA_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)  # older files load with the newer columns filled as "not recorded"


class Status(str, Enum):
    OK = "ok"
    FAILED = "failed"
    SKIPPED = "skipped"


class Mode(str, Enum):
    CUDA = "cuda"  # timed with CUDA events on a GPU
    INTERPRET = "interpret"  # Triton interpreter on the CPU: correctness only, no timings


# Columns before the per-kernel axis columns …
ID_COLUMNS = ("schema_version", "run_id", "suite", "device", "mode", "kernel", "impl", "dtype", "label")
# … and after them.
METRIC_COLUMNS = (
    "flops",  # from the shape: 2·M·N·K etc.
    "bytes",  # minimal compulsory DRAM traffic, from the shape
    "intensity",  # flops / bytes
    "footprint_bytes",  # bytes resident on the device for the point
    "l2_resident",  # footprint < L2 size: DRAM figures would be inflated
    "l2",  # "cold" (flushed before every sample) or "warm"
    "median_s", "p20_s", "p80_s",
    "cv",  # robust relative spread: 1.4826·MAD / median
    "samples",
    "tflops", "gbps",  # flops / median, bytes / median
    "status",  # ok / failed / skipped
    "rel_err",  # relative Frobenius error against the reference
    "error",  # why a point failed or was skipped
    "config",  # the variant/autotune config that ran
    "graph",  # CUDA-graph policy asked for: auto / always / never
    "launch",  # what ran: "graph" (CUDA-graph replay) or "stream"
    "sm_clock_mhz",  # lowest SM clock seen while sampling (NVML); empty when NVML could not say
    "throttle",  # clock-throttle reasons seen while sampling, "" if none; "retaken:N": N throttled samples retaken
    "timestamp",
    # schema 2
    "ci_rel",  # half-width of the median's 95 % confidence interval, relative to the median
    "converged",  # the stopping rule was met (ci_rel ≤ target) before the timeout / sample cap
    "launches_per_sample",  # kernel launches timed together per sample (R > 1 for short kernels)
    "tune_s",  # host seconds spent compiling and autotuning before the gate (0: cached or nothing to tune)
    "max_elem_err",  # worst |out − ref| / (atol + rtol·|ref|) over the elements; ≤ 1 passes
    "gpu",  # which GPU measured the row (NVML UUID, else cuda:<index>); several GPUs of a node share a run
    # schema 3
    "timer",  # what median/p20/p80/cv are from: "kernel" (device timestamps of the run's kernels) or "event"
    "event_s",  # per-launch median by CUDA events around each sample (node gaps, graph start-up included)
    "kernel_s",  # per-launch median of the run's summed kernel durations (device timestamps); empty: no trace
    "overhead_s",  # event_s − kernel_s: what launching adds per launch
    "gap_s",  # median idle time between consecutive kernels of one sample (graph node gap)
)
BOOL_COLUMNS = ("l2_resident", "converged")
V2_COLUMNS = ("ci_rel", "converged", "launches_per_sample", "tune_s", "max_elem_err", "gpu")
V3_COLUMNS = ("timer", "event_s", "kernel_s", "overhead_s", "gap_s")
NUMERIC_COLUMNS = ("flops", "bytes", "intensity", "footprint_bytes", "median_s", "p20_s", "p80_s", "cv",
                   "samples", "tflops", "gbps", "rel_err", "sm_clock_mhz", "ci_rel", "launches_per_sample",
                   "tune_s", "max_elem_err", "event_s", "kernel_s", "overhead_s", "gap_s")


def columns_for(axis_names: Iterable[str]) -> list[str]:
    axes = list(dict.fromkeys(axis_names))
    clash = set(axes) & (set(ID_COLUMNS) | set(METRIC_COLUMNS))
    if clash:
        raise ValueError(f"axis names clash with result columns: {sorted(clash)}")
    return [*ID_COLUMNS, *axes, *METRIC_COLUMNS]


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float) and math.isnan(value):
        return ""
    if isinstance(value, Enum):
        return value.value
    return value


class ResultWriter:
    """Appends rows to a CSV, one flushed line per point; checks an existing file's header."""

    def __init__(self, path: Path, columns: list[str]):
        self.path = Path(path)
        self.columns = columns
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() and self.path.stat().st_size > 0:
            with self.path.open(newline="") as f:
                header = next(csv.reader(f), [])
            if header != columns:
                missing = [c for c in columns if c not in header]
                raise UsageError(
                    f"{self.path}: existing file has other columns (missing {', '.join(missing) or 'none'}); "
                    "write to a new --out")
            self._file = self.path.open("a", newline="")
        else:
            self._file = self.path.open("w", newline="")
            self._write_line(columns)

    def _write_line(self, values: list[Any]) -> None:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerow(values)
        self._file.write(buffer.getvalue())  # one write per row: an interrupt never leaves half a row
        self._file.flush()

    def write(self, row: Mapping[str, Any]) -> None:
        unknown = set(row) - set(self.columns)
        if unknown:
            raise ValueError(f"row has columns the file does not: {sorted(unknown)}")
        self._write_line([_cell(row.get(c)) for c in self.columns])

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "ResultWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ResultsError(UsageError):
    """A results file that does not follow the schema."""


SIGNED_COLUMNS = ("overhead_s",)  # event − kernel time: within noise of 0 it may come out below
UNBOUNDED_COLUMNS = ("rel_err", "max_elem_err")  # an error may be infinite (a reference of zero, an overflow)


def _refuse(path: Path, values: pd.Series, wrong: pd.Series, problem: str, valid: str) -> None:
    """One line naming the file, the first wrong row (1 = the first row under the header), the column and its
    value (``{value}`` in ``problem``), and what is valid."""
    if not wrong.any():
        return
    at = int(wrong.to_numpy().nonzero()[0][0])
    value = values.iloc[at]
    shown = "(empty)" if pd.isna(value) else repr(value) if isinstance(value, str) else f"{value:g}"
    raise ResultsError(f"{path}: row {at + 1}, column {values.name} {problem.format(value=shown)}; valid: {valid}")


def _numbers(path: Path, raw: pd.Series) -> pd.Series:
    """A numeric column checked cell by cell: empty, or a number ≥ 0 (finite, but for the error columns)."""
    converted = pd.to_numeric(raw, errors="coerce")
    _refuse(path, raw, converted.isna() & raw.notna(), "holds non-numeric text {value}", "a number, or empty")
    if raw.name in SIGNED_COLUMNS:
        _refuse(path, converted, converted.notna() & ~converted.abs().lt(math.inf), "holds {value}",
                "a finite number, or empty")
        return converted
    unbounded = raw.name in UNBOUNDED_COLUMNS
    below = converted <= math.inf if unbounded else converted < math.inf
    _refuse(path, converted, converted.notna() & ~(below & (converted >= 0)), "holds {value}",
            f"a {'' if unbounded else 'finite '}number ≥ 0{' (inf allowed)' if unbounded else ''}, or empty")
    return converted


def _check_quantiles(path: Path, frame: pd.DataFrame) -> None:
    inverted = frame["p20_s"] > frame["p80_s"]
    if inverted.any():
        at = int(inverted.to_numpy().nonzero()[0][0])
        raise ResultsError(f"{path}: row {at + 1}, columns p20_s, p80_s: p20_s {frame['p20_s'].iloc[at]:g} > "
                           f"p80_s {frame['p80_s'].iloc[at]:g}; valid: p20_s ≤ p80_s")


def load_csv(path: Path | str) -> pd.DataFrame:
    """One results file, validated: schema version, required columns, statuses, numeric columns."""
    path = Path(path)
    try:
        frame = pd.read_csv(path, keep_default_na=True, dtype={"config": str, "error": str, "label": str,
                                                                "throttle": str, "suite": str, "gpu": str,
                                                                "timer": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ResultsError(f"{path}: not a readable CSV ({str(exc).splitlines()[0]})") from None
    if "schema_version" not in frame.columns:
        raise ResultsError(f"{path}: malformed results file, missing columns: schema_version")
    versions = set(pd.to_numeric(frame["schema_version"], errors="coerce").dropna().unique())
    if not versions <= set(READABLE_VERSIONS):
        raise ResultsError(f"{path}: schema_version {sorted(versions)}; this rooflab reads "
                           f"{', '.join(map(str, READABLE_VERSIONS))}")
    if versions == {1}:  # written before the v2 columns existed: not recorded, not zero
        frame = frame.assign(**{c: None for c in V2_COLUMNS if c not in frame.columns})
        frame["launches_per_sample"] = frame["launches_per_sample"].fillna(1)
        frame["converged"] = frame["converged"].where(frame["converged"].notna(),
                                                      ~frame["error"].fillna("").astype(str).str.startswith("noise"))
    if versions and max(versions) < 3:  # before kernel timestamps: every time was the event timer's
        frame = frame.assign(**{c: None for c in V3_COLUMNS if c not in frame.columns})
        if "median_s" in frame.columns:
            timed_rows = pd.to_numeric(frame["median_s"], errors="coerce").notna()
            frame["timer"] = frame["timer"].where(frame["timer"].notna(), timed_rows.map({True: "event", False: None}))
    missing = [c for c in (*ID_COLUMNS, *METRIC_COLUMNS) if c not in frame.columns]
    if missing:
        raise ResultsError(f"{path}: malformed results file, missing columns: {', '.join(missing)}")
    bad_status = set(frame["status"].dropna().unique()) - {s.value for s in Status}
    if bad_status or frame["status"].isna().any():
        raise ResultsError(f"{path}: bad status values {sorted(map(str, bad_status)) or ['(empty)']}; "
                           f"valid: {', '.join(s.value for s in Status)}")
    bad_mode = set(frame["mode"].dropna().unique()) - {m.value for m in Mode}
    if bad_mode:
        raise ResultsError(f"{path}: bad mode values {sorted(map(str, bad_mode))}; "
                           f"valid: {', '.join(m.value for m in Mode)}")
    for column in NUMERIC_COLUMNS:
        frame[column] = _numbers(path, frame[column])
    _check_quantiles(path, frame)
    for column in BOOL_COLUMNS:
        text = frame[column].astype("string").str.strip().str.lower()
        parsed = text.map({"true": True, "1": True, "1.0": True, "false": False, "0": False, "0.0": False},
                          na_action="ignore")
        if (parsed.isna() & text.notna() & (text != "")).any():
            raise ResultsError(f"{path}: column {column} holds values other than True/False")
        frame[column] = parsed.astype("boolean")
    timed = (frame["status"] == Status.OK.value) & (frame["mode"] == Mode.CUDA.value)
    _refuse(path, frame["median_s"], timed & ~(frame["median_s"] > 0),
            "is {value}: an ok row timed on CUDA has no positive median_s", "a time > 0 in seconds")
    for text_column in ("config", "error", "label", "throttle", "suite", "gpu", "timer"):
        frame[text_column] = frame[text_column].fillna("")
    frame["source"] = str(path)
    return frame


def result_files(root: Path | str) -> list[Path]:
    """Every results CSV under ``root`` (a file or a directory), sorted."""
    root = Path(root)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise UsageError(f"no results at {root}: give a results CSV or a directory holding them")
    return sorted(p for p in root.rglob("*.csv") if sidecar_path(p).exists())


DERIVED_TABLES = (".ceilings.csv", ".health.csv")  # written beside runs by `ceilings`, not runs themselves
STATIC_DIR = "static"  # results/static/<arch>.csv: `rooflab compile`'s table, not a run
REPORT_MANIFEST = ".rooflab-report.json"  # in a report folder: the files that report wrote (never runs)
REPORT_STAGING = ".rooflab-report-building-"  # a report being built, swapped into its folder when complete


def report_files(root: Path) -> set[Path]:
    """The files reports under ``root`` wrote (listed in their manifests) and any half-built report's files."""
    if not root.is_dir():
        return set()
    owned = {p.resolve() for p in root.rglob(f"{REPORT_STAGING}*/**/*") if p.is_file()}
    for manifest in root.rglob(REPORT_MANIFEST):
        try:
            names = json.loads(manifest.read_text())["files"]
            owned |= {(manifest.parent / str(name)).resolve() for name in names}
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not a manifest this rooflab wrote: its folder's files are looked at like any others
    return owned


def _skipped(path: Path, skip: tuple[Path, ...], owned: set[Path]) -> bool:
    resolved = path.resolve()
    return resolved in owned or any(resolved.is_relative_to(s.resolve()) for s in skip)


def _orphans(root: Path, skip: tuple[Path, ...], owned: set[Path]) -> list[Path]:
    """CSVs under a directory without a run sidecar (not the tables rooflab writes beside runs or in reports)."""
    if not root.is_dir():
        return []
    found = []
    for path in sorted(root.rglob("*.csv")):
        if sidecar_path(path).exists() or path.name.endswith(DERIVED_TABLES):
            continue
        if STATIC_DIR in path.relative_to(root).parts[:-1]:
            continue
        if _skipped(path, skip, owned):
            continue
        found.append(path)
    return found


def _load_one(path: Path) -> pd.DataFrame:
    """A run's CSV with its sidecar checked; a file without rows is refused (it is no run)."""
    read_sidecar(path)
    frame = load_csv(path)
    if frame.empty:
        raise ResultsError(f"{path}: no rows (a header only): nothing was measured in it")
    return frame


def load_results(root: Path | str, bad: list[tuple[Path, str]] | None = None,
                 skip: tuple[Path | str, ...] = ()) -> pd.DataFrame:
    """All runs under ``root`` as one frame (columns are the union of the files' axis columns).

    With ``bad`` (a list), a file that cannot be read — malformed CSV, missing or malformed sidecar, or a
    CSV with no sidecar at all — is appended as (path, one-line reason) and the rest still load; without it
    the first such file raises; with ``bad``, a file with a header and no rows is named too ("no rows"). Paths
    under ``skip`` (e.g. a report folder inside results/) and the files a report wrote (listed in its manifest,
    wherever it is) are ignored."""
    root = Path(root)
    skipped = tuple(Path(s) for s in skip)
    owned = report_files(root)
    files = [f for f in result_files(root) if not _skipped(f, skipped, owned)]
    frames = []
    for path in files:
        if bad is None:
            frames.append(load_csv(path))
            continue
        try:
            frames.append(_load_one(path))
        except UsageError as exc:
            bad.append((path, str(exc)))
        except Exception as exc:  # noqa: BLE001 - one unreadable file must not hide the others' results
            bad.append((path, f"{path}: unreadable ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"))
    if bad is not None:
        bad += [(p, f"{p}: no run sidecar {sidecar_path(p).name} beside it, so it is not loaded as a run "
                    "(rooflab writes both)") for p in _orphans(root, skipped, owned)]
    if not frames:
        return pd.DataFrame(columns=[*ID_COLUMNS, *METRIC_COLUMNS, "source"])
    return pd.concat(frames, ignore_index=True, sort=False)


def sidecar_path(csv_path: Path | str) -> Path:
    return Path(csv_path).with_suffix(".json")


def write_sidecar(csv_path: Path | str, metadata: Mapping[str, Any]) -> Path:
    path = sidecar_path(csv_path)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"schema_version": SCHEMA_VERSION, **metadata}, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)  # never a half-written sidecar
    return path


SIDECAR_BLOCKS = ("device", "software", "timing")  # objects where present
DEVICE_TEXT = ("name", "slug")
DEVICE_COUNTS = ("sm_count", "l2_bytes", "memory_bytes")


def read_sidecar(csv_path: Path | str) -> dict[str, Any]:
    path = sidecar_path(csv_path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ResultsError(f"{path}: missing run sidecar (device and software metadata)") from None
    except json.JSONDecodeError as exc:
        raise ResultsError(f"{path}: malformed sidecar JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict):
        raise ResultsError(f"{path}: malformed sidecar: a JSON object is expected, found {type(data).__name__}")
    if data.get("schema_version") not in READABLE_VERSIONS:
        raise ResultsError(f"{path}: schema_version {data.get('schema_version')!r}; this rooflab reads "
                           f"{', '.join(map(str, READABLE_VERSIONS))}")
    for block in SIDECAR_BLOCKS:
        if data.get(block) is not None and not isinstance(data[block], dict):
            raise ResultsError(f"{path}: malformed sidecar: \"{block}\" must be a JSON object, found "
                               f"{type(data[block]).__name__}")
    _check_device(path, data.get("device") or {})
    return data


def _check_device(path: Path, device: dict[str, Any]) -> None:
    for key, value in device.items():
        if value is None:
            continue
        if key in DEVICE_TEXT and not isinstance(value, str):
            raise ResultsError(f"{path}: malformed sidecar: device.{key} {value!r}; valid: text")
        if key in DEVICE_COUNTS and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
            raise ResultsError(f"{path}: malformed sidecar: device.{key} {value!r}; valid: a whole number > 0")
