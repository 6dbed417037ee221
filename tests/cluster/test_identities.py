"""`gpuyard up` runs its components as the ServiceAccounts of `gpuyard manifests`: what
they do is authorized by the install's own roles, so a verb missing from a role is a
403 naming it, here as on a real cluster."""

from __future__ import annotations

import json
import time
from typing import Any

from gpuyard import manifests
from gpuyard.cluster.testing import ClusterProcess

POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "needs-binding", "namespace": "default"},
    "spec": {
        "schedulerName": "gpuyard-scheduler",
        "containers": [{"name": "w", "image": "x", "resources": {"limits": {"nvidia.com/gpu": 1}}}],
    },
}


def _audit(c: ClusterProcess) -> list[dict[str, Any]]:
    path = c.data_dir / "audit.log"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _wait(fn: Any, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(0.3)
    raise AssertionError("timed out")


def test_components_act_as_their_service_accounts(cluster: ClusterProcess) -> None:
    r = cluster.kubectl("apply", "-f", "-", input=json.dumps(POD))
    assert r.returncode == 0, r.stderr
    _wait(
        lambda: (
            cluster.kubectl("get", "pod", "needs-binding", "-o", "jsonpath={.spec.nodeName}").stdout
        )
    )
    want = {
        f"system:serviceaccount:gpuyard-system:{sa}"
        # Those that write on an idle cluster (the binding, the webhook configuration,
        # node health); the controllers write only once there are jobs or teams.
        for sa in ("gpuyard-scheduler", "gpuyard-teams-webhook", "gpuyard-health-agent")
    }

    def acting() -> bool:
        users = {
            e["user"]["username"] for e in _audit(cluster) if e["responseStatus"]["code"] < 400
        }
        return want <= users

    _wait(acting)
    # Nothing a component asked was refused: the install's roles cover what each calls.
    refused = [
        (e["user"]["username"], e["verb"], e.get("objectRef"))
        for e in _audit(cluster)
        if e["responseStatus"]["code"] == 403
        and e["user"]["username"].startswith("system:serviceaccount:gpuyard-system:")
    ]
    assert refused == []
    binds = [
        e
        for e in _audit(cluster)
        if e.get("objectRef", {}).get("subresource") == "binding"
        and e["responseStatus"]["code"] == 201
    ]
    assert (
        binds
        and binds[0]["user"]["username"] == "system:serviceaccount:gpuyard-system:gpuyard-scheduler"
    )
    # Each simulated kubelet writes its own Node's status and its pods' as
    # system:node:NAME, and only its own.
    mine = [
        e
        for e in _audit(cluster)
        if e["user"]["username"].startswith("system:node:") and e["responseStatus"]["code"] < 400
    ]
    nodes = cluster.kubectl("get", "nodes", "-o", "jsonpath={.items[*].metadata.name}").stdout
    assert {e["user"]["username"] for e in mine} == {f"system:node:{n}" for n in nodes.split()}
    created = [e for e in mine if e.get("objectRef", {}).get("resource") == "nodes"]
    assert len(created) == len(nodes.split())  # each registered its own Node

    def pod_status() -> list[dict[str, Any]]:
        return [
            e
            for e in _audit(cluster)
            if e.get("objectRef", {}).get("name") == "needs-binding"
            and e.get("objectRef", {}).get("subresource") == "status"
        ]

    started = _wait(pod_status)
    node = cluster.kubectl("get", "pod", "needs-binding", "-o", "jsonpath={.spec.nodeName}").stdout
    assert started[0]["user"]["username"] == f"system:node:{node}"
    # The components' tokens are kept private.
    for f in (cluster.data_dir / "identities").iterdir():
        assert f.stat().st_mode & 0o077 == 0
    _install_dry_run_matches(cluster)


def _install_dry_run_matches(cluster: ClusterProcess) -> None:
    """The real-cluster install against this cluster: `kubectl apply --dry-run=server`
    takes every object and stores none, and the roles and bindings the components run
    under here are exactly the install's."""
    text = manifests.render()
    objs = manifests.objects()
    r = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=text)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("(server dry run)") == len(objs), r.stdout
    got = cluster.kubectl("get", "deployments,daemonsets", "-n", manifests.NAMESPACE, "-o", "json")
    assert json.loads(got.stdout)["items"] == []  # nothing was stored
    live = {}
    for kinds, ns in (("clusterroles,clusterrolebindings", []), ("roles,rolebindings", ["-A"])):
        for o in json.loads(cluster.kubectl("get", kinds, *ns, "-o", "json").stdout)["items"]:
            live[(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"])] = o
    for o in objs:
        if o["kind"] in ("ClusterRole", "Role", "ClusterRoleBinding", "RoleBinding"):
            have = live[(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"])]
            for field in ("rules", "roleRef", "subjects"):
                assert have.get(field) == o.get(field), (o["metadata"]["name"], field)


def test_a_verb_removed_from_a_role_fails_with_403_naming_it(cluster: ClusterProcess) -> None:
    role = json.loads(
        cluster.kubectl("get", "clusterrole", "gpuyard-scheduler", "-o", "json").stdout
    )
    for rule in role["rules"]:
        if "pods/binding" in rule["resources"]:
            rule["resources"].remove("pods/binding")
    r = cluster.kubectl("replace", "-f", "-", input=json.dumps(role))
    assert r.returncode == 0, r.stderr
    r = cluster.kubectl(
        "auth",
        "can-i",
        "create",
        "pods/binding",
        "--as",
        "system:serviceaccount:gpuyard-system:gpuyard-scheduler",
        check=False,
    )
    assert r.stdout.strip() == "no"
    r = cluster.kubectl("apply", "-f", "-", input=json.dumps(POD))
    assert r.returncode == 0, r.stderr
    want = (
        'User "system:serviceaccount:gpuyard-system:gpuyard-scheduler" cannot create resource '
        '"pods/binding" in API group "" in the namespace "default"'
    )

    def refused() -> list[dict[str, Any]]:
        return [
            e
            for e in _audit(cluster)
            if e["responseStatus"]["code"] == 403 and want in e["responseStatus"].get("message", "")
        ]

    _wait(refused)
    assert want in cluster.log()  # the scheduler says why the pod stays pending
    out = cluster.kubectl("get", "pod", "needs-binding", "-o", "jsonpath={.spec.nodeName}")
    assert out.stdout == ""
