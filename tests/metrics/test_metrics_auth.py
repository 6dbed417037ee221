"""A component's /metrics on a real cluster answers only callers the API server
authorizes (TokenReview, then a SubjectAccessReview for `get` on the non-resource URL
/metrics): a ServiceAccount bound to the shipped metrics-reader ClusterRole (which
`gpuyard up` installs with the manifests' roles) reads it,
another ServiceAccount gets 403, no token or a made-up one 401; `--metrics-auth off`
opens it."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from gpuyard import manifests
from gpuyard.cluster.testing import run_cluster_process, wait_for
from tests.metrics.scrape import names, scrape
from tests.metrics.test_command_metrics import _free_port

KUBECTL = str(Path(sys.executable).parent / "kubectl")


def _status(url: str, token: str | None) -> int:
    req = urllib.request.Request(url)
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


def _network_top(c: Any, tmp_path: Path, token: str, url: str) -> subprocess.CompletedProcess:
    """`gpuyard network top` with a kubeconfig whose user is ``token``'s."""
    cfg = yaml.safe_load(Path(c.kubeconfig).read_text())
    for u in cfg["users"]:
        u["user"] = {"token": token}
    path = tmp_path / f"user-{len(list(tmp_path.glob('user-*')))}.kubeconfig"
    path.write_text(yaml.safe_dump(cfg))
    path.chmod(0o600)
    cmd = [sys.executable, "-m", "gpuyard.cli", "network", "top", "--kubeconfig", str(path)]
    cmd += ["--metrics-url", url, "-A", "--window", "0.1", "-o", "json"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def test_metrics_need_an_authorized_token(tmp_path: Path) -> None:
    with run_cluster_process(tmp_path / "c", nodes=1, args=["--components", "none"]) as c:

        def kubectl(*args: str) -> str:
            r = subprocess.run(
                [KUBECTL, *args], env=c.env, capture_output=True, text=True, timeout=60
            )
            assert r.returncode == 0, r.stderr
            return r.stdout

        (role,) = [
            o for o in manifests.objects() if o["metadata"]["name"] == manifests.METRICS_READER
        ]
        assert role["kind"] == "ClusterRole"
        assert role["rules"] == [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]
        # gpuyard up installs the manifests' roles, this one among them
        live = json.loads(kubectl("get", "clusterrole", manifests.METRICS_READER, "-o", "json"))
        assert live["rules"] == role["rules"]
        for sa in ("prometheus", "nobody"):
            kubectl("create", "serviceaccount", sa, "-n", "default")
        kubectl("create", "clusterrolebinding", "prometheus-metrics",
                f"--clusterrole={manifests.METRICS_READER}",
                "--serviceaccount=default:prometheus")  # fmt: skip
        allowed = kubectl("create", "token", "prometheus", "-n", "default").strip()
        refused = kubectl("create", "token", "nobody", "-n", "default").strip()

        port = _free_port()
        url = f"http://127.0.0.1:{port}/metrics"
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gpuyard.cli",
                "scheduler",
                "--no-leader-elect",
                "--metrics-port",
                str(port),
            ],  # fmt: skip
            env=c.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for(lambda: _status(url, None) == 401, 30, "the metrics port refusing")
            assert _status(url, "not-a-token") == 401
            assert _status(url, refused) == 403
            assert _status(url, allowed) == 200
            assert "gpuyard_scheduler_bindings_total" in names(scrape(url, allowed))
            # still refused, from the cache or a fresh review alike
            assert _status(url, refused) == 403
            # `gpuyard network top --metrics-url` (node agents on a real cluster) sends
            # the kubeconfig user's token: read as the allowed user, a clear refusal else.
            top = _network_top(c, tmp_path, allowed, url)
            assert top.returncode == 0, top.stderr
            assert json.loads(top.stdout)["items"] == []  # a scheduler counts no pods
            top = _network_top(c, tmp_path, refused, url)
            assert top.returncode == 1
            assert f"cannot read {url}: HTTP 403" in top.stderr
            assert "bind the ClusterRole gpuyard-metrics-reader" in top.stderr
        finally:
            proc.kill()
            proc.wait(10)

        port = _free_port()
        url = f"http://127.0.0.1:{port}/metrics"
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gpuyard.cli",
                "scheduler",
                "--no-leader-elect",
                "--metrics-port",
                str(port),
                "--metrics-auth",
                "off",
            ],  # fmt: skip
            env=c.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for(lambda: _status(url, None) == 200, 30, "the open metrics port")
        finally:
            proc.kill()
            proc.wait(10)
