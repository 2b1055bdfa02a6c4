"""The regression gate (`rooflab compare`) on synthetic runs, and end to end on a simulated GPU.

Every run here is synthetic: rows written with ResultWriter + write_sidecar into tmp_path, or a real
sweep whose timings come from a FakeGpu. Nothing here is a measurement.
"""

import json
import math

import pytest
import torch

from bench.cli import main
from bench.compare import DEFAULT_DRIFT, Rule, Term, Verdict, estimate_drift, parse_fraction, spread
from bench.device import Target
from bench.results import ResultWriter, columns_for, write_sidecar
from bench.suites import Point, expand, get_suite
from bench.sweep import SweepOptions, run_sweep
from bench.timing import GraphMode, SamplingPolicy
from kernels import registry
from kernels.spec import DeviceCaps
from tests.fake_gpu import FakeGpu

H100 = {"name": "NVIDIA H100 80GB HBM3", "slug": "h100-80gb-hbm3", "sm_count": 132, "l2_bytes": 50 << 20,
        "memory_bytes": 80 << 30, "capability": [9, 0], "cuda": "12.8", "driver": "570.86.15"}
H200 = {**H100, "name": "NVIDIA H200", "slug": "h200", "memory_bytes": 141 << 30}
SOFTWARE = {"python": "3.12.3", "torch": "2.11.0", "triton": "3.6.0"}
BIG = (1 << 26, 1 << 27, 1 << 28)  # fp32 copy footprints 512 MiB … 2 GiB: ≥ 4× L2, DRAM-ceiling rows


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def copy_row(n, median_s, cv=0.005, dtype="fp32", **over):
    """A synthetic ok copy row (cold L2) with consistent bytes and bandwidth."""
    nbytes = 2 * n * (4 if dtype == "fp32" else 2)
    timed = median_s is not None and cv is not None
    row = dict(schema_version=1, run_id="synthetic", suite="synthetic", device="h100-80gb-hbm3", mode="cuda",
               kernel="copy", impl="triton", dtype=dtype, label="", N=n, flops=0, bytes=nbytes, intensity=0.0,
               footprint_bytes=nbytes, l2_resident=False, l2="cold", median_s=median_s,
               p20_s=median_s * (1 - cv) if timed else None, p80_s=median_s * (1 + cv) if timed else None,
               cv=cv, samples=50 if timed else None, tflops=0.0, gbps=nbytes / median_s / 1e9 if timed else None, status="ok", rel_err=0.0, error="", config="BLOCK=4096 warps=8",
               graph="auto", launch="stream", sm_clock_mhz=1980, throttle="", timestamp="2026-01-01T00:00:00+00:00")
    row.update(over)
    return row


def gemm_row(size, median_s, cv=0.005, dtype="fp16", **over):
    flops, nbytes = 2 * size**3, 3 * size * size * 2
    return copy_row(1, median_s, cv, dtype, kernel="gemm", N=size, M=size, K=size, flops=flops, bytes=nbytes,
                    intensity=flops / nbytes, footprint_bytes=nbytes, tflops=flops / median_s / 1e12,
                    gbps=nbytes / median_s / 1e9, **over)


def write_run(path, rows, device=H100, software=SOFTWARE):
    axes = ("M", "N", "K") if any(r["kernel"] == "gemm" for r in rows) else ("N",)
    with ResultWriter(path, columns_for(axes)) as writer:
        for row in rows:
            writer.write(row)
    write_sidecar(path, {"run_id": path.stem, "mode": "cuda", "device": device, "software": software})
    return path


def copy_run(path, times, cv=0.005, **kwargs):
    """Copy points N = 1 MiB … and the DRAM-ceiling sizes, one median per size."""
    sizes = (1 << 18, 1 << 20, *BIG)
    return write_run(path, [copy_row(n, t, cv) for n, t in zip(sizes, times)], **kwargs)


BASE_TIMES = (4e-6, 10e-6, 170e-6, 340e-6, 680e-6)


def scaled(factor, times=BASE_TIMES):
    return tuple(t * factor for t in times)


# ---------------------------------------------------------------------------------------------
# The rule
# ---------------------------------------------------------------------------------------------


def test_rule_bound_and_verdicts():
    rule = Rule(0.05, 3.0)
    assert rule.bound(0.001) == 0.05 and rule.bound(0.04) == pytest.approx(0.12)
    assert rule.verdict(1.20, 0.007) is Verdict.REGRESSION
    wide = Rule(0.05, 3.0, cap=0.25)
    assert wide.verdict(1.03, 0.0566) is Verdict.UNCHANGED
    assert wide.verdict(1.10, 0.0566) is Verdict.UNCHANGED  # 10 % inside 3 × 5.7 % noise
    assert rule.verdict(1 / 1.20, 0.007) is Verdict.IMPROVEMENT
    assert rule.verdict(0.97, 0.0) is Verdict.UNCHANGED


def test_spread_uses_cv_else_the_quantiles():
    assert spread({"cv": 0.02, "p20_s": 1.0, "p80_s": 3.0, "median_s": 2.0}) == 0.02
    # normal noise σ = 1 % of the median: p80 − p20 = 2·0.8416·σ
    from_quantiles = spread({"cv": float("nan"), "p20_s": 1 - 0.008416, "p80_s": 1 + 0.008416, "median_s": 1.0})
    assert from_quantiles == pytest.approx(0.01)
    assert spread({"cv": None, "median_s": 1.0}) == pytest.approx(0.5e-6)  # nothing known: the timer's floor


@pytest.mark.parametrize("text, value", [("5%", 0.05), ("0.05", 0.05), (" 12.5% ", 0.125), ("0", 0.0)])
def test_threshold_parsing(text, value):
    assert parse_fraction(text) == pytest.approx(value)


# ---------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------


def test_a_real_20_percent_slowdown_fails(tmp_path, capsys):
    base = copy_run(tmp_path / "base.csv", BASE_TIMES)
    new_times = (*BASE_TIMES[:1], BASE_TIMES[1] * 1.2, *BASE_TIMES[2:])
    new = copy_run(tmp_path / "new.csv", new_times)
    verdicts = tmp_path / "verdict.json"
    code, out, _ = run(capsys, "compare", base, new, "--json", verdicts, "--drift", "0")
    assert code == 1, out
    assert "regression" in out and "+20.0%" in out and "verdict: FAIL (1 regressions)" in out
    data = json.loads(verdicts.read_text())
    assert data["exit_code"] == 1 and data["summary"]["regression"] == 1 and data["summary"]["unchanged"] == 4
    [slow] = [p for p in data["points"] if p["verdict"] == "regression"]
    assert slow["axes"] == {"N": str(1 << 20)} and slow["ratio"] == pytest.approx(1.2)
    assert slow["bound"] == pytest.approx(0.05) and slow["noise"] == pytest.approx(math.sqrt(2) * 0.005)


def test_a_rerun_within_noise_passes(tmp_path, capsys):
    base = copy_run(tmp_path / "base.csv", BASE_TIMES)
    jitter = (1.004, 0.995, 1.01, 0.99, 1.002)  # what a re-run of the same build looks like
    new = copy_run(tmp_path / "new.csv", tuple(t * j for t, j in zip(BASE_TIMES, jitter)))
    code, out, _ = run(capsys, "compare", base, new)
    assert code == 0, out
    assert "5 points timed in base, 5 compared: 0 regressions, 0 failed in new, 0 missing in new, 0 inconclusive, " \
        "0 improvements, 5 within noise" in out
    assert "verdict: pass" in out


def test_small_changes_on_noisy_points_pass_and_noise_widens_the_bound(tmp_path, capsys):
    base = copy_run(tmp_path / "base.csv", BASE_TIMES, cv=0.03)
    assert run(capsys, "compare", base, copy_run(tmp_path / "a.csv", scaled(1.03), cv=0.03))[0] == 0
    # 10 %: beyond the 5 % threshold, but inside 3 × √2 × 3 % of noise (12.7 %, below the 15 % cap) …
    assert run(capsys, "compare", base, copy_run(tmp_path / "b.csv", scaled(1.10), cv=0.03))[0] == 0
    # … while on quiet points the same 10 % is a regression
    quiet = copy_run(tmp_path / "quiet.csv", BASE_TIMES, cv=0.003)
    assert run(capsys, "compare", quiet, copy_run(tmp_path / "c.csv", scaled(1.10), cv=0.003))[0] == 1


def test_thresholds_and_k_are_options(tmp_path, capsys):
    base = copy_run(tmp_path / "base.csv", BASE_TIMES)
    new = copy_run(tmp_path / "new.csv", scaled(1.08))
    assert run(capsys, "compare", base, new)[0] == 1
    assert run(capsys, "compare", base, new, "--threshold", "10%")[0] == 0
    noisy_base = copy_run(tmp_path / "nb.csv", BASE_TIMES, cv=0.02)
    noisy_new = copy_run(tmp_path / "nn.csv", scaled(1.08), cv=0.02)
    assert run(capsys, "compare", noisy_base, noisy_new)[0] == 0  # bound 3 × 2.8 % = 8.5 %
    assert run(capsys, "compare", noisy_base, noisy_new, "-k", "1")[0] == 1


def test_improvements_are_reported_and_pass(tmp_path, capsys):
    base = copy_run(tmp_path / "base.csv", BASE_TIMES)
    new = copy_run(tmp_path / "new.csv", (*BASE_TIMES[:4], BASE_TIMES[4] / 1.25))
    code, out, _ = run(capsys, "compare", base, new)
    assert code == 0
    assert "improvement" in out and "1 improvements" in out and "-20.0%" in out


def test_a_point_failed_in_new_is_a_regression(tmp_path, capsys):
    base = copy_run(tmp_path / "base.csv", BASE_TIMES)
    rows = [copy_row(n, t) for n, t in zip((1 << 18, 1 << 20, *BIG), BASE_TIMES)]
    rows[0] = copy_row(1 << 18, None, cv=None, status="failed", error="rel_err 0.5 > tolerance 0")
    new = write_run(tmp_path / "new.csv", rows)
    code, out, _ = run(capsys, "compare", base, new)
    assert code == 1
    assert "failed" in out and "rel_err 0.5 > tolerance 0" in out and "1 failed in new" in out


def test_unmatched_points_are_counted(tmp_path, capsys):
    base = copy_run(tmp_path / "base.csv", BASE_TIMES)
    rows = [copy_row(n, t) for n, t in zip((1 << 20, *BIG), BASE_TIMES[1:])]  # 1 << 18 missing
    rows += [copy_row(1 << 19, 5e-6), copy_row(1 << 20, 6e-6, dtype="fp16"),  # two new points
             copy_row(1 << 20, 10e-6, l2="warm")]  # another l2 policy: another point
    new = write_run(tmp_path / "new.csv", rows)
    code, out, _ = run(capsys, "compare", base, new)
    assert code == 1  # a point of the baseline is gone: the gate cannot vouch for it
    assert "1 missing in new" in out and "3 points only in new" in out and "not in new" in out
    assert run(capsys, "compare", base, new, "--allow-missing", "20%")[0] == 0


def test_directories_are_runs_and_the_latest_duplicate_wins(tmp_path, capsys):
    copy_run(tmp_path / "base" / "a.csv", BASE_TIMES)
    write_run(tmp_path / "new" / "old.csv", [copy_row(1 << 20, 20e-6, timestamp="2026-01-01T00:00:00+00:00")])
    write_run(tmp_path / "new" / "rerun.csv", [copy_row(1 << 20, 10e-6, timestamp="2026-01-02T00:00:00+00:00")])
    code, out, _ = run(capsys, "compare", tmp_path / "base", tmp_path / "new", "--allow-missing", "80%")
    assert code == 0 and "5 points timed in base, 1 compared" in out and "4 missing in new" in out, out


# ---------------------------------------------------------------------------------------------
# Devices
# ---------------------------------------------------------------------------------------------


def test_different_devices_are_refused_unless_allowed(tmp_path, capsys):
    base = copy_run(tmp_path / "base.csv", BASE_TIMES)
    new = copy_run(tmp_path / "new.csv", scaled(0.7), device=H200)
    code, _, err = run(capsys, "compare", base, new)
    assert code == 2 and err.count("\n") == 1
    assert "different devices" in err and "NVIDIA H200" in err and "--allow-different-devices" in err
    code, out, _ = run(capsys, "compare", base, new, "--allow-different-devices")
    assert code == 0 and "warning: name differs" in out and "5 improvements" in out


def test_other_sm_count_is_another_device(tmp_path, capsys):
    base = copy_run(tmp_path / "base.csv", BASE_TIMES)
    new = copy_run(tmp_path / "new.csv", BASE_TIMES, device={**H100, "sm_count": 114})
    code, _, err = run(capsys, "compare", base, new)
    assert code == 2 and "sm count differs: base 132 vs new 114" in err


def test_software_differences_are_warnings(tmp_path, capsys):
    base = copy_run(tmp_path / "base.csv", BASE_TIMES)
    new = copy_run(tmp_path / "new.csv", BASE_TIMES, device={**H100, "driver": "580.1"},
                   software={**SOFTWARE, "triton": "3.7.0"})
    code, out, _ = run(capsys, "compare", base, new)
    assert code == 0
    assert "warning: driver differs: base 570.86.15 vs new 580.1" in out
    assert "warning: triton differs: base 3.6.0 vs new 3.7.0" in out


# ---------------------------------------------------------------------------------------------
# Normalisation by each run's own ceilings
# ---------------------------------------------------------------------------------------------


def test_a_uniformly_slower_node_of_the_same_sku_passes_when_normalised(tmp_path, capsys):
    base = copy_run(tmp_path / "base.csv", BASE_TIMES)
    slow_node = copy_run(tmp_path / "new.csv", scaled(1 / 0.9))  # 10 % less bandwidth everywhere
    code, out, _ = run(capsys, "compare", base, slow_node)
    assert code == 1 and "5 regressions" in out
    code, out, _ = run(capsys, "compare", base, slow_node, "--normalize", "dram")
    assert code == 0, out
    assert "normalised by each run's own ceilings (dram)" in out and "5 within noise" in out
    # a real regression on that node still shows through the normalisation
    worse = copy_run(tmp_path / "worse.csv", (*scaled(1 / 0.9)[:1], BASE_TIMES[1] / 0.9 * 1.3, *scaled(1 / 0.9)[2:]))
    code, out, _ = run(capsys, "compare", base, worse, "--normalize", "dram")
    assert code == 1 and "1 regressions" in out and "+30.0%" in out


def test_roofline_normalisation_picks_dram_or_tensor_per_point(tmp_path, capsys):
    sizes = (1 << 18, 1 << 20, *BIG)

    def node(dram, tensor, gemm_extra=1.0):
        """A node with DRAM bandwidth and tensor peak scaled by ``dram`` and ``tensor``."""
        rows = [copy_row(n, t / dram) for n, t in zip(sizes, BASE_TIMES)]
        rows += [gemm_row(s, t / tensor) for s, t in ((2048, 0.02e-3), (4096, 0.15e-3))]
        rows += [gemm_row(8192, 1.2e-3 / tensor * gemm_extra)]
        return rows

    base = write_run(tmp_path / "base.csv", node(1.0, 1.0))
    other = write_run(tmp_path / "other.csv", node(0.9, 0.8))
    assert run(capsys, "compare", base, other)[0] == 1
    code, out, _ = run(capsys, "compare", base, other, "--normalize", "roofline")
    assert code == 0, out
    # DRAM alone cannot explain a 20 % slower tensor peak; the tensor ceiling can
    assert run(capsys, "compare", base, other, "--normalize", "dram")[0] == 1
    slow_gemm = write_run(tmp_path / "slow.csv", node(0.9, 0.8, gemm_extra=1.25))
    code, out, _ = run(capsys, "compare", base, slow_gemm, "--normalize", "roofline", "--json", tmp_path / "v.json")
    assert code == 1
    [bad] = [p for p in json.loads((tmp_path / "v.json").read_text())["points"] if p["verdict"] == "regression"]
    assert bad["kernel"] == "gemm" and bad["axes"]["M"] == "8192" and bad["normalized_by"] == "tensor"


def test_normalising_without_ceiling_rows_is_one_line(tmp_path, capsys):
    small = (1 << 18, 1 << 20)  # L2-sized: no DRAM ceiling can be derived
    base = write_run(tmp_path / "b" / "base.csv", [copy_row(n, t) for n, t in zip(small, BASE_TIMES)])
    new = write_run(tmp_path / "n" / "new.csv", [copy_row(n, t) for n, t in zip(small, BASE_TIMES)])
    code, _, err = run(capsys, "compare", base, new, "--normalize", "dram")
    assert code == 2 and err.count("\n") == 1 and "needs a DRAM ceiling" in err and "base.csv" in err
    full = copy_run(tmp_path / "full.csv", BASE_TIMES)
    code, _, err = run(capsys, "compare", full, full, "--normalize", "tensor")
    assert code == 2 and "needs a tensor ceiling (gemm rows" in err


def test_a_directory_run_takes_its_ceilings_from_a_ceilings_run_beside_the_sweep(tmp_path, capsys):
    for side, factor in (("base", 1.0), ("new", 1 / 0.9)):
        write_run(tmp_path / side / "ceilings.csv", [copy_row(n, t) for n, t in zip(BIG, scaled(factor, BASE_TIMES[2:]))])
        write_run(tmp_path / side / "run.csv", [copy_row(1 << 20, 10e-6 * factor)])
    files = (tmp_path / "base" / "run.csv", tmp_path / "new" / "run.csv")
    code, _, err = run(capsys, "compare", *files, "--normalize", "dram")
    assert code == 2 and "needs a DRAM ceiling" in err and "give a directory" in err
    code, out, _ = run(capsys, "compare", tmp_path / "base", tmp_path / "new", "--normalize", "dram")
    assert code == 0, out
    assert "4 points timed in base, 4 compared" in out


# ---------------------------------------------------------------------------------------------
# Bad input: one line, exit 2
# ---------------------------------------------------------------------------------------------


def _interpret_run(path):
    return write_run(path, [copy_row(1 << 20, None, cv=None, mode="interpret")],
                     device={"name": "Triton interpreter (CPU)"})


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda t: (t / "nowhere.csv", t / "new.csv"), "no results at"),
        (lambda t: ((t / "empty").mkdir() or t / "empty", t / "new.csv"), "no results CSVs"),
        (lambda t: (_interpret_run(t / "i.csv"), t / "new.csv"), "interpreter run"),
        (lambda t: (write_run(t / "h.csv", []), t / "new.csv"), "the run has no rows"),
        (lambda t: (write_run(t / "f.csv", [copy_row(5, None, cv=None, status="failed")]), t / "new.csv"),
         "no timed rows"),
        (lambda t: (write_run(t / "other.csv", [copy_row(7, 1e-6)]), t / "new.csv"), "no points in common"),
        (lambda t: ((t / "junk.csv").write_text("a,b\n1,2\n") and t / "junk.csv", t / "new.csv"),
         "malformed results file"),
        (lambda t: ((t / "lone.csv").write_text((t / "new.csv").read_text()) and t / "lone.csv", t / "new.csv"),
         "missing run sidecar"),
    ],
)
def test_bad_input_is_one_line(tmp_path, capsys, make, message):
    copy_run(tmp_path / "new.csv", BASE_TIMES)
    base, new = make(tmp_path)
    code, out, err = run(capsys, "compare", base, new)
    assert code == 2, out
    assert message in err and err.count("\n") == 1 and err.startswith("rooflab: error:")


@pytest.mark.parametrize("option, message", [(("--threshold", "lots"), "expected a percentage"),
                                             (("--threshold", "150%"), "between 0 and 100%"),
                                             (("-k", "-1"), "must be a number > 0")])
def test_bad_options_are_one_line(tmp_path, capsys, option, message):
    base = copy_run(tmp_path / "base.csv", BASE_TIMES)
    code, _, err = run(capsys, "compare", base, base, *option)
    assert code == 2 and message in err and err.count("\n") == 1


def test_ci_suite_runs_registered_families_and_carries_its_own_dram_ceiling():
    points = expand(get_suite("ci").sweeps)
    assert points and not [p for p in points if p.skip]
    assert {p.kernel for p in points} <= set(registry.names())
    dram = [p for p in points if p.kernel in ("copy", "triad", "read", "write")
            and registry.get(p.kernel).footprint_bytes(p.case) >= 4 * H100["l2_bytes"]]
    assert {p.kernel for p in dram} == {"copy", "triad", "read", "write"}


# ---------------------------------------------------------------------------------------------
# End to end: the real sweep runner on a simulated GPU
# ---------------------------------------------------------------------------------------------


class SimulatedGpu(FakeGpu):
    """FakeGpu as the sweep's backend: the point's real launch (checked by the gate on CPU tensors,
    under the interpreter) runs at every replay, beside the simulated kernel, so the sampled times are
    FakeGpu's (``cold_s`` per run, with ``noise``) and the answers the real launch's."""

    def capture(self, fn):
        fn()
        self.captured += 1

        def replay():
            fn()
            self.kernel()

        return replay


FAKE_CAPS = DeviceCaps(name="Simulated GPU", capability=(9, 0), interpret=False, l2_bytes=50 << 20, sm_count=132,
                       memory_bytes=80 << 30)
FAKE_TARGET = Target(torch.device("cpu"), FAKE_CAPS, "simulated-gpu",
                     {"name": "Simulated GPU", "slug": "simulated-gpu", "sm_count": 132, "l2_bytes": 50 << 20,
                      "memory_bytes": 80 << 30, "capability": [9, 0]})
# graph=always: the replay (the simulated kernel) is what is sampled; a short warm-up of the real launch
QUICK = SamplingPolicy(warmup_runs=1, warmup_s=0.0, min_samples=10, min_time_s=0.0, timeout_s=0.01,
                       graph=GraphMode.ALWAYS)


def _sweep(out, kernel, cold_s, seed):
    spec = registry.get(kernel)
    points = [Point(spec.case("fp32", N=n), impl) for n in (1000, 4097) for impl in ("triton", "torch")]
    gpu = SimulatedGpu(cold_s=cold_s, noise=0.01, seed=seed)
    summary = run_sweep(points, SweepOptions(out=out, seed=seed, policy=QUICK, progress=False), FAKE_TARGET, gpu)
    assert summary.counts == {"ok": 4}
    assert gpu.captured == 4


def test_a_detuned_kernel_is_caught_end_to_end_and_a_rerun_passes(tmp_path, capsys):
    for name, triad_s, seed in (("base", 10e-6, 1), ("rerun", 10e-6, 2), ("detuned", 12e-6, 3)):
        _sweep(tmp_path / name / "copy.csv", "copy", 8e-6, seed)
        _sweep(tmp_path / name / "triad.csv", "triad", triad_s, seed + 10)

    code, out, _ = run(capsys, "compare", tmp_path / "base", tmp_path / "rerun")
    assert code == 0, out
    assert "8 points timed in base, 8 compared: 0 regressions" in out

    code, out, _ = run(capsys, "compare", tmp_path / "base", tmp_path / "detuned", "--json", tmp_path / "v.json")
    assert code == 1, out
    verdicts = json.loads((tmp_path / "v.json").read_text())
    assert verdicts["summary"]["regression"] == 4 and verdicts["summary"]["unchanged"] == 4
    assert {p["kernel"] for p in verdicts["points"] if p["verdict"] == "regression"} == {"triad"}
    assert all(p["ratio"] == pytest.approx(1.2, rel=0.02) for p in verdicts["points"] if p["kernel"] == "triad")


# ---------------------------------------------------------------------------------------------
# A gate that cannot be fooled (issue 12): missing points, noise cap, resolution floor, normalisation
# ---------------------------------------------------------------------------------------------


def test_points_missing_or_skipped_in_new_fail_the_gate(tmp_path, capsys):
    base = copy_run(tmp_path / "base.csv", BASE_TIMES)
    sizes = (1 << 18, 1 << 20, *BIG)
    rows = [copy_row(sizes[0], BASE_TIMES[0])]  # 1 of 5 timed; the rest skipped
    rows += [copy_row(n, None, cv=None, status="skipped", error="does not fit in memory") for n in sizes[1:]]
    new = write_run(tmp_path / "new.csv", rows)
    code, out, _ = run(capsys, "compare", base, new, "--json", tmp_path / "v.json")
    assert code == 1, out
    assert "4 missing in new" in out and "skipped in new: does not fit in memory" in out
    assert "4 of 5 points missing in new (80.0% > --allow-missing 0.0%)" in out
    data = json.loads((tmp_path / "v.json").read_text())
    assert data["summary"]["missing"] == 4 and data["exit_code"] == 1
    assert run(capsys, "compare", base, new, "--allow-missing", "80%")[0] == 0
    assert run(capsys, "compare", base, new, "--allow-missing", "79%")[0] == 1
    only_one = write_run(tmp_path / "one.csv", [copy_row(sizes[1], BASE_TIMES[1])])  # the rest absent
    assert run(capsys, "compare", base, only_one)[0] == 1


def test_a_failed_point_fails_even_when_missing_points_are_allowed(tmp_path, capsys):
    base = copy_run(tmp_path / "base.csv", BASE_TIMES)
    rows = [copy_row(n, t) for n, t in zip((1 << 18, 1 << 20, *BIG), BASE_TIMES)]
    rows[1] = copy_row(1 << 20, None, cv=None, status="failed", error="max_elem_err 3.2 > 1")
    new = write_run(tmp_path / "new.csv", rows)
    assert run(capsys, "compare", base, new, "--allow-missing", "100%")[0] == 1


def test_a_slowdown_hidden_in_noise_is_inconclusive_not_a_pass(tmp_path, capsys):
    base = copy_run(tmp_path / "base.csv", BASE_TIMES, cv=0.15)
    new = copy_run(tmp_path / "new.csv", scaled(1.4), cv=0.15)  # 40 % slower, 15 % CV: bound 64 % uncapped
    code, out, _ = run(capsys, "compare", base, new, "--json", tmp_path / "v.json")
    assert code == 1, out
    assert "5 inconclusive" in out and "inconclusive" in out.split("verdict:")[-1]
    data = json.loads((tmp_path / "v.json").read_text())
    assert data["summary"]["inconclusive"] == 5 and data["summary"]["unchanged"] == 0
    code, out, _ = run(capsys, "compare", base, new, "--allow-inconclusive")
    assert code == 0 and "5 inconclusive" in out  # passed on request, still counted and listed
    assert run(capsys, "compare", base, new, "--noise-cap", "70%")[0] == 0  # a wider cap judges them unchanged
    much_slower = copy_run(tmp_path / "worse.csv", scaled(2.0), cv=0.15)  # beyond even the noise: a regression
    code, out, _ = run(capsys, "compare", base, much_slower, "--allow-inconclusive")
    assert code == 1 and "5 regressions" in out


def test_resolution_limited_rows_get_a_noise_floor():
    row = dict(cv=0.0, p20_s=3.3e-6, p80_s=3.3e-6, median_s=3.3e-6)
    assert spread(row) == pytest.approx(0.5e-6 / 3.3e-6)  # one timer tick of 0.5 µs
    assert spread({**row, "launches_per_sample": 100}) == pytest.approx(0.5e-6 / 3.3e-4)
    assert spread({**row, "ci_rel": 0.2}) == pytest.approx(0.2)
    assert spread({**row, "cv": 0.01}) == 0.01


def test_a_cv_zero_short_kernel_is_not_judged_on_timer_ticks(tmp_path, capsys):
    base = write_run(tmp_path / "base.csv", [copy_row(1 << 10, 3.0e-6, cv=0.0)])
    new = write_run(tmp_path / "new.csv", [copy_row(1 << 10, 3.5e-6, cv=0.0)])  # one tick slower
    code, out, _ = run(capsys, "compare", base, new, "--json", tmp_path / "v.json")
    [point] = json.loads((tmp_path / "v.json").read_text())["points"]
    assert point["verdict"] == "inconclusive" and point["noise"] > 0.2
    # timed as 100 launches per sample, the same tick is 0.17 %: now a real regression
    base = write_run(tmp_path / "b2.csv", [copy_row(1 << 10, 3.0e-6, cv=0.0, schema_version=2, ci_rel=0.001,
                                                    launches_per_sample=100)])
    new = write_run(tmp_path / "n2.csv", [copy_row(1 << 10, 3.5e-6, cv=0.0, schema_version=2, ci_rel=0.001,
                                                   launches_per_sample=100)])
    code, out, _ = run(capsys, "compare", base, new)
    assert code == 1 and "1 regressions" in out


def _launch_row(mode, median_s, **over):
    """As the ceilings suite measures launch latency: one point per graph policy (never: stream, always: graph)."""
    return copy_row(1, median_s, kernel="launch", N=None, count=100, bytes=4, footprint_bytes=4, l2="warm",
                    launch=mode, graph="always" if mode == "graph" else "never", **over)


def _fma_row(n, median_s):
    flops = 2 * 1024 * n
    return copy_row(n, median_s, kernel="fma", flops=flops, bytes=8 * n, intensity=flops / (8 * n),
                    tflops=flops / median_s / 1e12)


def _write_mixed(path, rows):
    with ResultWriter(path, columns_for(("M", "N", "K", "count"))) as writer:
        for row in rows:
            writer.write(row)
    write_sidecar(path, {"run_id": path.stem, "mode": "cuda", "device": H100, "software": SOFTWARE})
    return path


def test_normalize_never_scales_launch_latency_by_dram_nor_fma_by_the_tensor_peak(tmp_path, capsys):
    def node(dram, tensor):
        rows = [copy_row(n, t / dram) for n, t in zip((1 << 18, 1 << 20, *BIG), BASE_TIMES)]
        rows += [gemm_row(s, t / tensor) for s, t in ((2048, 0.02e-3), (4096, 0.15e-3), (8192, 1.2e-3))]
        rows += [_launch_row("stream", 250e-6), _launch_row("graph", 130e-6), _fma_row(1 << 22, 200e-6)]
        return rows

    base = _write_mixed(tmp_path / "base.csv", node(1.0, 1.0))
    other = _write_mixed(tmp_path / "other.csv", node(0.8, 0.7))  # same launch and fma times
    for mode in ("dram", "tensor", "roofline"):
        code, out, _ = run(capsys, "compare", base, other, "--normalize", mode, "--json", tmp_path / "v.json")
        points = json.loads((tmp_path / "v.json").read_text())["points"]
        for p in points:
            if p["kernel"] in ("launch", "fma"):
                assert p["normalized_by"] in ("", "vector") and p["ratio"] == pytest.approx(1.0), (mode, p)
                assert p["kernel"] == "fma" or p["normalized_by"] == ""
                assert p["verdict"] == "unchanged", (mode, p)


def test_json_into_a_missing_directory_is_one_line_and_exit_2(tmp_path, capsys):
    base = copy_run(tmp_path / "base.csv", BASE_TIMES)
    code, out, err = run(capsys, "compare", base, base, "--json", tmp_path / "missing_dir" / "v.json")
    assert code == 2 and err.count("\n") == 1 and "does not exist" in err and "Traceback" not in err
    assert not (tmp_path / "missing_dir").exists()
    code, _, err = run(capsys, "compare", base, base, "--json", tmp_path)
    assert code == 2 and "is a directory" in err


def test_an_internal_error_is_exit_2_never_1(tmp_path, capsys, monkeypatch):
    import bench.compare

    base = copy_run(tmp_path / "base.csv", BASE_TIMES)

    def broken(*args, **kwargs):
        raise ZeroDivisionError("synthetic crash")

    monkeypatch.setattr(bench.compare, "compare", broken)
    code, out, err = run(capsys, "compare", base, base)
    assert code == 2 and err.count("\n") == 1 and "internal error" in err and "ZeroDivisionError" in err


@pytest.mark.parametrize("option, message", [(("--allow-missing", "lots"), "--allow-missing"),
                                             (("--noise-cap", "1%"), "at least the threshold"),
                                             (("-k", "nan"), "not a finite number")])
def test_new_gate_options_are_checked(tmp_path, capsys, option, message):
    base = copy_run(tmp_path / "base.csv", BASE_TIMES)
    code, _, err = run(capsys, "compare", base, base, *option)
    assert code == 2 and message in err and err.count("\n") == 1


# ---------------------------------------------------------------------------------------------
# Drift between runs (issue 22 §4)
# ---------------------------------------------------------------------------------------------

DRIFTED = (1.06, 0.95, 1.04, 0.97, 1.055)  # no real change: the ≈ 3 % a point moves from one day to the next


def test_rule_bound_includes_the_drift_and_names_the_deciding_term():
    assert Rule(0.05, 3.0, drift=0.03).bound(0.005) == pytest.approx(3 * math.hypot(0.005, 0.03))
    assert Rule(0.05, 3.0).decided_by(0.005) is Term.THRESHOLD
    assert Rule(0.05, 3.0, drift=0.01).decided_by(0.04) is Term.NOISE
    assert Rule(0.05, 3.0, drift=0.03).decided_by(0.005) is Term.DRIFT
    with pytest.raises(Exception, match="must not be negative"):
        Rule(drift=-0.01)


def test_a_three_percent_drift_with_no_real_change_passes_with_the_drift_and_fails_without(tmp_path, capsys):
    base = copy_run(tmp_path / "base.csv", BASE_TIMES)
    new = copy_run(tmp_path / "new.csv", tuple(t * d for t, d in zip(BASE_TIMES, DRIFTED)))
    code, out, _ = run(capsys, "compare", base, new, "--drift", "0")
    assert code == 1 and "2 regressions" in out, out  # +6 % and +5.5 % read as regressions
    code, out, _ = run(capsys, "compare", base, new, "--drift", "3%", "--json", tmp_path / "v.json")
    assert code == 0, out
    assert "drift 3.0%, from --drift" in out
    data = json.loads((tmp_path / "v.json").read_text())
    assert data["drift"]["source"] == "option" and data["rule"]["drift"] == pytest.approx(0.03)
    assert {p["decided_by"] for p in data["points"]} == {"drift"}
    # a real 20 % slowdown still fails with the drift in the bound
    worse = copy_run(tmp_path / "worse.csv", (*BASE_TIMES[:1], BASE_TIMES[1] * 1.2, *BASE_TIMES[2:]))
    assert run(capsys, "compare", base, worse, "--drift", "3%")[0] == 1


def _with_repeats(directory, times, repeat_factors, cv=0.005):
    """A run directory: the main stage and a headline-repeat stage measuring the same points again."""
    sizes = (1 << 18, 1 << 20, *BIG)
    write_run(directory / "run-headline.csv", [copy_row(n, t, cv, suite="headline") for n, t in zip(sizes, times)])
    later = "2026-01-01T01:00:00+00:00"
    write_run(directory / "run-headline-repeat.csv", [copy_row(n, t * f, cv, suite="headline-repeat", timestamp=later)
                                                      for n, t, f in zip(sizes, times, repeat_factors)])
    return directory


def test_the_drift_is_estimated_from_the_runs_repeats_and_the_output_says_so(tmp_path, capsys):
    base = copy_run(tmp_path / "base.csv", BASE_TIMES)
    new = _with_repeats(tmp_path / "new", tuple(t * d for t, d in zip(BASE_TIMES, DRIFTED)),
                        (1.0, 1.03, 0.97, 1.04, 0.96))
    code, out, _ = run(capsys, "compare", base, new, "--json", tmp_path / "v.json")
    assert code == 0, out
    data = json.loads((tmp_path / "v.json").read_text())
    assert data["drift"]["source"] == "estimated" and data["drift"]["repeats"] == 5
    assert data["drift"]["value"] == pytest.approx(math.expm1(1.4826 * -math.log(0.97)))  # median |log-ratio|
    assert "estimated from 5 repeated points" in out and "set by" in out and "drift 5" in out
    # without repeats the stated default is used, and said
    code, out, _ = run(capsys, "compare", base, copy_run(tmp_path / "plain.csv", BASE_TIMES))
    assert code == 0 and f"drift {DEFAULT_DRIFT:.1%}, the default" in out


def test_the_drift_estimate_from_repeats_is_right_on_synthetic_data(tmp_path):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(7)
    rows = []
    for i in range(200):  # 200 points measured twice; between the two, each moves by a lognormal 3 %
        first = 1e-4 * (1 + i)
        second = first * float(rng.lognormal(0.0, 0.03))
        rows.append(copy_row(1024 * (i + 1), first, timestamp="2026-01-01T00:00:00+00:00"))
        rows.append(copy_row(1024 * (i + 1), second, timestamp="2026-01-01T01:00:00+00:00"))
    rows[0] = {**rows[0], "median_s": 1e-4 * 5}  # one wild rerun does not move a robust estimate
    drift = estimate_drift(pd.DataFrame(rows))
    assert drift.source == "estimated" and drift.repeats == 200
    assert drift.value == pytest.approx(0.03, rel=0.15)
    assert estimate_drift(pd.DataFrame(rows[:4])).source == "default"


def test_the_deciding_term_is_named_per_point(tmp_path, capsys):
    quiet_base = copy_run(tmp_path / "qb.csv", BASE_TIMES, cv=0.002)
    noisy_base = copy_run(tmp_path / "nb.csv", BASE_TIMES, cv=0.04)
    for base, drift, term in ((quiet_base, "0", "threshold"), (noisy_base, "1%", "sample noise"),
                              (quiet_base, "4%", "drift")):
        slower = copy_run(tmp_path / f"new-{term}.csv", scaled(1.5), cv=0.04 if base is noisy_base else 0.002)
        code, out, _ = run(capsys, "compare", base, slower, "--drift", drift, "--json", tmp_path / "v.json")
        assert code == 1
        data = json.loads((tmp_path / "v.json").read_text())
        assert {p["decided_by"] for p in data["points"]} == {term}, (drift, term)
        assert "regression" in out and out.count(f"  {term}") >= 5, out


@pytest.mark.parametrize("side", ["base", "new"])
@pytest.mark.parametrize("unsteady", [dict(converged=False, error="two modes"),
                                      dict(throttle="sw_power_cap hw_thermal")])
def test_an_unsteady_row_on_either_side_is_inconclusive_never_a_pass_nor_a_regression(tmp_path, capsys, side,
                                                                                      unsteady):
    """Issue 20 §3: a row that did not converge or ran throttled by heat is not judged, whatever its ratio."""
    def rows(times, shaky):
        sizes = (1 << 18, 1 << 20, *BIG)
        return [copy_row(n, t, **(unsteady if shaky and i in (1, 3) else {})) for i, (n, t) in
                enumerate(zip(sizes, times))]

    for factor in (1.0, 1.5):  # unchanged (would pass) and 50 % slower (would be a regression)
        base = write_run(tmp_path / f"base-{factor}.csv", rows(BASE_TIMES, side == "base"))
        new = write_run(tmp_path / f"new-{factor}.csv", rows(scaled(factor), side == "new"))
        code, out, _ = run(capsys, "compare", base, new, "--drift", "0", "--json", tmp_path / "v.json")
        assert code == 1 and "2 inconclusive" in out, out
        data = json.loads((tmp_path / "v.json").read_text())
        shaky = [p for p in data["points"] if p["axes"]["N"] in (str(1 << 20), str(BIG[1]))]
        assert {p["verdict"] for p in shaky} == {"inconclusive"}
        assert {p["decided_by"] for p in shaky} == {"unsteady"}
        assert all(p["error"].startswith(f"{side}: ") for p in shaky)
        others = {p["verdict"] for p in data["points"] if p not in shaky}
        assert others == ({"unchanged"} if factor == 1.0 else {"regression"})
        assert "not converged or throttled" in out.split("verdict:")[-1]
    power_capped_only = write_run(tmp_path / "capped.csv", [copy_row(n, t, throttle="sw_power_cap") for n, t in
                                                            zip((1 << 18, 1 << 20, *BIG), BASE_TIMES)])
    assert run(capsys, "compare", power_capped_only, write_run(tmp_path / "same.csv", rows(BASE_TIMES, False)),
               "--drift", "0")[0] == 0  # a power cap is the card's steady state: judged as usual
