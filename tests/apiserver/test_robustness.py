"""No bad request body makes the server answer 500 or corrupt what is stored."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpuyard.apiserver.server import APIServer

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=8),
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=6), kids, max_size=4)
    ),
    max_leaves=12,
)
meta = st.fixed_dictionaries(
    {},
    optional={
        "name": json_values | st.sampled_from(["ok", "a/b", ""]),
        "labels": json_values,
        "annotations": json_values,
        "finalizers": json_values,
        "ownerReferences": json_values,
        "namespace": json_values,
        "generateName": json_values,
        "resourceVersion": json_values,
    },
)
objects = st.fixed_dictionaries(
    {"metadata": meta | json_values},
    optional={
        "apiVersion": st.sampled_from(["v1", "apps/v1", 3]),
        "kind": json_values,
        "spec": json_values,
        "status": json_values,
        "data": json_values,
    },
)
PATHS = [
    "/api/v1/namespaces/default/configmaps",
    "/api/v1/namespaces/default/pods",
    "/api/v1/nodes",
    "/api/v1/namespaces",
    "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
    "/api/v1/namespaces/default/pods/p/binding",
    "/api/v1/namespaces/default/pods/p/eviction",
]


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(path=st.sampled_from(PATHS), method=st.sampled_from(["POST", "PUT", "PATCH"]), body=objects)
def test_random_bodies_never_500(path: str, method: str, body: Any) -> None:
    async def go() -> None:
        srv = APIServer(None)
        await srv.start(listen=False)
        try:
            await srv.dispatch(
                "POST",
                "/api/v1/namespaces/default/pods",
                {},
                {},
                orjson.dumps(
                    {
                        "metadata": {"name": "p"},
                        "spec": {"containers": [{"name": "c", "image": "x"}]},
                    }
                ),
            )
            p = path if method == "POST" else path + "/p"
            if "binding" in path or "eviction" in path:
                p = path
            ctype = "application/merge-patch+json" if method == "PATCH" else "application/json"
            r = await srv.dispatch(method, p, {}, {"Content-Type": ctype}, orjson.dumps(body))
            assert r.status < 500, r.body
            for lp in ("/api/v1/pods", "/api/v1/namespaces/default/configmaps", "/api/v1/nodes"):
                r = await srv.dispatch(
                    "GET", lp, {"labelSelector": "a=b", "fieldSelector": "metadata.name!=x"}
                )
                assert r.status == 200, r.body
        finally:
            await srv.stop()

    asyncio.run(go())
