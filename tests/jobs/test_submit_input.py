"""`gpuyard submit -f` of a file that cannot be a job (binary junk, YAML nested
thousands deep, an alias bomb, a number out of range): one line, exit 2, no traceback,
and nothing sent (the file is refused before any cluster is asked)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# "billion laughs": nine levels of nine aliases, 9**9 strings once expanded
BOMB = (
    "a: &a ["
    + ",".join(['"lol"'] * 9)
    + "]\n"
    + "".join(
        f"{c}: &{c} [" + ",".join([f"*{p}"] * 9) + "]\n"
        for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    )
)

CASES = {
    "junk": os.urandom(4096).replace(b"\n", b"\xff"),
    "deep": b"spec:\n  " + b"- " * 5000 + b"x\n",
    "deep-flow": b"spec: " + b"[" * 5000 + b"]" * 5000 + b"\n",
    "bomb": ("apiVersion: gpuyard.io/v1alpha1\nkind: TrainingJob\n" + BOMB).encode(),
    "bigint": b"apiVersion: gpuyard.io/v1alpha1\nkind: TrainingJob\nspec: {replicas: 99999999999999999999}\n",
    "latin1": "metadata: {name: caf\u00e9}\n".encode("latin-1"),
}
EXPECT = {
    "junk": "UTF-8",
    "deep": "nest",
    "deep-flow": "nest",
    "bomb": "expands",
    "bigint": "out of range",
    "latin1": "UTF-8",
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_submit_refuses_undecodable_files(tmp_path: Path, case: str) -> None:
    f = tmp_path / f"{case}.yaml"
    f.write_bytes(CASES[case])
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "gpuyard.cli",
            "submit",
            "-f",
            str(f),
            "--kubeconfig",
            str(tmp_path / "no-such-kubeconfig"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr[-2000:]
    assert EXPECT[case] in lines[0] and str(f) in lines[0], lines[0]
    assert len(lines[0]) < 300
