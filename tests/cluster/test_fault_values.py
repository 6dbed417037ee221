"""A fault's values are checked where it is applied too: a fault ConfigMap written with
kubectl (not through `gpuyard fault`) holding an Xid outside NVIDIA's range, a GPU that
is not an index or a speed factor above 1 is refused, its result says why, the host is
left as it was, and faults after it still apply."""

from __future__ import annotations

import json
from collections.abc import Callable

from gpuyard.cluster.testing import ClusterProcess, wait_for


def _record(c: ClusterProcess, name: str, data: dict[str, str]) -> None:
    cm = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": "gpuyard-system",
            "labels": {"gpuyard.io/fault": data["kind"], "gpuyard.io/node": data["node"]},
        },
        "data": data,
    }
    c.kubectl("apply", "-f", "-", input=json.dumps(cm))


def _result(c: ClusterProcess, name: str) -> str:
    r = c.kubectl(
        "get",
        "configmap",
        name,
        "-n",
        "gpuyard-system",
        "-o",
        "jsonpath={.metadata.annotations.gpuyard\\.io/fault-result}",
        check=False,
    )
    return r.stdout


def test_bad_fault_values_are_refused_by_the_cluster(
    make_cluster: Callable[..., ClusterProcess],
) -> None:
    c = make_cluster(nodes=1, args=["--components", "none"])
    node = c.kubectl("get", "nodes", "-o", "name").stdout.split()[0].split("/")[1]
    kern_log = c.data_dir / "hosts" / node / "kern.log"
    before = kern_log.read_text() if kern_log.exists() else ""
    cases = {
        "bad-xid": (
            {"kind": "gpu-xid", "xid": "12345"},
            "gpu-xid xid=12345: 12345 is out of range",
        ),
        "bad-gpu": ({"kind": "gpu-xid", "gpu": "abc"}, "gpu-xid gpu=abc: 'abc' is not an integer"),
        "bad-factor": ({"kind": "slow-gpu", "factor": "2"}, "slow-gpu factor=2: 2 is out of range"),
    }
    for name, (data, _) in cases.items():
        _record(c, name, {**data, "node": node})
    for name, (_, says) in cases.items():
        got = wait_for(lambda n=name: _result(c, n), 30, f"the result of fault {name}")
        assert got.startswith("error: ") and says in got, got
    assert (kern_log.read_text() if kern_log.exists() else "") == before
    gpus = json.loads((c.data_dir / "hosts" / node / "gpus.json").read_text())["gpus"]
    assert all(g["perf_factor"] == 1.0 for g in gpus)
    # The applier carries on: a good fault after the bad ones is applied.
    r = c.fault("gpu-xid", node, "--xid", "79")
    assert "Xid" in r.stdout and ": 79," in r.stdout, r.stdout + r.stderr
    listed = c.gpuyard("fault", "list", "--kubeconfig", c.kubeconfig)
    assert "12345 is out of range" in listed.stdout, listed.stdout
