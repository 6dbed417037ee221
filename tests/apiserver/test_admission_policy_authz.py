"""ValidatingAdmissionPolicy expressions that ask the server's RBAC through `authorizer`,
see the real requester in `request.userInfo`, and write `auditAnnotations` and Audit
failures into the request's audit event (raw HTTP, service-account tokens)."""

from __future__ import annotations

import os
from typing import Any

import orjson

from .api import Api
from .identities import grant, sa_subject, service_account
from .test_admission_policy import ADM, binding, policy

CMS = "/api/v1/namespaces/default/configmaps"
WRITER = "system:serviceaccount:default:writer"


CM_CREATES = {
    "apiGroups": [""],
    "apiVersions": ["v1"],
    "operations": ["CREATE"],
    "resources": ["configmaps"],
}


def cm_policy(name: str, *validations: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return policy(name, *validations, rule=CM_CREATES, **spec)


async def _writer(api: Api) -> str:
    token = await service_account(api, "default", "writer")
    await grant(
        api,
        "default",
        "cm-writer",
        [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create"]}],
        [sa_subject("default", "writer")],
    )
    return token


async def _install(api: Api, policy: dict[str, Any], actions: list[str] | None = None) -> None:
    st, out = await api.post(f"{ADM}/validatingadmissionpolicies", policy)
    assert st == 201, out
    name = policy["metadata"]["name"]
    st, out = await api.post(
        f"{ADM}/validatingadmissionpolicybindings", binding(name, name, actions)
    )
    assert st == 201, out


async def _create_cm(api: Api, name: str, token: str | None = "default") -> tuple[int, Any]:
    return await api.req("POST", CMS, {"metadata": {"name": name}}, token=token)


async def test_authorizer_checks_the_requesters_rbac(api: Api) -> None:
    token = await _writer(api)
    await _install(
        api,
        cm_policy(
            "needs-deploy-rights",
            {
                "expression": "authorizer.group('apps').resource('deployments')"
                ".namespace(object.metadata.namespace).check('create').allowed()",
                "messageExpression": "'user ' + request.userInfo.username + "
                "' may not create deployments'",
            },
        ),
    )
    st, err = await _create_cm(api, "a", token)
    assert st == 422, err
    assert f"user {WRITER} may not create deployments" in err["message"], err
    assert (await api.get(f"{CMS}/a"))[0] == 404

    # The administrator (system:masters) may: the same policy lets it through.
    st, out = await _create_cm(api, "by-admin")
    assert st == 201, out

    # Once RBAC lets the writer create deployments, the policy does too.
    await grant(
        api,
        "default",
        "deploy-writer",
        [{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["create"]}],
        [sa_subject("default", "writer")],
    )
    st, out = await _create_cm(api, "a", token)
    assert st == 201, out


async def test_authorizer_request_resource_service_account_path_and_decision(
    api: Api,
) -> None:
    token = await _writer(api)
    await _install(
        api,
        cm_policy(
            "decisions",
            # The request's own resource: the writer may create configmaps here.
            {"expression": "authorizer.requestResource.check('create').allowed()"},
            # ... but not delete them, and the decision says so without an error.
            {
                "expression": "!authorizer.requestResource.check('delete').allowed() && "
                "!authorizer.requestResource.check('delete').errored()",
                "message": "delete should not be allowed",
            },
            # Another identity: the default service account may not list secrets.
            {
                "expression": "!authorizer.serviceAccount('default', 'default')"
                ".group('').resource('secrets').check('list').allowed()",
                "message": "the default service account may list secrets",
            },
            # A non-resource path: service accounts may not GET /metrics here.
            {
                "expression": "!authorizer.path('/metrics').check('get').allowed()",
                "message": "metrics readable",
            },
            # Named objects and subresources reach RBAC's resourceNames.
            {
                "expression": "authorizer.group('').resource('pods').subresource('log')"
                ".namespace('default').name('p').check('get').allowed() == "
                "(object.metadata.name == 'named')",
                "messageExpression": "'pods/log decision: ' + authorizer.group('')"
                ".resource('pods').subresource('log').namespace('default').name('p')"
                ".check('get').reason()",
            },
        ),
    )
    st, err = await _create_cm(api, "other", token)
    assert st == 201, err
    st, err = await _create_cm(api, "named", token)
    assert st == 422 and "pods/log decision:" in err["message"], err
    await grant(
        api,
        "default",
        "log-reader",
        [
            {
                "apiGroups": [""],
                "resources": ["pods/log"],
                "resourceNames": ["p"],
                "verbs": ["get"],
            }
        ],
        [sa_subject("default", "writer")],
    )
    st, out = await _create_cm(api, "named", token)
    assert st == 201, out
    st, err = await _create_cm(api, "other2", token)
    assert st == 422 and "pods/log decision:" in err["message"], err
    # A method a decision does not have is an evaluation error, refused by failurePolicy.
    st, out = await api.post(
        f"{ADM}/validatingadmissionpolicies",
        cm_policy("typo", {"expression": "authorizer.check('get').allowed()"}),
    )
    assert st == 201, out
    st, out = await api.post(
        f"{ADM}/validatingadmissionpolicybindings", binding("typo", "typo", ["Deny"])
    )
    assert st == 201
    assert (await api.delete(f"{CMS}/named"))[0] == 200
    st, err = await _create_cm(api, "named", token)  # passes "decisions", fails "typo"
    assert st == 422 and "no such overload" in err["message"], err


def _events(path: str) -> list[dict[str, Any]]:
    with open(path, "rb") as f:
        return [orjson.loads(line) for line in f if line.strip()]


async def test_audit_annotations_and_audit_action(api: Api, apiserver_inproc: Any) -> None:
    token = await _writer(api)
    await _install(
        api,
        cm_policy(
            "audited",
            {
                "expression": "object.metadata.name.startsWith('ok-')",
                "message": "names start with ok-",
            },
            auditAnnotations=[
                {"key": "requester", "valueExpression": "request.userInfo.username"},
                {
                    "key": "note",
                    "valueExpression": "object.metadata.name == 'quiet' ? null : "
                    "'name ' + object.metadata.name",
                },
            ],
        ),
        ["Audit"],
    )
    assert (await _create_cm(api, "ok-1", token))[0] == 201
    assert (await _create_cm(api, "quiet", token))[0] == 201  # Audit only: accepted
    assert apiserver_inproc.audit.flush(10)  # the log's writer has written them
    log = os.path.join(apiserver_inproc.data_dir, "audit.log")
    created = [
        e
        for e in _events(log)
        if e["user"]["username"] == WRITER
        and e["verb"] == "create"
        and e.get("objectRef", {}).get("resource") == "configmaps"
    ]
    assert len(created) == 2, created
    ok, quiet = created  # in the order they were made
    assert ok["annotations"]["audited/requester"] == WRITER
    assert ok["annotations"]["audited/note"] == "name ok-1"
    assert "validation.policy.admission.k8s.io/validation_failure" not in ok["annotations"]
    assert quiet["annotations"]["audited/requester"] == WRITER
    assert "audited/note" not in quiet["annotations"]  # null: no annotation
    failures = orjson.loads(
        quiet["annotations"]["validation.policy.admission.k8s.io/validation_failure"]
    )
    assert failures == [
        {
            "message": "names start with ok-",
            "policy": "audited",
            "binding": "audited",
            "expressionIndex": 0,
            "validationActions": ["Audit"],
        }
    ]
    assert quiet["annotations"]["authorization.k8s.io/decision"] == "allow"


async def test_bad_audit_annotations_are_refused(api: Api) -> None:
    bad = cm_policy(
        "bad-audit",
        {"expression": "true"},
        auditAnnotations=[
            {"key": "has space", "valueExpression": "'x'"},
            {"key": "k", "valueExpression": "'x' +"},
            {"key": "k", "valueExpression": "'y'"},
            {"key": "", "valueExpression": "'z'"},
        ],
    )
    st, err = await api.post(f"{ADM}/validatingadmissionpolicies", bad)
    assert st == 422, err
    fields = {c["field"]: c["reason"] for c in err["details"]["causes"]}
    assert fields == {
        "spec.auditAnnotations[0].key": "FieldValueInvalid",
        "spec.auditAnnotations[1].valueExpression": "FieldValueInvalid",
        "spec.auditAnnotations[2].key": "FieldValueDuplicate",
        "spec.auditAnnotations[3].key": "FieldValueRequired",
    }, err


NODE_USER = {"Impersonate-User": "system:node:n1", "Impersonate-Group": "system:nodes"}


async def test_authorizer_field_and_label_selectors(api: Api) -> None:
    """`.fieldSelector()` / `.labelSelector()` reach the authorizers, and a
    SubjectAccessReview's selectors too: a kubelet may list the pods of its own node
    (field selector spec.nodeName), not all pods nor another node's."""
    pods = "authorizer.group('').resource('pods')"
    await _install(
        api,
        policy(
            "kubelet-reads",
            # at most two checks an expression: each costs 350,000 of the 1,000,000 limit
            {
                "expression": "request.userInfo.username != 'system:node:n1' || ("
                f"{pods}.fieldSelector('spec.nodeName=n1').check('list').allowed() && "
                f"!{pods}.check('list').allowed())",
                "message": "selectors not honoured",
            },
            {
                "expression": "request.userInfo.username != 'system:node:n1' || "
                f"!{pods}.fieldSelector('spec.nodeName=n2').labelSelector('app=x')"
                ".check('watch').allowed()",
                "message": "selectors not honoured",
            },
            rule={
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "operations": ["CREATE"],
                "resources": ["events"],
            },
        ),
    )
    event = {
        "metadata": {"name": "n1.ev"},
        "involvedObject": {"kind": "Node", "name": "n1"},
        "reason": "Test",
        "message": "m",
        "type": "Normal",
    }
    st, out = await api.req("POST", "/api/v1/namespaces/default/events", event, headers=NODE_USER)
    assert st == 201, out

    sar = "/apis/authorization.k8s.io/v1/subjectaccessreviews"

    async def allowed(**selectors: Any) -> bool:
        review = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {
                "user": "system:node:n1",
                "groups": ["system:nodes", "system:authenticated"],
                "resourceAttributes": {"verb": "list", "resource": "pods", **selectors},
            },
        }
        st, out = await api.post(sar, review)
        assert st == 201, out
        return bool(out["status"]["allowed"])

    own = {"key": "spec.nodeName", "operator": "In", "values": ["n1"]}
    assert await allowed(fieldSelector={"rawSelector": "spec.nodeName=n1"})
    assert await allowed(fieldSelector={"requirements": [own]})
    assert not await allowed()
    assert not await allowed(fieldSelector={"rawSelector": "spec.nodeName=n2"})
    assert not await allowed(fieldSelector={"requirements": [{**own, "operator": "NotIn"}]})
    st, err = await api.post(
        sar,
        {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {
                "user": "system:node:n1",
                "resourceAttributes": {
                    "verb": "list",
                    "resource": "pods",
                    "fieldSelector": {"rawSelector": "spec.nodeName=n1", "requirements": [own]},
                },
            },
        },
    )
    assert st == 422 and "fieldSelector" in err["message"], err


async def test_a_third_authorizer_check_in_one_expression_passes_the_cost_limit(api: Api) -> None:
    """An authorizer check costs 350,000 (kube's figure: two per expression fit the
    1,000,000 limit): an expression that runs three is stopped, one that stops after
    two is not."""
    cms = "authorizer.group('').resource('configmaps')"
    three = (
        f"{cms}.check('get').allowed() && {cms}.check('list').allowed() && "
        f"{cms}.check('watch').allowed()"
    )
    rule = {
        "apiGroups": [""],
        "apiVersions": ["v1"],
        "operations": ["CREATE"],
        "resources": ["configmaps"],
    }
    await _install(api, policy("three-checks", {"expression": three}, rule=rule))
    st, err = await _create_cm(api, "checked")
    assert st == 422, err
    assert err["message"].endswith(
        f"expression '{three}' resulted in error: operation cancelled: actual cost limit exceeded"
    ), err
    # the first check denied: && stops after one
    writer = await _writer(api)
    st, err = await _create_cm(api, "denied-first", token=writer)
    assert st == 422 and "operation cancelled" not in err["message"], err
