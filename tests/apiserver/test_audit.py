"""The audit log records who did what: one audit.k8s.io/v1 Event per request in
DATA_DIR/audit.log (mode 0600), with the user (and whom it impersonated), the verb,
the object and the response code; a policy file picks the levels, and a bad one is
refused naming the file. Events are written by a background writer, in order, and
none is lost on a clean stop or when its queue is full."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from gpuyard.apiserver import audit
from gpuyard.apiserver.attributes import of_request
from gpuyard.apiserver.audit import AuditLog
from gpuyard.apiserver.authn import UserInfo
from gpuyard.apiserver.server import APIServer
from gpuyard.apiserver.testing import run_apiserver_process

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
    assert apiserver_inproc.audit.flush(10)  # the log's writer has written them
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
    assert apiserver_inproc.audit.flush(10)
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

    from gpuyard.apiserver import ids as idgen

    ids = [idgen.new_id() for _ in range(2000)]  # more than one batch of the random source
    assert len(set(ids)) == len(ids)
    for i in ids:
        u = uuid.UUID(i)
        assert str(u) == i and u.version == 4 and u.variant == uuid.RFC_4122


def test_a_forked_child_never_repeats_its_parents_ids() -> None:
    """IDs (object UIDs, audit IDs) come from a batch made ahead: a child process must
    not hand out the rest of the batch its parent was given."""
    import os

    from gpuyard.apiserver import ids as idgen

    idgen.new_id()  # the parent holds a batch now
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.write(w, ",".join(idgen.new_id() for _ in range(10)).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        child = f.read().decode().split(",")
    os.waitpid(pid, 0)
    parent = [idgen.new_id() for _ in range(10)]
    assert len(child) == 10 and not set(child) & set(parent)


def test_audit_timestamps_are_utc_rfc3339() -> None:
    from datetime import UTC, datetime, timedelta, timezone

    from gpuyard.apiserver import audit

    t = datetime(2026, 3, 1, 12, 30, 5, 123456, tzinfo=UTC)
    assert audit._ts(t) == "2026-03-01T12:30:05.123456Z"
    assert audit._ts(t.astimezone(timezone(timedelta(hours=2)))) == "2026-03-01T12:30:05.123456Z"
    assert audit._ts(datetime(2026, 3, 1, 12, 30, 5)) == "2026-03-01T12:30:05.000000Z"


def _all_events(path: Path) -> list[dict[str, Any]]:
    """Every event of a rotated log, oldest first (audit.log.N ... audit.log.1, audit.log)."""
    rotated = sorted(path.parent.glob(path.name + ".*"), key=lambda p: -int(p.suffix[1:]))
    return [ev for p in [*rotated, path] for ev in _events(str(p))]


def test_the_audit_writer_keeps_every_event_in_order_across_rotation_and_close(
    tmp_path: Path,
) -> None:
    path = tmp_path / "audit.log"
    log = AuditLog(str(path), max_bytes=4096, backups=1000)

    def writer(t: int) -> None:
        for i in range(500):
            log.write({"kind": "Event", "thread": t, "i": i})

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log.close()  # a clean stop: everything queued is written first
    evs = _all_events(path)
    assert len(evs) == 2000
    for t in range(4):
        assert [e["i"] for e in evs if e["thread"] == t] == list(range(500))
    files = list(tmp_path.glob("audit.log*"))
    assert len(files) > 10  # rotated by size while the batches were written
    for f in files:
        assert f.stat().st_size <= 4096
        assert stat.S_IMODE(f.stat().st_mode) == 0o600


def test_a_full_audit_queue_makes_requests_wait_and_loses_nothing(tmp_path: Path) -> None:
    # The log is a pipe nobody reads yet: the writer blocks once the pipe is full, the
    # queue fills up behind it, and write() waits instead of dropping events.
    path = tmp_path / "audit.log"
    os.mkfifo(path, 0o600)
    reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    log = AuditLog(str(path), max_pending=4)
    pad = "x" * 4000
    producer = threading.Thread(
        target=lambda: [log.write({"i": i, "pad": pad}) for i in range(200)], daemon=True
    )
    producer.start()
    deadline = time.monotonic() + 30
    while log.waited_full == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert log.waited_full > 0
    assert producer.is_alive()  # held back, not dropping
    os.set_blocking(reader, True)
    data = b""
    while data.count(b"\n") < 200:
        chunk = os.read(reader, 1 << 16)
        assert chunk, "the pipe closed early"
        data += chunk
    producer.join(30)
    assert not producer.is_alive()
    log.close()
    os.close(reader)
    assert [orjson.loads(line)["i"] for line in data.splitlines()] == list(range(200))


def test_a_clean_stop_writes_the_audit_event_of_every_answered_request() -> None:
    with run_apiserver_process() as srv:
        ids: list[str] = []

        async def burst() -> None:
            async with aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=srv.ssl_context())
            ) as s:

                async def one(i: int) -> None:
                    body = {"metadata": {"name": f"a{i}"}}
                    url = srv.url + "/api/v1/namespaces/default/configmaps"
                    async with s.post(url, json=body, headers=srv.headers) as r:
                        assert r.status == 201
                        ids.append(r.headers["Audit-Id"])

                await asyncio.gather(*(one(i) for i in range(300)))

        asyncio.run(burst())
        assert srv.terminate() == 0  # SIGTERM: the server stops cleanly
        logged = {e["auditID"] for e in _all_events(Path(srv.data_dir) / "audit.log")}
    assert len(ids) == 300
    assert set(ids) <= logged


async def test_a_request_after_stop_is_refused_not_served_unaudited(
    tmp_path: Path, caplog: Any
) -> None:
    """An in-process client still running when the server stops (a component not yet
    stopped) gets 503 ServiceUnavailable with Retry-After: the request is not served, so
    no audit event is lost and nothing changes."""
    srv = APIServer(str(tmp_path), port=0, persist=True, tls=False)
    await srv.start(listen=False)
    await srv.stop()
    body = orjson.dumps({"metadata": {"name": "late"}})
    with caplog.at_level("ERROR", logger="gpuyard.apiserver.audit"):
        r = await srv.dispatch("POST", "/api/v1/namespaces/default/configmaps", {}, {}, body)
    assert r.status == 503
    assert r.headers["Retry-After"] == "1"
    st = orjson.loads(r.body)
    assert (st["reason"], st["code"]) == ("ServiceUnavailable", 503)
    assert not [rec for rec in caplog.records if "not written" in rec.getMessage()]
    # Restarted on the same data: the late create never happened.
    again = APIServer(str(tmp_path), port=0, persist=True, tls=False)
    await again.start(listen=False)
    try:
        got = await again.dispatch("GET", "/api/v1/namespaces/default/configmaps/late")
        assert got.status == 404
    finally:
        await again.stop()


_KUBELET = UserInfo("system:node:n1", ("system:nodes", "system:authenticated"))
_ADMIN = UserInfo("admin", ("system:masters",), "u1", {"scopes": ["a"]})


@pytest.mark.parametrize(
    "method, path, user, acting, ip, ua, code, decision, msg, ann",
    [
        (
            "PATCH",
            "/api/v1/namespaces/ns/pods/p/status",
            _KUBELET,
            None,
            "10.0.0.1",
            "k/1",
            200,
            ("allow", "Node: node 'n1'"),
            "",
            {},
        ),
        (
            "GET",
            "/apis/apps/v1/deployments",
            _ADMIN,
            _KUBELET,
            "",
            "",
            403,
            ("forbid", ""),
            'deployments.apps is forbidden: "x"',
            {"a.k8s.io/b": "c"},
        ),
        (
            "POST",
            "/api/v1/namespaces/ns/pods/p/binding",
            _ADMIN,
            None,
            "::1",
            "s\u00e9/2",
            201,
            None,
            "",
            None,
        ),
        ("GET", "/healthz", _ADMIN, None, "", "", 500, None, "", None),
    ],
    ids=["status-patch", "impersonated-forbidden", "binding", "healthz-500"],
)
def test_an_event_line_made_from_encoded_pieces_is_the_event(
    method: str,
    path: str,
    user: UserInfo,
    acting: UserInfo | None,
    ip: str,
    ua: str,
    code: int,
    decision: tuple[str, str] | None,
    msg: str,
    ann: dict[str, str] | None,
) -> None:
    # The request path writes Metadata-level events as lines joined from pieces kept
    # encoded (audit.line); each is field for field, in order, the event's dict.
    received = audit.now()
    a = of_request(method, path, {})
    fields = (
        "Metadata",
        "id-1",
        received,
        path,
        a,
        user,
        acting,
        ip,
        ua,
        code,
        "ResponseComplete",
        decision,
        msg,
    )
    got = orjson.loads(audit.line(*fields, annotations=ann))
    want = audit.event(*fields, annotations=ann)
    assert got.pop("stageTimestamp") <= want.pop("stageTimestamp")  # made first
    assert list(got.items()) == list(want.items())
