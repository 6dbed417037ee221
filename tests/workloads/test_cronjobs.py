"""batch/v1 CronJobs on `gpuyard up`, with kubectl and the official client: a run is
started when due as <cronjob>-<minutes> with the scheduled-timestamp annotation and its
status follows it; finished runs beyond the history limits are deleted; Forbid skips a
run while one is active and Replace replaces it; a bad schedule or time zone is a 422."""

from __future__ import annotations

import json
import time
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8sconfig

from gpuyard.cluster.testing import ClusterProcess, wait_for


def cronjob(name: str, schedule: str, seconds: float = 0.3, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": name},
        "spec": {
            "schedule": schedule,
            **spec,
            "jobTemplate": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "template": {
                        "metadata": {"annotations": {"gpuyard.io/sim-duration": str(seconds)}},
                        "spec": {
                            "restartPolicy": "Never",
                            "containers": [{"name": "main", "image": "busybox"}],
                        },
                    }
                },
            },
        },
    }


def get(c: ClusterProcess, *what: str) -> dict[str, Any]:
    return json.loads(c.kubectl("get", *what, "-o", "json").stdout)  # type: ignore[no-any-return]


def jobs_of(c: ClusterProcess, name: str) -> list[dict[str, Any]]:
    return [
        j
        for j in get(c, "jobs")["items"]
        if any(r.get("name") == name for r in j["metadata"].get("ownerReferences") or [])
    ]


def done(job: dict[str, Any]) -> bool:
    return any(
        c["type"] in ("Complete", "Failed") and c["status"] == "True"
        for c in (job.get("status") or {}).get("conditions") or []
    )


def reasons(c: ClusterProcess, name: str) -> set[str]:
    ev = get(
        c, "events", "--field-selector", f"involvedObject.kind=CronJob,involvedObject.name={name}"
    )
    return {e["reason"] for e in ev["items"]}


def test_due_run_starts_and_status_follows_it(cluster: ClusterProcess) -> None:
    batch = k8s.BatchV1Api(k8sconfig.new_client_from_config(config_file=cluster.kubeconfig))
    batch.create_namespaced_cron_job("default", cronjob("tick", "@every 2s"))
    (job,) = wait_for(lambda: jobs_of(cluster, "tick"), what="the first run's Job")
    cj = get(cluster, "cronjob", "tick")
    md = job["metadata"]
    stamp = md["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"]
    minutes = int(datetime_of(stamp) // 60)
    assert md["name"] == f"tick-{minutes}"
    assert md["labels"]["app"] == "tick"
    (owner,) = md["ownerReferences"]
    assert owner["kind"] == "CronJob" and owner["uid"] == cj["metadata"]["uid"]
    assert owner["controller"] is True
    cluster.kubectl("wait", "--for=condition=complete", f"job/{md['name']}", "--timeout=30s")

    def settled() -> dict[str, Any] | None:
        st = get(cluster, "cronjob", "tick").get("status") or {}
        return st if st.get("lastSuccessfulTime") and not st.get("active") else None

    st = wait_for(settled, what="lastSuccessfulTime with no active run")
    assert datetime_of(st["lastScheduleTime"]) >= datetime_of(stamp)
    assert {"SuccessfulCreate", "SawCompletedJob"} <= wait_for(
        lambda: (
            reasons(cluster, "tick") >= {"SuccessfulCreate", "SawCompletedJob"}
            and reasons(cluster, "tick")
        ),
        what="the CronJob's events",
    )
    # `kubectl get cronjob` prints its table from the same status
    head, line = cluster.kubectl("get", "cronjob", "tick").stdout.splitlines()
    assert head.split() == [
        "NAME",
        "SCHEDULE",
        "TIMEZONE",
        "SUSPEND",
        "ACTIVE",
        "LAST",
        "SCHEDULE",
        "AGE",
    ]
    assert line.split()[:6] == ["tick", "@every", "2s", "<none>", "False", "0"]
    head, line = cluster.kubectl("get", "job", md["name"]).stdout.splitlines()
    assert head.split() == ["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"]
    assert line.split()[:3] == [md["name"], "Complete", "1/1"]


def datetime_of(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def test_finished_runs_beyond_the_history_limits_are_deleted(cluster: ClusterProcess) -> None:
    ok = cronjob("ok", "0 0 1 1 *", suspend=True, successfulJobsHistoryLimit=2)
    bad = cronjob("bad", "0 0 1 1 *", suspend=True, failedJobsHistoryLimit=1)
    tmpl = bad["spec"]["jobTemplate"]["spec"]
    tmpl["backoffLimit"] = 0
    tmpl["template"]["metadata"]["annotations"]["gpuyard.io/sim-exit-code"] = "1"
    for body in (ok, bad):
        cluster.kubectl("create", "-f", "-", input=json.dumps(body))
    for i in range(4):
        for name in ("ok", "bad") if i < 3 else ("ok",):
            # `kubectl create job --from` makes a Job the CronJob controls
            cluster.kubectl("create", "job", f"{name}-{i}", f"--from=cronjob/{name}")
        time.sleep(1.1)  # a second apart, so which is oldest is plain

    def names(cj: str) -> set[str]:
        return {j["metadata"]["name"] for j in jobs_of(cluster, cj)}

    wait_for(lambda: names("ok") == {"ok-2", "ok-3"}, timeout=40, what="the 2 newest kept")
    wait_for(lambda: names("bad") == {"bad-2"}, timeout=40, what="the newest failed run kept")
    assert "SuccessfulDelete" in reasons(cluster, "ok")


def test_forbid_skips_a_run_while_one_is_active_and_replace_replaces_it(
    cluster: ClusterProcess,
) -> None:
    for name, policy in (("forbid", "Forbid"), ("replace", "Replace")):
        body = cronjob(name, "@every 2s", seconds=120, suspend=True, concurrencyPolicy=policy)
        cluster.kubectl("create", "-f", "-", input=json.dumps(body))
        cluster.kubectl("create", "job", f"{name}-manual", f"--from=cronjob/{name}")
    for name in ("forbid", "replace"):
        cluster.kubectl(
            "patch", "cronjob", name, "--type=merge", "-p", '{"spec":{"suspend":false}}'
        )

    def replaced() -> list[str]:
        names = [j["metadata"]["name"] for j in jobs_of(cluster, "replace") if not done(j)]
        return names if names and "replace-manual" not in names else []

    (run,) = wait_for(replaced, what="Replace to delete the running job and start its own")
    assert run.startswith("replace-") and run[len("replace-") :].isdigit()
    active = get(cluster, "cronjob", "replace")["status"]["active"]
    assert [a["name"] for a in active] == [run]
    wait_for(lambda: "JobAlreadyActive" in reasons(cluster, "forbid"), what="Forbid's event")
    assert [j["metadata"]["name"] for j in jobs_of(cluster, "forbid")] == ["forbid-manual"]
    st = get(cluster, "cronjob", "forbid").get("status") or {}
    assert "lastScheduleTime" not in st  # the skipped run did not count as started
    assert [a["name"] for a in st["active"]] == ["forbid-manual"]


def test_bad_schedule_or_time_zone_is_refused(cluster: ClusterProcess) -> None:
    out = cluster.kubectl(
        "create", "cronjob", "x", "--image=busybox", "--schedule=61 * * * *", check=False
    )
    assert out.returncode != 0
    assert 'spec.schedule: Invalid value: "61 * * * *"' in out.stderr
    body = cronjob("y", "0 * * * *", timeZone="Mars/Olympus")
    out = cluster.kubectl("create", "-f", "-", input=json.dumps(body), check=False)
    assert out.returncode != 0
    assert (
        'spec.timeZone: Invalid value: "Mars/Olympus": unknown time zone Mars/Olympus' in out.stderr
    )
    assert cluster.kubectl("get", "cronjobs", "-o", "name").stdout == ""
