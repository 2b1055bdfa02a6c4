"""`rooflab report` and the end of `rooflab run`: build the report and say what it left out.

Below both the CLI (bench/cli.py) and the commands (bench/commands.py), so neither imports the other.
"""

from __future__ import annotations

import sys
from pathlib import Path


def write_report(results: Path, out: Path) -> int:
    """Build the report; each results file that could not be read and each figure that could not be drawn is
    named on stderr (and in the report)."""
    from analysis.report import build_report

    bad: list = []
    failed: list = []
    index = build_report(results, out, bad, failed)
    for _, reason in bad:
        print(f"rooflab: warning: not in the report: {reason}", file=sys.stderr)
    for path, reason in failed:
        print(f"rooflab: warning: figure {path.as_posix()} could not be drawn: {reason}", file=sys.stderr)
    print(f"report: {index}")
    return 0
