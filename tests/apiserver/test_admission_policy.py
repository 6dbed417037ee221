"""Validating admission over HTTP: ValidatingAdmissionPolicy with its bindings (Deny,
Warn, parameters from a ConfigMap, match conditions and selectors, failurePolicy,
reasons), policies whose expressions do not compile, and validating webhooks."""

from __future__ import annotations

import ssl
import tempfile
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp import web

from gpuyard.apiserver.tls import make_ca_and_cert

from .api import Api, cm
from .identities import grant

ADM = "/apis/admissionregistration.k8s.io/v1"
DEPLOYS = "/apis/apps/v1/namespaces/default/deployments"


DEPLOYMENT_WRITES: dict[str, Any] = {
    "apiGroups": ["apps"],
    "apiVersions": ["v1"],
    "operations": ["CREATE", "UPDATE"],
    "resources": ["deployments"],
}


def policy(
    name: str,
    *validations: dict[str, Any],
    rule: dict[str, Any] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """A ValidatingAdmissionPolicy (failurePolicy Fail) of one resource rule, by default
    creates and updates of Deployments; the rule is copied, so a test may change it."""
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [dict(rule or DEPLOYMENT_WRITES)]},
            "validations": list(validations),
            **spec,
        },
    }


def binding(name: str, policy_name: str, actions: list[str] | None = None, **spec: Any) -> Any:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {"policyName": policy_name, "validationActions": actions or ["Deny"], **spec},
    }


def deploy(name: str, replicas: int, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "main", "image": "nginx"}]},
            },
        },
    }


async def _create(api: Api, path: str, obj: dict[str, Any]) -> None:
    code, body = await api.post(path, obj)
    assert code == 201, body


async def _post_with_headers(api: Api, path: str, obj: Any) -> tuple[int, Any, Any]:
    async with api.session.post(
        api.url + path,
        data=orjson.dumps(obj),
        headers={"Authorization": f"Bearer {api.token}", "Content-Type": "application/json"},
    ) as r:
        return r.status, orjson.loads(await r.read()), r.headers


async def test_policy_denies_with_its_message_and_stores_nothing(api: Api) -> None:
    await _create(
        api,
        f"{ADM}/validatingadmissionpolicies",
        policy("max-replicas", {"expression": "object.spec.replicas <= 5"}),
    )
    await _create(
        api,
        f"{ADM}/validatingadmissionpolicybindings",
        binding("max-replicas-binding", "max-replicas"),
    )
    code, st = await api.post(DEPLOYS, deploy("big", 10))
    assert code == 422 and st["reason"] == "Invalid", st
    assert (
        "ValidatingAdmissionPolicy 'max-replicas' with binding 'max-replicas-binding' denied "
        "request: failed expression: object.spec.replicas <= 5"
    ) in st["message"]
    assert (await api.get(f"{DEPLOYS}/big"))[0] == 404
    await _create(api, DEPLOYS, deploy("small", 3))
    # Updates are checked too.
    code, st = await api.patch(f"{DEPLOYS}/small", {"spec": {"replicas": 9}})
    assert code == 422 and "max-replicas" in st["message"]
    assert (await api.get(f"{DEPLOYS}/small"))[1]["spec"]["replicas"] == 3
    # Other kinds are not matched.
    await _create(api, "/api/v1/namespaces/default/configmaps", cm("free"))


async def test_params_message_expression_reason_and_warn(api: Api) -> None:
    await _create(
        api,
        f"{ADM}/validatingadmissionpolicies",
        policy(
            "limits",
            {
                "expression": "object.spec.replicas <= int(params.data.maxReplicas)",
                "messageExpression": "'replicas ' + string(object.spec.replicas) + ' over ' + params.data.maxReplicas",
            },
            {
                "expression": "!object.metadata.name.startsWith('tmp-')",
                "message": "no temporary deployments",
                "reason": "Forbidden",
            },
            paramKind={"apiVersion": "v1", "kind": "ConfigMap"},
        ),
    )
    ref = {"name": "limits", "namespace": "default", "parameterNotFoundAction": "Deny"}
    await _create(
        api, f"{ADM}/validatingadmissionpolicybindings", binding("limits-b", "limits", paramRef=ref)
    )
    # No parameters yet: Deny.
    code, st = await api.post(DEPLOYS, deploy("a", 1))
    assert code == 422 and "no params found" in st["message"], st
    await _create(api, "/api/v1/namespaces/default/configmaps", cm("limits", {"maxReplicas": "4"}))
    code, st = await api.post(DEPLOYS, deploy("a", 6))
    assert code == 422 and "denied request: replicas 6 over 4" in st["message"], st
    code, st = await api.post(DEPLOYS, deploy("tmp-x", 1))
    assert code == 403 and st["reason"] == "Forbidden", st
    assert 'deployments.apps "tmp-x" is forbidden: ' in st["message"]
    assert "denied request: no temporary deployments" in st["message"]
    await _create(api, DEPLOYS, deploy("a", 4))
    # A Warn binding admits the object and says why in a Warning header.
    await _create(
        api,
        f"{ADM}/validatingadmissionpolicies",
        policy(
            "labels",
            {"expression": "has(object.metadata.labels.team)", "message": "set a team label"},
        ),
    )
    await _create(
        api,
        f"{ADM}/validatingadmissionpolicybindings",
        binding("labels-warn", "labels", ["Warn", "Audit"]),
    )
    code, body, headers = await _post_with_headers(api, DEPLOYS, deploy("b", 1))
    assert code == 201, body
    assert (
        "Validation failed for ValidatingAdmissionPolicy 'labels' with binding 'labels-warn': set a team label"
        in headers["Warning"]
    )


async def test_match_conditions_selectors_and_failure_policy(api: Api) -> None:
    await _create(
        api,
        f"{ADM}/validatingadmissionpolicies",
        policy(
            "gpu-only",
            {
                "expression": "object.spec.replicas % 2 == 0",
                "message": "gpu deployments come in pairs",
            },
            matchConditions=[
                {"name": "gpu", "expression": "object.metadata.name.startsWith('gpu-')"}
            ],
        ),
    )
    await _create(
        api,
        f"{ADM}/validatingadmissionpolicybindings",
        binding(
            "gpu-only-b",
            "gpu-only",
            matchResources={"objectSelector": {"matchLabels": {"checked": "yes"}}},
        ),
    )
    await _create(api, DEPLOYS, deploy("gpu-a", 3))  # not selected by the binding
    await _create(api, DEPLOYS, deploy("cpu-a", 3, {"checked": "yes"}))  # match condition false
    code, st = await api.post(DEPLOYS, deploy("gpu-b", 3, {"checked": "yes"}))
    assert code == 422 and "gpu deployments come in pairs" in st["message"], st
    await _create(api, DEPLOYS, deploy("gpu-c", 4, {"checked": "yes"}))
    # An expression that fails to evaluate: Fail refuses, Ignore admits.
    for fp, want in (("Fail", 422), ("Ignore", 201)):
        name = f"broken-{fp.lower()}"
        await _create(
            api,
            f"{ADM}/validatingadmissionpolicies",
            policy(name, {"expression": "object.spec.nope > 1"}, failurePolicy=fp),
        )
        await _create(api, f"{ADM}/validatingadmissionpolicybindings", binding(f"{name}-b", name))
        code, st = await api.post(DEPLOYS, deploy(f"x-{fp.lower()}", 2))
        assert code == want, st
        if fp == "Fail":
            assert "resulted in error" in st["message"] and "no such key: nope" in st["message"]
            await api.delete(f"{ADM}/validatingadmissionpolicybindings/{name}-b")


async def test_bad_policies_and_bindings_are_refused(api: Api) -> None:
    code, st = await api.post(
        f"{ADM}/validatingadmissionpolicies",
        policy("bad", {"expression": "object.spec.replicas <"}),
    )
    assert code == 422 and st["reason"] == "Invalid", st
    assert st["details"]["causes"][0]["field"] == "spec.validations[0].expression"
    assert "compilation failed" in st["details"]["causes"][0]["message"]
    code, st = await api.post(
        f"{ADM}/validatingadmissionpolicies",
        policy("bad2", {"expression": "true", "reason": "Teapot"}),
    )
    assert code == 422 and st["details"]["causes"][0]["field"] == "spec.validations[0].reason"
    code, st = await api.post(
        f"{ADM}/validatingadmissionpolicybindings", binding("b", "p", ["Deny", "Block"])
    )
    assert code == 422 and st["details"]["causes"][0]["field"] == "spec.validationActions[1]"


class Validator:
    """A validating webhook: refuses pods whose name starts with 'no-'."""

    def __init__(self) -> None:
        self.ca, cert, key = make_ca_and_cert(["127.0.0.1"])
        d = tempfile.mkdtemp(prefix="gpuyard-vwebhook-")
        self.cert_file, self.key_file = f"{d}/tls.crt", f"{d}/tls.key"
        with open(self.cert_file, "wb") as f:
            f.write(cert)
        with open(self.key_file, "wb") as f:
            f.write(key)
        self.calls = 0
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def handle(self, request: web.Request) -> web.Response:
        review = await request.json()
        self.calls += 1
        req = review["request"]
        name = req["object"]["metadata"]["name"]
        allowed = not name.startswith("no-")
        resp: dict[str, Any] = {
            "uid": req["uid"],
            "allowed": allowed,
            "warnings": ["seen by validator"],
        }
        if not allowed:
            resp["status"] = {"code": 403, "message": f"pod {name} is not welcome"}
        return web.json_response(
            {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": resp}
        )

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/validate", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.cert_file, self.key_file)
        site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=ctx)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture
async def validator() -> AsyncIterator[Validator]:
    v = Validator()
    await v.start()
    try:
        yield v
    finally:
        await v.stop()


async def test_validating_webhook_refuses_and_warns(api: Api, validator: Validator) -> None:
    import base64

    cfg = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": "pods.validator.example.com"},
        "webhooks": [
            {
                "name": "pods.validator.example.com",
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
                "clientConfig": {
                    "url": f"https://127.0.0.1:{validator.port}/validate",
                    "caBundle": base64.b64encode(validator.ca).decode(),
                },
                "rules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE"],
                        "resources": ["pods"],
                    }
                ],
            }
        ],
    }
    await _create(api, f"{ADM}/validatingwebhookconfigurations", cfg)
    pods = "/api/v1/namespaces/default/pods"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }
    code, st = await api.post(pods, {**pod, "metadata": {"name": "no-thanks"}})
    assert code == 403 and st["reason"] == "Forbidden", st
    assert (
        'admission webhook "pods.validator.example.com" denied the request: pod no-thanks is not welcome'
        in st["message"]
    )
    assert (await api.get(f"{pods}/no-thanks"))[0] == 404
    code, body, headers = await _post_with_headers(
        api, pods, {**pod, "metadata": {"name": "welcome"}}
    )
    assert code == 201, body
    assert "seen by validator" in headers["Warning"]
    assert validator.calls == 2


def test_kubectl_policy_denies_and_deletes_are_checked(apiserver: Any) -> None:
    import os
    import shutil
    import subprocess
    import sys

    import yaml

    kubectl = shutil.which("kubectl", path=os.path.dirname(sys.executable)) or "kubectl"

    def k(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [kubectl, "--kubeconfig", apiserver.kubeconfig, *args],
            capture_output=True,
            text=True,
            input=input,
            timeout=60,
        )

    pol = policy(
        "replicas",
        {"expression": "object.spec.replicas <= 5", "message": "at most 5 replicas"},
    )
    keep = policy(
        "keep-protected",
        {
            "expression": "!has(oldObject.metadata.labels) || "
            "!('protected' in oldObject.metadata.labels)",
            "message": "protected deployments stay",
        },
    )
    keep["spec"]["matchConstraints"]["resourceRules"][0]["operations"] = ["DELETE"]
    docs = [
        pol,
        binding("replicas-b", "replicas"),
        keep,
        binding("keep-protected-b", "keep-protected"),
    ]
    r = k("apply", "-f", "-", input=yaml.safe_dump_all(docs))
    assert r.returncode == 0, r.stderr
    r = k("apply", "-f", "-", input=yaml.safe_dump(deploy("web", 9)))
    assert r.returncode != 0
    assert (
        "ValidatingAdmissionPolicy 'replicas' with binding 'replicas-b' denied request: "
        "at most 5 replicas" in r.stderr
    ), r.stderr
    r = k("apply", "-f", "-", input=yaml.safe_dump(deploy("web", 2)))
    assert r.returncode == 0, r.stderr
    assert k("label", "deployment", "web", "protected=yes").returncode == 0
    r = k("delete", "deployment", "web")
    assert r.returncode != 0 and "protected deployments stay" in r.stderr, r.stderr
    assert k("get", "deployment", "web").returncode == 0
    assert k("label", "deployment", "web", "protected-").returncode == 0
    assert k("delete", "deployment", "web").returncode == 0


async def test_policies_see_who_asks_and_match_subresources_as_named(api: Api) -> None:
    """request.userInfo is the requester (after impersonation), not the server; a rule
    naming `deployments` covers writes of the object, one naming `deployments/status`
    covers status writes, and neither covers the other."""
    who = policy(
        "no-intern",
        {
            "expression": "request.userInfo.username != 'intern'",
            "messageExpression": "'not you, ' + request.userInfo.username",
        },
    )
    rule = who["spec"]["matchConstraints"]["resourceRules"][0]
    rule["resources"] = ["deployments/status"]
    rule["operations"] = ["UPDATE"]
    await _create(api, f"{ADM}/validatingadmissionpolicies", who)
    await _create(
        api, f"{ADM}/validatingadmissionpolicybindings", binding("no-intern", "no-intern")
    )
    await _create(api, DEPLOYS, deploy("web", 1))
    await grant(
        api,
        "default",
        "intern",
        [
            {
                "apiGroups": ["apps"],
                "resources": ["deployments", "deployments/status"],
                "verbs": ["patch"],
            }
        ],
        [{"kind": "User", "name": "intern", "apiGroup": "rbac.authorization.k8s.io"}],
    )
    as_intern = {"Impersonate-User": "intern"}
    status = {"status": {"observedGeneration": 1}}
    code, out = await api.req(
        "PATCH",
        f"{DEPLOYS}/web/status",
        status,
        ctype="application/merge-patch+json",
        headers=as_intern,
    )
    assert code == 422, out["message"]  # a validation with no reason: Invalid
    assert "not you, intern" in out["message"]
    # the admin (the same patch) passes: the policy saw a different user
    code, out = await api.patch(f"{DEPLOYS}/web/status", status)
    assert code == 200, out
    # a write of the object itself is not a status write: the rule does not cover it
    code, out = await api.req(
        "PATCH",
        f"{DEPLOYS}/web",
        {"metadata": {"labels": {"a": "b"}}},
        ctype="application/merge-patch+json",
        headers=as_intern,
    )
    assert code == 200, out
