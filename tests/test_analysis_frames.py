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
