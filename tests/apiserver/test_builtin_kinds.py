"""Every kind of a default Kubernetes 1.37 control plane is served, from the generated
kinds data (gpuyard.k8s.kinds), and real kubectl finds them in discovery."""

from __future__ import annotations

import json

from gpuyard.apiserver.resources import Registry
from gpuyard.apiserver.testing import ServerProcess
from gpuyard.k8s import kinds_gen

from .test_kubectl import k

WANTED = {
    ("", "v1", "pods"),
    ("", "v1", "replicationcontrollers"),
    ("apps", "v1", "statefulsets"),
    ("batch", "v1", "jobs"),
    ("batch", "v1", "cronjobs"),
    ("autoscaling", "v1", "horizontalpodautoscalers"),
    ("autoscaling", "v2", "horizontalpodautoscalers"),
    ("policy", "v1", "poddisruptionbudgets"),
    ("rbac.authorization.k8s.io", "v1", "clusterroles"),
    ("networking.k8s.io", "v1", "networkpolicies"),
    ("storage.k8s.io", "v1", "storageclasses"),
    ("coordination.k8s.io", "v1", "leases"),
    ("discovery.k8s.io", "v1", "endpointslices"),
    ("events.k8s.io", "v1", "events"),
    ("scheduling.k8s.io", "v1", "priorityclasses"),
    ("scheduling.k8s.io", "v1beta1", "workloads"),
    ("scheduling.k8s.io", "v1beta1", "podgroups"),
    ("resource.k8s.io", "v1", "resourceclaims"),
    ("admissionregistration.k8s.io", "v1", "validatingwebhookconfigurations"),
    ("admissionregistration.k8s.io", "v1", "validatingadmissionpolicies"),
    ("apiregistration.k8s.io", "v1", "apiservices"),
    ("authentication.k8s.io", "v1", "tokenreviews"),
    ("authorization.k8s.io", "v1", "subjectaccessreviews"),
    ("certificates.k8s.io", "v1", "certificatesigningrequests"),
    ("node.k8s.io", "v1", "runtimeclasses"),
    ("flowcontrol.apiserver.k8s.io", "v1", "flowschemas"),
}


JOB = """
apiVersion: batch/v1
kind: Job
metadata: {name: j1}
spec:
  template:
    spec:
      restartPolicy: Never
      containers: [{name: c, image: busybox}]
"""


def test_the_kinds_data_is_generated_from_the_sources() -> None:
    assert kinds_gen.main(["--check"]) == 0


def test_registry_serves_every_default_group_version() -> None:
    reg = Registry()
    have = {(r.group, r.version, r.plural) for r in reg.all()}
    assert WANTED <= have, WANTED - have
    # alpha versions are off on a default control plane, but for CompositePodGroup
    # (only in scheduling.k8s.io/v1alpha3), which gpuyard serves on purpose
    assert [(r.group, r.version, r.kind) for r in reg.all() if "alpha" in r.version] == [
        ("scheduling.k8s.io", "v1alpha3", "CompositePodGroup")
    ]
    deploy = reg.get("apps", "v1", "deployments")
    assert deploy is not None and deploy.short_names == ("deploy",)
    assert set(deploy.subresources) == {"scale", "status"}
    ns = reg.get("", "v1", "namespaces")
    assert ns is not None and "deletecollection" not in ns.verbs
    assert [v for g, v in reg.groups() if g == "autoscaling"] == [["v2", "v1"]]


def test_kubectl_api_resources_lists_the_builtin_kinds(apiserver: ServerProcess) -> None:
    out = k(apiserver, "api-resources", "-o", "wide").stdout
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    for name in (
        "jobs",
        "cronjobs",
        "validatingwebhookconfigurations",
        "apiservices",
        "workloads",
        "resourceclaims",
        "runtimeclasses",
        "flowschemas",
    ):
        assert name in rows, name
    assert "cj" in rows["cronjobs"].split()
    # a create-only kind refuses the verbs discovery does not list
    r = k(apiserver, "get", "tokenreviews", check=False)
    assert r.returncode != 0 and "MethodNotAllowed" in r.stderr, r.stderr
    # a kind gpuyard did not serve before is stored and read back like any other
    k(apiserver, "apply", "-f", "-", input=JOB)
    job = json.loads(k(apiserver, "get", "job", "j1", "-o", "json").stdout)
    assert (
        job["kind"] == "Job"
        and job["spec"]["template"]["spec"]["containers"][0]["image"] == "busybox"
    )


def test_aggregated_discovery(apiserver: ServerProcess) -> None:
    """kubectl reads aggregated discovery (apidiscovery.k8s.io/v2): /api and /apis, two
    requests instead of one per group-version, with every kind and subresource."""
    r = k(apiserver, "api-resources", "-v=6")
    urls = [line for line in r.stderr.splitlines() if 'url="' in line]
    assert len(urls) == 2 and "/api?" in urls[0] and "/apis?" in urls[1], urls
    raw = k(apiserver, "get", "--raw", "/apis").stdout  # plain JSON without the Accept
    assert json.loads(raw)["kind"] == "APIGroupList"

    import ssl
    import urllib.request

    from gpuyard.apiserver.discovery import AGGREGATED_V2

    req = urllib.request.Request(
        apiserver.url + "/apis",
        headers={
            "Accept": AGGREGATED_V2 + ",application/json",
            "Authorization": f"Bearer {apiserver.token}",
        },
    )
    ctx = ssl.create_default_context(cafile=apiserver.ca_file)
    with urllib.request.urlopen(req, context=ctx, timeout=30) as resp:
        assert resp.headers["Content-Type"] == AGGREGATED_V2
        doc = json.loads(resp.read())
    assert doc["kind"] == "APIGroupDiscoveryList"
    apps = next(g for g in doc["items"] if g["metadata"]["name"] == "apps")
    deploy = next(r for r in apps["versions"][0]["resources"] if r["resource"] == "deployments")
    assert deploy["scope"] == "Namespaced" and deploy["shortNames"] == ["deploy"]
    scale = next(s for s in deploy["subresources"] if s["subresource"] == "scale")
    assert scale["responseKind"] == {"group": "autoscaling", "version": "v1", "kind": "Scale"}
    autoscaling = next(g for g in doc["items"] if g["metadata"]["name"] == "autoscaling")
    assert [v["version"] for v in autoscaling["versions"]] == ["v2", "v1"]
