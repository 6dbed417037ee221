"""Helpers of the dashboard tests: the dashboard address `gpuyard up` reports, the
banner's sign-in link, and raw HTTP (urllib) with or without a token."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from typing import Any

from gpuyard.cluster.testing import ClusterProcess, wait_for

FAST = [
    "--lease-seconds", "1", "--start-delay", "0.1",
    "--set", "health_interval_s=0.5", "--set", "health_quiet_s=2",
]  # fmt: skip


def dashboard_url(c: ClusterProcess) -> str:
    return str(json.loads((c.data_dir / "up.json").read_text())["dashboard"])


def banner_link(c: ClusterProcess) -> str:
    """The sign-in link the banner prints."""

    def find() -> str | None:
        m = re.search(r"^dashboard \(signs you in\): (\S+)$", c.log(), re.M)
        return m.group(1) if m else None

    return str(wait_for(find, 15, "the dashboard link in the banner"))


def admin_token(c: ClusterProcess) -> str:
    m = re.search(r"token: (\S+)", (c.data_dir / "kubeconfig").read_text())
    assert m, "no token in the kubeconfig"
    return m.group(1)


def get(
    url: str,
    token: str | None = None,
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
) -> tuple[int, Any, Any]:
    """(status, JSON body, headers)."""
    h = dict(headers or {})
    if token is not None:
        h["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, method=method, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"null"), r.headers
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null"), e.headers
