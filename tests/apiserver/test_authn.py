"""Authentication: anonymous and unknown credentials get 401; ServiceAccount tokens
from TokenRequest (kubectl create token) work while their ServiceAccount and bound
object exist and until they expire; TokenReview says the same; client certificates
from the cluster CA name their user and groups; `kubectl auth whoami` tells the truth."""

from __future__ import annotations

import base64
import datetime as dt
import time
from typing import Any

import aiohttp
import orjson
import pytest

from .api import Api
from .identities import CertApi, kubeconfig, kubectl, service_account

NS = "default"


async def test_anonymous_and_unknown_tokens_get_401(api: Api) -> None:
    for path in ("/api/v1/namespaces/default/pods", "/api", "/apis", "/metrics", "/openapi/v2"):
        st, body = await api.req("GET", path, token=None)
        assert st == 401, (path, body)
        assert body["reason"] == "Unauthorized"
        st, _ = await api.req("GET", path, token="not-a-token")
        assert st == 401, path
    st, _ = await api.req(
        "POST", "/api/v1/namespaces/default/configmaps", {"metadata": {"name": "x"}}, token=None
    )
    assert st == 401
    st, _ = await api.req(
        "GET",
        "/api/v1/namespaces/default/pods",
        headers={"Authorization": "Basic YTpi"},
        token=None,
    )
    assert st == 401
    # What Kubernetes lets anyone read: the probes and the version.
    for path in ("/healthz", "/livez", "/readyz", "/version"):
        st, _ = await api.req("GET", path, token=None)
        assert st == 200, path
    st, cm = await api.req("GET", "/api/v1/namespaces/default/configmaps/x")
    assert st == 404  # the anonymous create did nothing


async def test_service_account_token_lifecycle(api: Api, apiserver_inproc: Any) -> None:
    token = await service_account(api, NS, "bot")
    st, who = await api.req(
        "POST",
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
        token=token,
    )
    assert st == 201, who
    info = who["status"]["userInfo"]
    assert info["username"] == "system:serviceaccount:default:bot"
    assert set(info["groups"]) == {
        "system:serviceaccounts",
        "system:serviceaccounts:default",
        "system:authenticated",
    }
    st, sa = await api.get("/api/v1/namespaces/default/serviceaccounts/bot")
    assert info["uid"] == sa["metadata"]["uid"]

    # A token is a signed JWT: altering its claims breaks it.
    head, claims, sig = token.split(".")
    data = orjson.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))
    assert data["sub"] == "system:serviceaccount:default:bot"
    assert data["exp"] - data["iat"] == 3600
    data["kubernetes.io"]["serviceaccount"]["name"] = "admin"
    data["sub"] = "system:serviceaccount:default:admin"
    forged = ".".join(
        [head, base64.urlsafe_b64encode(orjson.dumps(data)).rstrip(b"=").decode(), sig]
    )
    st, _ = await api.req("GET", "/api/v1/namespaces/default/pods", token=forged)
    assert st == 401

    # TokenReview agrees.
    for tok, ok in ((token, True), (forged, False), ("nope", False)):
        st, tr = await api.req(
            "POST",
            "/apis/authentication.k8s.io/v1/tokenreviews",
            {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenReview",
                "spec": {"token": tok},
            },
        )
        assert st == 201
        assert tr["status"]["authenticated"] is ok, tr
        if ok:
            assert tr["status"]["user"]["username"] == "system:serviceaccount:default:bot"

    # Expired: a token issued two hours ago for one hour.
    old, _ = apiserver_inproc.access.issuer.issue(
        NS, "bot", sa["metadata"]["uid"], seconds=3600, now=time.time() - 7200
    )
    st, body = await api.req("GET", "/api/v1/namespaces/default/pods", token=old)
    assert st == 401, body

    # Revoked with its ServiceAccount, and not revived by a new one of the same name.
    st, _ = await api.req("DELETE", "/api/v1/namespaces/default/serviceaccounts/bot")
    assert st == 200
    st, _ = await api.req("GET", "/api/v1/namespaces/default/pods", token=token)
    assert st == 401
    st, _ = await api.req(
        "POST", "/api/v1/namespaces/default/serviceaccounts", {"metadata": {"name": "bot"}}
    )
    assert st == 201
    st, _ = await api.req("GET", "/api/v1/namespaces/default/pods", token=token)
    assert st == 401


async def test_token_bound_to_a_pod_dies_with_it(api: Api) -> None:
    await service_account(api, NS, "runner")
    pod = {
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }
    st, p = await api.req("POST", "/api/v1/namespaces/default/pods", pod)
    assert st == 201, p
    uid = p["metadata"]["uid"]
    st, tr = await api.req(
        "POST",
        "/api/v1/namespaces/default/serviceaccounts/runner/token",
        {
            "spec": {
                "expirationSeconds": 600,
                "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "p", "uid": uid},
            }
        },
    )
    assert st == 201, tr
    assert tr["spec"]["expirationSeconds"] == 600
    token = tr["status"]["token"]
    st, who = await api.req(
        "POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews", {}, token=token
    )
    assert st == 201
    assert who["status"]["userInfo"]["extra"]["authentication.kubernetes.io/pod-uid"] == [uid]
    # Too short, a missing bound object, a uid that is not the pod's: refused.
    for spec, code in (
        ({"expirationSeconds": 60}, 422),
        ({"boundObjectRef": {"kind": "Pod", "name": "missing"}}, 404),
        ({"boundObjectRef": {"kind": "Pod", "name": "p", "uid": "0000"}}, 409),
        ({"boundObjectRef": {"kind": "ConfigMap", "name": "p"}}, 422),
    ):
        st, body = await api.req(
            "POST", "/api/v1/namespaces/default/serviceaccounts/runner/token", {"spec": spec}
        )
        assert st == code, (spec, body)
    st, _ = await api.req(
        "POST", "/api/v1/namespaces/default/serviceaccounts/ghost/token", {"spec": {}}
    )
    assert st == 404
    st, _ = await api.req("DELETE", "/api/v1/namespaces/default/pods/p", gracePeriodSeconds=0)
    assert st == 200
    for _ in range(50):
        st, _ = await api.get("/api/v1/namespaces/default/pods/p")
        if st == 404:
            break
        time.sleep(0.05)
    st, _ = await api.req("GET", "/api/v1/namespaces/default/pods", token=token)
    assert st == 401


async def test_client_certificates(apiserver_inproc: Any) -> None:
    srv = apiserver_inproc
    alice = CertApi(srv, srv.client_cert("alice", ["team-a", "team-b"]))
    admin = CertApi(srv, srv.client_cert("ops", ["system:masters"]))
    try:
        st, who = await alice.req("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews", {})
        assert st == 201, who
        assert who["status"]["userInfo"] == {
            "username": "alice",
            "groups": ["team-a", "team-b", "system:authenticated"],
        }
        st, body = await alice.req("GET", "/api/v1/nodes")
        assert st == 403
        assert 'User "alice" cannot list resource "nodes"' in body["message"]
        st, _ = await admin.req("GET", "/api/v1/nodes")
        assert st == 200
    finally:
        await alice.close()
        await admin.close()
    # A certificate from another CA is refused in the handshake.
    from gpuyard.apiserver.tls import client_cert
    from gpuyard.pki import new_ca

    other_ca, other_key = new_ca(dt.datetime.now(dt.UTC), 1)
    stranger = CertApi(srv, client_cert(other_ca, other_key, "mallory", ["system:masters"]))
    try:
        with pytest.raises(aiohttp.ClientError):
            await stranger.req("GET", "/api/v1/nodes")
    finally:
        await stranger.close()


async def test_kubectl_create_token_and_whoami(apiserver_inproc: Any) -> None:
    srv = apiserver_inproc
    admin = kubeconfig(srv, token=srv.token)
    assert (await kubectl(admin, "create", "serviceaccount", "deployer")).returncode == 0
    r = await kubectl(admin, "create", "token", "deployer", "--duration", "20m")
    assert r.returncode == 0, r.stderr
    token = r.stdout.strip()
    who = await kubectl(kubeconfig(srv, token=token), "auth", "whoami", "-o", "json")
    assert who.returncode == 0, who.stderr
    info = orjson.loads(who.stdout)["status"]["userInfo"]
    assert info["username"] == "system:serviceaccount:default:deployer"
    me = await kubectl(admin, "auth", "whoami", "-o", "json")
    assert "system:masters" in orjson.loads(me.stdout)["status"]["userInfo"]["groups"]
    bad = await kubectl(kubeconfig(srv, token="wrong"), "get", "pods")
    assert bad.returncode != 0
    assert "Unauthorized" in bad.stderr or "logged in" in bad.stderr
