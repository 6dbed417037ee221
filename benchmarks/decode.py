"""Decoding typical API request bodies: gpuyard.k8s.decode.loads_json (with its
limits, and with the duplicate-field check the API server asks for on create and update
bodies) against plain orjson.loads on the same bytes, in the same run. Prints JSON.

    python benchmarks/decode.py [--rounds N]
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import orjson

from gpuyard.k8s import decode


def bodies() -> dict[str, Any]:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p-123", "namespace": "default", "labels": {"app": "x"}},
        "spec": {
            "schedulerName": "gpuyard-scheduler",
            "containers": [
                {
                    "name": "c",
                    "image": "busybox",
                    "env": [{"name": f"E{i}", "value": str(i)} for i in range(10)],
                    "resources": {"requests": {"nvidia.com/gpu": "8", "cpu": "4"}},
                }
            ],
            "tolerations": [{"key": "gpuyard.io/team", "operator": "Exists"}],
        },
    }
    big = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "big"},
        "spec": {
            "containers": [
                {"name": f"c{i}", "image": "x", "ports": [{"containerPort": 80}]} for i in range(60)
            ]
        },
    }
    lease = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "node-1", "resourceVersion": "12345678"},
        "spec": {"holderIdentity": "node-1", "renewTime": "2026-12-03T00:00:00.000000Z"},
    }
    cm = {"metadata": {"name": "c"}, "data": {"k": "v" * 200}}
    return {"configmap": cm, "lease": lease, "pod": pod, "pod-60-containers": big}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=20_000)
    args = ap.parse_args()
    for name, obj in bodies().items():
        raw = orjson.dumps(obj)
        best = {"orjson": 1e9, "decode": 1e9, "duplicates": 1e9}
        fns: tuple[tuple[str, Any], ...] = (
            ("orjson", orjson.loads),
            ("decode", decode.loads_json),
            ("duplicates", lambda b: decode.loads_json(b, duplicates=[])),
        )
        for _ in range(3):  # best of three: the machine is shared
            for label, fn in fns:
                t0 = time.perf_counter()
                for _ in range(args.rounds):
                    fn(raw)
                best[label] = min(best[label], (time.perf_counter() - t0) / args.rounds)
        print(
            json.dumps(
                {
                    "body": name,
                    "bytes": len(raw),
                    "orjson_us": round(best["orjson"] * 1e6, 2),
                    "decode_us": round(best["decode"] * 1e6, 2),
                    "extra_us": round((best["decode"] - best["orjson"]) * 1e6, 2),
                    "with_duplicate_check_us": round(best["duplicates"] * 1e6, 2),
                    "duplicate_check_extra_us": round(
                        (best["duplicates"] - best["decode"]) * 1e6, 2
                    ),
                }
            )
        )


if __name__ == "__main__":
    main()
