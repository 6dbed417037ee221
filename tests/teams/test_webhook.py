"""The webhook over real HTTPS (its own CA), and certificate rotation."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import ssl
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from cryptography import x509

from gpuyard import names
from gpuyard.teams import certs
from gpuyard.teams.admission import TeamInfo, apply_json_patch
from gpuyard.teams.webhook import WebhookServer, teams_by_namespace, webhook_configuration

TEAMS = [
    {"metadata": {"name": "a"}, "spec": {"namespaces": ["ns-a"], "borrow": True}},
    {"metadata": {"name": "b"}, "spec": {"namespaces": ["ns-b"]}},
]


def review(ns: str, spec: dict[str, Any]) -> dict[str, Any]:
    obj = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": ns},
        "spec": spec,
    }
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "operation": "CREATE",
            "namespace": ns,
            "name": "p",
            "object": obj,
        },
    }


@pytest.mark.parametrize("thread", [False, True], ids=["same-loop", "own-thread"])
async def test_webhook_answers_over_https_verified_by_its_ca(tmp_path: Path, thread: bool) -> None:
    table = teams_by_namespace(TEAMS)
    server = WebhookServer(table.get, tmp_path / "certs")
    url = await server.start(thread=thread)
    try:
        assert url.startswith("https://127.0.0.1:")
        cfg = webhook_configuration(url, server.ca_pem)
        wh = cfg["webhooks"][0]
        assert wh["failurePolicy"] == "Fail"
        assert wh["namespaceSelector"]["matchExpressions"][0]["key"] == names.LABEL_TEAM
        ctx = ssl.create_default_context(
            cadata=base64.b64decode(wh["clientConfig"]["caBundle"]).decode()
        )
        async with aiohttp.ClientSession() as s:
            body = review("ns-b", {"containers": []})
            async with s.post(url, data=orjson.dumps(body), ssl=ctx) as r:
                assert r.status == 200
                out = await r.json()
            resp = out["response"]
            assert resp["uid"] == body["request"]["uid"] and resp["allowed"]
            ops = orjson.loads(base64.b64decode(resp["patch"]))
            pod = apply_json_patch(body["request"]["object"], ops)
            assert pod["spec"]["priorityClassName"] == names.PRIORITY_NORMAL
            assert {
                "key": names.TAINT_TEAM,
                "operator": "Equal",
                "value": "b",
                "effect": "NoSchedule",
            } in pod["spec"]["tolerations"]

            bad = review("ns-a", {"tolerations": [{"key": names.TAINT_TEAM, "value": "b"}]})
            async with s.post(url, data=orjson.dumps(bad), ssl=ctx) as r:
                out = await r.json()
            assert out["response"]["allowed"] is False
            assert "team b's toleration" in out["response"]["status"]["message"]

            # A client that trusts only the system roots refuses the certificate.
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                async with s.post(url, data=b"{}", ssl=ssl.create_default_context()):
                    pass
        assert server.requests == 2 and server.denied == 1
    finally:
        await server.stop()


@pytest.mark.parametrize("thread", [False, True], ids=["same-loop", "own-thread"])
async def test_rotation_serves_the_new_certificate(tmp_path: Path, thread: bool) -> None:
    server = WebhookServer(lambda ns: TeamInfo("a") if ns == "ns-a" else None, tmp_path)
    url = await server.start(thread=thread)
    try:
        first = server.bundle
        assert first is not None
        assert not server.rotate(dt.datetime.now(dt.UTC))  # not due
        # A renewal window longer than the certificate's remaining life: due now.
        assert server.rotate(dt.datetime.now(dt.UTC), renew_before=dt.timedelta(days=60))
        second = server.bundle
        assert second is not None and second.cert_pem != first.cert_pem
        ctx = ssl.create_default_context(cadata=server.ca_pem.decode())
        async with aiohttp.ClientSession() as s:
            async with s.post(url, data=orjson.dumps(review("ns-a", {})), ssl=ctx) as r:
                assert r.status == 200
        _, writer = await asyncio.open_connection("127.0.0.1", server.port, ssl=ctx)
        peer = writer.get_extra_info("ssl_object").getpeercert(True)
        writer.close()
        want = x509.load_pem_x509_certificate(second.cert_pem)
        assert x509.load_der_x509_certificate(peer) == want
    finally:
        await server.stop()


def test_certs_kept_reused_and_ca_rotated(tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    b1 = certs.ensure(tmp_path, ["127.0.0.1"], now)
    assert b1.rotated
    assert (tmp_path / "tls.key").stat().st_mode & 0o077 == 0
    b2 = certs.ensure(tmp_path, ["127.0.0.1"], now)
    assert not b2.rotated and b2.cert_pem == b1.cert_pem and b2.ca_pem == b1.ca_pem
    # A new host name means a new serving certificate from the same CA.
    b3 = certs.ensure(tmp_path, ["127.0.0.1", "teams.gpuyard.svc"], now)
    assert b3.rotated and b3.ca_pem == b1.ca_pem
    # Close to the CA's end: a new CA and a new certificate signed by it.
    ca = x509.load_pem_x509_certificate(b1.ca_pem)
    b4 = certs.ensure(tmp_path, ["127.0.0.1"], ca.not_valid_after_utc - dt.timedelta(days=1))
    assert b4.rotated and b4.ca_pem != b1.ca_pem
    cert = x509.load_pem_x509_certificate(b4.cert_pem)
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(b4.ca_pem))


async def peer_cert(port: int, ctx: ssl.SSLContext) -> x509.Certificate:
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    der = writer.get_extra_info("ssl_object").getpeercert(True)
    writer.close()
    return x509.load_der_x509_certificate(der)


@pytest.mark.parametrize("thread", [False, True], ids=["same-loop", "own-thread"])
async def test_ca_rotation_publishes_both_cas_before_switching(
    tmp_path: Path, thread: bool
) -> None:
    server = WebhookServer(lambda ns: None, tmp_path)
    await server.start(thread=thread)
    try:
        first = server.bundle
        assert first is not None and server.ca_bundle == first.ca_pem
        # A renewal window longer than the CA's life: the CA itself is due.
        assert server.rotate(dt.datetime.now(dt.UTC), dt.timedelta(days=400), activate=False)
        second = server.bundle
        assert second is not None and second.ca_pem != first.ca_pem
        assert server.ca_bundle == second.ca_pem + first.ca_pem
        both = ssl.create_default_context(cadata=server.ca_bundle.decode())
        # Not switched yet: still the old certificate, which the published bundle trusts.
        old = await peer_cert(server.port, both)
        assert old == x509.load_pem_x509_certificate(first.cert_pem)
        server.activate()
        new = await peer_cert(server.port, both)
        assert new == x509.load_pem_x509_certificate(second.cert_pem)
        only_old = ssl.create_default_context(cadata=first.ca_pem.decode())
        with pytest.raises(ssl.SSLCertVerificationError):
            await peer_cert(server.port, only_old)
    finally:
        await server.stop()


async def test_own_thread_stops_cleanly_and_frees_its_port(tmp_path: Path) -> None:
    import threading

    def webhook_threads() -> int:
        return sum(1 for t in threading.enumerate() if t.name == "gpuyard-teams-webhook")

    server = WebhookServer(lambda ns: None, tmp_path)
    await server.start(thread=True)
    port = server.port
    assert webhook_threads() == 1
    await server.stop()
    assert webhook_threads() == 0
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)
    # A port already taken: start() raises, and leaves no thread behind.
    blocker = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    try:
        taken = blocker.sockets[0].getsockname()[1]
        busy = WebhookServer(lambda ns: None, tmp_path, port=taken)
        with pytest.raises(OSError):
            await busy.start(thread=True)
        assert webhook_threads() == 0
    finally:
        blocker.close()
        await blocker.wait_closed()


async def _exchange(port: int, ctx: ssl.SSLContext, data: bytes, answers: int) -> list[bytes]:
    """Send raw bytes; read `answers` HTTP answers (by Content-Length), then what
    follows until the server closes or 0.3 s pass."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    out: list[bytes] = []
    try:
        writer.write(data)
        for _ in range(answers):
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            n = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            out.append(head + await reader.readexactly(n))
        try:
            out.append(await asyncio.wait_for(reader.read(), 0.3))  # b"": closed by server
        except TimeoutError:
            out.append(b"<open>")
    finally:
        writer.close()
    return out


def _post(path: str, body: bytes, *extra: str) -> bytes:
    head = [f"POST {path} HTTP/1.1", "Host: x", f"Content-Length: {len(body)}", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def test_http_keep_alive_pipelining_and_refusals(tmp_path: Path) -> None:
    table = teams_by_namespace(TEAMS)
    server = WebhookServer(table.get, tmp_path)
    await server.start()
    ctx = ssl.create_default_context(cadata=server.ca_pem.decode())
    good = orjson.dumps(review("ns-b", {"containers": []}))
    try:
        # Two requests in one write: two answers, in order, connection kept open.
        a, b, rest = await _exchange(
            server.port, ctx, _post("/mutate-pods", good) + _post("/mutate-pods?x=1", good), 2
        )
        assert a.startswith(b"HTTP/1.1 200 ") and b.startswith(b"HTTP/1.1 200 ")
        assert b'"allowed":true' in a and rest == b"<open>"
        # Connection: close is honoured.
        a, rest = await _exchange(
            server.port, ctx, _post("/mutate-pods", good, "Connection: close"), 1
        )
        assert a.startswith(b"HTTP/1.1 200 ") and rest == b""
        checks = [
            (b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", b"200", b"ok"),
            (b"GET /mutate-pods HTTP/1.1\r\nHost: x\r\n\r\n", b"405", b""),
            (_post("/elsewhere", good), b"404", b""),
            (_post("/mutate-pods", b"[1, 2"), b"400", b"bad AdmissionReview"),
        ]
        for data, code, text in checks:
            got, _ = await _exchange(server.port, ctx, data, 1)
            assert got.startswith(b"HTTP/1.1 " + code), got
            assert text in got
        chunked = (
            b"POST /mutate-pods HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"
        )
        got, rest = await _exchange(server.port, ctx, chunked, 1)
        assert got.startswith(b"HTTP/1.1 411 ") and rest == b""
        assert server.requests == 4  # the four AdmissionReviews posted to /mutate-pods
        # stop() closes kept-alive connections too.
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port, ssl=ctx)
        writer.write(_post("/mutate-pods", good))
        await reader.readuntil(b"\r\n\r\n")
    finally:
        await server.stop()
    await asyncio.wait_for(reader.read(), 5)  # returns at end of stream: closed by stop()
    writer.close()


async def test_process_webhook_follows_its_table_rotates_and_restarts(tmp_path: Path) -> None:
    from gpuyard.teams.webhook_proc import ProcessWebhook

    hook = ProcessWebhook(tmp_path, restart_s=0.1)
    url = await hook.start()
    try:
        assert hook.proc is not None and hook.proc.returncode is None
        ctx = ssl.create_default_context(cadata=hook.ca_bundle.decode())

        async def tolerated(ns: str) -> set[str]:
            async with aiohttp.ClientSession() as s:
                body = review(ns, {"containers": []})
                async with s.post(url, data=orjson.dumps(body), ssl=ctx) as r:
                    assert r.status == 200
                    resp = (await r.json())["response"]
            if not resp.get("patch"):
                return set()
            pod = apply_json_patch(
                body["request"]["object"], orjson.loads(base64.b64decode(resp["patch"]))
            )
            return {t.get("value") for t in pod["spec"].get("tolerations") or []}

        async def until(ns: str, want: set[str]) -> None:
            for _ in range(100):
                with contextlib.suppress(aiohttp.ClientConnectorError):  # restarting
                    if await tolerated(ns) == want:
                        return
                await asyncio.sleep(0.05)
            raise AssertionError(f"{ns}: never {want}")

        assert await tolerated("ns-b") == set()  # no team owns ns-b yet
        hook.set_teams(teams_by_namespace(TEAMS))
        await until("ns-b", {"b"})

        # Rotation: the published bundle trusts both CAs before the child switches.
        first = hook.bundle
        assert first is not None
        assert hook.rotate(dt.datetime.now(dt.UTC), dt.timedelta(days=400), activate=False)
        second = hook.bundle
        assert second is not None and second.ca_pem != first.ca_pem
        both = ssl.create_default_context(cadata=hook.ca_bundle.decode())
        assert await peer_cert(hook.port, both) == x509.load_pem_x509_certificate(first.cert_pem)
        hook.activate()
        for _ in range(100):
            if await peer_cert(hook.port, both) == x509.load_pem_x509_certificate(second.cert_pem):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the child never presented the new certificate")
        ctx = both

        # A child that dies is started again on the same port, with the current table.
        old = hook.proc
        assert old is not None
        old.kill()
        for _ in range(200):
            if hook.proc is not old and hook.restarts == 1 and hook.proc is not None:
                break
            await asyncio.sleep(0.05)
        await until("ns-b", {"b"})
        assert hook.url == url
        # A big table (one control line of ~200 KB) is taken as well.
        big = {f"ns-x{i}": TeamInfo(f"x{i}") for i in range(6000)}
        hook.set_teams({**big, **teams_by_namespace(TEAMS)})
        await until("ns-x5999", {"x5999"})
        assert hook.restarts == 1
    finally:
        await hook.stop()
    assert hook.proc is None
