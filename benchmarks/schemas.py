"""Benchmark of decoding by the API definitions on the API server's write path; prints JSON.

In one process, against an in-memory `APIServer` called without sockets (`dispatch`):
- the cost of `schemas.decode` per object (µs) for the pods and nodes of
  benchmarks/apiserver.py;
- pod creates per second with decoding as served and with it switched off, in
  alternating rounds of the same process, so that the load of the machine falls on both
  alike; `overhead_pct` is what decoding costs the write path;
- the same for field ownership (`managedfields.track_update`, on every create and
  update): pod creates, and label updates of those pods, with it on and off;
- CEL (`x-kubernetes-validations`): compile and evaluation µs per rule, and creates per
  second of a custom resource whose CRD has no rules, of one whose CRD has five rules,
  and of that one with rule checking switched off (`cel_overhead_pct`, and
  `no_rules_overhead_pct` for objects without rules, which should be ~0);
- a ValidatingAdmissionPolicy of three validations bound to pods: pod creates per
  second with its binding and without (`policy_us_per_request`);
- a mutating admission webhook on pod creates (HTTPS, in the same process, answering a
  one-label JSON patch): pod creates per second with its configuration and without
  (`webhook_us_per_request`);
- built-in defaults (`defaults.apply` when a body is decoded, `defaults.on_create`):
  µs per pod, and pod creates per second with them and without (`defaults_overhead_pct`);
- the audit log (default policy): pod creates per second with it and without.

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
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.apiserver import node, pod  # noqa: E402
from gpuyard.apiserver import celexpr, celrules, defaults, managedfields, schemas  # noqa: E402
from gpuyard.apiserver.resources import Registry  # noqa: E402


def decode_us(res: Any, obj: dict[str, Any], reps: int = 5000) -> float:
    bodies = [copy.deepcopy(obj) for _ in range(reps)]
    t = time.perf_counter()
    for b in bodies:
        schemas.decode(res, b, "create", "Strict")
    return (time.perf_counter() - t) / reps * 1e6


async def _post_all(
    srv: Any, path: str, bodies: list[bytes], check: Callable[[Any], None] | None = None
) -> float:
    """POST each body to `path` (each must be created; `check` looks at each response
    too): bodies per second."""
    headers = {"Content-Type": "application/json"}
    t = time.perf_counter()
    for b in bodies:
        resp = await srv.dispatch("POST", path, {}, headers, b)
        assert resp.status == 201, resp.body
        if check is not None:
            check(resp)
    return len(bodies) / (time.perf_counter() - t)


async def _medians(
    rounds: int,
    swap: Callable[[bool], Awaitable[None] | None],
    run: Callable[[bool], Awaitable[float]],
    state: bool = True,
) -> tuple[float, float]:
    """Median rates of `run(on)` with the thing measured on and off, rounds alternating
    which goes first; `swap(on)` (awaited when it returns an awaitable) switches it, only
    when it is not already so (`state`: how it is at the start)."""
    rates: dict[str, list[float]] = {"on": [], "off": []}
    for r in range(rounds):
        for mode in ("on", "off") if r % 2 == 0 else ("off", "on"):
            want = mode == "on"
            if want != state:
                done = swap(want)
                if done is not None:
                    await done
                state = want
            rates[mode].append(await run(want))
    return statistics.median(rates["on"]), statistics.median(rates["off"])


async def creates_per_s(pods: int, rounds: int) -> dict[str, Any]:
    from gpuyard.apiserver.server import APIServer

    real = schemas.decode

    def off(*_a: Any, **_k: Any) -> list[str]:
        return []

    def swap(on: bool) -> None:
        schemas.decode = real if on else off  # type: ignore[assignment]

    d = tempfile.mkdtemp(prefix="gpuyard-bench-schemas-")
    srv = APIServer(d, port=0, persist=False)
    await srv.start()
    n = 0

    async def run(_on: bool) -> float:
        nonlocal n
        bodies = [orjson.dumps(pod(n + i, 100)) for i in range(pods)]
        n += pods
        return await _post_all(srv, "/api/v1/namespaces/default/pods", bodies)

    try:
        on, off_ = await _medians(rounds, swap, run)
    finally:
        schemas.decode = real  # type: ignore[assignment]
        await srv.stop()
    return {
        "pods_per_round": pods,
        "rounds": rounds,
        "creates_per_s_decoding": round(on, 1),
        "creates_per_s_without": round(off_, 1),
        "overhead_pct": round((off_ - on) / off_ * 100, 1),
    }


async def _ab(
    label: str,
    swap: Callable[[bool], None],
    rounds: int,
    run: Callable[[], Awaitable[float]],
) -> dict[str, float]:
    """Median rate of `run()` (objects/s) with `swap(True)` (as served) and `swap(False)`,
    rounds alternating which goes first."""
    on, off = await _medians(rounds, swap, lambda _on: run())
    swap(True)
    return {
        f"{label}_per_s": round(on, 1),
        f"{label}_per_s_without": round(off, 1),
        f"{label}_overhead_pct": round((off - on) / off * 100, 1),
    }


async def managed_fields_cost(pods: int, rounds: int) -> dict[str, Any]:
    from gpuyard.apiserver.server import APIServer

    real = managedfields.track_update

    def swap(on: bool) -> None:
        managedfields.track_update = real if on else (lambda *a, **k: None)  # type: ignore[assignment]

    d = tempfile.mkdtemp(prefix="gpuyard-bench-mf-")
    srv = APIServer(d, port=0, persist=False)
    await srv.start()
    path = "/api/v1/namespaces/default/pods"
    merge = {"Content-Type": "application/merge-patch+json"}
    made: list[str] = []
    counter = [0]

    def keep(resp: Any) -> None:
        made.append(orjson.loads(resp.body)["metadata"]["name"])

    async def creates() -> float:
        bodies = []
        for _ in range(pods):
            counter[0] += 1
            bodies.append(orjson.dumps(pod(counter[0], 100)))
        return await _post_all(srv, path, bodies, keep)

    async def updates() -> float:
        names = made[-pods:]
        t = time.perf_counter()
        for i, name in enumerate(names):
            body = orjson.dumps({"metadata": {"labels": {"round": str(counter[0] + i)}}})
            resp = await srv.dispatch("PATCH", f"{path}/{name}", {}, merge, body)
            assert resp.status == 200, resp.body
        counter[0] += len(names)
        return len(names) / (time.perf_counter() - t)

    try:
        out = await _ab("creates", swap, rounds, creates)
        out.update(await _ab("label_patches", swap, rounds, updates))
    finally:
        managedfields.track_update = real  # type: ignore[assignment]
        await srv.stop()
    return {"pods_per_round": pods, "rounds": rounds, **out}


_RULES = [
    {"rule": "self.minReplicas <= self.replicas", "message": "replicas below minReplicas"},
    {"rule": "self.queue.startsWith('gpu-')"},
    {"rule": "self.tags.all(t, t.matches('^[a-z]+$'))"},
    {"rule": "isQuantity(self.memory) && quantity(self.memory).isLessThan(quantity('1Ti'))"},
    {"rule": "size(self.tags) <= 8"},
]


def _crd(plural: str, rules: bool) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "type": "object",
        "properties": {
            "replicas": {"type": "integer"},
            "minReplicas": {"type": "integer"},
            "queue": {"type": "string"},
            "memory": {"type": "string"},
            # bounded, as kube-apiserver's cost budget requires of the regex-per-tag rule
            "tags": {"type": "array", "maxItems": 8, "items": {"type": "string", "maxLength": 63}},
        },
    }
    if rules:
        spec["x-kubernetes-validations"] = _RULES
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.bench.example.com"},
        "spec": {
            "group": "bench.example.com",
            "scope": "Namespaced",
            "names": {"plural": plural, "singular": plural[:-1], "kind": plural.title()[:-1]},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": spec}}},
                }
            ],
        },
    }


def _cr(plural: str, i: int) -> bytes:
    return orjson.dumps(
        {
            "apiVersion": "bench.example.com/v1",
            "kind": plural.title()[:-1],
            "metadata": {"name": f"{plural}-{i}"},
            "spec": {
                "replicas": 4,
                "minReplicas": 1,
                "queue": "gpu-a",
                "memory": "64Gi",
                "tags": ["train", "vision"],
            },
        }
    )


def cel_unit_costs() -> dict[str, float]:
    reps = 2000
    t = time.perf_counter()
    for i in range(reps):
        celexpr._programs.clear()
        celexpr.compile_expr(_RULES[i % len(_RULES)]["rule"])
    compile_us = (time.perf_counter() - t) / reps * 1e6
    spec = orjson.loads(_cr("things", 0))["spec"]
    progs = [celexpr.compile_expr(r["rule"]) for r in _RULES]
    t = time.perf_counter()
    for i in range(reps):
        celexpr.run(progs[i % len(progs)], {"self": spec})
    eval_us = (time.perf_counter() - t) / reps * 1e6
    return {"compile_us_per_rule": round(compile_us, 1), "eval_us_per_rule": round(eval_us, 1)}


async def cel_cost(objects: int, rounds: int) -> dict[str, Any]:
    from gpuyard.apiserver.server import APIServer

    d = tempfile.mkdtemp(prefix="gpuyard-bench-cel-")
    srv = APIServer(d, port=0, persist=False)
    await srv.start()
    headers = {"Content-Type": "application/json"}
    crds = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
    for plural, rules in (("plains", False), ("ruleds", True)):
        resp = await srv.dispatch("POST", crds, {}, headers, orjson.dumps(_crd(plural, rules)))
        assert resp.status == 201, resp.body
    real = celrules.validate
    counter = [0]

    def creates(plural: str) -> Any:
        async def run() -> float:
            bodies = []
            for _ in range(objects):
                counter[0] += 1
                bodies.append(_cr(plural, counter[0]))
            return await _post_all(
                srv, f"/apis/bench.example.com/v1/namespaces/default/{plural}", bodies
            )

        return run

    def swap(on: bool) -> None:
        celrules.validate = real if on else (lambda *a, **k: [])  # type: ignore[assignment]

    try:
        ruled = await _ab("creates_5_rules", swap, rounds, creates("ruleds"))
        plain = await _ab("creates_no_rules", swap, rounds, creates("plains"))
    finally:
        celrules.validate = real  # type: ignore[assignment]
        await srv.stop()
    per_req_us = 1e6 / ruled["creates_5_rules_per_s"] - 1e6 / ruled["creates_5_rules_per_s_without"]
    return {
        "objects_per_round": objects,
        "rounds": rounds,
        **cel_unit_costs(),
        **ruled,
        **plain,
        "cel_us_per_request_5_rules": round(per_req_us, 1),
        "cel_overhead_pct": ruled["creates_5_rules_overhead_pct"],
        "no_rules_overhead_pct": plain["creates_no_rules_overhead_pct"],
    }


async def policy_cost(objects: int, rounds: int) -> dict[str, Any]:
    """Pod creates per second with a ValidatingAdmissionPolicy of three validations bound
    to pods, against the same server with its binding removed."""
    from gpuyard.apiserver.server import APIServer

    d = tempfile.mkdtemp(prefix="gpuyard-bench-vap-")
    srv = APIServer(d, port=0, persist=False)
    await srv.start()
    headers = {"Content-Type": "application/json"}
    adm = "/apis/admissionregistration.k8s.io/v1"
    pol = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": "pods"},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE"],
                        "resources": ["pods"],
                    }
                ]
            },
            "validations": [
                {"expression": "object.spec.containers.all(c, has(c.image))"},
                {"expression": "size(object.spec.containers) <= 8"},
                {"expression": "object.metadata.name.matches('^[a-z0-9-]+$')"},
            ],
        },
    }
    bind = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": "pods"},
        "spec": {"policyName": "pods", "validationActions": ["Deny"]},
    }
    resp = await srv.dispatch(
        "POST", f"{adm}/validatingadmissionpolicies", {}, headers, orjson.dumps(pol)
    )
    assert resp.status == 201, resp.body
    counter = [10**6]
    path = "/api/v1/namespaces/default/pods"

    async def swap_async(on: bool) -> None:
        if on:
            r = await srv.dispatch(
                "POST", f"{adm}/validatingadmissionpolicybindings", {}, headers, orjson.dumps(bind)
            )
            assert r.status == 201, r.body
        else:
            r = await srv.dispatch("DELETE", f"{adm}/validatingadmissionpolicybindings/pods")
            assert r.status == 200, r.body

    async def run(_on: bool) -> float:
        bodies = []
        for _ in range(objects):
            counter[0] += 1
            bodies.append(orjson.dumps(pod(counter[0], 100)))
        return await _post_all(srv, path, bodies)

    try:
        on, off = await _medians(rounds, swap_async, run, state=False)
    finally:
        await srv.stop()
    return {
        "objects_per_round": objects,
        "rounds": rounds,
        "pod_creates_per_s_policy_3_validations": round(on, 1),
        "pod_creates_per_s_no_binding": round(off, 1),
        "policy_us_per_request": round(1e6 / on - 1e6 / off, 1),
        "policy_overhead_pct": round((off - on) / off * 100, 1),
    }


async def webhook_cost(objects: int, rounds: int) -> dict[str, Any]:
    """Pod creates per second with a mutating admission webhook on pod creates (an
    HTTPS server in the same process answering each AdmissionReview with a JSON patch
    that adds one label, as a typical defaulting webhook does), against the same server
    with its MutatingWebhookConfiguration removed: the cost per request of calling a
    webhook (the review's encoding, the HTTPS round trip, the patch applied, the object
    decoded again), the webhook's own handling included, since it shares the process."""
    import base64

    from aiohttp import web

    from gpuyard.apiserver.server import APIServer
    from gpuyard.apiserver.tls import server_tls

    ctx, ca = server_tls(None, "127.0.0.1")
    patch = base64.b64encode(
        orjson.dumps([{"op": "add", "path": "/metadata/labels/bench", "value": "yes"}])
    ).decode()

    async def handle(request: web.Request) -> web.Response:
        review = await request.json()
        resp = {
            "uid": review["request"]["uid"],
            "allowed": True,
            "patchType": "JSONPatch",
            "patch": patch,
        }
        return web.json_response({"apiVersion": "admission.k8s.io/v1", "response": resp})

    app = web.Application()
    app.router.add_post("/m", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    d = tempfile.mkdtemp(prefix="gpuyard-bench-webhook-")
    srv = APIServer(d, port=0, persist=False)
    await srv.start()
    headers = {"Content-Type": "application/json"}
    adm = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"
    config = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "bench"},
        "webhooks": [
            {
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
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "timeoutSeconds": 5,
            }
        ],
    }
    counter = [2 * 10**6]
    path = "/api/v1/namespaces/default/pods"

    async def swap(on: bool) -> None:
        if on:
            r = await srv.dispatch("POST", adm, {}, headers, orjson.dumps(config))
            assert r.status == 201, r.body
        else:
            r = await srv.dispatch("DELETE", f"{adm}/bench")
            assert r.status == 200, r.body

    async def run(on: bool) -> float:
        bodies = []
        for _ in range(objects):
            counter[0] += 1
            bodies.append(orjson.dumps(pod(counter[0], 100)))

        def labelled(r: Any) -> None:
            assert isinstance(r.body, bytes) and (b'"bench":"yes"' in r.body) is on, r.body

        return await _post_all(srv, path, bodies, labelled)

    try:
        on, off = await _medians(rounds, swap, run, state=False)
    finally:
        await srv.stop()
        await runner.cleanup()
    return {
        "objects_per_round": objects,
        "rounds": rounds,
        "pod_creates_per_s_mutating_webhook": round(on, 1),
        "pod_creates_per_s_no_webhook": round(off, 1),
        "webhook_us_per_request": round(1e6 / on - 1e6 / off, 1),
        "webhook_overhead_pct": round((off - on) / off * 100, 1),
    }


def defaults_us(res: Any, obj: dict[str, Any], reps: int = 5000) -> float:
    bodies = [copy.deepcopy(obj) for _ in range(reps)]
    t = time.perf_counter()
    for b in bodies:
        defaults.apply(res, b)
    return (time.perf_counter() - t) / reps * 1e6


async def defaults_cost(pods: int, rounds: int) -> dict[str, Any]:
    from gpuyard.apiserver.server import APIServer

    real = (defaults.apply, defaults.on_create)

    def swap(on: bool) -> None:
        if on:
            defaults.apply, defaults.on_create = real  # type: ignore[misc]
        else:
            defaults.apply = lambda *_a: None  # type: ignore[assignment]
            defaults.on_create = lambda *_a: None  # type: ignore[assignment]

    d = tempfile.mkdtemp(prefix="gpuyard-bench-defaults-")
    srv = APIServer(d, port=0, persist=False)
    await srv.start()
    n = 0
    path = "/api/v1/namespaces/default/pods"

    async def creates() -> float:
        nonlocal n
        bodies = [orjson.dumps(pod(n + i, 100)) for i in range(pods)]
        n += pods
        return await _post_all(srv, path, bodies)

    try:
        return {"pods_per_round": pods, **await _ab("creates", swap, rounds, creates)}
    finally:
        swap(True)
        await srv.stop()


async def audit_cost(pods: int, rounds: int) -> dict[str, Any]:
    """Pod creates per second with the audit log (the default policy, written to the
    data directory) and with it switched off: the cost of auditing every request."""
    from gpuyard.apiserver.server import APIServer

    d = tempfile.mkdtemp(prefix="gpuyard-bench-audit-")
    srv = APIServer(d, port=0, persist=False)
    await srv.start()
    log = srv.gate.audit
    assert log is not None, "the server writes no audit log"

    def swap(on: bool) -> None:
        srv.gate.audit = log if on else None

    n = 0
    path = "/api/v1/namespaces/default/pods"

    async def creates() -> float:
        nonlocal n
        bodies = [orjson.dumps(pod(n + i, 100)) for i in range(pods)]
        n += pods
        return await _post_all(srv, path, bodies)

    try:
        return {"pods_per_round": pods, **await _ab("creates", swap, rounds, creates)}
    finally:
        swap(True)
        await srv.stop()


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
        "defaults_us": {
            "pod": round(defaults_us(pods_res, pod(1, 10)), 1),
            "node": round(defaults_us(nodes_res, node(1)), 1),
        },
    }
    out["write_path"] = asyncio.run(creates_per_s(a.pods, a.rounds))
    out["managed_fields"] = asyncio.run(managed_fields_cost(a.pods, a.rounds))
    out["cel"] = asyncio.run(cel_cost(a.pods, a.rounds))
    out["admission_policy"] = asyncio.run(policy_cost(a.pods, a.rounds))
    out["mutating_webhook"] = asyncio.run(webhook_cost(a.pods, a.rounds))
    out["defaults"] = asyncio.run(defaults_cost(a.pods, a.rounds))
    out["audit"] = asyncio.run(audit_cost(a.pods, a.rounds))
    print(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
