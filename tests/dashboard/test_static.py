"""The page's own files over raw HTTP from `gpuyard up`: gzip when the client accepts
it, strong ETags answered 304, versioned names cached for good, the page and
unversioned names revalidated, and the same security headers as before."""

from __future__ import annotations

import gzip
import http.client
import json
import re
import urllib.parse
import zlib
from pathlib import Path

from gpuyard.cluster.testing import run_cluster_process
from gpuyard.dashboard import assets, server
from gpuyard.dashboard.server import STATIC
from tests.dashboard.common import FAST, admin_token, dashboard_url, get


def fetch(base: str, path: str, headers: dict[str, str] | None = None) -> http.client.HTTPResponse:
    u = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    conn.request("GET", path, headers=headers or {})
    r = conn.getresponse()
    r.body = r.read()  # type: ignore[attr-defined]
    conn.close()
    return r


def body(r: http.client.HTTPResponse) -> bytes:
    raw: bytes = r.body  # type: ignore[attr-defined]
    return gzip.decompress(raw) if r.getheader("Content-Encoding") == "gzip" else raw


def test_the_pages_files_are_compressed_cached_and_revalidated(tmp_path: Path) -> None:
    with run_cluster_process(tmp_path / "c", nodes=1, args=FAST) as c:
        base = dashboard_url(c)
        # the page: gzip for a browser, revalidated each time, the same CSP as ever
        page = fetch(base, "/", {"Accept-Encoding": "gzip, deflate, br"})
        assert page.status == 200
        assert page.getheader("Content-Encoding") == "gzip"
        assert len(page.body) < len(body(page))  # type: ignore[attr-defined]
        assert page.getheader("Content-Type") == "text/html; charset=utf-8"
        assert page.getheader("Cache-Control") == "no-cache"
        assert page.getheader("Vary") == "Accept-Encoding"
        csp = page.getheader("Content-Security-Policy") or ""
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert page.getheader("X-Frame-Options") == "DENY"
        assert page.getheader("X-Content-Type-Options") == "nosniff"
        html = body(page).decode()
        plain = fetch(base, "/")  # no Accept-Encoding: the bytes as they are
        assert plain.getheader("Content-Encoding") is None
        assert plain.body.decode() == html  # type: ignore[attr-defined]
        assert plain.getheader("ETag") != page.getheader("ETag")  # one per representation

        # every file the page names carries its digest, and the page still holds the
        # file's own text otherwise
        refs = re.findall(r'(?:src|href)="(/static/[^"?]+)\?v=([0-9a-f]+)"', html)
        names = {p.removeprefix("/static/") for p, _ in refs}
        assert {"app.js", "style.css", "map.js", "tables.js"} <= names
        on_disk = (STATIC / "index.html").read_text()
        assert re.sub(r"\?v=[0-9a-f]+", "", html) == on_disk

        for path, version in refs:
            r = fetch(base, f"{path}?v={version}", {"Accept-Encoding": "gzip"})
            assert r.status == 200, path
            assert r.getheader("Cache-Control") == "public, max-age=31536000, immutable"
            assert r.getheader("Content-Encoding") == "gzip"
            text = body(r)
            # the imports inside are versioned too, and naming the digest of their bytes
            for dep, v in re.findall(rb'from "\./([^"?]+)\?v=([0-9a-f]+)"', text):
                d = fetch(base, f"/static/{dep.decode()}")
                assert assets.load(STATIC)[dep.decode()].version == v.decode()
                assert d.getheader("ETag") == f'"{v.decode()}"'
            name = path.removeprefix("/static/")
            assert re.sub(rb"\?v=[0-9a-f]+", b"", text) == (STATIC / name).read_bytes()

        # a stale or missing version is served, but revalidated rather than kept
        stale = fetch(base, "/static/app.js?v=0123456789")
        assert stale.status == 200
        assert stale.getheader("Cache-Control") == "no-cache"
        assert "javascript" in (stale.getheader("Content-Type") or "")

        # If-None-Match: 304 without a body for either representation's tag, 200 else
        for enc in ({}, {"Accept-Encoding": "gzip"}):
            first = fetch(base, "/static/style.css", enc)
            tag = first.getheader("ETag") or ""
            assert re.fullmatch(r'"[0-9a-f]{20}(-gz)?"', tag)
            again = fetch(base, "/static/style.css", {**enc, "If-None-Match": tag})
            assert (again.status, again.body) == (304, b"")  # type: ignore[attr-defined]
            assert again.getheader("ETag") == tag
            assert again.getheader("Cache-Control") == "no-cache"
            assert "default-src 'self'" in (again.getheader("Content-Security-Policy") or "")
            weak = fetch(base, "/static/style.css", {"If-None-Match": f'"x", W/{tag}'})
            assert weak.status == 304
        changed = fetch(base, "/static/style.css", {"If-None-Match": '"not-this-one"'})
        assert changed.status == 200 and changed.body == (STATIC / "style.css").read_bytes()  # type: ignore[attr-defined]

        # gzip refused with q=0: identity
        r = fetch(base, "/static/app.js", {"Accept-Encoding": "gzip;q=0, identity"})
        assert r.getheader("Content-Encoding") is None

        # what is not a file of the page is still 404, and the API still asks who looks
        assert fetch(base, "/static/..%2Fserver.py").status == 404
        assert fetch(base, "/static/nothing.js").status == 404
        status, _, _ = get(base + "api/snapshot")
        assert status == 401
        status, snap, _ = get(base + "api/snapshot", admin_token(c))
        assert status == 200 and len(snap["nodes"]) == 1
        small = fetch(
            base,
            "/api/snapshot",
            {"Authorization": f"Bearer {admin_token(c)}", "Accept-Encoding": "gzip"},
        )
        assert small.getheader("Content-Encoding") is None  # too small to be worth it
        assert len(small.body) < server.GZIP_MIN_BYTES  # type: ignore[attr-defined]


def test_the_event_stream_is_gzipped_and_flushed_at_every_event(tmp_path: Path) -> None:
    with run_cluster_process(tmp_path / "c", nodes=2, args=FAST) as c:
        u = urllib.parse.urlsplit(dashboard_url(c))
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
        auth = {"Authorization": f"Bearer {admin_token(c)}", "Accept-Encoding": "gzip"}
        conn.request("GET", "/api/events", headers=auth)
        r = conn.getresponse()
        assert r.status == 200
        assert r.getheader("Content-Encoding") == "gzip"
        assert r.getheader("Vary") == "Accept-Encoding"
        assert r.getheader("X-Accel-Buffering") == "no"
        unpack = zlib.decompressobj(wbits=31)  # one gzip member for the whole stream
        text = b""

        def next_event(name: bytes) -> dict:  # type: ignore[type-arg]
            # the stream stays open: each event must decode from what has arrived
            nonlocal text
            while True:
                head, sep, rest = text.partition(b"\n\n")
                if sep:
                    text = rest
                    if head.startswith(b"event: " + name + b"\n"):
                        return json.loads(head.split(b"\ndata: ", 1)[1])
                    continue
                chunk = r.read1(65536)
                assert chunk, "the stream ended"
                text += unpack.decompress(chunk)

        snap = next_event(b"snapshot")
        assert sorted(n["name"] for n in snap["nodes"]) == ["gpu-node-0000", "gpu-node-0001"]
        c.kubectl("cordon", "gpu-node-0001")
        while True:
            row = next_event(b"delta").get("nodes", {}).get("gpu-node-0001")
            if row and row["state"] == "cordoned":
                break
        conn.close()


def test_a_large_snapshot_goes_gzipped_where_the_client_accepts_it(tmp_path: Path) -> None:
    nodes = 700  # about 125 bytes a node: over GZIP_MIN_BYTES
    args = ["--components", "none", "--in-memory"]
    with run_cluster_process(tmp_path / "c", nodes=nodes, args=args, timeout=300) as c:
        base = dashboard_url(c)
        auth = {"Authorization": f"Bearer {admin_token(c)}"}
        assert fetch(base, "/api/snapshot", {"Accept-Encoding": "gzip"}).status == 401
        plain = fetch(base, "/api/snapshot", auth)
        packed = fetch(base, "/api/snapshot", {**auth, "Accept-Encoding": "gzip, br"})
        assert plain.status == packed.status == 200
        assert plain.getheader("Content-Encoding") is None
        assert len(plain.body) >= server.GZIP_MIN_BYTES  # type: ignore[attr-defined]
        assert packed.getheader("Content-Encoding") == "gzip"
        assert len(packed.body) * 4 < len(plain.body)  # type: ignore[attr-defined]
        assert packed.getheader("Cache-Control") == "no-store"
        assert packed.getheader("Vary") == "Accept-Encoding"
        a, b = json.loads(plain.body), json.loads(body(packed))  # type: ignore[attr-defined]
        assert len(a["nodes"]) == len(b["nodes"]) == nodes
        assert {n["name"] for n in a["nodes"]} == {n["name"] for n in b["nodes"]}


def test_accept_encoding_and_if_none_match_parsing() -> None:
    assert assets.accepts_gzip("gzip")
    assert assets.accepts_gzip("deflate, gzip;q=0.5")
    assert assets.accepts_gzip("*")
    assert assets.accepts_gzip("br, *;q=0.1")
    assert not assets.accepts_gzip("")
    assert not assets.accepts_gzip("identity")
    assert not assets.accepts_gzip("gzip;q=0")
    assert not assets.accepts_gzip("*, gzip;q=0")
    assert not assets.accepts_gzip("gzip;q=bad")
    assert assets.matches("*", '"a"')
    assert assets.matches('"b", "a"', '"a"')
    assert assets.matches('W/"a"', '"a"')
    assert not assets.matches('"ab"', '"a"')


def test_files_that_load_each_other_in_a_cycle_are_refused(tmp_path: Path) -> None:
    (tmp_path / "a.js").write_text('import "./b.js";\n')
    (tmp_path / "b.js").write_text('import "./a.js";\n')
    try:
        assets.load(tmp_path)
    except ValueError as e:
        assert "cycle" in str(e)
    else:
        raise AssertionError("a cycle was accepted")
