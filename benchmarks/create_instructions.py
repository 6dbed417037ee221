"""Instructions per pod create in the API server, counted by valgrind (cachegrind), for
this checkout and optionally an older commit: a figure that does not move with the
load of a shared machine, unlike writes/s. Prints JSON.

Each side runs the server in-process (persistence on, no TLS or HTTP: the create path
from authentication to the stored commit) twice, with FEW and MANY creates of the
benchmark pod of benchmarks/apiserver.py; the difference of the two counts divided by
MANY - FEW is the cost of one create, start-up cancelled out. Each side creates the pod
of its own benchmarks/apiserver.py (the same one since a046785).

    python benchmarks/create_instructions.py [--baseline-commit REV] [--few N] [--many N]

Needs valgrind; about two minutes a side on a quiet 2-core machine.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from typing import Any

import orjson

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Run inside valgrind with the code under test first on sys.path.
_CHILD = r"""
import asyncio, os, sys, tempfile
import orjson
code, n = sys.argv[1], int(sys.argv[2])
sys.path.insert(0, code)
sys.path.insert(0, os.path.join(code, "benchmarks"))
from apiserver import node, pod
from gpuyard.apiserver.server import APIServer

async def main():
    d = tempfile.mkdtemp(prefix="gpuyard-ir-")
    srv = APIServer(d, persist=True, tls=False)
    await srv.start(listen=False)
    h = {"Authorization": f"Bearer {srv.token}", "Content-Type": "application/json"}
    for i in range(20):
        await srv.dispatch("POST", "/api/v1/nodes", {}, h, orjson.dumps(node(i)))
    sem = asyncio.Semaphore(16)

    async def one(b):
        async with sem:
            r = await srv.dispatch("POST", "/api/v1/namespaces/default/pods", {}, h, b)
            assert r.status == 201, r.body

    await asyncio.gather(*[one(orjson.dumps(pod(i, 20))) for i in range(n)])
    await srv.stop()

asyncio.run(main())
"""


def _count(code: str, n: int) -> int:
    env = {**os.environ, "PYTHONHASHSEED": "0", "PYTHONPATH": code}
    r = subprocess.run(
        [
            "valgrind",
            "--tool=cachegrind",
            "--cache-sim=no",
            "--cachegrind-out-file=/dev/null",
            sys.executable,
            "-c",
            _CHILD,
            code,
            str(n),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=code,
    )
    m = re.search(r"I\s+refs:\s+([\d,]+)", r.stderr)
    if r.returncode != 0 or m is None:
        raise SystemExit(f"create_instructions.py: the run in {code} failed:\n{r.stderr[-2000:]}")
    return int(m.group(1).replace(",", ""))


def per_create(code: str, few: int, many: int) -> dict[str, Any]:
    a, b = _count(code, few), _count(code, many)
    return {"instructions_per_create": round((b - a) / (many - few)), "counts": [a, b]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline-commit", metavar="REV", default=None)
    ap.add_argument("--few", type=int, default=50)
    ap.add_argument("--many", type=int, default=450)
    a = ap.parse_args()
    if a.many <= a.few or a.few < 0:
        raise SystemExit("create_instructions.py: --many must be above --few (both >= 0)")
    if shutil.which("valgrind") is None:
        raise SystemExit("create_instructions.py: valgrind is not installed")
    out: dict[str, Any] = {"few": a.few, "many": a.many}
    out["current"] = per_create(REPO, a.few, a.many)
    if a.baseline_commit:
        sys.path.insert(0, REPO)
        from benchmarks.baseline import baseline_tree

        with baseline_tree(a.baseline_commit, "benchmarks/create_instructions.py") as (c, tree):
            out["baseline_commit"] = c
            out["baseline"] = per_create(tree, a.few, a.many)
        cur = out["current"]["instructions_per_create"]
        base = out["baseline"]["instructions_per_create"]
        out["ratio"] = round(cur / base, 3) if base else None
    print(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
