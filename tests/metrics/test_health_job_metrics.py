"""On `gpuyard up` (its one metrics address), the health and TrainingJob series say
what happened: preflight results are counted by result with their durations (a slow
GPU fails, healthy nodes pass), an Xid 79 fault raises the unhealthy count and is
counted as a GPUHealthy=False verdict, and the restart it forces on a job's gang counts
once, under its cause; jobs are counted by phase and their time to run is observed."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from gpuyard.cluster.testing import wait_for
from tests.health.test_e2e import _start
from tests.jobs.test_e2e import job_yaml, submit
from tests.metrics.scrape import scrape, value


def _sum(s: dict[Any, float], name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, ls), v in s.items() if n == name and want <= set(ls))


def test_preflight_xid_and_job_restart_metrics(tmp_path: Path) -> None:
    c = _start(
        tmp_path, 3, ["--preflight", "--set", "health_max_share=1.0"], slow={"gpu-node-0001": 0.5}
    )
    try:
        url = c.metrics_url
        assert url.startswith("http://127.0.0.1:")

        def preflight_counted() -> Any:
            s = scrape(url)
            ok = value(s, "gpuyard_health_gpu_tests_total", kind="preflight", result="pass")
            bad = value(s, "gpuyard_health_gpu_tests_total", kind="preflight", result="fail")
            return s if (ok, bad) == (2, 1) else None

        s = wait_for(preflight_counted, 60, "two preflight passes and one failure counted")
        took = _sum(s, "gpuyard_health_gpu_test_duration_seconds_count", kind="preflight")
        assert took == 3
        # the failed node's verdict: GPUTestPassed=False, and it is tainted unhealthy

        def verdict() -> Any:
            s = scrape(url)
            return s if (
                value(s, "gpuyard_health_node_conditions", condition="GPUTestPassed",
                      status="False") == 1
                and value(s, "gpuyard_health_unhealthy_nodes") == 1
            ) else None  # fmt: skip

        s = wait_for(verdict, 30, "the failed preflight's verdict and taint")
        assert _sum(s, "gpuyard_health_verdicts_total", condition="GPUTestPassed",
                    status="False") == 1  # fmt: skip
        assert _sum(s, "gpuyard_trainingjob_restarts_total") == 0

        assert submit(c, tmp_path, job_yaml("llm", 1, backoffLimit=3)).returncode == 0

        def job() -> dict[str, Any]:
            out = c.kubectl("get", "trainingjob", "llm", "-o", "json").stdout
            return json.loads(out)

        def running() -> Any:
            st = job().get("status") or {}
            return st if st.get("phase") == "Running" else None

        try:
            wait_for(running, 40, "the job running")
        except AssertionError:
            raise AssertionError(
                f"job not running: {job().get('status')}\n{c.log()[-3000:]}"
            ) from None
        s = scrape(url)
        assert value(s, "gpuyard_trainingjobs", phase="Running") == 1
        assert value(s, "gpuyard_trainingjob_time_to_run_seconds_count") == 1
        pod = json.loads(c.kubectl("get", "pod", "llm-worker-0", "-o", "json").stdout)
        node = pod["spec"]["nodeName"]
        assert node != "gpu-node-0001"

        assert c.fault("gpu-xid", node, "--gpu", "3", "--xid", "79").returncode == 0

        def restarted() -> Any:
            s = scrape(url)
            return (
                s
                if value(s, "gpuyard_health_unhealthy_nodes") == 2
                and _sum(s, "gpuyard_trainingjob_restarts_total") >= 1
                else None
            )

        s = wait_for(restarted, 40, "the Xid node unhealthy and the job restarted")
        assert (job().get("status") or {}).get("restarts") == 1
        assert _sum(s, "gpuyard_health_verdicts_total", condition="GPUHealthy", status="False") == 1
        assert value(s, "gpuyard_health_node_conditions", condition="GPUHealthy",
                     status="False") == 1  # fmt: skip
        time.sleep(3)  # the gang comes back; its restart is still counted once
        s = scrape(url)
        assert value(s, "gpuyard_trainingjob_restarts_total", cause="node-unhealthy") == 1
        assert _sum(s, "gpuyard_trainingjob_restarts_total") == 1
        assert (value(s, "gpuyard_trainingjob_preemptions_total") or 0) == 0
    finally:
        c.kill()
