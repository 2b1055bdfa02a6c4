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


# ---------------------------------------------------------------------------------------------
# Random command lines from the real option names (issue 21): never a traceback, exit 0/1/2, and
# exit 2 is one line. No GPU; nothing long runs (sweep only fails fast or dry-runs; compile's
# compiler is replaced).
# ---------------------------------------------------------------------------------------------

VALUES = st.one_of(
    st.sampled_from(["0", "-1", "1", "3", "99", "1e9", "1e309", "inf", "-inf", "nan", "0.001", "1.5", "5%", "150%",
                     "-5%", "8m", "1e9h", "0.001s", "90s", "2d", "all", "0,1", "0,0", "abc", "", ",", "fp16", "bf16",
                     "fp9", "copy", "triad", "gemv", "nope", "triton", "torch", "cublas", "N=5", "N=1,4097", "N",
                     "M=x", "smoke", "stream", "h200", "h100", "1/2", "0/2", "auto", "sm_90a", "sm_80", "headline",
                     "20261130T060000Z", "20261399T250000Z", "x.csv", "x.txt", "cold", "zero", "never"]),
    st.text(alphabet="abcxyz0123456789-=,.%/", max_size=6),
)
TIMING = {"--l2": 1, "--flush": 1, "--graph": 1, "--max-noise": 1, "--timeout": 1, "--min-samples": 1, "--min-time": 1}
OPTIONS = {
    "sweep": {"--kernel": 1, "--impl": 1, "--dtype": 1, "--axis": 1, "--suite": 1, "--device": 1, "--shard": 1,
              "--shard-count": 1, "--gpus": 1, "--seed": 1, "--resume": 0, "--no-progress": 0, "--out": 1,
              **TIMING},
    "run": {"--budget": 1, "--full": 0, "--resume": 1, "--device": 1, "--seed": 1, "--gpus": 1,
            "--no-progress": 0, **TIMING},
    "report": {},
    "compare": {"--threshold": 1, "-k": 1, "--noise-k": 1, "--noise-cap": 1, "--allow-missing": 1,
                "--allow-inconclusive": 0, "--normalize": 1, "--allow-different-devices": 0, "--json": 1},
    "compile": {"--arch": 1, "--check": 0, "--jobs": 1, "--kernel": 1, "--points": 1, "--out": 1},
}


@st.composite
def command_lines(draw):
    command = draw(st.sampled_from(sorted(OPTIONS)))
    names = draw(st.lists(st.sampled_from(sorted(OPTIONS[command]) + ["--help", "--bogus"]) if OPTIONS[command]
                          else st.sampled_from(["--help", "--bogus"]), max_size=5))
    argv = [command]
    for name in names:
        argv.append(name)
        if OPTIONS[command].get(name):
            argv.append(draw(VALUES))
    if command == "compare":
        argv += [draw(st.sampled_from(["a.csv", "base", ""])), draw(st.sampled_from(["b.csv", "new"]))]
    if command == "sweep" and draw(st.booleans()):
        argv += ["--interpret", "--dry-run"]  # the interpreter only for a dry run: never a real sweep
    if command == "run" and draw(st.integers(0, 3)) == 0:
        argv.append("--dry-run")
    return argv


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(argv=command_lines())
def test_random_command_lines_are_handled(argv, tmp_path, capsys, monkeypatch):
    import bench.device
    import bench.static

    monkeypatch.setattr(bench.device, "cuda_available", lambda: False)
    monkeypatch.setattr(bench.static, "compile_rows", lambda *a, **k: [])
    monkeypatch.chdir(tmp_path)  # default results/ and report/ are this test's, and empty
    if argv[0] in ("run", "report"):
        argv = argv + ["--results", str(tmp_path / "results")] + (["--report", str(tmp_path / "rep")]
                                                                    if argv[0] == "run" else ["--out", str(tmp_path / "rep")])
    code = main(argv)
    out, err = capsys.readouterr()
    assert code in (0, 1, 2), (argv, code, err)
    assert "Traceback" not in err, (argv, err)
    if code == 2:
        assert len(err.strip().splitlines()) == 1, (argv, err)
    if "--help" in argv and code == 0:
        assert out.startswith("usage:")
