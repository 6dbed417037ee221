"""Persistence: acknowledged writes survive kill -9; resourceVersions keep growing."""

from __future__ import annotations

import asyncio
import os
import stat

from gpuyard.apiserver.testing import run_apiserver_process

from .api import Api, cm
from .test_crd import CRD_PATH, W, crd, widget


async def test_kill9_and_restart_keeps_every_acknowledged_write(tmp_path: object) -> None:
    d = str(tmp_path)
    n = 200
    with run_apiserver_process(d) as srv:
        mode = stat.S_IMODE(os.stat(srv.kubeconfig).st_mode)
        assert mode == 0o600
        api = Api(srv.url, srv.token, ca_file=srv.ca_file)
        try:
            results = await asyncio.gather(
                *[
                    api.post("/api/v1/namespaces/default/configmaps", cm(f"c{i}", {"i": str(i)}))
                    for i in range(n)
                ]
            )
            assert all(st == 201 for st, _ in results)
            st, _ = await api.post(CRD_PATH, crd())
            assert st == 201
            st, _ = await api.post(W, widget("w1"))
            assert st == 201
            st, _ = await api.delete("/api/v1/namespaces/default/configmaps/c0")
            assert st == 200
            st, last = await api.patch(
                "/api/v1/namespaces/default/configmaps/c1", {"data": {"i": "changed"}}
            )
            assert st == 200
            last_rv = int(last["metadata"]["resourceVersion"])
        finally:
            await api.close()
        srv.kill9()  # right after the acknowledgements

    with run_apiserver_process(d) as srv2:
        api = Api(srv2.url, srv2.token, ca_file=srv2.ca_file)
        try:
            st, lst = await api.get("/api/v1/namespaces/default/configmaps")
            assert st == 200
            names = {i["metadata"]["name"]: i for i in lst["items"]}
            assert set(names) == {f"c{i}" for i in range(1, n)}
            assert names["c1"]["data"] == {"i": "changed"}
            assert names["c5"]["data"] == {"i": "5"}
            assert int(lst["metadata"]["resourceVersion"]) >= last_rv
            st, new = await api.post("/api/v1/namespaces/default/configmaps", cm("after"))
            assert st == 201 and int(new["metadata"]["resourceVersion"]) > last_rv
            st, w = await api.get(f"{W}/w1")  # CRDs are served again after the restart
            assert st == 200 and w["spec"]["size"] == 3
            # a watch from a version before the restart is too old: 410 in the stream
            ev = await api.watch(
                "/api/v1/namespaces/default/configmaps",
                1,
                timeout=3,
                resourceVersion=str(last_rv - 5),
            )
            assert ev and ev[0]["type"] == "ERROR" and ev[0]["object"]["code"] == 410
        finally:
            await api.close()


async def test_in_memory_subprocess_fixture(apiserver: object) -> None:
    srv = apiserver
    api = Api(srv.url, srv.token, ca_file=srv.ca_file)  # type: ignore[attr-defined]
    try:
        st, _ = await api.post("/api/v1/namespaces/default/configmaps", cm("x"))
        assert st == 201
        assert not os.path.exists(os.path.join(srv.data_dir, "store.db"))  # type: ignore
    finally:
        await api.close()
