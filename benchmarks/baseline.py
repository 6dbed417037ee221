"""A commit to measure beside this checkout: checked out in a temporary git worktree for
as long as a benchmark compares the two, then removed (benchmarks/apiserver.py and
benchmarks/scheduler.py `--baseline-commit`)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@contextlib.contextmanager
def baseline_tree(rev: str, script: str) -> Iterator[tuple[str, str]]:
    """(commit, path of its worktree); exits naming `script` when `rev` is no commit."""
    sha = subprocess.run(
        ["git", "-C", REPO, "rev-parse", "--verify", rev + "^{commit}"],
        capture_output=True,
        text=True,
    )
    if sha.returncode != 0:
        raise SystemExit(f"{script}: not a commit: {rev!r}")
    commit = sha.stdout.strip()
    tree = tempfile.mkdtemp(prefix="gpuyard-baseline-")
    subprocess.run(
        ["git", "-C", REPO, "worktree", "add", "--detach", tree, commit],
        check=True,
        capture_output=True,
    )

    def remove() -> None:
        subprocess.run(
            ["git", "-C", REPO, "worktree", "remove", "--force", tree], capture_output=True
        )
        shutil.rmtree(tree, ignore_errors=True)

    from gpuyard import childgroups

    forget = childgroups.at_exit(remove)  # also when the benchmark is stopped by a signal
    try:
        yield commit, tree
    finally:
        forget()
        remove()
