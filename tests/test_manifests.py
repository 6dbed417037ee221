"""The real-cluster install (`gpuyard manifests`, deploy/gpuyard.yaml): up to date,
every command in it is one gpuyard has, and a Kubernetes API server takes all of it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gpuyard import manifests
from gpuyard.apiserver.testing import ServerProcess
from gpuyard.crds import crd_objects

ROOT = Path(__file__).resolve().parents[1]
KUBECTL = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or "kubectl"


def test_deploy_yaml_is_the_generated_output() -> None:
    # Regenerate with: gpuyard manifests > deploy/gpuyard.yaml
    assert (ROOT / "deploy" / "gpuyard.yaml").read_text() == manifests.render()


def _key(d: dict) -> tuple[str, str]:
    return (d["kind"], d["metadata"]["name"])


def _kustomize(path: Path) -> list[dict]:
    out = subprocess.run(
        [KUBECTL, "kustomize", str(path)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return sorted((d for d in yaml.safe_load_all(out.stdout) if d), key=_key)


def test_kustomize_base_is_the_generated_output(tmp_path: Path) -> None:
    # Regenerate with: gpuyard manifests --kustomization > deploy/kustomization.yaml
    assert (ROOT / "deploy" / "kustomization.yaml").read_text() == manifests.kustomization()
    assert _kustomize(ROOT / "deploy") == sorted(manifests.objects(), key=_key)
    # An overlay retargets both images by name, as `kustomize edit set image` writes it.
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "resources": [os.path.relpath(ROOT / "deploy", overlay)],
                "images": [
                    {"name": "ghcr.io/gpuyard/gpuyard", "newName": "reg.example/cp", "newTag": "7"},
                    {"name": "ghcr.io/gpuyard/gpuyard-gpu", "newName": "reg.example/gpu"},
                ],
            }
        )
    )
    got = {
        (d["kind"], d["metadata"]["name"], c["name"]): c["image"]
        for d in _kustomize(overlay)
        if d["kind"] in ("Deployment", "DaemonSet")
        for c in d["spec"]["template"]["spec"]["containers"]
    }
    assert got[("DaemonSet", "gpuyard-health-agent", "agent")] == "reg.example/gpu:0.1.0"
    assert got.pop(("DaemonSet", "gpuyard-health-agent", "agent"))
    assert set(got.values()) == {"reg.example/cp:7"} and len(got) == 8


def test_every_container_runs_a_gpuyard_command() -> None:
    docs = [d for d in yaml.safe_load_all(manifests.render("example/img:1", "ex/gpu:2")) if d]
    commands = []
    for d in docs:
        if d["kind"] in ("Deployment", "DaemonSet"):
            for c in d["spec"]["template"]["spec"]["containers"]:
                # The health agent runs on GPU nodes from the GPU image (it reads the
                # GPUs), the rest from the other (netd too: it needs no CUDA).
                gpu = (d["kind"], d["metadata"]["name"]) == ("DaemonSet", "gpuyard-health-agent")
                want = "ex/gpu:2" if gpu else "example/img:1"
                assert c["image"] == want
                if c["name"] in ("preflight", "periodic"):  # the test pods' image
                    assert c["command"][c["command"].index("--image") + 1] == "ex/gpu:2"
                commands.append(c["command"])
    assert {tuple(c[:2]) for c in commands} >= {
        ("gpuyard", "scheduler"),
        ("gpuyard", "controllers"),
        ("gpuyard", "teams-webhook"),
        ("gpuyard", "netd"),
        ("gpuyard", "dashboard"),
    }
    for cmd in commands:
        assert cmd[0] == "gpuyard"
        out = subprocess.run(
            [sys.executable, "-m", "gpuyard.cli", *cmd[1:], "--help"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, (cmd, out.stderr)
    # The CRDs are exactly those `gpuyard up` installs.
    assert [d for d in docs if d["kind"] == "CustomResourceDefinition"] == crd_objects()


def test_the_team_webhook_is_reached_through_its_service() -> None:
    docs = {(d["kind"], d["metadata"]["name"]): d for d in manifests.objects()}
    hook = docs[("MutatingWebhookConfiguration", "gpuyard-teams")]["webhooks"][0]
    svc_ref = hook["clientConfig"]["service"]
    assert "caBundle" not in hook["clientConfig"]  # filled in by the webhook at start
    assert hook["failurePolicy"] == "Fail"
    svc = docs[("Service", svc_ref["name"])]
    assert svc["metadata"]["namespace"] == svc_ref["namespace"] == manifests.NAMESPACE
    assert svc["spec"]["ports"][0]["port"] == svc_ref["port"] == 443
    dep = docs[("Deployment", svc_ref["name"])]
    pod = dep["spec"]["template"]
    assert svc["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    c = pod["spec"]["containers"][0]
    port = next(p for p in c["ports"] if p["name"] == svc["spec"]["ports"][0]["targetPort"])
    assert c["command"][c["command"].index("--listen") + 1].endswith(f":{port['containerPort']}")
    assert c["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    assert c["command"][c["command"].index("--service") + 1] == svc_ref["name"]
    assert dep["spec"]["replicas"] == 2
    # It may read and write its certificate Secret in its own namespace only.
    role = docs[("Role", svc_ref["name"])]
    assert role["metadata"]["namespace"] == manifests.NAMESPACE
    assert role["rules"][0]["resources"] == ["secrets"]


def test_kubectl_apply_k_deploy(apiserver: ServerProcess) -> None:
    # Default (server-side field) validation, as a user runs it.
    out = subprocess.run(
        [KUBECTL, "--kubeconfig", apiserver.kubeconfig, "apply", "-k", str(ROOT / "deploy")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("created") == len(manifests.objects())
    assert "Warning" not in out.stderr, out.stderr
    ds = subprocess.run(
        [KUBECTL, "--kubeconfig", apiserver.kubeconfig, "get", "ds", "-A", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    images = {
        d["metadata"]["name"]: d["spec"]["template"]["spec"]["containers"][0]["image"]
        for d in json.loads(ds.stdout)["items"]
    }
    assert images == {"gpuyard-health-agent": manifests.GPU_IMAGE, "gpuyard-netd": manifests.IMAGE}


def test_an_api_server_accepts_the_whole_install(apiserver: ServerProcess) -> None:
    def kubectl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [KUBECTL, "--kubeconfig", apiserver.kubeconfig, *args],
            capture_output=True,
            text=True,
            input=manifests.render(),
            timeout=120,
        )

    out = kubectl("apply", "-f", "-")
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("created") == len(manifests.objects())
    got = json.loads(kubectl("get", "deployments", "-n", "gpuyard-system", "-o", "json").stdout)
    assert sorted(d["metadata"]["name"] for d in got["items"]) == [
        "gpuyard-controllers",
        "gpuyard-dashboard",
        "gpuyard-health-controllers",
        "gpuyard-scheduler",
        "gpuyard-teams-webhook",
    ]
    hooks = json.loads(kubectl("get", "mutatingwebhookconfigurations", "-o", "json").stdout)
    assert [h["metadata"]["name"] for h in hooks["items"]] == ["gpuyard-teams"]
    svc = kubectl("get", "service", "gpuyard-teams-webhook", "-n", "gpuyard-system", "-o", "json")
    assert json.loads(svc.stdout)["spec"]["ports"][0]["port"] == 443
    again = kubectl("apply", "-f", "-")  # applying twice changes nothing
    assert again.returncode == 0 and "created" not in again.stdout
    assert kubectl("get", "balloonpools").returncode == 0  # the CRDs are served


# The built-in ClusterRole the install binds (kube-apiserver's bootstrap policy).
BUILTIN_ROLES = {
    "system:auth-delegator": [
        {
            "apiGroups": ["authentication.k8s.io"],
            "resources": ["tokenreviews"],
            "verbs": ["create"],
        },
        {
            "apiGroups": ["authorization.k8s.io"],
            "resources": ["subjectaccessreviews"],
            "verbs": ["create"],
        },
    ]
}
READ = {"get", "list", "watch"}
REVIEWS = {"tokenreviews", "subjectaccessreviews"}  # asked, never stored


def _granted(objs: list[dict], account: str) -> list[tuple[str, str, str, str, tuple[str, ...]]]:
    """(namespace or "", group, resource, verb, resourceNames or ()) for every grant of
    a ServiceAccount."""
    roles = {
        (o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]): o for o in objs
    }
    out = []
    for b in objs:
        if b["kind"] not in ("ClusterRoleBinding", "RoleBinding"):
            continue
        if not any(
            s["kind"] == "ServiceAccount"
            and s["name"] == account
            and s.get("namespace") == manifests.NAMESPACE
            for s in b["subjects"]
        ):
            continue
        ns = b["metadata"].get("namespace", "")
        ref = b["roleRef"]
        rules = (
            BUILTIN_ROLES[ref["name"]]
            if ref["name"] in BUILTIN_ROLES
            else roles[(ref["kind"], ns if ref["kind"] == "Role" else "", ref["name"])]["rules"]
        )
        for r in rules:
            for g in r.get("apiGroups") or ["(non-resource)"]:
                for res in r.get("resources") or r.get("nonResourceURLs") or []:
                    names = tuple(r.get("resourceNames") or ())
                    out += [(ns, g, res, v, names) for v in r["verbs"]]
    return out


def test_the_install_roles_are_least_privilege() -> None:
    """What a platform engineer checks before installing: no wildcards, no way to raise
    one's own rights, Secrets only in the install's namespace and by name, every binding
    for the install's own ServiceAccounts, the read-only identities read only, and pods
    written only where gpuyard's own pods live except by the components whose job that
    is."""
    objs = manifests.objects()
    for o in objs:
        if o["kind"] in ("ClusterRole", "Role"):
            for r in o["rules"]:
                fields = [*r.get("apiGroups", []), *r.get("resources", []), *r["verbs"]]
                assert "*" not in fields and not any("*" in u for u in r.get("nonResourceURLs", []))
        if o["kind"] in ("ClusterRoleBinding", "RoleBinding"):
            for s in o["subjects"]:
                assert (s["kind"], s.get("namespace")) == ("ServiceAccount", manifests.NAMESPACE)
    accounts = [o["metadata"]["name"] for o in objs if o["kind"] == "ServiceAccount"]
    for sa in accounts:
        for ns, group, res, verb, names in _granted(objs, sa):
            assert verb not in ("escalate", "bind", "impersonate"), (sa, res, verb)
            if group == "rbac.authorization.k8s.io":
                assert verb in READ, (sa, res, verb)  # never writes a role or binding
            assert res not in ("serviceaccounts/token", "pods/exec", "pods/attach", "nodes/proxy")
            if res == "secrets":
                assert ns == manifests.NAMESPACE, (sa, "secrets cluster-wide")
                # by name: a create cannot be limited so, and creates no one's Secret
                assert verb == "create" or names, (sa, verb, "every Secret")
    # Who has Secrets at all: the team webhook, its one certificate Secret.
    holders = {
        (sa, verb, names)
        for sa in accounts
        for _, _, res, verb, names in _granted(objs, sa)
        if res == "secrets"
    }
    assert holders == {(manifests.WEBHOOK, "create", ())} | {
        (manifests.WEBHOOK, v, ("gpuyard-teams-webhook-tls",))
        for v in ("get", "list", "watch", "update")
    }
    # Node health reads every pod (which nodes are idle) and writes only its test pods
    # and gpuyard's balloons, in gpuyard's namespace; it never evicts on a real cluster
    # (the taint manager does) and so needs no pod status.
    health = _granted(objs, "gpuyard-health")
    pod_rights = {(ns, v) for ns, _, r, v, _ in health if r.startswith("pods")}
    assert pod_rights == {
        ("", "list"),
        ("", "watch"),
        (manifests.NAMESPACE, "create"),
        (manifests.NAMESPACE, "delete"),
    }
    assert {r for ns, _, r, _, _ in health if ns == "" and r not in REVIEWS} == {
        "nodes",
        "nodes/status",
        "pods",
        "events",
        "namespaces",
    }
    # Identities that only look: the agent on every node and the people's viewer.
    for sa in (manifests.NETD, manifests.VIEWER):
        writes = {(g, r, v) for _, g, r, v, _ in _granted(objs, sa) if v not in READ}
        assert all(r in REVIEWS for _, r, _ in writes), (sa, writes)
    # netd (on every node) reads the published pod ranges by name in gpuyard's namespace,
    # no other ConfigMap; it needs no Node but its own, asked for by name.
    netd = _granted(objs, manifests.NETD)
    assert {(ns, v, names) for ns, _, r, v, names in netd if r == "configmaps"} == {
        (manifests.NAMESPACE, v, ("gpuyard-network-ranges",)) for v in ("get", "list", "watch")
    }
    assert {v for _, _, r, v, _ in netd if r == "nodes"} == READ
    # The controllers write that ConfigMap (a create cannot be limited by name).
    controllers = _granted(objs, "gpuyard-controllers")
    assert {v for _, _, r, v, _ in controllers if r == "configmaps"} >= {"create", "update"}
    # The viewer serves nothing, so it may not even ask about others' tokens.
    assert {v for _, _, _, v, _ in _granted(objs, manifests.VIEWER)} <= READ


def test_every_object_is_valid_against_the_kubernetes_1_37_schemas(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Checked by kubernetes-validate's own JSON schemas of 1.37 (strict: no unknown
    field), not by the embedded API server that compiles its checks from them."""
    import copy
    import functools

    import kubernetes_validate
    from kubernetes_validate import utils

    # Each call reads the schema files again: read each once.
    monkeypatch.setattr(utils, "schema_contents", functools.cache(utils.schema_contents))

    docs = [d for d in yaml.safe_load_all((ROOT / "deploy" / "gpuyard.yaml").read_text()) if d]
    objs = manifests.objects(image="registry.example/gpuyard:1", gpu_image="registry.example/g:1")
    for o in [*docs, *objs]:
        kubernetes_validate.validate(o, "1.37.0", strict=True)
    # The check bites: a misspelled field of a container is refused.
    bad = copy.deepcopy(next(o for o in objs if o["kind"] == "DaemonSet"))
    bad["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError, match="imagePullPolcy"):
        kubernetes_validate.validate(bad, "1.37.0", strict=True)


def test_netd_can_use_net_admin_and_its_image_has_the_tools() -> None:
    """netd writes nftables rules and tc qdiscs on the host. A capability added to a
    non-root container never reaches its effective set, so it runs as uid 0 with every
    capability dropped but NET_ADMIN; the control-plane Deployments stay the image's uid
    65532.
    Its image (the control-plane one) must carry libnftables and tc."""
    docs = {(d["kind"], d["metadata"]["name"]): d for d in manifests.objects()}
    netd = docs[("DaemonSet", "gpuyard-netd")]["spec"]["template"]["spec"]
    sc = netd["containers"][0]["securityContext"]
    assert sc["runAsUser"] == 0 and sc["runAsNonRoot"] is False
    assert sc["capabilities"] == {"drop": ["ALL"], "add": ["NET_ADMIN"]}
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
    assert netd["hostNetwork"] is True
    for (kind, name), d in docs.items():
        if kind == "Deployment":
            for c in d["spec"]["template"]["spec"]["containers"]:
                assert (c.get("securityContext") or {}).get("runAsUser") != 0, name
    assert netd["containers"][0]["image"] == manifests.IMAGE
    dockerfile = (ROOT / "deploy" / "images" / "Dockerfile").read_text()
    base = (ROOT / "deploy" / "images" / "debian-base.sh").read_text()
    for pkg in ("nftables", "iproute2"):  # libnftables1 comes with nftables; tc with iproute2
        assert f" {pkg}" in dockerfile.split("apt-get install", 1)[1].split("&&", 1)[0], pkg
        assert pkg in base.split("--include=", 1)[1].split()[0].split(","), pkg
