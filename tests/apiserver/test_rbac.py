"""RBAC enforced on every request: a ServiceAccount without a role gets 403 on every
verb, with a role exactly its verbs (in its namespace only for a RoleBinding);
aggregated ClusterRoles, resourceNames, changes taking effect at once; `kubectl auth
can-i` and `can-i --list` tell the truth; impersonation obeys RBAC; the Node
authorizer keeps a node to its own objects."""

from __future__ import annotations

from typing import Any

from .api import Api
from .identities import CertApi, grant, kubeconfig, kubectl, sa_subject, service_account

CM = "/api/v1/namespaces/{ns}/configmaps"
VERBS = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection")


async def _try(api: Api, token: str, verb: str, ns: str = "default", name: str = "c1") -> int:
    base = CM.format(ns=ns)
    body = {"metadata": {"name": name}, "data": {"k": "v"}}
    if verb == "get":
        st, _ = await api.req("GET", f"{base}/{name}", token=token)
    elif verb == "list":
        st, _ = await api.req("GET", base, token=token)
    elif verb == "watch":
        st, _ = await api.req("GET", base, token=token, watch="true", timeoutSeconds="1")
    elif verb == "create":
        st, _ = await api.req(
            "POST", base, {**body, "metadata": {"name": name + "-new"}}, token=token
        )
    elif verb == "update":
        st, cur = await api.get(f"{base}/{name}")
        st, _ = await api.req("PUT", f"{base}/{name}", cur, token=token)
    elif verb == "patch":
        st, _ = await api.req(
            "PATCH",
            f"{base}/{name}",
            {"data": {"k": "w"}},
            ctype="application/merge-patch+json",
            token=token,
        )
    elif verb == "delete":
        st, _ = await api.req("DELETE", f"{base}/{name}", token=token)
    else:
        st, _ = await api.req("DELETE", base, token=token, labelSelector="none=none")
    return st


async def _cm(api: Api, ns: str = "default", name: str = "c1") -> None:
    st, _ = await api.req(
        "POST", CM.format(ns=ns), {"metadata": {"name": name}, "data": {"k": "v"}}
    )
    assert st in (201, 409)


async def test_no_role_means_403_on_every_verb(api: Api) -> None:
    await _cm(api)
    token = await service_account(api, "default", "nobody")
    for verb in VERBS:
        assert await _try(api, token, verb) == 403, verb
    st, body = await api.req("GET", "/api/v1/namespaces/default/configmaps/c1", token=token)
    assert body["message"] == (
        'configmaps "c1" is forbidden: User "system:serviceaccount:default:nobody" cannot get '
        'resource "configmaps" in API group "" in the namespace "default"'
    )
    assert body["details"] == {"group": "", "kind": "configmaps", "name": "c1"}
    st, body = await api.req("GET", "/api/v1/nodes", token=token)
    assert st == 403
    assert body["message"].endswith(
        'cannot list resource "nodes" in API group "" at the cluster scope'
    )
    # Still allowed to everyone authenticated: discovery and asking what it may do.
    st, _ = await api.req("GET", "/api", token=token)
    assert st == 200
    st, _ = await api.req("GET", "/apis", token=token)
    assert st == 200


async def test_a_role_grants_exactly_its_verbs(api: Api) -> None:
    for ns in ("default", "other"):
        await api.req("POST", "/api/v1/namespaces", {"metadata": {"name": ns}})
        await _cm(api, ns)
    token = await service_account(api, "default", "reader")
    granted = {"get", "list", "patch"}
    rules = [{"apiGroups": [""], "resources": ["configmaps"], "verbs": sorted(granted)}]
    await grant(api, "default", "cm-reader", rules, [sa_subject("default", "reader")])
    for verb in VERBS:
        st = await _try(api, token, verb)
        assert (st < 400) == (verb in granted), (verb, st)
        assert st in (200, 201, 403), (verb, st)
    for verb in VERBS:  # a RoleBinding grants nothing in another namespace
        assert await _try(api, token, verb, ns="other") == 403, verb
    # The wrong group or a subresource is not the resource.
    st, _ = await api.req("GET", "/api/v1/namespaces/default/pods", token=token)
    assert st == 403


async def test_resource_names_and_changes_take_effect_at_once(api: Api) -> None:
    await _cm(api, name="mine")
    await _cm(api, name="theirs")
    token = await service_account(api, "default", "picky")
    rules = [
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "resourceNames": ["mine"],
            "verbs": ["get", "list", "watch"],
        }
    ]
    await grant(api, "default", "only-mine", rules, [sa_subject("default", "picky")])
    assert await _try(api, token, "get", name="mine") == 200
    assert await _try(api, token, "get", name="theirs") == 403
    assert await _try(api, token, "list") == 403
    assert await _try(api, token, "watch") == 403
    # A list or watch that selects one name is a request for that name (an informer
    # of one object), as kube-apiserver authorizes it; any other selector is not.
    base = CM.format(ns="default")
    for sel, want in (
        ("metadata.name=mine", 200),
        ("metadata.name==mine", 200),
        ("metadata.namespace=default,metadata.name=mine", 200),
        ("metadata.name=theirs", 403),
        ("metadata.name!=theirs", 403),
    ):
        st, out = await api.req("GET", base, token=token, fieldSelector=sel)
        assert st == want, (sel, out)
        st, _ = await api.req(
            "GET", base, token=token, fieldSelector=sel, watch="true", timeoutSeconds="1"
        )
        assert st == want, sel
    st, out = await api.req("GET", base, token=token, fieldSelector="metadata.name=mine")
    assert [i["metadata"]["name"] for i in out["items"]] == ["mine"]
    st, out = await api.req("GET", base, token=token, fieldSelector="metadata.name=theirs")
    assert 'configmaps "theirs" is forbidden' in out["message"], out
    st, _ = await api.req(
        "DELETE", "/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings/only-mine"
    )
    assert st == 200
    assert await _try(api, token, "get", name="mine") == 403


async def test_aggregated_cluster_roles(api: Api) -> None:
    await _cm(api)
    token = await service_account(api, "default", "agg")
    rbac = "/apis/rbac.authorization.k8s.io/v1"
    st, _ = await api.req(
        "POST",
        f"{rbac}/clusterroles",
        {
            "metadata": {"name": "team-reader"},
            "aggregationRule": {
                "clusterRoleSelectors": [{"matchLabels": {"example.com/aggregate-to-team": "true"}}]
            },
            "rules": [],
        },
    )
    assert st == 201
    st, _ = await api.req(
        "POST",
        f"{rbac}/namespaces/default/rolebindings",
        {
            "metadata": {"name": "team-reader"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "team-reader",
            },
            "subjects": [sa_subject("default", "agg")],
        },
    )
    assert st == 201
    assert await _try(api, token, "list") == 403
    st, _ = await api.req(
        "POST",
        f"{rbac}/clusterroles",
        {
            "metadata": {"name": "cm-part", "labels": {"example.com/aggregate-to-team": "true"}},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}],
        },
    )
    assert st == 201
    assert await _try(api, token, "list") == 200
    assert await _try(api, token, "get") == 403
    # The bootstrap view role aggregates too: a RoleBinding to it reads configmaps.
    token2 = await service_account(api, "default", "viewer")
    st, _ = await api.req(
        "POST",
        f"{rbac}/namespaces/default/rolebindings",
        {
            "metadata": {"name": "viewer"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "view",
            },
            "subjects": [sa_subject("default", "viewer")],
        },
    )
    assert st == 201
    assert await _try(api, token2, "get") == 200
    assert await _try(api, token2, "create") == 403


async def test_kubectl_auth_can_i_is_truthful(api: Api, apiserver_inproc: Any) -> None:
    srv = apiserver_inproc
    await _cm(api)
    token = await service_account(api, "default", "cani")
    rules = [
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]},
        {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["create"]},
    ]
    await grant(api, "default", "cani", rules, [sa_subject("default", "cani")])
    kc = kubeconfig(srv, token=token)
    for args, want in (
        (("get", "configmaps"), "yes"),
        (("list", "configmaps"), "yes"),
        (("delete", "configmaps"), "no"),
        (("create", "deployments.apps"), "yes"),
        (("get", "configmaps", "-n", "kube-system"), "no"),
        (("list", "nodes"), "no"),
        (("create", "pods"), "no"),
    ):
        r = await kubectl(kc, "auth", "can-i", *args)
        assert r.stdout.strip() == want, (args, r.stdout, r.stderr)
    r = await kubectl(kc, "auth", "can-i", "--list", "-n", "default")
    assert r.returncode == 0, r.stderr
    lines = {ln.split()[0]: ln for ln in r.stdout.splitlines()[1:] if ln and not ln.startswith(" ")}
    assert "[get list]" in lines["configmaps"]
    assert "[create]" in lines["deployments.apps"]
    assert "pods" not in lines
    r = await kubectl(kc, "auth", "can-i", "--list", "-n", "kube-system")
    assert "configmaps" not in r.stdout
    admin = kubeconfig(srv, token=srv.token)
    r = await kubectl(admin, "auth", "can-i", "*", "*", "--as", "system:anonymous")
    assert r.stdout.strip() != "yes"
    r = await kubectl(admin, "auth", "can-i", "*", "*")
    assert r.stdout.strip() == "yes"
    # SubjectAccessReview (asked by the admin about someone) agrees.
    st, sar = await api.req(
        "POST",
        "/apis/authorization.k8s.io/v1/subjectaccessreviews",
        {
            "spec": {
                "user": "system:serviceaccount:default:cani",
                "groups": ["system:serviceaccounts"],
                "resourceAttributes": {
                    "namespace": "default",
                    "verb": "list",
                    "resource": "configmaps",
                },
            }
        },
    )
    assert st == 201 and sar["status"]["allowed"] is True, sar
    st, _ = await api.req(
        "POST",
        "/apis/authorization.k8s.io/v1/subjectaccessreviews",
        {"spec": {"user": "x", "resourceAttributes": {"verb": "get", "resource": "pods"}}},
        token=token,
    )
    assert st == 403  # asking about others needs its own permission


async def test_impersonation_obeys_rbac(api: Api) -> None:
    await _cm(api)
    token = await service_account(api, "default", "imp")
    alice = {"Impersonate-User": "alice"}
    st, body = await api.req(
        "GET", "/api/v1/namespaces/default/configmaps", token=token, headers=alice
    )
    assert st == 403
    assert 'cannot impersonate resource "users"' in body["message"]
    await grant(
        api,
        None,
        "impersonate-alice",
        [
            {
                "apiGroups": [""],
                "resources": ["users"],
                "verbs": ["impersonate"],
                "resourceNames": ["alice"],
            }
        ],
        [sa_subject("default", "imp")],
    )
    # As alice, with alice's rights (none yet).
    st, body = await api.req(
        "GET", "/api/v1/namespaces/default/configmaps", token=token, headers=alice
    )
    assert st == 403
    assert 'User "alice"' in body["message"]
    await grant(
        api,
        "default",
        "alice-reads",
        [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}],
        [{"kind": "User", "name": "alice", "apiGroup": "rbac.authorization.k8s.io"}],
    )
    st, _ = await api.req(
        "GET", "/api/v1/namespaces/default/configmaps", token=token, headers=alice
    )
    assert st == 200
    st, who = await api.req(
        "POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews", {}, token=token, headers=alice
    )
    assert who["status"]["userInfo"]["username"] == "alice"
    # Another user, or a group alice is not allowed to be put in: refused.
    st, _ = await api.req(
        "GET",
        "/api/v1/namespaces/default/configmaps",
        token=token,
        headers={"Impersonate-User": "bob"},
    )
    assert st == 403
    st, body = await api.req(
        "GET",
        "/api/v1/namespaces/default/configmaps",
        token=token,
        headers={"Impersonate-User": "alice", "Impersonate-Group": "system:masters"},
    )
    assert st == 403
    assert 'cannot impersonate resource "groups"' in body["message"]


async def test_node_authorizer(api: Api, apiserver_inproc: Any) -> None:
    srv = apiserver_inproc
    for n in ("n1", "n2"):
        st, _ = await api.req("POST", "/api/v1/nodes", {"metadata": {"name": n}})
        assert st == 201
    for p, node in (("on-n1", "n1"), ("on-n2", "n2")):
        st, _ = await api.req(
            "POST",
            "/api/v1/namespaces/default/pods",
            {
                "metadata": {"name": p},
                "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i"}]},
            },
        )
        assert st == 201
    kubelet = CertApi(srv, srv.client_cert("system:node:n1", ["system:nodes"]))
    patch = {"status": {"conditions": [{"type": "Ready", "status": "True"}]}}

    async def patch_status(path: str) -> int:
        st, _ = await kubelet.req("PATCH", path, patch, ctype="application/merge-patch+json")
        return st

    try:
        assert await patch_status("/api/v1/nodes/n1/status") == 200
        assert await patch_status("/api/v1/nodes/n2/status") == 403
        st, _ = await kubelet.req("GET", "/api/v1/nodes/n2")
        assert st == 200  # nodes are readable
        st, _ = await kubelet.req("DELETE", "/api/v1/nodes/n2")
        assert st == 403
        st, _ = await kubelet.req("GET", "/api/v1/namespaces/default/pods/on-n1")
        assert st == 200
        st, _ = await kubelet.req("GET", "/api/v1/namespaces/default/pods/on-n2")
        assert st == 403
        assert await patch_status("/api/v1/namespaces/default/pods/on-n1/status") == 200
        assert await patch_status("/api/v1/namespaces/default/pods/on-n2/status") == 403
        st, _ = await kubelet.req("GET", "/api/v1/pods")
        assert st == 403
        st, pods = await kubelet.req("GET", "/api/v1/pods", fieldSelector="spec.nodeName=n1")
        assert st == 200 and [p["metadata"]["name"] for p in pods["items"]] == ["on-n1"]
        st, _ = await kubelet.req("GET", "/api/v1/pods", fieldSelector="spec.nodeName=n2")
        assert st == 403
        st, _ = await kubelet.req("POST", "/api/v1/nodes", {"metadata": {"name": "n3"}})
        assert st == 403  # only its own Node
        lease = {"metadata": {"name": "n1"}, "spec": {"holderIdentity": "n1"}}
        st, _ = await kubelet.req(
            "POST", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", lease
        )
        assert st == 201
        st, _ = await kubelet.req(
            "POST",
            "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
            {"metadata": {"name": "n2"}, "spec": {"holderIdentity": "n2"}},
        )
        assert st == 403
        st, _ = await kubelet.req("GET", "/api/v1/namespaces/default/configmaps")
        assert st == 403
    finally:
        await kubelet.close()


async def test_changing_a_bindings_subjects_moves_the_grant(api: Api) -> None:
    await _cm(api)
    one = await service_account(api, "default", "one")
    two = await service_account(api, "default", "two")
    rules = [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]
    await grant(api, "default", "moving", rules, [sa_subject("default", "one")])
    assert await _try(api, one, "get") == 200
    assert await _try(api, two, "get") == 403
    path = "/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings/moving"
    st, rb = await api.get(path)
    rb["subjects"] = [sa_subject("default", "two")]
    st, _ = await api.req("PUT", path, rb)
    assert st == 200
    assert await _try(api, one, "get") == 403
    assert await _try(api, two, "get") == 200
    # A role losing a verb takes it away at once too.
    rpath = "/apis/rbac.authorization.k8s.io/v1/namespaces/default/roles/moving"
    st, role = await api.get(rpath)
    role["rules"][0]["verbs"] = ["list"]
    st, _ = await api.req("PUT", rpath, role)
    assert st == 200
    assert await _try(api, two, "get") == 403
    assert await _try(api, two, "list") == 200
