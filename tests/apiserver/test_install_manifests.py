"""Install manifests in the shape of well-known projects' (Kueue, LeaderWorkerSet and
JobSet, Volcano and Kubeflow Trainer: see tests/apiserver/manifests) apply with real
kubectl and its DEFAULT validation (no --validate=false), every object is stored, and a
second apply changes no object's spec (client-side apply computes its patches from the
OpenAPI the server publishes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from gpuyard.apiserver.testing import ServerProcess

from .test_kubectl import k

MANIFESTS = sorted((Path(__file__).parent / "manifests").glob("*.yaml"))


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.stem)
def test_apply_with_default_validation(apiserver: ServerProcess, path: Path) -> None:
    text = path.read_text()
    docs = [d for d in yaml.safe_load_all(text) if d]
    out = k(apiserver, "apply", "-f", "-", input=text).stdout
    assert out.count(" created") == len(docs), out

    def get(d: dict) -> dict:
        md = d["metadata"]
        group = d["apiVersion"].rsplit("/", 1)[0] if "/" in d["apiVersion"] else ""
        ref = f"{d['kind'].lower()}{'.' + group if group else ''}/{md['name']}"
        args = ["get", ref, "-o", "json"]
        if md.get("namespace"):
            args += ["-n", md["namespace"]]
        return json.loads(k(apiserver, *args).stdout)  # type: ignore[no-any-return]

    before = {}
    for d in docs:
        md = d["metadata"]
        got = get(d)
        before[(d["kind"], md["name"])] = got["metadata"].get("generation")
        assert got["kind"] == d["kind"] and got["metadata"]["name"] == md["name"]
        assert "kubectl.kubernetes.io/last-applied-configuration" in got["metadata"].get(
            "annotations", {}
        )
    k(apiserver, "apply", "-f", "-", input=text)
    for d in docs:
        assert get(d)["metadata"].get("generation") == before[(d["kind"], d["metadata"]["name"])]


def test_schema_violations_are_refused_with_default_validation(apiserver: ServerProcess) -> None:
    bad = """
apiVersion: batch/v1
kind: Job
metadata: {name: bad}
spec:
  backoffLimit: many
  template:
    spec:
      restartPolicy: Never
      containers: [{name: c, image: busybox}]
"""
    r = k(apiserver, "apply", "-f", "-", input=bad, check=False)
    assert r.returncode != 0 and "backoffLimit" in r.stderr, r.stderr
    assert k(apiserver, "get", "jobs", "-o", "name").stdout.strip() == ""
