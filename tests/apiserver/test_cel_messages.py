"""messageExpression results as kube-apiserver uses them (raw HTTP): trimmed; empty,
multi-line or longer than 5 KiB results fall back to the rule's message (or
`failed rule: RULE`), for CRD rules and ValidatingAdmissionPolicy validations alike."""

from __future__ import annotations

from typing import Any

from .api import Api
from .test_admission_policy import ADM, binding
from .test_cel_cost import CRDS, THINGS, crd, thing


async def test_crd_rule_messages(api: Api) -> None:
    spec_rules = [
        {"rule": "self.a > 0", "messageExpression": "'  a is %d  '.format([self.a])"},
        {
            "rule": "self.b > 0",
            "message": "b must be positive",
            "messageExpression": "'two\\nlines'",
        },
        {"rule": "self.c > 0", "messageExpression": "'   '"},
        {"rule": "self.d > 0", "message": "d too", "messageExpression": "self.long"},
    ]
    props: dict[str, Any] = {k: {"type": "integer"} for k in ("a", "b", "c", "d")}
    props["long"] = {"type": "string", "maxLength": 10000}
    body = crd(props)
    body["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"][
        "x-kubernetes-validations"
    ] = spec_rules
    st, out = await api.post(CRDS, body)
    assert st == 201, out
    st, err = await api.post(THINGS, thing("t", a=-1, b=-1, c=-1, d=-1, long="x" * 6000))
    assert st == 422, err
    assert [c["message"] for c in err["details"]["causes"]] == [
        'Invalid value: "object": a is -1',
        'Invalid value: "object": b must be positive',
        'Invalid value: "object": failed rule: self.c > 0',
        'Invalid value: "object": d too',
    ]


async def test_policy_message_expression_falls_back(api: Api) -> None:
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": "msgs"},
        "spec": {
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
                    "expression": "object.metadata.name != 'x'",
                    "message": "not x",
                    "messageExpression": "'multi\\nline'",
                }
            ],
        },
    }
    assert (await api.post(f"{ADM}/validatingadmissionpolicies", policy))[0] == 201
    assert (await api.post(f"{ADM}/validatingadmissionpolicybindings", binding("msgs", "msgs")))[
        0
    ] == 201
    st, err = await api.post("/api/v1/namespaces/default/configmaps", {"metadata": {"name": "x"}})
    assert st == 422, err
    assert err["message"].endswith(
        "ValidatingAdmissionPolicy 'msgs' with binding 'msgs' denied request: not x"
    ), err
