"""Who may read a component's /metrics on a real cluster: the API server decides, the
way kube-rbac-proxy and controller-runtime's metrics filter do. The caller shows a
bearer token (Prometheus sends its ServiceAccount's); a TokenReview says whom it
names, a SubjectAccessReview whether that user may `get` the non-resource URL
/metrics. 401 without a valid token, 403 for a user not allowed. Answers are cached
for `ttl_s` (a revoked token or removed binding stops working within that time).

The reviews run on a loop of their own in a daemon thread, with a client of the
component's own credentials (which need `create` on tokenreviews and
subjectaccessreviews: the system:auth-delegator ClusterRole), so the metrics server's
threads wait on them without touching the component's loop."""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections import OrderedDict
from typing import Any

PATH = "/metrics"


class MetricsAuth:
    def __init__(self, make_client: Any, *, ttl_s: float = 10.0, max_cached: int = 1000) -> None:
        self._make_client = make_client
        self.ttl_s = ttl_s
        self.max_cached = max_cached
        self._cache: OrderedDict[str, tuple[float, int, str]] = OrderedDict()
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._client: Any = None
        self.reviews = 0
        threading.Thread(target=self._loop.run_forever, name="metrics-auth", daemon=True).start()

    @classmethod
    def from_env(cls, kubeconfig: str | None, **kw: Any) -> MetricsAuth:
        from gpuyard.kube.client import Client

        return cls(lambda: Client.from_env(kubeconfig, component="metrics-auth"), **kw)

    def check(self, authorization: str) -> tuple[int, str]:
        """(HTTP status, message) for an Authorization header: 200 lets it through."""
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return 401, "a bearer token is required"
        key = hashlib.sha256(token.encode()).hexdigest()
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None and now - hit[0] < self.ttl_s:
            return hit[1], hit[2]
        try:
            fut = asyncio.run_coroutine_threadsafe(self._review(token), self._loop)
            code, msg = fut.result(timeout=15)
        except Exception as exc:  # the API server is unreachable: refuse, not cached
            return 503, f"cannot check the token with the API server: {exc}"
        with self._lock:
            self._cache[key] = (now, code, msg)
            self._cache.move_to_end(key)
            while len(self._cache) > self.max_cached:
                self._cache.popitem(last=False)
        return code, msg

    async def _review(self, token: str) -> tuple[int, str]:
        if self._client is None:
            self._client = self._make_client()
        self.reviews += 1
        tr = await self._client.create(
            {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenReview",
                "spec": {"token": token},
            }  # fmt: skip
        )
        st = tr.get("status") or {}
        if not st.get("authenticated"):
            return 401, str(st.get("error") or "invalid token")
        user = st.get("user") or {}
        name = str(user.get("username") or "")
        spec: dict[str, Any] = {
            "user": name,
            "groups": list(user.get("groups") or ()),
            "nonResourceAttributes": {"path": PATH, "verb": "get"},
        }
        for k in ("uid", "extra"):
            if user.get(k):
                spec[k] = user[k]
        sar = await self._client.create(
            {
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SubjectAccessReview",
                "spec": spec,
            }  # fmt: skip
        )
        if (sar.get("status") or {}).get("allowed"):
            return 200, ""
        return 403, f'{name} may not get the non-resource URL "{PATH}"'

    def wsgi(self, app: Any) -> Any:
        """`app` behind this check."""

        def guarded(environ: dict[str, Any], start_response: Any) -> Any:
            code, msg = self.check(str(environ.get("HTTP_AUTHORIZATION") or ""))
            if code == 200:
                return app(environ, start_response)
            reason = {401: "Unauthorized", 403: "Forbidden", 503: "Service Unavailable"}[code]
            body = (msg + "\n").encode()
            headers = [("Content-Type", "text/plain; charset=utf-8"),
                       ("Content-Length", str(len(body)))]  # fmt: skip
            if code == 401:
                headers.append(("WWW-Authenticate", 'Bearer realm="metrics"'))
            start_response(f"{code} {reason}", headers)
            return [body]

        return guarded
