"""Benchmark: a legitimate client's latency while the API server is flooded; prints JSON.

Against `python -m gpuyard.apiserver` in a subprocess: first a quiet period, then
with IDLE connections that never send a byte (from two helper processes, reopened
as the server closes them) and SLOW clients trickling header lines. In both, a
legitimate client creates and reads ConfigMaps over a kept-alive connection and
reads one over a fresh TLS connection per round; p50/p99/max of each and the
server's connection figures are printed.

    python benchmarks/apiserver_flood.py [--idle 20000] [--slow 300] [--seconds 15]

Target (issue 14): the legitimate client's p99 under 100 ms during the flood. The
hard file limit bounds what one helper can hold (10,000 each here).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import subprocess
import sys
import time
import urllib.request
from typing import Any

import aiohttp
import orjson

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from gpuyard.apiserver.testing import ServerProcess, run_apiserver_process  # noqa: E402
from gpuyard.kube.client import Client  # noqa: E402
from gpuyard.kube.resources import CONFIGMAPS  # noqa: E402

CM = "/api/v1/namespaces/default/configmaps"


def _metrics(srv: ServerProcess) -> dict[str, float]:
    req = urllib.request.Request(srv.url + "/metrics", headers=srv.headers)
    with urllib.request.urlopen(req, context=srv.ssl_context(), timeout=60) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("gpuyard_apiserver_connection"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def _pct(xs: list[float]) -> dict[str, float]:
    xs = sorted(xs)
    if not xs:
        return {}

    def at(p: float) -> float:
        return round(xs[min(len(xs) - 1, int(p * len(xs)))] * 1000, 1)

    return {"n": len(xs), "p50_ms": at(0.5), "p99_ms": at(0.99), "max_ms": at(1.0)}


async def legit(srv: ServerProcess, seconds: float, tag: str) -> dict[str, Any]:
    kept: list[float] = []
    fresh: list[float] = []
    errors = 0
    ctx = srv.ssl_context()
    async with Client.from_kubeconfig(srv.kubeconfig, component="legit") as c:
        end = time.monotonic() + seconds
        i = 0
        while time.monotonic() < end:
            name = f"{tag}-{i}"
            t0 = time.perf_counter()
            try:
                await c.create(
                    {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}},
                    namespace="default",
                )
                await c.get(CONFIGMAPS, name, namespace="default")
                kept.append(time.perf_counter() - t0)
            except Exception:
                errors += 1
            t0 = time.perf_counter()
            try:
                async with aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(ssl=ctx, force_close=True),
                    timeout=aiohttp.ClientTimeout(total=30),
                ) as s:
                    async with s.get(f"{srv.url}{CM}/{name}", headers=srv.headers) as r:
                        await r.read()
                        if r.status != 200:
                            raise RuntimeError(r.status)
                fresh.append(time.perf_counter() - t0)
            except Exception:
                errors += 1
            i += 1
    return {
        "kept_alive_create_get": _pct(kept),
        "fresh_connection_get": _pct(fresh),
        "errors": errors,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--idle", type=int, default=20_000)
    ap.add_argument("--slow", type=int, default=300)
    ap.add_argument("--seconds", type=float, default=15.0)
    a = ap.parse_args()
    from gpuyard import childgroups

    childgroups.exit_on_signals()  # a signal still stops every server it started
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    per = min(a.idle // 2, hard - 200)
    out: dict[str, Any] = {"cpus": os.cpu_count(), "idle": 2 * per, "slow": a.slow}
    with run_apiserver_process(in_memory=True) as srv:
        out["quiet"] = asyncio.run(legit(srv, a.seconds, "quiet"))
        host, port = srv.url.split("//")[1].rsplit(":", 1)
        flood_s = str(a.seconds + 60)

        def helper(*args: str) -> subprocess.Popen[str]:
            p = subprocess.Popen(
                [sys.executable, "-m", "tests.apiserver.load_clients", *args],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )
            childgroups.adopt(p.pid)
            return p

        procs = [helper("idle", host, port, str(per), flood_s) for _ in range(2)]
        procs.append(helper("slow", host, port, str(a.slow), flood_s, srv.ca_file))
        try:
            cap = _metrics(srv)["gpuyard_apiserver_connection_limit"]
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if (
                    _metrics(srv)['gpuyard_apiserver_connections{state="open"}']
                    >= min(cap, 2 * per) - 50
                ):
                    break
                time.sleep(0.5)
            out["flooded"] = asyncio.run(legit(srv, a.seconds, "flood"))
            out["server"] = _metrics(srv)
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.communicate(timeout=60)
    out["target"] = {"flooded_p99_ms": 100}
    print(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
