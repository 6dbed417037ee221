"""CRD `x-kubernetes-validations` (CEL) over HTTP and through kubectl: each rule kind
refuses a bad object with 422 Invalid naming the field, the reason and the message;
transition rules compare with the stored object; a rule that does not compile refuses
the CRD."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from typing import Any

import orjson
import yaml

from gpuyard.apiserver.testing import ServerProcess

from .api import Api
from .api import crd as make_crd

CRD_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
JOBS = "/apis/ml.example.com/v1/namespaces/default/gpujobs"
KUBECTL = shutil.which("kubectl", path=os.path.dirname(sys.executable)) or "kubectl"


def rule(r: str, **more: Any) -> dict[str, Any]:
    return {"rule": r, **more}


SPEC_SCHEMA: dict[str, Any] = {
    "type": "object",
    "x-kubernetes-validations": [
        rule("self.minReplicas <= self.replicas", message="replicas must be at least minReplicas"),
        rule(
            "!has(self.strategy) || self.strategy != 'Rolling' || has(self.maxSurge)",
            fieldPath=".maxSurge",
            reason="FieldValueRequired",
            message="maxSurge is required for Rolling",
        ),
    ],
    "properties": {
        "replicas": {"type": "integer"},
        "minReplicas": {"type": "integer", "default": 0},
        "strategy": {"type": "string"},
        "maxSurge": {"type": "integer"},
        "queue": {
            "type": "string",
            "x-kubernetes-validations": [
                rule(
                    "self.startsWith('gpu-')",
                    reason="FieldValueForbidden",
                    message="queues start with gpu-",
                )
            ],
        },
        "size": {
            "type": "integer",
            "x-kubernetes-validations": [
                rule("self <= 8", messageExpression="'size %d is over 8'.format([self])")
            ],
        },
        "mode": {
            "type": "string",
            "x-kubernetes-validations": [rule("self == oldSelf", message="mode is immutable")],
        },
        "memory": {
            "x-kubernetes-int-or-string": True,
            "x-kubernetes-validations": [
                # string(self) would be refused: its size is unknown to kube's estimate
                rule(
                    "type(self) == string ? isQuantity(self) && "
                    "quantity(self).isLessThan(quantity('1Ti')) : self < 1099511627776",
                    message="memory must be a quantity under 1Ti",
                )
            ],
        },
        "tags": {
            # bounded, as kube-apiserver requires of a list whose rule runs a regular
            # expression on each item (unbounded, its estimated cost is over the budget)
            "type": "array",
            "maxItems": 16,
            "items": {"type": "string", "maxLength": 63},
            "x-kubernetes-validations": [
                rule("self.all(t, t.matches('^[a-z]+$'))", message="tags are lower-case words"),
                rule("size(self) <= 3"),
            ],
        },
        "workers": {
            "type": "array",
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["name"],
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": {"type": "string"},
                    "gpus": {
                        "type": "integer",
                        "x-kubernetes-validations": [
                            rule("self >= oldSelf", message="a worker's gpus cannot shrink")
                        ],
                    },
                },
            },
        },
    },
}


def crd(spec_schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return make_crd(
        "GPUJob",
        {
            "type": "object",
            "x-kubernetes-validations": [
                rule("self.metadata.name.size() <= 20", message="names are at most 20 characters")
            ],
            "properties": {"spec": spec_schema or SPEC_SCHEMA},
        },
        group="ml.example.com",
    )


def job(name: str = "train", **spec: Any) -> dict[str, Any]:
    base = {"replicas": 2, "queue": "gpu-a", "size": 4, "mode": "batch"}
    return {
        "apiVersion": "ml.example.com/v1",
        "kind": "GPUJob",
        "metadata": {"name": name},
        "spec": {**base, **spec},
    }


def cause(st: Any) -> dict[str, str]:
    assert st["code"] == 422 and st["reason"] == "Invalid", st
    (c,) = st["details"]["causes"]
    return dict(c)


async def _with_crd(api: Api) -> None:
    code, body = await api.post(CRD_PATH, crd())
    assert code == 201, orjson.dumps(body).decode()


async def test_each_rule_refuses_with_field_reason_and_message(api: Api) -> None:
    await _with_crd(api)
    code, body = await api.post(JOBS, job())
    assert code == 201, orjson.dumps(body).decode()

    cases = [
        (
            job("a", replicas=1, minReplicas=3),
            "spec",
            "FieldValueInvalid",
            'Invalid value: "object": replicas must be at least minReplicas',
        ),
        (
            job("b", strategy="Rolling"),
            "spec.maxSurge",
            "FieldValueRequired",
            "Required value: maxSurge is required for Rolling",
        ),
        (
            job("c", queue="cpu"),
            "spec.queue",
            "FieldValueForbidden",
            "Forbidden: queues start with gpu-",
        ),
        (
            job("d", size=12),
            "spec.size",
            "FieldValueInvalid",
            'Invalid value: "integer": size 12 is over 8',
        ),
        (
            job("e", memory="2Ti"),
            "spec.memory",
            "FieldValueInvalid",
            'Invalid value: "": memory must be a quantity under 1Ti',
        ),
        (
            job("f", tags=["ok", "Bad"]),
            "spec.tags",
            "FieldValueInvalid",
            'Invalid value: "array": tags are lower-case words',
        ),
        (
            job("g", tags=["a", "b", "c", "d"]),
            "spec.tags",
            "FieldValueInvalid",
            'Invalid value: "array": failed rule: size(self) <= 3',
        ),
        (
            job("a-name-of-more-than-twenty"),
            "<nil>",
            "FieldValueInvalid",
            'Invalid value: "object": names are at most 20 characters',
        ),
    ]
    for obj, field, reason, message in cases:
        code, st = await api.post(JOBS, obj)
        assert code == 422, (obj, st)
        c = cause(st)
        assert (c["field"], c["reason"], c["message"]) == (field, reason, message), c
        assert f"{field}: {message}" in st["message"]
        name = obj["metadata"]["name"]
        code, _ = await api.get(f"{JOBS}/{name}")
        assert code == 404  # nothing stored
    code, _ = await api.post(JOBS, job("ok", memory="64Gi", tags=["x"]))
    assert code == 201


async def test_transition_rules_compare_with_the_stored_object(api: Api) -> None:
    await _with_crd(api)
    code, body = await api.post(
        JOBS, job(workers=[{"name": "w0", "gpus": 8}, {"name": "w1", "gpus": 4}])
    )
    assert code == 201, orjson.dumps(body).decode()
    code, st = await api.patch(f"{JOBS}/train", {"spec": {"mode": "online"}})
    c = cause(st)
    assert (
        c["field"] == "spec.mode" and c["message"] == 'Invalid value: "string": mode is immutable'
    )
    # Items of a map list correlate by key: w1 shrinking is refused, wherever it sits.
    workers = [{"name": "w1", "gpus": 2}, {"name": "w0", "gpus": 8}]
    code, st = await api.patch(f"{JOBS}/train", {"spec": {"workers": workers}})
    c = cause(st)
    assert c["field"] == "spec.workers[0].gpus"
    assert c["message"] == 'Invalid value: "integer": a worker\'s gpus cannot shrink'
    # A new worker has no old value: the transition rule does not apply to it.
    workers = [{"name": "w0", "gpus": 8}, {"name": "w1", "gpus": 6}, {"name": "w2", "gpus": 1}]
    code, body = await api.patch(f"{JOBS}/train", {"spec": {"workers": workers, "size": 5}})
    assert code == 200, body
    assert body["spec"]["mode"] == "batch" and body["spec"]["size"] == 5


async def test_a_rule_that_does_not_compile_refuses_the_crd(api: Api) -> None:
    bad = {
        "type": "object",
        "properties": {"n": {"type": "integer", "x-kubernetes-validations": [rule("self >")]}},
    }
    code, st = await api.post(CRD_PATH, crd(bad))
    assert code == 422 and st["reason"] == "Invalid", st
    fields = [c["field"] for c in st["details"]["causes"]]
    assert (
        "spec.validation.openAPIV3Schema.properties[spec].properties[n]"
        ".x-kubernetes-validations[0].rule" in fields
    ), fields
    assert "compilation failed" in st["message"]
    bad_reason = {"type": "object", "x-kubernetes-validations": [rule("true", reason="Nope")]}
    code, st = await api.post(CRD_PATH, crd(bad_reason))
    assert code == 422 and "x-kubernetes-validations[0].reason" in st["message"], st
    code, _ = await api.get(f"{CRD_PATH}/gpujobs.ml.example.com")
    assert code == 404


def test_kubectl_shows_the_rule_message(apiserver: ServerProcess) -> None:
    def k(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [KUBECTL, "--kubeconfig", apiserver.kubeconfig, *args],
            capture_output=True,
            text=True,
            input=input,
            timeout=60,
        )

    r = k("apply", "-f", "-", input=yaml.safe_dump(crd()))
    assert r.returncode == 0, r.stderr
    for _ in range(50):
        if k("get", "gpujobs").returncode == 0:
            break
    r = k("apply", "-f", "-", input=yaml.safe_dump(job(size=12)))
    assert r.returncode != 0
    assert 'spec.size: Invalid value: "integer": size 12 is over 8' in r.stderr, r.stderr
    r = k("apply", "--server-side", "-f", "-", input=yaml.safe_dump(job(queue="batch")))
    assert r.returncode != 0 and "spec.queue: Forbidden: queues start with gpu-" in r.stderr
    r = k("apply", "-f", "-", input=yaml.safe_dump(job()))
    assert r.returncode == 0, r.stderr
    r = k("patch", "gpujob", "train", "--type", "merge", "-p", '{"spec":{"mode":"x"}}')
    assert r.returncode != 0 and 'spec.mode: Invalid value: "string": mode is immutable' in r.stderr
