# mypy: disable-error-code="union-attr,index,attr-defined,arg-type,assignment,misc,call-overload"
"""Server-side apply and field ownership against a running API server: real kubectl
with two field managers (conflicts, --force-conflicts, removal of fields an applier
stops applying), client-side apply and other updates as managers, the official Python
client's apply, and the Status of a conflict and of bad options over raw HTTP."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from typing import Any

from kubernetes import client, config
from kubernetes.client.rest import ApiException

from gpuyard.apiserver.testing import ServerProcess

KUBECTL = shutil.which("kubectl", path=os.path.dirname(sys.executable)) or "kubectl"

DEPLOY = """
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {{app: web{extra}}}
spec:
  {replicas}
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers:
      - name: main
        image: {image}
        ports: [{{containerPort: 80}}]
"""


def deploy(replicas: int | None = 2, image: str = "nginx:1", extra: str = "") -> str:
    return DEPLOY.format(
        replicas=f"replicas: {replicas}" if replicas is not None else "",
        image=image,
        extra=extra,
    )


def k(srv: ServerProcess, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [KUBECTL, "--kubeconfig", srv.kubeconfig, *args],
        capture_output=True,
        text=True,
        input=input,
        timeout=60,
    )


def ok(srv: ServerProcess, *args: str, input: str | None = None) -> str:
    r = k(srv, *args, input=input)
    assert r.returncode == 0, f"kubectl {' '.join(args)}: {r.stderr}"
    return r.stdout


def shown(srv: ServerProcess) -> Any:
    return json.loads(ok(srv, "get", "deploy", "web", "-o", "json", "--show-managed-fields"))


def entry(obj: Any, manager: str) -> Any:
    found = [e for e in obj["metadata"].get("managedFields") or [] if e["manager"] == manager]
    assert len(found) == 1, obj["metadata"].get("managedFields")
    return found[0]


def apply(
    srv: ServerProcess, manager: str, text: str, *more: str
) -> subprocess.CompletedProcess[str]:
    return k(
        srv, "apply", "--server-side", f"--field-manager={manager}", *more, "-f", "-", input=text
    )


def test_two_managers_conflict_force_and_removal(apiserver: ServerProcess) -> None:
    s = apiserver
    r = apply(s, "team-a", deploy(2, extra=", tier: front"))
    assert r.returncode == 0, r.stderr
    obj = shown(s)
    a = entry(obj, "team-a")
    assert a["operation"] == "Apply" and a["fieldsType"] == "FieldsV1"
    assert a["apiVersion"] == "apps/v1" and a["time"].endswith("Z")
    fields = a["fieldsV1"]
    assert fields["f:spec"]["f:replicas"] == {}
    main = fields["f:spec"]["f:template"]["f:spec"]["f:containers"]['k:{"name":"main"}']
    assert main["."] == {} and "f:image" in main and "f:name" in main
    assert set(main["f:ports"]) == {'k:{"containerPort":80,"protocol":"TCP"}'}
    assert fields["f:metadata"]["f:labels"] == {"f:app": {}, "f:tier": {}}
    assert "f:name" not in fields["f:metadata"]  # nobody owns the name

    # A second manager changing a field team-a owns is refused, and nothing changes.
    r = apply(s, "team-b", deploy(5))
    assert r.returncode != 0
    assert 'Apply failed with 1 conflict: conflict with "team-a": .spec.replicas' in r.stderr, (
        r.stderr
    )
    assert shown(s)["spec"]["replicas"] == 2
    # Two conflicts are listed by manager, one field a line.
    r = apply(s, "team-b", deploy(5, image="nginx:2"))
    assert r.returncode != 0
    assert 'Apply failed with 2 conflicts: conflicts with "team-a":' in r.stderr
    assert '- .spec.template.spec.containers[name="main"].image' in r.stderr
    assert "- .spec.replicas" in r.stderr

    # Applying the same value is no conflict: both managers own the field.
    assert apply(s, "team-b", deploy(2)).returncode == 0
    obj = shown(s)
    assert "f:replicas" in entry(obj, "team-a")["fieldsV1"]["f:spec"]
    assert "f:replicas" in entry(obj, "team-b")["fieldsV1"]["f:spec"]

    # --force-conflicts moves the field.
    r = apply(s, "team-b", deploy(5), "--force-conflicts")
    assert r.returncode == 0, r.stderr
    obj = shown(s)
    assert obj["spec"]["replicas"] == 5
    assert "f:replicas" not in entry(obj, "team-a")["fieldsV1"]["f:spec"]
    assert "f:replicas" in entry(obj, "team-b")["fieldsV1"]["f:spec"]

    # team-a stops applying replicas (team-b owns it: kept) and the tier label (only
    # team-a owned it: removed).
    assert apply(s, "team-a", deploy(None)).returncode == 0
    obj = shown(s)
    assert obj["spec"]["replicas"] == 5
    assert obj["metadata"]["labels"] == {"app": "web"}
    assert "f:tier" not in entry(obj, "team-a")["fieldsV1"]["f:metadata"]["f:labels"]

    # Re-applying the same configuration writes nothing.
    rv = obj["metadata"]["resourceVersion"]
    assert apply(s, "team-a", deploy(None)).returncode == 0
    assert shown(s)["metadata"]["resourceVersion"] == rv


def test_updates_are_managers_too(apiserver: ServerProcess) -> None:
    s = apiserver
    # Client-side apply records its own manager, as an Update.
    ok(s, "apply", "-f", "-", input=deploy(2))
    obj = shown(s)
    csa = entry(obj, "kubectl-client-side-apply")
    assert csa["operation"] == "Update" and "f:replicas" in csa["fieldsV1"]["f:spec"]
    # kubectl patch and label are managers of what they change.
    ok(s, "patch", "deploy", "web", "-p", '{"spec":{"replicas":3}}')
    ok(s, "label", "deploy", "web", "owner=ops")
    obj = shown(s)
    assert "f:replicas" not in entry(obj, "kubectl-client-side-apply")["fieldsV1"]["f:spec"]
    assert "f:replicas" in entry(obj, "kubectl-patch")["fieldsV1"]["f:spec"]
    label = entry(obj, "kubectl-label")
    assert label["fieldsV1"] == {"f:metadata": {"f:labels": {"f:owner": {}}}}
    # An applier changing the label conflicts with the Update manager, named with its
    # apiVersion and time as kube-apiserver does.
    r = apply(s, "team-a", deploy(3, extra=", owner: ml"))
    assert r.returncode != 0
    assert (
        f'conflict with "kubectl-label" using apps/v1 at {label["time"]}: .metadata.labels.owner'
        in r.stderr
    ), r.stderr
    r = apply(s, "team-a", deploy(3, extra=", owner: ml"), "--force-conflicts")
    assert r.returncode == 0, r.stderr
    obj = shown(s)
    assert obj["metadata"]["labels"]["owner"] == "ml"
    assert all(e["manager"] != "kubectl-label" for e in obj["metadata"]["managedFields"])


def _raw(srv: ServerProcess, method: str, path: str, body: bytes, ctype: str) -> tuple[int, Any]:
    req = urllib.request.Request(
        srv.url + path, data=body, method=method, headers={**srv.headers, "Content-Type": ctype}
    )
    ctx = srv.ssl_context()
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_conflict_status_and_bad_options_over_http(apiserver: ServerProcess) -> None:
    s = apiserver
    base = "/apis/apps/v1/namespaces/default/deployments/web"
    body = json.dumps(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "main", "image": "nginx"}]},
                },
            },
        }
    ).encode()
    apply_ct = "application/apply-patch+yaml"
    code, st = _raw(s, "PATCH", base, body, apply_ct)
    assert code == 422 and st["reason"] == "Invalid"
    assert st["details"]["causes"][0]["field"] == "fieldManager"
    assert "fieldManager: Required value: is required for apply patch" in st["message"]
    code, st = _raw(s, "PATCH", base + "?fieldManager=" + "x" * 129, body, apply_ct)
    assert code == 422 and st["details"]["causes"][0]["field"] == "fieldManager"
    code, _ = _raw(s, "PATCH", base + "?fieldManager=one", body, apply_ct)
    assert code == 201 or code == 200
    code, st = _raw(
        s, "PATCH", base + "?force=true", b'{"spec":{"replicas":2}}', "application/merge-patch+json"
    )
    assert code == 422 and st["details"]["causes"][0]["field"] == "force"
    # Duplicate keys in an associative list of the applied configuration.
    dup = json.loads(body)
    dup["spec"]["template"]["spec"]["containers"].append({"name": "main", "image": "other"})
    code, st = _raw(s, "PATCH", base + "?fieldManager=one", json.dumps(dup).encode(), apply_ct)
    assert code == 422 and st["reason"] == "Invalid", st
    assert st["details"]["causes"][0]["field"] == "spec.template.spec.containers"
    # The conflict Status: 409 Conflict, one cause per field naming the manager.
    other = json.loads(body)
    other["spec"]["replicas"] = 4
    code, st = _raw(s, "PATCH", base + "?fieldManager=two", json.dumps(other).encode(), apply_ct)
    assert code == 409 and st["reason"] == "Conflict" and st["kind"] == "Status"
    assert st["details"]["causes"] == [
        {
            "reason": "FieldManagerConflict",
            "message": 'conflict with "one"',
            "field": ".spec.replicas",
        }
    ]
    # The official client's apply (server-side) with force.
    c = config.new_client_from_config(config_file=s.kubeconfig)
    try:
        apps = client.AppsV1Api(c)
        try:
            apps.patch_namespaced_deployment(
                "web", "default", other, field_manager="two", _content_type=apply_ct
            )
            raise AssertionError("the conflicting apply was accepted")
        except ApiException as exc:
            assert exc.status == 409 and ".spec.replicas" in exc.body
        d = apps.patch_namespaced_deployment(
            "web", "default", other, field_manager="two", force=True, _content_type=apply_ct
        )
        assert d.spec.replicas == 4
        owners = {m.manager: m.operation for m in d.metadata.managed_fields}
        assert owners == {"one": "Apply", "two": "Apply"}
        # An update through the client is owned by its user agent's product.
        d.spec.replicas = 6
        d = apps.replace_namespaced_deployment("web", "default", d)
        assert any(m.operation == "Update" for m in d.metadata.managed_fields)
    finally:
        c.close()
