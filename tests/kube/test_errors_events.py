"""Pure parts: error mapping from Status bodies, Event building and rate limiting."""

from __future__ import annotations

import orjson
import pytest

from gpuyard.kube.errors import (
    AlreadyExists,
    ApiError,
    Conflict,
    Gone,
    Invalid,
    NotFound,
    TooManyRequests,
)
from gpuyard.kube.events import EventRecorder, build_event, involved_object


def status(code: int, reason: str, msg: str = "m", **extra: object) -> bytes:
    return orjson.dumps(
        {"kind": "Status", "status": "Failure", "code": code, "reason": reason, "message": msg}
        | extra
    )


@pytest.mark.parametrize(
    ("code", "reason", "cls"),
    [
        (404, "NotFound", NotFound),
        (409, "AlreadyExists", AlreadyExists),
        (409, "Conflict", Conflict),
        (410, "Expired", Gone),
        (422, "Invalid", Invalid),
        (429, "TooManyRequests", TooManyRequests),
    ],
)
def test_status_maps_to_subclass(code: int, reason: str, cls: type) -> None:
    err = ApiError.from_response(code, status(code, reason, "the message"))
    assert type(err) is cls
    assert err.status == code and err.reason == reason and err.message == "the message"
    assert err.body["kind"] == "Status"


def test_already_exists_is_a_conflict_but_not_vice_versa() -> None:
    assert isinstance(ApiError.from_response(409, status(409, "AlreadyExists")), Conflict)
    assert not isinstance(ApiError.from_response(409, status(409, "Conflict")), AlreadyExists)


def test_non_json_error_body_and_retry_after() -> None:
    err = ApiError.from_response(502, b"<html>bad gateway</html>")
    assert err.status == 502 and "bad gateway" in err.message
    err = ApiError.from_response(
        429, status(429, "TooManyRequests", details={"retryAfterSeconds": 3})
    )
    assert err.retry_after == 3.0


def test_build_event_shape() -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "ml", "uid": "u1", "resourceVersion": "5"},
    }
    ev = build_event(pod, "Warning", "Unschedulable", "no nodes", "gpuyard-scheduler", wall=1.5)
    assert ev["involvedObject"] == {
        "apiVersion": "v1",
        "kind": "Pod",
        "name": "p",
        "namespace": "ml",
        "uid": "u1",
        "resourceVersion": "5",
    }
    assert ev["metadata"]["namespace"] == "ml"
    assert ev["metadata"]["name"].startswith("p.")
    assert ev["count"] == 1 and ev["source"] == {"component": "gpuyard-scheduler"}
    assert ev["firstTimestamp"] == "1970-01-01T00:00:01Z"
    with pytest.raises(ValueError, match="Normal or Warning"):
        build_event(pod, "Info", "X", "y", "c")
    node_ref = involved_object({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n"}})
    assert build_event(node_ref, "Normal", "R", "m", "c")["metadata"]["namespace"] == "default"


def test_rate_limit_is_per_object_and_refills() -> None:
    rec = EventRecorder(None, "x", burst=3, refill_per_s=1.0)  # type: ignore[arg-type]
    a = {"kind": "Pod", "namespace": "ns", "name": "a"}
    b = {"kind": "Pod", "namespace": "ns", "name": "b"}
    assert [rec.allow(a, 0.0) for _ in range(4)] == [True, True, True, False]
    assert rec.allow(b, 0.0)  # another object has its own bucket
    assert not rec.allow(a, 0.5)
    assert rec.allow(a, 1.6)  # refilled


def test_request_counter_rates_and_prometheus_export() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from gpuyard.kube.metrics import RequestCounter, register_prometheus

    c = RequestCounter(started_at=100.0)
    for _ in range(30):
        c.record("list", 200)
    c.record("watch", 200)
    c.record("create", 409)
    c.record_retry()
    assert c.per_minute(now=130.0) == {"create": 2.0, "list": 60.0, "watch": 2.0}
    assert c.snapshot()["by_code"] == {"2xx": 31, "4xx": 1}
    reg = CollectorRegistry()
    register_prometheus(c, "scheduler", reg)
    text = generate_latest(reg).decode()
    assert 'gpuyard_kube_requests_total{component="scheduler",verb="list"} 30.0' in text
    assert 'gpuyard_kube_request_retries_total{component="scheduler"} 1.0' in text
