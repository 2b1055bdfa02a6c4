"""Series names: presets measured once for several labels read as one name and a count."""

import pandas as pd

from analysis.frames import display_label, series_labels


def test_a_point_for_several_presets_is_named_by_the_first_and_a_count():
    assert display_label("llama3-8b.gate+llama3-8b.up+mixtral-8x7b.expert.w1") == "llama3-8b.gate (+2 more)"
    assert display_label("square.8192") == "square.8192"
    assert display_label("") == ""


def test_joined_labels_stay_distinct_series():
    rows = pd.DataFrame({"kernel": "gemm", "label": ["a.q+b.q", "a.q+b.q", "c.o", "c.o"], "M": [1, 2, 1, 2],
                         "N": [4096, 4096, 8192, 8192], "K": [4096] * 4})
    key, name = series_labels(rows, "M")
    assert key.nunique() == 2
    assert set(name) == {"a.q (+1 more)", "c.o"}


def test_unconverged_and_thermally_throttled_rows_are_unsteady_power_capped_are_not():
    import pandas as pd

    from analysis.frames import unsteady

    rows = pd.DataFrame({"converged": pd.array([True, False, None, True, True], dtype="boolean"),
                         "throttle": ["", "", "", "power sw_power_cap", "hw_thermal"]})
    assert unsteady(rows).tolist() == [False, True, False, False, True]


def test_unsteady_rows_leave_the_ceilings(tmp_path):
    import pandas as pd

    from analysis.ceilings import derive_ceilings

    def row(median, converged):
        return dict(run_id="r", kernel="write", impl="triton", dtype="fp32", N=1 << 28, status="ok", mode="cuda", l2="cold",
                    median_s=median, bytes=4 << 28, flops=0, footprint_bytes=4 << 28, l2_resident=False,
                    converged=converged, throttle="", launches_per_sample=1, launch="stream", graph="auto", label="",
                    p20_s=median, p80_s=median, cv=0.001, samples=100)

    steady = pd.DataFrame([row(1e-3, True)])
    both = pd.DataFrame([row(1e-3, True), row(0.5e-3, False)])  # a wrong, fast, unconverged row
    first = derive_ceilings(steady, 50 << 20)
    second = derive_ceilings(both, 50 << 20)
    assert not first.empty
    assert first["value"].tolist() == second["value"].tolist()
