"""Latency of gpuyard.apiserver.webhooks.admit: one mutating webhook over HTTPS, driven
open-loop at a fixed rate, with the webhook in its own process (as beside a real API
server). Compared in the same run: connection limits per webhook host of 16, 64 (the
module default) and 256, each from a cold start (no connection open yet).

    python benchmarks/webhooks.py [--rate 500] [--seconds 3]

Prints JSON (latencies in ms, measured at the caller; this machine is shared, so the
tail is noisy: compare the modes within one run, and repeat).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing as mp
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpuyard.apiserver import webhooks as wh  # noqa: E402
from gpuyard.apiserver.resources import Registry  # noqa: E402
from gpuyard.apiserver.tls import make_ca_and_cert  # noqa: E402

PATCH = base64.b64encode(
    orjson.dumps([{"op": "add", "path": "/metadata/labels/mutated", "value": "yes"}])
).decode()


def serve(cert: str, key: str, port_q: Any) -> None:
    async def handle(request: web.Request) -> web.Response:
        review = orjson.loads(await request.read())
        resp = {"uid": review["request"]["uid"], "allowed": True, "patchType": "JSONPatch"}
        resp["patch"] = PATCH
        return web.Response(
            body=orjson.dumps({"apiVersion": "admission.k8s.io/v1", "response": resp}),
            content_type="application/json",
        )

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/m", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert, key)
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
        await site.start()
        port_q.put(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
        await asyncio.Event().wait()

    asyncio.run(main())


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(q * len(xs)))], 2) if xs else 0.0


async def drive(configs: list[dict[str, Any]], rate: int, seconds: float) -> Any:
    pods = Registry().get("", "v1", "pods")
    assert pods is not None
    lat: list[float] = []
    errors = 0

    async def one(i: int) -> None:
        nonlocal errors
        attrs = wh.AdmissionAttributes("CREATE", pods, namespace="default", name=f"p{i}")
        obj = {"metadata": {"name": f"p{i}", "namespace": "default", "labels": {"a": "b"}}}
        t0 = time.perf_counter()
        try:
            out, _ = await wh.admit(configs, attrs, obj, None)
            assert out["metadata"]["labels"]["mutated"] == "yes"
        except Exception:  # noqa: BLE001 - counted
            errors += 1
        lat.append((time.perf_counter() - t0) * 1000)

    n = int(rate * seconds)
    start = time.perf_counter()
    tasks = []
    for i in range(n):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    await wh.close()
    return {
        "requests": n,
        "achieved_per_s": round(n / elapsed, 1),
        "errors": errors,
        "p50_ms": pct(lat, 0.5),
        "p99_ms": pct(lat, 0.99),
        "max_ms": round(max(lat), 2),
        "mean_ms": round(statistics.fmean(lat), 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=int, default=500)
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    from gpuyard import childgroups

    childgroups.exit_on_signals()  # a signal still stops every server it started
    ca, cert, key = make_ca_and_cert(["127.0.0.1"])
    d = tempfile.mkdtemp(prefix="gpuyard-whbench-")
    Path(d, "tls.crt").write_bytes(cert)
    Path(d, "tls.key").write_bytes(key)
    q: Any = mp.get_context("spawn").Queue()
    proc = mp.get_context("spawn").Process(
        target=serve, args=(f"{d}/tls.crt", f"{d}/tls.key", q), daemon=True
    )
    proc.start()
    try:
        port = q.get(timeout=30)
        hook = {
            "name": "bench.example.com",
            "clientConfig": {
                "url": f"https://127.0.0.1:{port}/m",
                "caBundle": base64.b64encode(ca).decode(),
            },
            "rules": [
                {
                    "operations": ["CREATE"],
                    "apiGroups": [""],
                    "apiVersions": ["v1"],
                    "resources": ["pods"],
                }
            ],
            "timeoutSeconds": 10,
        }
        configs = [{"metadata": {"name": "bench"}, "webhooks": [hook]}]
        out: dict[str, Any] = {"rate_target_per_s": args.rate, "target_p99_ms": 20}
        for limit in (16, 64, 256):
            wh.CONNECTIONS_PER_HOST = limit
            out[f"connections_per_host_{limit}"] = asyncio.run(
                drive(configs, args.rate, args.seconds)
            )
        print(json.dumps(out, indent=1))
    finally:
        proc.kill()
        proc.join(10)


if __name__ == "__main__":
    main()
