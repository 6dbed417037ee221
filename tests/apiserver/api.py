"""A minimal HTTP client for the API server tests (plain aiohttp, no gpuyard.kube)."""

from __future__ import annotations

import ssl
from typing import Any

import aiohttp
import orjson


class Api:
    def __init__(
        self, url: str, token: str, ca_pem: bytes | None = None, ca_file: str | None = None
    ) -> None:
        self.url = url
        self.token = token
        ctx = (
            ssl.create_default_context(cafile=ca_file)
            if ca_file
            else ssl.create_default_context(cadata=(ca_pem or b"").decode())
        )
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx))

    async def close(self) -> None:
        await self.session.close()

    async def req(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        ctype: str | None = None,
        token: str | None = "default",
        headers: dict[str, str] | None = None,
        **query: Any,
    ) -> tuple[int, Any]:
        h = dict(headers or {})
        if token == "default":
            h["Authorization"] = f"Bearer {self.token}"
        elif token:
            h["Authorization"] = f"Bearer {token}"
        data: bytes | None = None
        if body is not None:
            data = body if isinstance(body, bytes) else orjson.dumps(body)
            h["Content-Type"] = ctype or "application/json"
        q = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in query.items()}
        async with self.session.request(
            method, self.url + path, data=data, headers=h, params=q
        ) as r:
            raw = await r.read()
            try:
                return r.status, orjson.loads(raw)
            except orjson.JSONDecodeError:
                return r.status, raw

    async def get(self, path: str, **q: Any) -> tuple[int, Any]:
        return await self.req("GET", path, **q)

    async def post(self, path: str, body: Any, **q: Any) -> tuple[int, Any]:
        return await self.req("POST", path, body, **q)

    async def put(self, path: str, body: Any, **q: Any) -> tuple[int, Any]:
        return await self.req("PUT", path, body, **q)

    async def patch(
        self, path: str, body: Any, ctype: str = "application/merge-patch+json", **q: Any
    ) -> tuple[int, Any]:
        return await self.req("PATCH", path, body, ctype=ctype, **q)

    async def delete(self, path: str, body: Any = None, **q: Any) -> tuple[int, Any]:
        return await self.req("DELETE", path, body, **q)

    async def watch(
        self, path: str, max_events: int, timeout: float = 5, **q: Any
    ) -> list[dict[str, Any]]:
        """Watch and collect up to max_events events (or until timeout / stream end)."""
        import asyncio

        q = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in q.items()}
        q["watch"] = "true"
        events: list[dict[str, Any]] = []

        async def run() -> None:
            async with self.session.get(
                self.url + path, params=q, headers={"Authorization": f"Bearer {self.token}"}
            ) as r:
                assert r.status == 200, await r.text()
                async for line in r.content:
                    if line.strip():
                        events.append(orjson.loads(line))
                        if len(events) >= max_events:
                            return

        try:
            await asyncio.wait_for(run(), timeout)
        except TimeoutError:
            pass
        return events


def pod(name: str, labels: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}], **spec},
    }


def cm(name: str, data: dict[str, str] | None = None, **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, **meta},
        "data": data or {},
    }


def crd(
    kind: str,
    schema: dict[str, Any],
    *,
    group: str = "example.com",
    scope: str = "Namespaced",
    short_names: list[str] | None = None,
    **version: Any,
) -> dict[str, Any]:
    """A CustomResourceDefinition of one served and stored version v1 of `kind` (plural:
    its lowercase name plus "s"), with `schema` as its openAPIV3Schema; `version` adds to
    the version (subresources, additionalPrinterColumns)."""
    plural = kind.lower() + "s"
    names: dict[str, Any] = {"plural": plural, "singular": kind.lower(), "kind": kind}
    if short_names is not None:
        names["shortNames"] = short_names
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "scope": scope,
            "names": names,
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    **version,
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }
