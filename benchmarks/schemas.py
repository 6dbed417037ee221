"""Benchmark of decoding by the API definitions on the API server's write path; prints JSON.

In one process, against an in-memory `APIServer` called without sockets (`dispatch`):
- the cost of `schemas.decode` per object (µs) for the pods and nodes of
  benchmarks/apiserver.py;
- pod creates per second with decoding as served and with it switched off, in
  alternating rounds of the same process, so that the load of the machine falls on both
  alike; `overhead_pct` is what decoding costs the write path.

    python benchmarks/schemas.py [--pods N] [--rounds N]
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import os
import statistics
import sys
import tempfile
import time
from typing import Any

import orjson

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.apiserver import node, pod  # noqa: E402
from gpuyard.apiserver import schemas  # noqa: E402
from gpuyard.apiserver.resources import Registry  # noqa: E402


def decode_us(res: Any, obj: dict[str, Any], reps: int = 5000) -> float:
    bodies = [copy.deepcopy(obj) for _ in range(reps)]
    t = time.perf_counter()
    for b in bodies:
        schemas.decode(res, b, "create", "Strict")
    return (time.perf_counter() - t) / reps * 1e6


async def creates_per_s(pods: int, rounds: int) -> dict[str, Any]:
    from gpuyard.apiserver.server import APIServer

    real = schemas.decode

    def off(*_a: Any, **_k: Any) -> list[str]:
        return []

    d = tempfile.mkdtemp(prefix="gpuyard-bench-schemas-")
    srv = APIServer(d, port=0, persist=False)
    await srv.start()
    rates: dict[str, list[float]] = {"on": [], "off": []}
    try:
        path = "/api/v1/namespaces/default/pods"
        headers = {"Content-Type": "application/json"}
        n = 0
        for r in range(rounds):
            for mode in ("on", "off") if r % 2 == 0 else ("off", "on"):
                schemas.decode = real if mode == "on" else off  # type: ignore[assignment]
                bodies = [orjson.dumps(pod(n + i, 100)) for i in range(pods)]
                n += pods
                t = time.perf_counter()
                for b in bodies:
                    resp = await srv.dispatch("POST", path, {}, headers, b)
                    assert resp.status == 201, resp.body
                rates[mode].append(pods / (time.perf_counter() - t))
    finally:
        schemas.decode = real  # type: ignore[assignment]
        await srv.stop()
    on, off_ = statistics.median(rates["on"]), statistics.median(rates["off"])
    return {
        "pods_per_round": pods,
        "rounds": rounds,
        "creates_per_s_decoding": round(on, 1),
        "creates_per_s_without": round(off_, 1),
        "overhead_pct": round((off_ - on) / off_ * 100, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pods", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=6)
    a = ap.parse_args()
    reg = Registry()
    pods_res = reg.get("", "v1", "pods")
    nodes_res = reg.get("", "v1", "nodes")
    assert pods_res is not None and nodes_res is not None
    t = time.perf_counter()
    defs = schemas.definitions()
    compiled = defs.compile_all()
    out: dict[str, Any] = {
        "definitions": compiled,
        "load_and_compile_ms": round((time.perf_counter() - t) * 1000, 1),
        "decode_us": {
            "pod": round(decode_us(pods_res, pod(1, 10)), 1),
            "node": round(decode_us(nodes_res, node(1)), 1),
        },
    }
    out["write_path"] = asyncio.run(creates_per_s(a.pods, a.rounds))
    print(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
