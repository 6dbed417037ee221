"""The team webhook's metrics, scraped over HTTP after real AdmissionReviews over HTTPS:
each answer is timed under its operation, and each refusal is counted under its reason
(a bad bandwidth annotation, another team's toleration, no team table yet)."""

from __future__ import annotations

import ssl
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from gpuyard import names
from gpuyard.kube import metrics
from gpuyard.network import bandwidth
from gpuyard.teams.webhook import WebhookServer, teams_by_namespace
from tests.metrics.scrape import scrape, value

TEAMS = [{"metadata": {"name": "a"}, "spec": {"namespaces": ["ns-a"]}}]
REFUSALS = "gpuyard_webhook_admission_refusals_total"
COUNT = "gpuyard_webhook_admission_duration_seconds_count"


def review(ns: str, md: dict[str, Any], spec: dict[str, Any]) -> bytes:
    obj = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", **md}, "spec": spec}
    return orjson.dumps(
        {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": str(uuid.uuid4()),
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "operation": "CREATE",
                "namespace": ns,
                "object": obj,
            },
        }
    )


async def test_admissions_are_timed_and_refusals_counted_by_reason(tmp_path: Path) -> None:
    server = WebhookServer(teams_by_namespace(TEAMS).get, tmp_path / "certs")
    url = await server.start()
    http, port = metrics.serve(0, "127.0.0.1")
    murl = f"http://127.0.0.1:{port}/metrics"
    try:
        before = scrape(murl)

        def delta(name: str, **labels: str) -> float:
            now = value(scrape(murl), name, **labels) or 0.0
            return now - (value(before, name, **labels) or 0.0)

        ctx = ssl.create_default_context(cadata=server.ca_pem.decode())
        async with aiohttp.ClientSession() as s:

            async def post(body: bytes) -> int:
                async with s.post(url, data=body, ssl=ctx) as r:
                    return r.status

            assert await post(review("ns-a", {}, {"containers": []})) == 200  # admitted
            other = {"tolerations": [{"key": names.TAINT_TEAM, "value": "b"}]}
            assert await post(review("ns-a", {}, other)) == 200  # refused in the review
            bad_bw = {"annotations": {bandwidth.ANNOTATION: "fast"}}
            assert await post(review("ns-a", bad_bw, {"containers": []})) == 200
            server.ready = False
            assert await post(review("ns-a", {}, {"containers": []})) == 503
        assert delta(COUNT, operation="CREATE") == 3
        assert delta(COUNT, operation="unknown") == 1
        assert delta(REFUSALS, reason="other-team-toleration") == 1
        assert delta(REFUSALS, reason="bad-bandwidth-annotation") == 1
        assert delta(REFUSALS, reason="no-team-table") == 1
        assert delta(REFUSALS, reason="any-team-toleration") == 0
        s1 = scrape(murl)
        assert (value(s1, REFUSALS, reason="any-team-toleration")) is not None  # made up front
        inf = value(s1, "gpuyard_webhook_admission_duration_seconds_bucket",
                    operation="CREATE", le="+Inf")  # fmt: skip
        assert inf == value(s1, COUNT, operation="CREATE")
    finally:
        http.shutdown()
        await server.stop()
