"""The audit log: one JSON line per request, in the shape of audit.k8s.io/v1 Event
(who: user, impersonatedUser, sourceIPs, userAgent; what: verb, requestURI,
objectRef; how it ended: responseStatus.code; the authorization decision and its
reason in annotations), written to DATA_DIR/audit.log (mode 0600) unless another
path is given, rotated by size, by a background writer (`AuditLog`).

A policy (audit.k8s.io/v1 Policy, `--audit-policy-file`) picks a level per request by
its first matching rule: None (not logged), Metadata (who, what, outcome), Request
(also the request body) or RequestResponse (also the response body). Without a file,
`DEFAULT_POLICY`: heartbeats, leader-election renewals, Events and probes are not
logged, Secrets, ConfigMaps and tokens only at Metadata (their bodies hold secrets),
RBAC writes at Request (what was granted), everything else at Metadata.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import yaml

from gpuyard.apiserver.attributes import Attributes
from gpuyard.apiserver.authn import UserInfo

LEVELS = ("None", "Metadata", "Request", "RequestResponse")
log = logging.getLogger("gpuyard.apiserver.audit")

DEFAULT_POLICY: dict[str, Any] = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        {
            "level": "None",
            "verbs": ["get", "update", "patch"],
            "resources": [{"group": "coordination.k8s.io", "resources": ["leases"]}],
        },
        {
            "level": "None",
            "resources": [{"group": "", "resources": ["events"]}, {"group": "events.k8s.io"}],
        },
        {
            "level": "None",
            "nonResourceURLs": ["/healthz*", "/livez*", "/readyz*", "/version", "/metrics"],
        },
        {
            "level": "Metadata",
            "resources": [
                {"group": "", "resources": ["secrets", "configmaps", "serviceaccounts/token"]},
                {"group": "authentication.k8s.io", "resources": ["tokenreviews"]},
            ],
        },
        {
            "level": "Request",
            "verbs": ["create", "update", "patch", "delete", "deletecollection"],
            "resources": [{"group": "rbac.authorization.k8s.io"}],
        },
        {"level": "Metadata"},
    ],
}


class PolicyError(ValueError):
    """An audit policy file that cannot be used (named in the message)."""


def _strs(v: Any, where: str) -> tuple[str, ...]:
    if v is None:
        return ()
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise PolicyError(f"{where}: must be a list of strings")
    return tuple(v)


@dataclass(frozen=True)
class _Rule:
    level: str
    users: tuple[str, ...]
    groups: tuple[str, ...]
    verbs: tuple[str, ...]
    resources: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] | None
    namespaces: tuple[str, ...]
    urls: tuple[str, ...]

    def matches(self, user: UserInfo, a: Attributes) -> bool:
        if self.users and user.name not in self.users:
            return False
        if self.groups and not set(self.groups) & set(user.groups):
            return False
        if self.verbs and a.verb not in self.verbs:
            return False
        if not a.resource_request:
            if self.resources is not None or self.namespaces:
                return False
            if self.urls:
                return any(
                    u == a.path or u == "*" or (u.endswith("*") and a.path.startswith(u[:-1]))
                    for u in self.urls
                )
            return True
        if self.urls:
            return False
        if self.namespaces and a.namespace not in self.namespaces:
            return False
        if self.resources is None:
            return True
        full = a.resource_with_sub
        for group, resources, names in self.resources:
            if group != a.group:
                continue
            if resources and not any(
                r in (full, "*")
                or (r.endswith("/*") and full.startswith(r[:-1]))
                or (r.startswith("*/") and a.subresource and r[2:] == a.subresource)
                for r in resources
            ):
                continue
            if names and a.name not in names:
                continue
            return True
        return False


class Policy:
    def __init__(self, doc: Any, source: str = "the audit policy") -> None:
        if not isinstance(doc, dict) or doc.get("kind") != "Policy":
            raise PolicyError(f"{source}: not an audit.k8s.io/v1 Policy")
        if doc.get("apiVersion") not in ("audit.k8s.io/v1",):
            raise PolicyError(f"{source}: apiVersion must be audit.k8s.io/v1")
        rules = doc.get("rules")
        if not isinstance(rules, list) or not rules:
            raise PolicyError(f"{source}: rules: at least one rule is required")
        out: list[_Rule] = []
        for i, r in enumerate(rules):
            where = f"{source}: rules[{i}]"
            if not isinstance(r, dict):
                raise PolicyError(f"{where}: must be an object")
            level = r.get("level")
            if level not in LEVELS:
                raise PolicyError(f"{where}.level: must be one of {', '.join(LEVELS)}")
            res = r.get("resources")
            parsed: list[tuple[str, tuple[str, ...], tuple[str, ...]]] | None = None
            if res is not None:
                if not isinstance(res, list):
                    raise PolicyError(f"{where}.resources: must be a list")
                parsed = []
                for j, g in enumerate(res):
                    if not isinstance(g, dict):
                        raise PolicyError(f"{where}.resources[{j}]: must be an object")
                    group = g.get("group", "")
                    if not isinstance(group, str):
                        raise PolicyError(f"{where}.resources[{j}].group: must be a string")
                    parsed.append(
                        (
                            group,
                            _strs(g.get("resources"), f"{where}.resources[{j}].resources"),
                            _strs(g.get("resourceNames"), f"{where}.resources[{j}].resourceNames"),
                        )
                    )
            urls = _strs(r.get("nonResourceURLs"), f"{where}.nonResourceURLs")
            if urls and (parsed is not None or r.get("namespaces")):
                raise PolicyError(
                    f"{where}: nonResourceURLs cannot be combined with resources or namespaces"
                )
            out.append(
                _Rule(
                    str(level),
                    _strs(r.get("users"), f"{where}.users"),
                    _strs(r.get("userGroups"), f"{where}.userGroups"),
                    _strs(r.get("verbs"), f"{where}.verbs"),
                    tuple(parsed) if parsed is not None else None,
                    _strs(r.get("namespaces"), f"{where}.namespaces"),
                    urls,
                )
            )
        self.rules = tuple(out)
        # A rule reads the object's name only through resourceNames; without one, every
        # object of a (user, verb, resource, namespace) gets the same level, so levels
        # are remembered per those (bounded: cleared when full).
        self._names = any(names for r in self.rules for _g, _rs, names in (r.resources or ()))
        self._levels: dict[tuple[Any, ...], str] = {}

    @classmethod
    def load(cls, path: str) -> Policy:
        try:
            with open(path) as f:
                doc = yaml.safe_load(f)
        except OSError as exc:
            raise PolicyError(f"audit policy {path}: {exc.strerror or exc}") from None
        except yaml.YAMLError as exc:
            raise PolicyError(f"audit policy {path}: not YAML: {exc}") from None
        return cls(doc, f"audit policy {path}")

    def level(self, user: UserInfo, a: Attributes) -> str:
        key = (
            user.name,
            user.groups,
            a.verb,
            a.resource_request,
            a.group,
            a.resource,
            a.subresource,
            a.namespace,
            a.name if self._names else "",
            "" if a.resource_request else a.path,
        )
        got = self._levels.get(key)
        if got is not None:
            return got
        got = self._match(user, a)
        if len(self._levels) >= 4096:
            self._levels.clear()
        self._levels[key] = got
        return got

    def _match(self, user: UserInfo, a: Attributes) -> str:
        for r in self.rules:
            if r.matches(user, a):
                return r.level
        return "None"


def _ts(t: datetime) -> str:
    """RFC 3339 with microseconds in UTC (isoformat: a fifth of strftime's time; its
    "+00:00" suffix is cut rather than the zone replaced, one call fewer)."""
    if t.tzinfo is UTC:  # now()'s: the common case, no conversion
        return t.isoformat(timespec="microseconds")[:-6] + "Z"
    if t.tzinfo is not None:
        t = t.astimezone(UTC).replace(tzinfo=None)
    return t.isoformat(timespec="microseconds") + "Z"


def now() -> datetime:
    return datetime.now(UTC)


class AuditLog:
    """Appends events to a file (mode 0600), rotated past max_bytes with `backups`
    older files kept (audit.log.1 is the newest of them).

    Events are written by a background thread, in order and in batches (one write
    call for all that gathered in `gather_s` after the first), so that a request pays
    only for appending its event to a queue. The queue is bounded: a request that finds `max_pending` events
    waiting blocks until the writer has taken them (the log never drops an event; a
    disk slower than the requests slows the requests). `flush()` returns once every
    event written so far is in the file; `close()` flushes, then stops the thread:
    nothing is lost on a clean stop. What a kill -9 catches still queued (at most a
    few milliseconds of requests) is lost, as with kube-apiserver's batch backend."""

    def __init__(
        self,
        path: str,
        policy: Policy | None = None,
        *,
        max_bytes: int = 100 * 1024 * 1024,
        backups: int = 5,
        max_pending: int = 10_000,
        gather_s: float = 0.01,
    ) -> None:
        self.path = path
        self.policy = policy or Policy(DEFAULT_POLICY, "the default audit policy")
        self.max_bytes = max_bytes
        self.backups = backups
        self.max_pending = max(1, max_pending)
        self.gather_s = gather_s
        self._fd = self._open()
        self._size = os.fstat(self._fd).st_size
        self.failed = False
        self.waited_full = 0  # times a request found the queue full and waited
        self._queue: list[dict[str, Any] | bytes] = []
        self._queued = 0  # events handed to write() in all
        self._done = 0  # events the writer has written (or failed to)
        self._closed = False
        self._cond = threading.Condition(threading.Lock())
        self._thread = threading.Thread(target=self._run, name="audit-log", daemon=True)
        self._thread.start()

    def _open(self) -> int:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.fchmod(fd, 0o600)
        return fd

    def level(self, user: UserInfo, a: Attributes) -> str:
        return self.policy.level(user, a)

    def write(self, event: dict[str, Any] | bytes) -> None:
        """Queue one event (the caller hands it over: it is not to be changed after), or
        its line already encoded (`line`)."""
        with self._cond:
            if self._closed:
                log.error("audit log %s is closed: an event was not written", self.path)
                return
            if len(self._queue) >= self.max_pending:
                self.waited_full += 1
                while len(self._queue) >= self.max_pending and not self._closed:
                    self._cond.wait()
            self._queue.append(event)
            self._queued += 1
            if len(self._queue) == 1:
                self._cond.notify_all()  # the writer sleeps only while nothing waits

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every event queued so far is written (at most `gather_s` and a
        write after it was queued); False on timeout."""
        with self._cond:
            target = self._queued
            return self._cond.wait_for(lambda: self._done >= target, timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue:
                    return  # closed and drained
            # Let a batch gather: waking for every event cost far more than writing it
            # (thread switches); an idle server's writer sleeps until the next event.
            time.sleep(self.gather_s)
            with self._cond:
                batch, self._queue = self._queue, []
                self._cond.notify_all()  # room again for requests that wait
            self._write_lines(
                [ev if type(ev) is bytes else orjson.dumps(ev) + b"\n" for ev in batch]
            )
            with self._cond:
                self._done += len(batch)
                self._cond.notify_all()

    def _write_lines(self, lines: list[bytes]) -> None:
        try:
            chunk: list[bytes] = []
            size = 0
            for line in lines:
                if self._size + size + len(line) > self.max_bytes and self._size + size:
                    self._write_all(b"".join(chunk))
                    chunk, size = [], 0
                    self._rotate()
                chunk.append(line)
                size += len(line)
            self._write_all(b"".join(chunk))
            self.failed = False
        except OSError as exc:  # a full disk: requests go on, the log says why once
            if not self.failed:
                log.error("cannot write the audit log %s: %s", self.path, exc)
            self.failed = True

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            self._size += n
            view = view[n:]

    def _rotate(self) -> None:
        os.close(self._fd)
        for i in range(self.backups - 1, 0, -1):
            with contextlib.suppress(OSError):
                os.replace(f"{self.path}.{i}", f"{self.path}.{i + 1}")
        if self.backups > 0:
            os.replace(self.path, f"{self.path}.1")
        else:
            os.unlink(self.path)
        self._fd = self._open()
        self._size = 0

    def close(self) -> None:
        """Write what is queued, stop the writer, close the file."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        self._thread.join()
        with contextlib.suppress(OSError):
            os.close(self._fd)


def _who_fields(
    user: UserInfo, impersonated: UserInfo | None, source_ip: str, user_agent: str
) -> dict[str, Any]:
    """An event's who-asked fields, in the event's order: user, impersonatedUser,
    sourceIPs, userAgent (the last three only when there is one)."""
    part: dict[str, Any] = {"user": user.as_dict()}
    if impersonated is not None:
        part["impersonatedUser"] = impersonated.as_dict()
    if source_ip:
        part["sourceIPs"] = [source_ip]
    if user_agent:
        part["userAgent"] = user_agent
    return part


def _object_ref(a: Attributes) -> dict[str, str]:
    """An event's objectRef for a resource request (namespace, name and subresource
    only when set)."""
    ref: dict[str, str] = {"resource": a.resource}
    if a.namespace:
        ref["namespace"] = a.namespace
    if a.name:
        ref["name"] = a.name
    ref["apiGroup"] = a.group
    ref["apiVersion"] = a.version
    if a.subresource:
        ref["subresource"] = a.subresource
    return ref


def _annotations(
    decision: tuple[str, str] | None, annotations: dict[str, str] | None
) -> dict[str, str]:
    """An event's annotations: the authorization decision and reason, then admission's
    (policies' auditAnnotations)."""
    ann: dict[str, str] = {}
    if decision is not None:
        ann["authorization.k8s.io/decision"] = decision[0]
        ann["authorization.k8s.io/reason"] = decision[1]
    if annotations:
        ann.update(annotations)
    return ann


def event(
    level: str,
    audit_id: str,
    received: datetime,
    uri: str,
    a: Attributes,
    user: UserInfo,
    impersonated: UserInfo | None,
    source_ip: str,
    user_agent: str,
    code: int,
    stage: str = "ResponseComplete",
    decision: tuple[str, str] | None = None,
    message: str = "",
    request_object: Any = None,
    response_object: Any = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    ev: dict[str, Any] = {
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": level,
        "auditID": audit_id,
        "stage": stage,
        "requestURI": uri,
        "verb": a.verb,
        **_who_fields(user, impersonated, source_ip, user_agent),
    }
    if a.resource_request:
        ev["objectRef"] = _object_ref(a)
    status: dict[str, Any] = {"metadata": {}, "code": code}
    if code >= 400:
        status["status"] = "Failure"
        if message:
            status["message"] = message
    ev["responseStatus"] = status
    if request_object is not None:
        ev["requestObject"] = request_object
    if response_object is not None:
        ev["responseObject"] = response_object
    t = now()
    ev["requestReceivedTimestamp"] = _ts(received)
    ev["stageTimestamp"] = _ts(t)
    if decision is not None or annotations:
        ev["annotations"] = _annotations(decision, annotations)
    return ev


# Encoded pieces of audit lines that repeat from request to request: who asked (user,
# impersonated user, source IP, user agent) and the response status of a success.
_WHO: dict[tuple[Any, ...], bytes] = {}
_STATUS_OK: dict[int, bytes] = {}
_HEADS: dict[tuple[str, str], bytes] = {}


def _who(user: UserInfo, impersonated: UserInfo | None, source_ip: str, user_agent: str) -> bytes:
    key = (user, impersonated, source_ip, user_agent)
    hit = _WHO.get(key)
    if hit is None:
        hit = b"," + orjson.dumps(_who_fields(user, impersonated, source_ip, user_agent))[1:-1]
        if len(_WHO) >= 4096:
            _WHO.clear()
        _WHO[key] = hit
    return hit


def line(
    level: str,
    audit_id: str,
    received: datetime,
    uri: str,
    a: Attributes,
    user: UserInfo,
    impersonated: UserInfo | None,
    source_ip: str,
    user_agent: str,
    code: int,
    stage: str = "ResponseComplete",
    decision: tuple[str, str] | None = None,
    message: str = "",
    annotations: dict[str, str] | None = None,
) -> bytes:
    """`event`'s line (JSON and a newline) for an event without request or response
    objects, made from encoded pieces: what repeats (the head, who asked, a success's
    status) is encoded once and kept, the rest is joined as bytes. The same event,
    field for field and in the same order, as encoding `event`'s dict."""
    head = _HEADS.get((level, stage))
    if head is None:
        head = _HEADS[(level, stage)] = (
            b'{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":'
            + orjson.dumps(level)
            + b',"auditID":'
        )
    parts = [
        head,
        orjson.dumps(audit_id),
        b',"stage":',
        orjson.dumps(stage),
        b',"requestURI":',
        orjson.dumps(uri),
        b',"verb":',
        orjson.dumps(a.verb),
        _who(user, impersonated, source_ip, user_agent),
    ]
    if a.resource_request:
        parts.append(b',"objectRef":')
        parts.append(orjson.dumps(_object_ref(a)))
    if code < 400:
        st = _STATUS_OK.get(code)
        if st is None:
            st = _STATUS_OK[code] = b',"responseStatus":' + orjson.dumps(
                {"metadata": {}, "code": code}
            )
        parts.append(st)
    else:
        status: dict[str, Any] = {"metadata": {}, "code": code, "status": "Failure"}
        if message:
            status["message"] = message
        parts.append(b',"responseStatus":')
        parts.append(orjson.dumps(status))
    t = now()
    parts.append(b',"requestReceivedTimestamp":"')
    parts.append(_ts(received).encode())
    parts.append(b'","stageTimestamp":"')
    parts.append(_ts(t).encode())
    if decision is not None or annotations:
        parts.append(b'","annotations":')
        parts.append(orjson.dumps(_annotations(decision, annotations)))
        parts.append(b"}\n")
    else:
        parts.append(b'"}\n')
    return b"".join(parts)
