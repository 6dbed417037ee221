"""The Grafana dashboard in deploy/ queries only series the components export (as a
running `gpuyard up` serves them), and the manifests' metrics Services reach every
metrics port that a container declares, with a scrape job that finds them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families

from gpuyard import grafana, manifests
from gpuyard.cluster.testing import run_cluster_process, wait_for
from tests.metrics.test_up_metrics import FAST

ROOT = Path(__file__).resolve().parents[2]
SUFFIXES = ("_bucket", "_count", "_sum", "_total")


def _family(series: str) -> str:
    for s in SUFFIXES:
        if series.endswith(s):
            return series[: -len(s)]
    return series


def test_deploy_dashboard_is_the_generated_one() -> None:
    doc = json.loads((ROOT / "deploy" / "grafana-dashboard.json").read_text())
    assert doc == grafana.dashboard()
    assert len(doc["panels"]) >= 10
    assert all(p["targets"] and p["title"] for p in doc["panels"])


def test_every_queried_metric_is_exported(tmp_path: Path) -> None:
    queried = {_family(m) for e in grafana.exprs() for m in re.findall(r"\bgpuyard_[a-z0-9_]+", e)}
    assert len(queried) >= 10
    import urllib.request

    with run_cluster_process(tmp_path / "c", nodes=2, args=[*FAST, "--balloons"]) as c:

        def families() -> set[str] | None:
            with urllib.request.urlopen(c.metrics_url, timeout=10) as r:
                text = r.read().decode()
            got = {f.name for f in text_string_to_metric_families(text)}
            return got if queried <= got else None

        try:
            wait_for(families, 30, "every queried family")
        except AssertionError:
            with urllib.request.urlopen(c.metrics_url, timeout=10) as r:
                text = r.read().decode()
            got = {f.name for f in text_string_to_metric_families(text)}
            raise AssertionError(f"not exported: {sorted(queried - got)}") from None


def test_metrics_services_reach_every_metrics_port() -> None:
    objs = manifests.objects()
    ports: dict[str, set[tuple[str, int]]] = {}  # pod label app -> declared ports
    declared = 0
    for o in objs:
        if o["kind"] not in ("Deployment", "DaemonSet"):
            continue
        tmpl = o["spec"]["template"]
        for ctr in tmpl["spec"]["containers"]:
            cmd = ctr.get("command") or []
            mp = [p for p in ctr.get("ports", []) if p["name"].startswith("metrics")]
            if "--metrics-port" in cmd:
                port = int(cmd[cmd.index("--metrics-port") + 1])
                assert [p["containerPort"] for p in mp] == [port], ctr["name"]
            for p in mp:
                declared += 1
                for k, v in tmpl["metadata"]["labels"].items():
                    ports.setdefault(f"{k}={v}", set()).add((p["name"], p["containerPort"]))
    services = [o for o in objs if o["kind"] == "Service" and "metrics" in o["metadata"]["name"]]
    reached = 0
    for svc in services:
        assert svc["metadata"]["labels"]["gpuyard.io/metrics"] == "true"
        ((k, v),) = svc["spec"]["selector"].items()
        have = ports[f"{k}={v}"]
        for p in svc["spec"]["ports"]:
            assert (p["targetPort"], p["port"]) in have, (svc["metadata"]["name"], p)
            reached += 1
    assert reached == declared
    (cm,) = [o for o in objs if o["metadata"]["name"] == manifests.SCRAPE_CONFIGMAP]
    (job,) = yaml.safe_load(cm["data"]["scrape-configs.yaml"])
    assert job["kubernetes_sd_configs"][0]["role"] == "endpoints"
    keep = {
        tuple(r["source_labels"]): r["regex"]
        for r in job["relabel_configs"]
        if r.get("action") == "keep"
    }
    assert keep[("__meta_kubernetes_service_label_gpuyard_io_metrics",)] == "true"
