"""The audit log records who did what: one audit.k8s.io/v1 Event per request in
DATA_DIR/audit.log (mode 0600), with the user (and whom it impersonated), the verb,
the object and the response code; a policy file picks the levels, and a bad one is
refused naming the file."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

from gpuyard.apiserver.server import APIServer

from .api import Api
from .identities import grant, sa_subject, service_account


def _events(path: str) -> list[dict[str, Any]]:
    with open(path, "rb") as f:
        return [orjson.loads(line) for line in f if line.strip()]


async def test_audit_log_records_who_did_what(api: Api, apiserver_inproc: Any) -> None:
    log = os.path.join(apiserver_inproc.data_dir, "audit.log")
    assert stat.S_IMODE(os.stat(log).st_mode) == 0o600
    token = await service_account(api, "default", "writer")
    await grant(
        api,
        "default",
        "writer",
        [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create"]}],
        [sa_subject("default", "writer")],
    )
    st, _ = await api.req(
        "POST",
        "/api/v1/namespaces/default/configmaps",
        {"metadata": {"name": "audited"}},
        token=token,
    )
    assert st == 201
    st, _ = await api.req("DELETE", "/api/v1/namespaces/default/configmaps/audited", token=token)
    assert st == 403
    st, _ = await api.req("GET", "/api/v1/namespaces/default/pods", token="bogus")
    assert st == 401
    evs = _events(log)
    sa = "system:serviceaccount:default:writer"
    created = [
        e
        for e in evs
        if e["user"]["username"] == sa
        and e["verb"] == "create"
        and e.get("objectRef", {}).get("resource") == "configmaps"
    ]
    assert len(created) == 1
    e = created[0]
    assert e["kind"] == "Event" and e["apiVersion"] == "audit.k8s.io/v1"
    assert e["level"] == "Metadata" and "requestObject" not in e
    assert e["objectRef"]["namespace"] == "default"
    assert e["responseStatus"]["code"] == 201
    assert e["annotations"]["authorization.k8s.io/decision"] == "allow"
    assert e["requestURI"] == "/api/v1/namespaces/default/configmaps"
    assert e["sourceIPs"] == ["127.0.0.1"]
    denied = [e for e in evs if e["user"]["username"] == sa and e["verb"] == "delete"]
    assert denied and denied[0]["responseStatus"]["code"] == 403
    assert denied[0]["objectRef"]["name"] == "audited"
    assert denied[0]["annotations"]["authorization.k8s.io/decision"] == "forbid"
    assert any(
        e["user"]["username"] == "system:anonymous" and e["responseStatus"]["code"] == 401
        for e in evs
    )
    # RBAC writes are kept with their bodies (what was granted to whom).
    rb = [
        e
        for e in evs
        if e.get("objectRef", {}).get("resource") == "rolebindings" and e["verb"] == "create"
    ]
    assert rb and rb[0]["level"] == "Request"
    assert rb[0]["requestObject"]["subjects"][0]["name"] == "writer"
    # The token request is logged without the token.
    tr = [e for e in evs if e.get("objectRef", {}).get("subresource") == "token"]
    assert tr and "responseObject" not in tr[0] and "requestObject" not in tr[0]
    assert token not in Path(log).read_text()


async def test_impersonation_is_audited(api: Api, apiserver_inproc: Any) -> None:
    st, _ = await api.req(
        "GET", "/api/v1/namespaces/default/configmaps", headers={"Impersonate-User": "carol"}
    )
    assert st == 403
    evs = _events(os.path.join(apiserver_inproc.data_dir, "audit.log"))
    e = [e for e in evs if e.get("impersonatedUser", {}).get("username") == "carol"][-1]
    assert e["user"]["username"] == "gpuyard-admin"
    assert e["responseStatus"]["code"] == 403


async def test_audit_policy_file(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n"
        "- level: None\n  verbs: [get, list, watch]\n"
        "- level: RequestResponse\n  resources: [{group: '', resources: [configmaps]}]\n"
        "- level: Metadata\n"
    )
    srv = APIServer(str(tmp_path), port=0, persist=False, audit_policy=str(policy))
    await srv.start()
    api = Api(srv.url, srv.token, ca_pem=srv.ca_pem)
    try:
        st, _ = await api.req(
            "POST",
            "/api/v1/namespaces/default/configmaps",
            {"metadata": {"name": "b"}, "data": {"x": "1"}},
        )
        assert st == 201
        st, _ = await api.req("GET", "/api/v1/namespaces/default/configmaps/b")
        assert st == 200
    finally:
        await api.close()
        await srv.stop()
    evs = _events(str(tmp_path / "audit.log"))
    cms = [e for e in evs if e.get("objectRef", {}).get("resource") == "configmaps"]
    assert [e["verb"] for e in cms] == ["create"]
    assert cms[0]["level"] == "RequestResponse"
    assert cms[0]["requestObject"]["data"] == {"x": "1"}
    assert cms[0]["responseObject"]["metadata"]["name"] == "b"


def test_a_bad_policy_file_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Everything\n")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "gpuyard",
            "apiserver",
            "--in-memory",
            "--port",
            "0",
            "--data-dir",
            str(tmp_path / "d"),
            "--audit-policy-file",
            str(bad),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode != 0
    assert str(bad) in r.stderr and "rules[0].level" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_audit_ids_are_distinct_version_4_uuids() -> None:
    import uuid

    from gpuyard.apiserver import audit

    ids = [audit.new_id() for _ in range(2000)]  # more than one batch of the random source
    assert len(set(ids)) == len(ids)
    for i in ids:
        u = uuid.UUID(i)
        assert str(u) == i and u.version == 4 and u.variant == uuid.RFC_4122


def test_audit_timestamps_are_utc_rfc3339() -> None:
    from datetime import UTC, datetime, timedelta, timezone

    from gpuyard.apiserver import audit

    t = datetime(2026, 3, 1, 12, 30, 5, 123456, tzinfo=UTC)
    assert audit._ts(t) == "2026-03-01T12:30:05.123456Z"
    assert audit._ts(t.astimezone(timezone(timedelta(hours=2)))) == "2026-03-01T12:30:05.123456Z"
    assert audit._ts(datetime(2026, 3, 1, 12, 30, 5)) == "2026-03-01T12:30:05.000000Z"
