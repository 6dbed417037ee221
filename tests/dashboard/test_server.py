"""The dashboard that `gpuyard up` serves, over raw HTTP: who may look (the API
server's answer for the caller's token), sessions, the snapshot, a node's details, and
the server-sent event stream following a change made with real kubectl."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from gpuyard.cluster.testing import run_cluster_process, wait_for
from tests.dashboard import browser
from tests.dashboard.common import FAST, admin_token, banner_link, dashboard_url, get
from tests.metrics.scrape import scrape, value


def test_the_dashboard_of_gpuyard_up(tmp_path: Path) -> None:
    with run_cluster_process(tmp_path / "c", nodes=3, args=FAST) as c:
        base = dashboard_url(c)
        assert base.startswith("http://127.0.0.1:")  # loopback by default
        link = banner_link(c)
        token = admin_token(c)
        # the link signs in as the read-only gpuyard-viewer; the token rides in the
        # fragment only (never sent to a server, never in its logs)
        assert link.startswith(f"{base}#token=")
        viewer = link.split("#token=", 1)[1]
        assert viewer and viewer != token
        status, body, _ = get(base + "api/whoami", viewer)
        assert (status, body["user"]) == (
            200,
            "system:serviceaccount:gpuyard-system:gpuyard-viewer",
        )
        can = c.kubectl("auth", "can-i", "--token", viewer, "delete", "pods", "-A", check=False)
        assert can.stdout.strip() == "no"  # it may look, not touch
        can = c.kubectl("auth", "can-i", "--token", viewer, "list", "trainingjobs", "-A")
        assert can.stdout.strip() == "yes"

        # the page itself holds no data and needs no token; every /api path does
        with urllib.request.urlopen(base, timeout=10) as r:
            page = r.read().decode()
            assert "<canvas" in page and r.headers["Content-Security-Policy"]
        for path in ("api/snapshot", "api/events", "api/nodes/gpu-node-0001", "api/whoami"):
            status, body, _ = get(base + path)
            assert status == 401, path
            assert get(base + path, "not-a-token")[0] == 401
        # a real identity that may not list nodes is refused with 403, saying why
        c.kubectl("create", "serviceaccount", "nobody", "-n", "default")
        sa_token = c.kubectl("create", "token", "nobody", "-n", "default").stdout.strip()
        status, body, _ = get(base + "api/snapshot", sa_token)
        assert status == 403
        assert "system:serviceaccount:default:nobody" in body["error"]
        # ... and may look once RBAC lets it (verdicts are cached per token for 30 s:
        # a new token gets a fresh one)
        c.kubectl(
            "create", "clusterrole", "viewer", "--verb=list,watch,get", "--resource=nodes,pods"
        )
        c.kubectl(
            "create", "clusterrolebinding", "viewer", "--clusterrole=viewer",
            "--serviceaccount=default:nobody",
        )  # fmt: skip
        sa_token2 = c.kubectl("create", "token", "nobody", "-n", "default").stdout.strip()
        status, body, _ = get(base + "api/whoami", sa_token2)
        assert (status, body["user"]) == (200, "system:serviceaccount:default:nobody")

        status, snap, _ = get(base + "api/snapshot", token)
        assert status == 200
        assert sorted(n["name"] for n in snap["nodes"]) == [
            "gpu-node-0000", "gpu-node-0001", "gpu-node-0002",
        ]  # fmt: skip
        assert {n["state"] for n in snap["nodes"]} == {"free"}
        assert get(base + "api/nodes/no-such-node", token)[0] == 404
        status, detail, _ = get(base + "api/nodes/gpu-node-0002", token)
        assert status == 200 and {"Ready", "GPUHealthy"} <= {
            x["type"] for x in detail["conditions"]
        }

        # a session: the cookie is an opaque id, HttpOnly and SameSite=Strict
        status, body, headers = get(base + "api/session", token, method="POST")
        assert status == 200 and body["user"] == "gpuyard-admin"
        cookie = headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and token not in cookie
        pair = cookie.split(";")[0]
        assert get(base + "api/snapshot", headers={"Cookie": pair})[0] == 200
        get(base + "api/session", method="DELETE", headers={"Cookie": pair})
        assert get(base + "api/snapshot", headers={"Cookie": pair})[0] == 401

        # the stream: a snapshot, then the change kubectl makes, as it happens
        req = urllib.request.Request(
            base + "api/events", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(req, timeout=30) as stream:
            assert stream.headers["Content-Type"].startswith("text/event-stream")
            first = read_event(stream)
            assert first[0] == "snapshot" and len(first[1]["nodes"]) == 3
            t0 = time.monotonic()
            c.kubectl("cordon", "gpu-node-0002")
            while True:
                name, data = read_event(stream)
                row = (data.get("nodes") or {}).get("gpu-node-0002") if name == "delta" else None
                if row and row["state"] == "cordoned":
                    break
                assert time.monotonic() - t0 < 10, "no cordoned delta within 10 s"
            # the process's metrics count the browser following the stream
            m = scrape(c.metrics_url)
            assert value(m, "gpuyard_dashboard_clients") == 1
            assert value(m, "gpuyard_dashboard_rows", section="nodes") == 3
            assert value(m, "gpuyard_dashboard_credential_reviews_total") >= 3
            assert value(m, "gpuyard_dashboard_resyncs_total") == 0
        wait_for(
            lambda: value(scrape(c.metrics_url), "gpuyard_dashboard_clients") == 0,
            10,
            "the closed stream to be forgotten",
        )


def read_event(stream: object) -> tuple[str, dict]:  # type: ignore[type-arg]
    """One server-sent event: (event name, JSON data); comments are skipped."""
    name, data = "message", ""
    while True:
        line = stream.readline().decode()  # type: ignore[attr-defined]
        assert line, "the stream ended"
        line = line.rstrip("\n")
        if line == "":
            if data:
                return name, json.loads(data)
            continue
        if line.startswith(":") or line.startswith("retry:"):
            continue
        field, _, value = line.partition(": ")
        if field == "event":
            name = value
        elif field == "data":
            data += value


def test_gpuyard_dashboard_command(tmp_path: Path) -> None:
    """`gpuyard dashboard` on a kubeconfig: its own server, the same checks; a kind the
    cluster does not serve (here: TrainingJobs, their CRD deleted) is left out quietly."""
    with run_cluster_process(tmp_path / "c", nodes=2, args=[*FAST, "--dashboard-port", "-1"]) as c:
        assert json.loads((c.data_dir / "up.json").read_text())["dashboard"] == ""
        assert "dashboard (signs you in)" not in c.log()
        c.kubectl("delete", "crd", "trainingjobs.gpuyard.io")
        wait_for(
            lambda: (
                "trainingjobs" not in c.kubectl("api-resources", "--api-group=gpuyard.io").stdout
            ),
            30,
            "the TrainingJob CRD to be gone",
        )
        log = tmp_path / "dashboard.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "gpuyard.cli",
                    "dashboard",
                    "--kubeconfig",
                    c.kubeconfig,
                    "--port",
                    "0",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:

            def url() -> str | None:
                m = re.search(
                    r"gpuyard dashboard of \S+: (http://127\.0\.0\.1:\d+/)", log.read_text()
                )
                return m.group(1) if m else None

            base = wait_for(url, 30, "the dashboard's address")
            assert get(base + "api/snapshot")[0] == 401
            status, snap, _ = get(base + "api/snapshot", admin_token(c))
            assert status == 200 and len(snap["nodes"]) == 2
            # its metrics, behind the same sign-in
            assert get(base + "metrics")[0] == 401
            req = urllib.request.Request(
                base + "metrics", headers={"Authorization": f"Bearer {admin_token(c)}"}
            )
            text = urllib.request.urlopen(req, timeout=10).read().decode()
            assert 'gpuyard_dashboard_rows{section="nodes"} 2.0' in text
            assert (
                'gpuyard_api_requests_total{code="200",component="dashboard",verb="list"}' in text
            )
            assert snap["jobs"] == [] and "informer" not in log.read_text()  # no retry noise
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            assert proc.wait(15) == 0, log.read_text()


def test_gpuyard_dashboard_refuses_a_busy_port(tmp_path: Path) -> None:
    with socket.socket() as s, run_cluster_process(tmp_path / "c", nodes=1, args=FAST) as c:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = str(s.getsockname()[1])
        r = c.gpuyard("dashboard", "--kubeconfig", c.kubeconfig, "--port", port, timeout=60)
        assert r.returncode == 1
        assert (
            r.stderr.strip()
            .splitlines()[-1]
            .startswith(f"gpuyard: error: cannot listen on 127.0.0.1:{port}")
        )


TEAMS = """
apiVersion: v1
kind: Namespace
metadata: {name: ml-vision}
---
apiVersion: v1
kind: Namespace
metadata: {name: ml-nlp}
---
apiVersion: gpuyard.io/v1alpha1
kind: Team
metadata: {name: vision}
spec: {namespaces: [ml-vision], capacity: {gpu: 1}}
---
apiVersion: gpuyard.io/v1alpha1
kind: Team
metadata: {name: nlp}
spec: {namespaces: [ml-nlp], capacity: {gpu: 1}, borrow: true}
"""


def low_pod(i: int) -> str:
    return f"""
apiVersion: v1
kind: Pod
metadata: {{name: low-{i}, namespace: ml-nlp}}
spec:
  priorityClassName: gpuyard-low
  containers: [{{name: c, image: trainer, resources: {{limits: {{nvidia.com/gpu: 8}}}}}}]
"""


def test_teams_and_borrowed_nodes(tmp_path: Path) -> None:
    with run_cluster_process(tmp_path / "c", nodes=3, args=FAST) as c:
        base, token = dashboard_url(c), admin_token(c)
        c.kubectl("apply", "-f", "-", input=TEAMS)

        def snap() -> dict:  # type: ignore[type-arg]
            return get(base + "api/snapshot", token)[1]

        def teams_assigned() -> dict | None:  # type: ignore[type-arg]
            s = snap()
            t = {r["name"]: r for r in s["teams"]}
            if {"vision", "nlp"} <= set(t) and t["vision"]["assigned"] == t["nlp"]["assigned"] == 1:
                return s
            return None

        s = wait_for(teams_assigned, 30, "both teams' nodes assigned")
        states = {n["team"]: n["state"] for n in s["nodes"]}
        assert states == {"vision": "team", "nlp": "team", "": "free"}
        # nlp's low-priority work fills its node and the shared one, then borrows vision's
        for i in range(3):
            c.kubectl("apply", "-f", "-", input=low_pod(i))

        def borrowed() -> dict | None:  # type: ignore[type-arg]
            s = snap()
            t = {r["name"]: r for r in s["teams"]}
            by_team = {n["team"]: n["state"] for n in s["nodes"]}
            if by_team.get("vision") == "borrowed" and t["vision"]["lentOut"] == 1:
                return {"teams": t, "nodes": by_team}
            return None

        got = wait_for(borrowed, 30, "vision's idle node borrowed by nlp")
        assert got["nodes"] == {"vision": "borrowed", "nlp": "full", "": "full"}
        assert got["teams"]["nlp"]["borrowedIn"] == 1

        # the same in GPUs (8-GPU nodes), as the Team objects say; the page shows them
        def gpus() -> dict | None:  # type: ignore[type-arg]
            items = json.loads(c.kubectl("get", "teams", "-o", "json").stdout)["items"]
            by = {t["metadata"]["name"]: (t.get("status") or {}).get("gpus") for t in items}
            return by if (by["vision"] or {}).get("lentOut") == 8 else None

        status = wait_for(gpus, 30, "the teams' status in GPUs")
        assert status["vision"] == {
            "assigned": 8, "inUse": 0, "lentOut": 8, "borrowedIn": 0, "shortfall": 0,
        }  # fmt: skip
        assert status["nlp"] == {
            "assigned": 8, "inUse": 8, "lentOut": 0, "borrowedIn": 8, "shortfall": 0,
        }  # fmt: skip
        if browser.missing():
            pytest.skip(browser.missing() or "")
        keys = ("assigned", "inUse", "lentOut", "borrowedIn", "shortfall")
        with browser.browser_page() as page:
            page.goto(banner_link(c))

            def shown() -> dict[str, list[str]]:
                rows = {}
                for tr in page.query_selector_all("#teams tbody tr"):
                    cells = [td.inner_text() for td in tr.query_selector_all("td")]
                    rows[cells[0]] = cells
                return rows

            want = {t: [t, "1 of 1", *(str(status[t][k]) for k in keys), ""] for t in status}
            wait_for(lambda: shown() == want, 30, f"the teams table to show {want}")
            heads = [th.inner_text() for th in page.query_selector_all("#teams thead th")]
            assert heads[2:7] == [
                "GPUs", "GPUs in use", "GPUs lent", "GPUs borrowed", "GPUs short",
            ]  # fmt: skip
            assert page.errors == []


def test_client_certificates_over_tls(tmp_path: Path) -> None:
    """`gpuyard dashboard --tls-cert --tls-key --client-ca`: a client certificate of the
    cluster's CA signs the browser in as its CN and O, and RBAC still decides."""
    import datetime as dt
    import ssl

    from gpuyard import pki

    with run_cluster_process(tmp_path / "c", nodes=1, args=[*FAST, "--dashboard-port", "-1"]) as c:
        ca, ca_key = (c.data_dir / "ca.crt").read_bytes(), (c.data_dir / "ca.key").read_bytes()
        now = dt.datetime.now(dt.UTC)
        files = {}
        for name, (pem, key) in {
            "server": pki.new_serving_cert(ca, ca_key, ["127.0.0.1"], now, 1, "dashboard"),
            "admin": pki.new_client_cert(ca, ca_key, "ops", ["system:masters"], now, 1),
            "alice": pki.new_client_cert(ca, ca_key, "alice", ["viewers"], now, 1),
        }.items():
            (tmp_path / f"{name}.crt").write_bytes(pem)
            (tmp_path / f"{name}.key").write_bytes(key)
            files[name] = (str(tmp_path / f"{name}.crt"), str(tmp_path / f"{name}.key"))
        log = tmp_path / "dashboard.log"
        cmd = [
            sys.executable, "-m", "gpuyard.cli", "dashboard", "--kubeconfig", c.kubeconfig,
            "--port", "0", "--tls-cert", files["server"][0], "--tls-key", files["server"][1],
            "--client-ca", str(c.data_dir / "ca.crt"),
        ]  # fmt: skip
        with log.open("wb") as out:
            proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        try:

            def url() -> str | None:
                m = re.search(r": (https://127\.0\.0\.1:\d+/)", log.read_text())
                return m.group(1) if m else None

            base = wait_for(url, 30, "the dashboard's address")

            def call(cert: str | None) -> tuple[int, dict]:  # type: ignore[type-arg]
                ctx = ssl.create_default_context(cafile=str(c.data_dir / "ca.crt"))
                if cert:
                    ctx.load_cert_chain(*files[cert])
                try:
                    with urllib.request.urlopen(base + "api/whoami", context=ctx, timeout=10) as r:
                        return r.status, json.loads(r.read())
                except urllib.error.HTTPError as e:
                    return e.code, json.loads(e.read())

            assert call("admin") == (200, {"user": "ops", "groups": ["system:masters"]})
            status, body = call("alice")
            assert status == 403 and "'alice'" in body["error"]
            assert call(None)[0] == 401
            c.kubectl(
                "create", "clusterrole", "node-viewer", "--verb=list", "--resource=nodes,pods"
            )
            c.kubectl(
                "create",
                "clusterrolebinding",
                "viewers",
                "--clusterrole=node-viewer",
                "--group=viewers",
            )
            wait_for(lambda: call("alice")[0] == 200, 40, "alice let in once RBAC allows")
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            assert proc.wait(15) == 0, log.read_text()


def test_tls_flags_are_checked(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "gpuyard.cli", "dashboard", "--client-ca", "ca.crt"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2
    assert r.stderr.strip() == (
        "gpuyard: error: --client-ca needs --tls-cert and --tls-key (client certificates need TLS)"
    )
