"""What `gpuyard apiserver --fsync` costs; prints JSON.

Acknowledged writes/s creating pods (2 client processes, 32 connections each) against
`python -m gpuyard.apiserver` with the default durability (WAL, synchronous=NORMAL:
writes survive the process being killed) and with --fsync (synchronous=FULL: they
also survive an operating-system crash or power loss), alternating runs in the same
invocation so that both see the same machine. The ratio is what to quote.

    python benchmarks/durability.py [--pods N] [--runs N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile

import orjson

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.apiserver import pod, write_phase  # noqa: E402
from gpuyard.apiserver.testing import run_apiserver_process  # noqa: E402


def one(fsync: bool, pods: int) -> float:
    items = [("/api/v1/namespaces/default/pods", orjson.dumps(pod(i, 64))) for i in range(pods)]
    with tempfile.TemporaryDirectory(prefix="gpuyard-durability-") as d:
        extra = ("--fsync",) if fsync else ()
        with run_apiserver_process(d, extra_args=extra) as srv:
            ok, secs = write_phase(srv.url, srv.token, srv.ca_file, items)
    if ok != pods:
        raise SystemExit(f"only {ok} of {pods} writes were acknowledged")
    return pods / secs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--pods", type=int, default=5000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    from gpuyard import childgroups

    childgroups.exit_on_signals()  # a signal still stops every server it started
    normal: list[float] = []
    full: list[float] = []
    for _ in range(args.runs):
        normal.append(one(False, args.pods))
        full.append(one(True, args.pods))
    n, f = statistics.median(normal), statistics.median(full)
    print(
        json.dumps(
            {
                "pods": args.pods,
                "runs": args.runs,
                "writes_per_s_default": [round(x) for x in normal],
                "writes_per_s_fsync": [round(x) for x in full],
                "median_default": round(n),
                "median_fsync": round(f),
                "fsync_over_default": round(f / n, 3),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
