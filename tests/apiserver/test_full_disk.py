"""A full disk: failed writes are refused with the cause and leave nothing behind.

The data directory is a small tmpfs the test mounts (skipped where mounting is not
allowed). Lists, GETs and watches must agree with what was acknowledged after every
failed write, the server must start on the full disk (read-only, saying so), and
accept writes again once there is space, without a restart and after one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from gpuyard.apiserver.testing import ServerProcess, start_apiserver_process

from .api import Api, cm

NS = "/api/v1/namespaces/default/configmaps"
BLOB = "x" * 20_000


@contextlib.contextmanager
def small_disk(path: str, size: str) -> Iterator[str]:
    os.makedirs(path, exist_ok=True)
    try:
        r = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", path],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot mount a tmpfs here: {exc}")
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", path], capture_output=True, timeout=10)


def grow(path: str, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", path], check=True, timeout=10)


def stop(srv: ServerProcess) -> None:
    srv.kill9()
    if srv.proc.stdout is not None:
        srv.proc.stdout.close()


async def agree(api: Api, acked: set[str], refused: set[str]) -> int:
    """GET, list and a watch from the start show exactly the acknowledged objects."""
    st, body = await api.get(NS)
    assert st == 200, body
    listed = {i["metadata"]["name"] for i in body["items"]}
    assert listed == acked, (sorted(listed - acked)[:5], sorted(acked - listed)[:5])
    for name in sorted(refused)[:20]:
        st, _ = await api.get(f"{NS}/{name}")
        assert st == 404, name
    for name in sorted(acked)[:20]:
        st, _ = await api.get(f"{NS}/{name}")
        assert st == 200, name
    events = await api.watch(NS, len(acked) + 1, timeout=2, resourceVersion="0")
    watched = {e["object"]["metadata"]["name"] for e in events if e["type"] == "ADDED"}
    assert watched == acked
    return int(body["metadata"]["resourceVersion"])


async def test_full_disk_refuses_writes_and_loses_nothing(tmp_path: Any) -> None:
    with small_disk(str(tmp_path / "disk"), "3m") as disk:
        data_dir = os.path.join(disk, "data")
        srv = start_apiserver_process(data_dir)
        try:
            api = Api(srv.url, srv.token, ca_file=srv.ca_file)
            acked: set[str] = set()
            refused: set[str] = set()
            failure: dict[str, Any] = {}
            for i in range(400):
                st, body = await api.post(NS, cm(f"c{i}", {"blob": BLOB}))
                if st == 201:
                    acked.add(f"c{i}")
                    continue
                assert st == 507, body
                failure = body
                refused.add(f"c{i}")
                if len(refused) >= 5:
                    break
            assert acked and refused, "the disk never filled"
            assert failure["kind"] == "Status" and failure["code"] == 507
            assert "no space left on device" in failure["message"]
            await agree(api, acked, refused)
            # A retry is refused for the same reason, not "already exists".
            st, body = await api.post(NS, cm(sorted(refused)[0], {"blob": BLOB}))
            assert st == 507, body
            # A delete of an acknowledged object is refused and the object stays.
            victim = sorted(acked)[0]
            st, body = await api.delete(f"{NS}/{victim}")
            assert st == 507, body
            st, body = await api.patch(f"{NS}/{victim}", {"data": {"more": "y"}})
            assert st == 507, body
            await agree(api, acked, refused)
        finally:
            await api.close()
            stop(srv)

        # Restart on the full disk: it starts, read-only, and says so.
        srv = start_apiserver_process(data_dir)
        try:
            assert any("reads only" in line for line in srv.output), srv.output
            api = Api(srv.url, srv.token, ca_file=srv.ca_file)
            rv = await agree(api, acked, refused)
            st, body = await api.post(NS, cm("while-full"))
            assert st == 507 and "read-only" in body["message"], body
            # More space, no restart: writes are accepted again within a few probes.
            grow(disk, "16m")
            for _ in range(100):
                st, body = await api.post(NS, cm("after-grow"))
                if st == 201:
                    break
                assert st == 507, body
                await asyncio.sleep(0.2)
            assert st == 201, body
            assert int(body["metadata"]["resourceVersion"]) > rv
            acked.add("after-grow")
            st, _ = await api.delete(f"{NS}/{victim}")
            assert st == 200
            acked.discard(victim)
            await agree(api, acked, refused | {victim})
        finally:
            await api.close()
            stop(srv)

        # And after a restart with space, everything acknowledged is there.
        srv = start_apiserver_process(data_dir)
        try:
            api = Api(srv.url, srv.token, ca_file=srv.ca_file)
            await agree(api, acked, refused | {victim})
            st, _ = await api.post(NS, cm(sorted(refused)[0], {"blob": BLOB}))
            assert st == 201
        finally:
            await api.close()
            stop(srv)
