"""A TrainingJob with a mistake, as a user meets it on `gpuyard up`: `gpuyard submit`
names every wrong field, the API server refuses what the CRD's schema says is wrong
(kubectl prints the field), and a job that gets in but whose workers can never be
created (a PriorityClass that does not exist) says why in `gpuyard jobs`, its status
conditions and an Event `kubectl describe trainingjob` shows."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from gpuyard.cluster.testing import ClusterProcess
from tests.jobs.test_e2e import ARGS, get, job_yaml, submit, wait_for

CPU_LOTS = """\
apiVersion: gpuyard.io/v1alpha1
kind: TrainingJob
metadata: {name: bad-cpu}
spec:
  replicas: 2
  template:
    spec:
      containers:
      - name: train
        image: img
        resources: {requests: {cpu: lots}}
"""


def test_mistakes_are_named_by_submit_kubectl_describe_and_jobs(
    make_cluster: Callable[..., ClusterProcess], tmp_path: Path
) -> None:
    c = make_cluster(nodes=2, args=ARGS)

    # gpuyard submit: every error, one line each with its field, nothing sent.
    typo = job_yaml("typo", 4).replace("replicas: 4", "replica: 4")
    r = submit(c, tmp_path, typo)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 2, lines
    assert lines[0].endswith("spec.replicas: Required value")
    assert lines[1].endswith('spec.replica: unknown field "spec.replica"')
    assert "more)" not in r.stderr
    r = submit(c, tmp_path, CPU_LOTS.replace("replicas: 2", "replicas: lots"))
    assert r.returncode == 2
    assert "spec.replicas: Invalid value: 'lots'" in r.stderr
    assert "spec.template.spec.containers[0].resources.requests.cpu: Invalid value: 'lots'" in (
        r.stderr
    )
    r = submit(c, tmp_path, job_yaml("bad-prio", 1, priorityClassName="gpuyard-urgent"))
    assert r.returncode == 2
    assert "spec.priorityClassName: no PriorityClass named 'gpuyard-urgent'" in r.stderr
    assert "gpuyard-normal" in r.stderr, "the names that do exist"
    assert get(c, "trainingjobs")["items"] == []

    # kubectl: the API server enforces the CRD's schema and names the field.
    f = tmp_path / "cpu.yaml"
    f.write_text(CPU_LOTS)
    k = c.kubectl("apply", "-f", str(f), check=False)
    assert k.returncode != 0
    assert "spec.template.spec.containers[0].resources.requests.cpu" in k.stderr, k.stderr
    assert get(c, "trainingjobs")["items"] == []

    # What no schema can say: the PriorityClass does not exist. kubectl creates the job
    # (as a real cluster would); the job says why its workers cannot be created.
    f = tmp_path / "prio.yaml"
    f.write_text(job_yaml("bad-prio", 1, priorityClassName="gpuyard-urgent"))
    c.kubectl("apply", "-f", str(f))

    def refused() -> dict[str, object] | None:
        st = get(c, "trainingjob", "bad-prio").get("status") or {}
        return st if st.get("reason") == "WorkersRefused" else None

    st = wait_for(refused, 60)
    assert st["phase"] == "Pending"
    assert "spec.priorityClassName" in str(st["message"])
    assert "gpuyard-urgent" in str(st["message"])
    conds = {x["type"]: x for x in st["conditions"]}  # type: ignore[attr-defined]
    assert conds["Scheduled"]["status"] == "False"
    assert conds["Scheduled"]["reason"] == "WorkersRefused"
    assert get(c, "pods", "-l", "gpuyard.io/job=bad-prio")["items"] == []

    def described() -> str | None:
        out = c.kubectl("describe", "trainingjob", "bad-prio").stdout
        return out if "WorkersRefused" in out.split("Events:")[-1] else None

    out = wait_for(described, 30)
    events = out.split("Events:")[-1]
    assert "spec.priorityClassName" in events and "gpuyard-urgent" in events, out
    jobs = c.gpuyard("jobs", "--kubeconfig", c.kubeconfig).stdout
    row = next(line for line in jobs.splitlines() if line.startswith("bad-prio"))
    assert "spec.priorityClassName" in row, jobs

    # One Event for the one cause, however often the workers are tried again.
    evs = json.loads(
        c.kubectl(
            "get", "events", "--field-selector", "involvedObject.name=bad-prio", "-o", "json"
        ).stdout
    )["items"]
    assert [e["reason"] for e in evs] == ["WorkersRefused"], evs

    # Fixing the job (the class now exists) lets its workers be created.
    c.kubectl("create", "priorityclass", "gpuyard-urgent", "--value=2000", "--description=urgent")
    c.kubectl("annotate", "trainingjob", "bad-prio", "fixed=yes")
    c.kubectl(
        "patch", "trainingjob", "bad-prio", "--type=merge", "-p", '{"spec":{"backoffLimit":4}}'
    )
    wait_for(lambda: get(c, "pods", "-l", "gpuyard.io/job=bad-prio")["items"], 60)
