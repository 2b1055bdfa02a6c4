"""The two revisions of ``rooflab ab``: resolved in the repository here, each checked out in its own
detached git worktree under a temporary folder, removed (worktree and its git bookkeeping) on exit.

"The working tree" (HEAD omitted) is the repository's own folder, uncommitted changes included.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from kernels.errors import UsageError

WORKING_TREE = "working tree"


@dataclass(frozen=True)
class Revision:
    """What one side measures: the name given, the commit it resolves to ("" for the working tree)."""

    name: str
    commit: str
    parent: str = ""  # the working tree: the commit it is checked out at

    @property
    def label(self) -> str:
        return f"{self.name} ({self.commit[:10]})" if self.commit else f"{WORKING_TREE} (uncommitted changes included)"

    def record(self, dirty: bool | None = None) -> dict:
        """The sidecar's git fields for a run of this revision (the working tree: its commit and whether dirty)."""
        return {"git_commit": self.commit or self.parent, "git_dirty": dirty if not self.commit else False,
                "ab_revision": self.name}


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        raise UsageError("rooflab ab needs git on PATH (it checks out BASE and HEAD as git worktrees)") from None
    except subprocess.TimeoutExpired:
        raise UsageError(f"git {' '.join(args)} in {repo} did not finish within 120 s") from None


def repository(cwd: Path) -> Path:
    """The top of the git repository holding ``cwd``."""
    done = _git(cwd, "rev-parse", "--show-toplevel")
    if done.returncode != 0:
        raise UsageError(f"rooflab ab compares git revisions: {cwd} is not inside a git repository (run it in the "
                         "checkout whose kernels you change)")
    return Path(done.stdout.strip())


def resolve(repo: Path, name: str | None, role: str) -> Revision:
    """``name`` as a commit of ``repo`` (None: the working tree); a name git does not know is one line."""
    if name is None:
        done = _git(repo, "rev-parse", "--verify", "--quiet", "HEAD")
        return Revision(WORKING_TREE, "", done.stdout.strip() if done.returncode == 0 else "")
    if not name.strip() or name.startswith("-"):
        raise UsageError(f"{role} {name!r}: give a git revision (a commit, branch or tag), e.g. origin/main or HEAD~1")
    done = _git(repo, "rev-parse", "--verify", "--quiet", f"{name}^{{commit}}")
    if done.returncode != 0:
        raise UsageError(f"{role} {name!r} is not a commit of {repo}: give a commit, branch or tag, e.g. origin/main, "
                         "HEAD~1 or the merge base (git merge-base origin/main HEAD)")
    return Revision(name, done.stdout.strip())


def dirty(repo: Path) -> bool | None:
    done = _git(repo, "status", "--porcelain", "--untracked-files=no")
    return bool(done.stdout.strip()) if done.returncode == 0 else None


@contextlib.contextmanager
def checkouts(repo: Path, revisions: list[Revision]) -> Iterator[list[Path]]:
    """A folder per revision: a fresh detached worktree for a commit, the repository for the working tree.
    Every worktree made is removed on the way out, whatever happens inside."""
    scratch = Path(tempfile.mkdtemp(prefix="rooflab-ab-"))
    made: list[Path] = []
    try:
        paths = []
        for index, revision in enumerate(revisions):
            if not revision.commit:
                paths.append(repo)
                continue
            path = scratch / f"{index}-{revision.commit[:12]}"
            done = _git(repo, "worktree", "add", "--detach", "--quiet", str(path), revision.commit)
            if done.returncode != 0:
                message = (done.stderr.strip().splitlines() or ["git worktree add failed"])[-1]
                raise UsageError(f"cannot check out {revision.label} in {path}: {message}")
            made.append(path)
            paths.append(path)
        yield paths
    finally:
        for path in made:
            _git(repo, "worktree", "remove", "--force", str(path))
        shutil.rmtree(scratch, ignore_errors=True)
        if made:
            _git(repo, "worktree", "prune")
