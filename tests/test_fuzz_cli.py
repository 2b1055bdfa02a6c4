"""Malformed result files and sidecars fed to `rooflab report` and `rooflab compare`: one line, never a traceback."""

import json
import shutil

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.cli import main
from tests.test_results import _row, _write

SIDECARS = st.one_of(
    st.just("[1, 2]"), st.just("{not json"), st.just('{"schema_version": 99}'), st.just('"text"'),
    st.dictionaries(st.text(max_size=8), st.one_of(st.integers(), st.text(max_size=8), st.none()), max_size=4)
    .map(lambda d: json.dumps({"schema_version": 2, **d})),
)
CSVS = st.one_of(st.binary(max_size=300), st.text(max_size=300).map(str.encode))


def _tree(root, csv_bytes, sidecar):
    if root.exists():
        shutil.rmtree(root)
    good = root / "dev" / "good.csv"
    _write(good, [_row(schema_version=2), _row(schema_version=2, impl="torch")])
    bad = root / "dev" / "bad.csv"
    bad.write_bytes(csv_bytes)
    bad.with_suffix(".json").write_text(sidecar)
    return good, bad


def _one_line_or_success(code, err):
    assert code in (0, 1, 2)
    assert "Traceback" not in err
    for line in err.splitlines():
        assert line.startswith(("rooflab", "  ")) or not line.strip(), line


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(csv_bytes=CSVS, sidecar=SIDECARS)
def test_report_names_the_bad_file_and_reports_the_rest(tmp_path, capsys, csv_bytes, sidecar):
    _tree(tmp_path / "results", csv_bytes, sidecar)
    code = main(["report", "--results", str(tmp_path / "results"), "--out", str(tmp_path / "report")])
    err = capsys.readouterr().err
    _one_line_or_success(code, err)
    assert code == 0 and (tmp_path / "report" / "index.md").exists()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(csv_bytes=CSVS, sidecar=SIDECARS)
def test_compare_with_a_bad_file_is_one_line(tmp_path, capsys, csv_bytes, sidecar):
    good, bad = _tree(tmp_path / "results", csv_bytes, sidecar)
    for base, new in ((good, bad), (bad, good)):
        code = main(["compare", str(base), str(new)])
        err = capsys.readouterr().err
        _one_line_or_success(code, err)
        assert code == 2 and err.count("\n") == 1
