"""The CEL cost budget (raw HTTP): a CRD whose rule could cost too much on the largest
object its schema allows is refused with kube's message (one rule; all rules of the
schema), and bounded it is accepted; at runtime a rule over the per-call limit, the
rules of one object over the budget, and a ValidatingAdmissionPolicy expression over
the limit are refused as kube refuses them, and smaller objects pass."""

from __future__ import annotations

from typing import Any

from gpuyard.apiserver import celcost

from .api import Api
from .test_admission_policy import ADM, binding

CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
THINGS = "/apis/example.com/v1/namespaces/default/things"
ROOT = "spec.versions[0].schema.openAPIV3Schema"
ADVICE = (
    "(try simplifying the rule, or adding maxItems, maxProperties, and maxLength where "
    "arrays, maps, and strings are declared)"
)


def crd(spec_props: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "things.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Namespaced",
            "names": {"plural": "things", "singular": "thing", "kind": "Thing"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {"spec": {"type": "object", "properties": spec_props}},
                        }
                    },
                }
            ],
        },
    }


def rules(*exprs: str) -> list[dict[str, str]]:
    return [{"rule": e} for e in exprs]


async def test_a_rule_too_expensive_for_its_schema_is_refused(api: Api) -> None:
    words = {
        "type": "array",
        "items": {"type": "string"},
        "x-kubernetes-validations": rules("self.all(w, w.matches('^[a-z]+$'))"),
    }
    st, err = await api.post(CRDS, crd({"words": words}))
    assert st == 422, err
    field = f"{ROOT}.properties[spec].properties[words].x-kubernetes-validations[0].rule"
    causes = {(c["field"], c["message"]) for c in err["details"]["causes"]}
    assert (
        field,
        f"Forbidden: estimated rule cost exceeds budget by factor of more than 100x {ADVICE}",
    ) in causes
    assert all(c["reason"] == "FieldValueForbidden" for c in err["details"]["causes"])
    assert (await api.get(f"{CRDS}/things.example.com"))[0] == 404
    # Bounded as the message says, the same rule is accepted.
    words["maxItems"] = 32
    words["items"] = {"type": "string", "maxLength": 64}
    st, out = await api.post(CRDS, crd({"words": words}))
    assert st == 201, out


async def test_a_string_bound_counts_four_bytes_a_character(api: Api) -> None:
    # kube's estimate of self.all(x, x.contains('a')) over 100,000 strings of at most 250
    # characters: 2 + 100,000 * (3 per iteration + 1 for x + 1,000 bytes / 10) = 10,400,002.
    names = {
        "type": "array",
        "maxItems": 100_000,
        "items": {"type": "string", "maxLength": 250},
        "x-kubernetes-validations": rules("self.all(x, x.contains('a'))"),
    }
    st, err = await api.post(CRDS, crd({"names": names}))
    assert st == 422, err
    field = f"{ROOT}.properties[spec].properties[names].x-kubernetes-validations[0].rule"
    assert {
        "reason": "FieldValueForbidden",
        "message": "Forbidden: estimated rule cost exceeds budget by factor of 1.040000x " + ADVICE,
        "field": field,
    } in err["details"]["causes"]
    names["items"]["maxLength"] = 200  # 8,400,002: within the limit
    st, out = await api.post(CRDS, crd({"names": names}))
    assert st == 201, out


def test_estimates_match_kube_figures() -> None:
    """Figures of kube-apiserver's estimator for CRD rules (its own cost tests)."""

    def est(schema: dict[str, Any], rule: str) -> int:
        return celcost.estimate(celcost.parse(rule), {"self": celcost.from_schema(schema)})

    def items(t: str, **bound: int) -> dict[str, Any]:
        return {"type": "array", "items": {"type": t}, **bound}

    def values(t: str, **bound: int) -> dict[str, Any]:
        return {"type": "object", "additionalProperties": {"type": t}, **bound}

    def text(**bound: int) -> dict[str, Any]:
        return {"type": "string", **bound}

    every = "self.all(x, true)"
    concat = 'size(self + "hello") > size("hello")'
    cases = [
        (items("number"), every, 4_718_591),
        (items("number", maxItems=10), every, 32),
        (items("string"), every, 3_145_727),
        (items("boolean"), every, 1_887_437),
        (values("number"), every, 1_348_169),
        (values("string"), every, 1_179_647),
        (values("number", maxProperties=10), every, 32),
        (items("number", maxItems=10), "self.all(x, self.all(y, true))", 352),
        (items("number", maxItems=10), "self.all(x, self.all(y, self.all(z, true)))", 3552),
        (text(), "self.contains('test')", 314_574),
        (text(maxLength=10), "self.contains('test')", 5),
        (text(), "self.startsWith('test')", 2),
        (text(), concat, 314_578),
        (text(maxLength=4), concat, 7),
        (text(), 'self.matches("x")', 314_574),
        (text(maxLength=0), 'self == "x"', 1),
        (items("string", maxItems=8), "self[1] == self[1]", 314_577),
    ]
    assert [est(s, r) for s, r, _ in cases] == [want for _, _, want in cases]


async def test_rules_too_expensive_all_together_are_refused(api: Api) -> None:
    grid = {
        "type": "array",
        "items": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"x": {"type": "integer"}},
                "x-kubernetes-validations": rules("self.x > 0"),
            },
        },
    }
    st, err = await api.post(CRDS, crd({"grid": grid}))
    assert st == 422, err
    causes = {(c["field"], c["message"]) for c in err["details"]["causes"]}
    rule = f"{ROOT}.properties[spec].properties[grid].items.items.x-kubernetes-validations[0].rule"
    assert (
        rule,
        "Forbidden: contributed to estimated rule cost total exceeding cost limit for entire "
        "OpenAPIv3 schema",
    ) in causes
    assert (
        ROOT,
        "Forbidden: x-kubernetes-validations estimated rule cost total for entire OpenAPIv3 "
        f"schema exceeds budget by factor of more than 100x {ADVICE}",
    ) in causes
    # One evaluation of the rule is cheap: no cause says so.
    assert not any("estimated rule cost exceeds" in m for _, m in causes)


def thing(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "example.com/v1",
        "kind": "Thing",
        "metadata": {"name": name},
        "spec": spec,
    }


async def test_runtime_cost_limit_and_budget(api: Api) -> None:
    nums = {"type": "array", "items": {"type": "integer"}}
    many = {"type": "array", "items": {"type": "integer"}}
    props = {
        "nums": {**nums, "x-kubernetes-validations": rules("self.all(n, n > 0)")},
        "many": {
            **many,
            "x-kubernetes-validations": rules(*(f"self.all(n, n != {i})" for i in range(11))),
        },
    }
    st, out = await api.post(CRDS, crd(props))
    assert st == 201, out  # each rule's estimate is within the limit

    st, out = await api.post(THINGS, thing("small", nums=[1] * 1000, many=[100] * 1000))
    assert st == 201, out

    # One rule over the per-call limit on a large list.
    st, err = await api.post(THINGS, thing("long", nums=[1] * 400_000))
    assert st == 422, err
    (cause,) = err["details"]["causes"]
    assert cause["field"] == "spec.nums"
    assert cause["message"] == (
        "Invalid value: \"array\": 'operation cancelled: actual cost limit exceeded': "
        "call cost exceeds limit for rule: self.all(n, n > 0)"
    )
    # Eleven rules each within the limit (5 per item), together over the object's budget.
    st, err = await api.post(THINGS, thing("wide", many=[100] * 190_000))
    assert st == 422, err
    assert err["details"]["causes"][-1] == {
        "reason": "FieldValueInvalid",
        "message": 'Invalid value: "array": validation failed due to running out of cost '
        "budget, no further validation rules will be run",
        "field": "spec.many",
    }
    for name in ("long", "wide"):
        assert (await api.get(f"{THINGS}/{name}"))[0] == 404


async def test_admission_policy_expression_over_the_cost_limit(api: Api) -> None:
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": "costly"},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE"],
                        "resources": ["configmaps"],
                    }
                ]
            },
            "validations": [
                {
                    "expression": "!has(object.data) || object.data.all(k, "
                    "object.data[k].matches('^(alpha|beta|gamma|delta|epsilon)*$'))"
                }
            ],
        },
    }
    assert (await api.post(f"{ADM}/validatingadmissionpolicies", policy))[0] == 201
    st, out = await api.post(
        f"{ADM}/validatingadmissionpolicybindings", binding("costly", "costly")
    )
    assert st == 201, out
    cms = "/api/v1/namespaces/default/configmaps"
    st, out = await api.post(cms, {"metadata": {"name": "small"}, "data": {"a": "alpha"}})
    assert st == 201, out
    big = {"metadata": {"name": "big"}, "data": {"a": "alpha" * 500_000}}
    st, err = await api.post(cms, big)
    assert st == 422, err
    assert err["message"].endswith(
        "ValidatingAdmissionPolicy 'costly' with binding 'costly' denied request: expression "
        "'!has(object.data) || object.data.all(k, object.data[k].matches("
        "'^(alpha|beta|gamma|delta|epsilon)*$'))' resulted in error: operation cancelled: "
        "actual cost limit exceeded"
    ), err
    assert (await api.get(f"{cms}/big"))[0] == 404
