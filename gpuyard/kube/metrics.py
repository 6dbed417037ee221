"""Request accounting for `gpuyard.kube` clients (DESIGN principle 4).

Every `Client` owns a `RequestCounter`: requests by verb (get, list, watch, create,
update, patch, delete, ...) and by HTTP status class, plus retries. Components report
`per_minute(now)` and export it as Prometheus metrics with `register_prometheus`.
Pure bookkeeping: time is passed in by the caller.

Every counter also adds to the process's totals by component, verb and status code
(`PROCESS`), which `register_process` exports as `gpuyard_api_requests_total`: in
`gpuyard up` all components share one process and one /metrics.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any


class ProcessRequests:
    """Requests of every client of the process: (component, verb, code) -> count."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: Counter[tuple[str, str, str]] = Counter()
        self.retries: Counter[str] = Counter()

    def add(self, component: str, verb: str, status: int) -> None:
        with self._lock:
            self.counts[(component, verb, str(status) if status else "error")] += 1

    def add_retry(self, component: str) -> None:
        with self._lock:
            self.retries[component] += 1

    def snapshot(self) -> tuple[dict[tuple[str, str, str], int], dict[str, int]]:
        with self._lock:
            return dict(self.counts), dict(self.retries)


PROCESS = ProcessRequests()


class RequestCounter:
    """Counts requests made by one client, by verb and by status code class."""

    def __init__(self, started_at: float, component: str = "client") -> None:
        self.started_at = started_at
        self.component = component
        self._lock = threading.Lock()
        self.by_verb: Counter[str] = Counter()
        self.by_code: Counter[str] = Counter()
        self.retries = 0

    def record(self, verb: str, status: int) -> None:
        with self._lock:
            self.by_verb[verb] += 1
            self.by_code[f"{status // 100}xx" if status else "error"] += 1
        PROCESS.add(self.component, verb, status)

    def record_retry(self) -> None:
        with self._lock:
            self.retries += 1
        PROCESS.add_retry(self.component)

    @property
    def total(self) -> int:
        return sum(self.by_verb.values())

    def per_minute(self, now: float) -> dict[str, float]:
        """Average requests per minute by verb since `started_at` (at least one second)."""
        minutes = max(now - self.started_at, 1.0) / 60.0
        with self._lock:
            return {verb: n / minutes for verb, n in sorted(self.by_verb.items())}

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "by_verb": dict(self.by_verb),
                "by_code": dict(self.by_code),
                "retries": self.retries,
                "total": sum(self.by_verb.values()),
            }


def register_prometheus(counter: RequestCounter, component: str, registry: Any = None) -> Any:
    """Expose `counter` as `gpuyard_kube_requests_total{component,verb}` (a custom
    collector reading the live counts). Returns the collector."""
    from prometheus_client import REGISTRY
    from prometheus_client.core import CounterMetricFamily

    class _Collector:
        def collect(self) -> Any:
            fam = CounterMetricFamily(
                "gpuyard_kube_requests",
                "Requests made to the Kubernetes API, by verb",
                labels=["component", "verb"],
            )
            for verb, n in counter.snapshot()["by_verb"].items():
                fam.add_metric([component, verb], n)
            yield fam
            retries = CounterMetricFamily(
                "gpuyard_kube_request_retries",
                "Requests to the Kubernetes API retried after 429/5xx",
                labels=["component"],
            )
            retries.add_metric([component], counter.retries)
            yield retries

    collector = _Collector()
    (registry or REGISTRY).register(collector)
    return collector


_registered: set[int] = set()


def register_process(registry: Any = None) -> None:
    """Export the process's request totals (`PROCESS`) in `registry` (the default one
    when None) as `gpuyard_api_requests_total{component,verb,code}` and
    `gpuyard_api_request_retries_total{component}`; once per registry."""
    from prometheus_client import REGISTRY
    from prometheus_client.core import CounterMetricFamily

    reg = registry or REGISTRY
    if id(reg) in _registered:
        return
    _registered.add(id(reg))

    class _Collector:
        def collect(self) -> Any:
            counts, retries = PROCESS.snapshot()
            fam = CounterMetricFamily(
                "gpuyard_api_requests",
                "Requests made to the Kubernetes API by this process's clients",
                labels=["component", "verb", "code"],
            )
            for (component, verb, code), n in sorted(counts.items()):
                fam.add_metric([component, verb, code], n)
            yield fam
            rfam = CounterMetricFamily(
                "gpuyard_api_request_retries",
                "Requests to the Kubernetes API retried after 429/5xx or a lost connection",
                labels=["component"],
            )
            for component, n in sorted(retries.items()):
                rfam.add_metric([component], n)
            yield rfam

    reg.register(_Collector())


def serve(
    port: int, addr: str = "0.0.0.0", registry: Any = None, auth: Any = None
) -> tuple[Any, int]:
    """Serve `registry` (the process's default one when None, with the API request
    totals added) at http://addr:port/metrics from a thread; port 0 picks a free one.
    `auth`: a metrics_auth.MetricsAuth every request must pass (None: open).
    Returns (server, port). Raises OSError when the port cannot be bound."""
    from prometheus_client import REGISTRY, make_wsgi_app, start_http_server

    reg = registry or REGISTRY
    register_process(reg)
    if auth is None:
        server, _thread = start_http_server(port, addr=addr, registry=reg)
        return server, int(server.server_address[1])
    import socketserver
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    class Server(socketserver.ThreadingMixIn, WSGIServer):
        daemon_threads = True

    class Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = make_server(addr, port, auth.wsgi(make_wsgi_app(reg)), Server, Quiet)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server, int(server.server_address[1])


def add_auth_argument(parser: Any) -> None:
    """`--metrics-auth on|off` (on: /metrics only for callers the API server allows)."""
    parser.add_argument(
        "--metrics-auth",
        choices=("on", "off"),
        default="on",
        help="on (the default): /metrics answers only a bearer token whose user may get"
        " the non-resource URL /metrics (TokenReview + SubjectAccessReview, cached 10 s);"
        " off: anyone who reaches the port",
    )


def auth_from_args(args: Any) -> Any:
    """The MetricsAuth that --metrics-auth asks for (None: off)."""
    if getattr(args, "metrics_auth", "on") == "off":
        return None
    from gpuyard.kube.metrics_auth import MetricsAuth

    return MetricsAuth.from_env(getattr(args, "kubeconfig", None))
