"""The transport-independent REST core of the embedded API server.

`Core.dispatch(method, path, query, headers, body) -> Response` answers one request;
the aiohttp layer in `server.py` and the in-process client both call it. Here live the
Kubernetes semantics: list/watch/get/create/update/patch/delete, subresources (status,
binding, eviction), finalizers and graceful deletion, dry runs, CRDs, admission.
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from gpuyard.apiserver import (
    admission_policy,
    conversion,
    crdversions,
    defaults,
    ephemeral,
    ids,
    managedfields,
    metricsapi,
    patch,
    paths,
    protobuf,
    readviews,
    requestctx,
    scale,
    schemas,
    simkubelet,
    strategies,
    tables,
    validation,
    webhooks,
)
from gpuyard.apiserver.errors import (
    APIError,
    already_exists,
    bad_request,
    conflict,
    expired,
    invalid,
    not_found,
    status_bytes,
    status_obj,
)
from gpuyard.apiserver.resources import CRDError, Registry, Resource, resources_from_crd
from gpuyard.apiserver.selectors import Filter, SelectorError
from gpuyard.apiserver.store import (
    CollKey,
    Entry,
    StorageFailure,
    Store,
    StoreError,
    make_key,
)
from gpuyard.k8s import decode
from gpuyard.k8s.disruption import (
    DISRUPTION_TARGET,
    EVICTION_BY_EVICTION_API,
    disruption_condition,
)
from gpuyard.kube.objects import (
    label_selector_requirements,
    requirements_match,
)

MAX_BODY = 3 * 1024 * 1024
# Subresources written with PUT and PATCH through the generic update (None: the object).
_UPDATABLE = (None, "status", "ephemeralcontainers")
_WRITE_OPTIONS = {"POST": "CreateOptions", "PUT": "UpdateOptions", "PATCH": "PatchOptions"}
_WARNINGS: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "gpuyard_apiserver_warnings", default=None
)
# Paths of the fields a create or update body gave twice, found when it was parsed.
_DUPLICATES: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "gpuyard_apiserver_duplicates", default=None
)
JSON = "application/json"
NS_KEY: CollKey = ("", "namespaces")
PODS: CollKey = ("", "pods")
CRDS: CollKey = ("apiextensions.k8s.io", "customresourcedefinitions")
WEBHOOKS: CollKey = ("admissionregistration.k8s.io", "mutatingwebhookconfigurations")
PDBS: CollKey = ("policy", "poddisruptionbudgets")
PRIORITY: CollKey = ("scheduling.k8s.io", "priorityclasses")
DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
PDB_MESSAGE = "Cannot evict pod as it would violate the pod's disruption budget."
# pods an eviction takes without asking their budget: not running, or never started
_PDB_IGNORES = ("Succeeded", "Failed", "Pending")
MAX_DISRUPTED_PODS = 2000  # evictions a budget may hold unconfirmed by its controller


@dataclass
class Response:
    """An answer: body is bytes, or an async iterator of byte chunks (watch streams)."""

    status: int
    body: bytes | AsyncIterator[bytes]
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": JSON})
    # An API object, list or Status as kube-apiserver's JSON serializer writes it, whose
    # wire form ends with a newline (clients that show or compare error bodies, such as
    # the official Python client's FailToCreateError, see it); False for documents
    # kube-apiserver writes as they are (/version, OpenAPI).
    serialized: bool = True

    @property
    def streaming(self) -> bool:
        return not isinstance(self.body, bytes | bytearray)


def _now() -> datetime:
    return datetime.now(UTC)


def _ts(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


_NOW_TS: list[Any] = [0, ""]


def _now_ts() -> str:
    """`_ts(_now())`, formatted at most once a second (hot write paths)."""
    sec = int(time.time())
    if _NOW_TS[0] != sec:
        _NOW_TS[0] = sec
        _NOW_TS[1] = _ts(datetime.fromtimestamp(sec, UTC))
    return str(_NOW_TS[1])


_BIND_OK = orjson.dumps(status_obj(201, "", ""))


def _json(status: int, obj: Any, newline: bool = False) -> Response:
    """`newline`: the closing newline written by the serializer (large answers: lists
    and tables), not added by the server in a copy of the body."""
    return Response(
        status, orjson.dumps(obj, option=orjson.OPT_APPEND_NEWLINE if newline else None)
    )


APPLY_PATCH = "application/apply-patch+yaml"


def _patch_type(ctype: str, *, strategic: bool) -> str:
    """A PATCH body's media type, or 415 listing those the resource takes (strategic merge
    only for built-in kinds, as kube-apiserver)."""
    ct = ctype.split(";")[0].strip().lower()
    accepted = ["application/json-patch+json", "application/merge-patch+json"]
    if strategic:
        accepted.append("application/strategic-merge-patch+json")
    accepted.append(APPLY_PATCH)
    if ct not in accepted:
        raise APIError(
            415,
            "UnsupportedMediaType",
            f"the body of the request was in an unknown format - accepted "
            f"media types include: {', '.join(accepted)}",
        )
    return ct


def _raw(status: int, raw: bytes) -> Response:
    return Response(status, raw)


def _qget(query: Mapping[str, str], name: str, default: str = "") -> str:
    v = query.get(name)
    return default if v is None else str(v)


def _qbool(query: Mapping[str, str], name: str) -> bool:
    return _qget(query, name).lower() in ("true", "1")


def _qint(query: Mapping[str, str], name: str) -> int | None:
    v = _qget(query, name)
    if v == "":
        return None
    try:
        return int(v)
    except ValueError:
        raise bad_request(f"invalid value for {name}: {v!r}") from None


def _rv_int(v: str | None, what: str = "resourceVersion") -> int | None:
    if v in (None, ""):
        return None
    try:
        return int(str(v))
    except ValueError:
        raise bad_request(f'invalid {what}: "{v}"') from None


_BODY_TYPES = frozenset(
    {
        "application/json",
        "application/yaml",
        "application/x-yaml",
        "text/yaml",
        "*/*",
        "text/plain",
        "application/x-www-form-urlencoded",
    }
)


def parse_body(body: bytes, content_type: str, duplicates: list[str] | None = None) -> Any:
    ct = content_type.split(";")[0].strip().lower()
    if ct == protobuf.CONTENT_TYPE:
        try:
            return protobuf.decode(body)
        except protobuf.ProtobufError as exc:
            raise APIError(415, "UnsupportedMediaType", str(exc)) from None
        except (UnicodeDecodeError, ValueError) as exc:
            raise bad_request(f"the protobuf body could not be decoded: {exc}") from None
    if ct and ct not in _BODY_TYPES:
        raise APIError(
            415,
            "UnsupportedMediaType",
            f"the body of the request was in an unknown format - accepted media types "
            f"include: {', '.join(sorted(_BODY_TYPES))}",
        )
    if not body.strip():
        raise bad_request("the request body is empty")
    try:
        if ct in ("application/yaml", "application/x-yaml", "text/yaml"):
            return decode.loads_yaml(body, MAX_BODY, duplicates)
        try:
            return decode.loads_json(body, MAX_BODY, duplicates)
        except decode.DecodeError as exc:
            if ct in ("", "application/json") or "JSON" not in exc.message:
                raise
            return decode.loads_yaml(body, MAX_BODY, duplicates)
    except decode.DecodeError as exc:
        raise decode_error(exc, "the body of the request") from None


def decode_error(exc: decode.DecodeError, what: str) -> APIError:
    """The Status for a body that `gpuyard.k8s.decode` refused: 400, or 413."""
    if exc.code == 413:
        return APIError(413, "RequestEntityTooLarge", f"{what} is too large: {exc.message}")
    return bad_request(f"{what} could not be decoded: {exc.message}")


def _spec_part(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


def _pod_ready(pod: dict[str, Any]) -> bool:
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return c.get("status") == "True"
    return False


def _pod_terminal(pod: dict[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


class Core:
    """REST semantics over a `Store` and a `Registry`. Subclassed by `APIServer`."""

    def __init__(
        self, store: Store, registry: Registry | None = None, bookmark_interval: float = 10.0
    ) -> None:
        self.store = store
        self.cluster = defaults.StoreView(store)
        self.registry = registry or Registry()
        self.views = readviews.ReadViews()
        admission_policy.register(self.registry)
        self.metrics_provider: metricsapi.Provider | None = None  # metrics.k8s.io
        self.bookmark_interval = bookmark_interval
        self._bg: set[asyncio.Task[Any]] = set()
        self._gc_queue: asyncio.Queue[tuple[str, str]] | None = None
        self._gc_task: asyncio.Task[None] | None = None
        self._ns_dirty: set[str] = set()
        self._ns_wake: asyncio.Event | None = None
        self._ns_task: asyncio.Task[None] | None = None
        self.store.listeners.append(self._on_event)

    def set_metrics_provider(self, provider: metricsapi.Provider) -> None:
        """Serve metrics.k8s.io (`kubectl top`) from `provider`."""
        self.metrics_provider = provider
        metricsapi.register(self.registry)

    # ------------------------------------------------------------------ life cycle

    async def bootstrap(self) -> None:
        """Register stored CRDs, create default namespaces and priority classes, start
        the garbage collector and the namespace controller."""
        schemas.definitions().compile_all()  # the built-in kinds' checkers, made once
        for e in list(self.store.entries(CRDS)):
            try:
                self.registry.add_crd(e.obj())
            except (CRDError, KeyError):
                pass
        loop = asyncio.get_running_loop()
        self._gc_queue = asyncio.Queue()
        self._ns_wake = asyncio.Event()
        self._gc_task = loop.create_task(self._gc_loop())
        self._ns_task = loop.create_task(self._ns_loop())
        # Resume namespace deletions and foreground deletions cut short by a restart.
        for e in list(self.store.entries(NS_KEY)):
            if b'"deletionTimestamp"' in e.raw:
                self._ns_dirty.add(e.name)
        if self._ns_dirty:
            self._ns_wake.set()
        if self.store.read_only:
            return  # a full disk: serve what is stored; nothing can be created now
        ns_res = self._res("", "namespaces")
        for ns in DEFAULT_NAMESPACES:
            if self.store.get(NS_KEY, ns) is None:
                await self.create_object(ns_res, "", {"metadata": {"name": ns}})
        pc = self._res("scheduling.k8s.io", "priorityclasses")
        for name, value in (
            ("system-node-critical", 2000001000),
            ("system-cluster-critical", 2000000000),
        ):
            if self.store.get(PRIORITY, name) is None:
                await self.create_object(
                    pc,
                    "",
                    {
                        "metadata": {"name": name},
                        "value": value,
                        "description": "Used for system critical pods.",
                    },
                )

    async def shutdown(self) -> None:
        for t in (self._gc_task, self._ns_task, *self._bg):
            if t is not None:
                t.cancel()
        for t in (self._gc_task, self._ns_task, *self._bg):
            if t is not None:
                try:
                    await t
                except (asyncio.CancelledError, Exception):
                    pass

    def _res(self, group: str, plural: str) -> Resource:
        for r in self.registry.versions_of(group, plural):
            return r
        raise KeyError((group, plural))

    # ------------------------------------------------------------------ dispatch

    async def dispatch(
        self,
        method: str,
        path: str,
        query: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
    ) -> Response:
        """Answer one API request without any transport. Never raises for bad input:
        every refusal is a Status response."""
        try:
            token = _WARNINGS.set([])
            fv_token = schemas.FIELD_VALIDATION.set("Warn")
            mgr_token = managedfields.MANAGER.set(managedfields.DEFAULT_MANAGER)
            try:
                resp = await self._dispatch(method.upper(), path, query or {}, headers or {}, body)
                warns = _WARNINGS.get()
                if warns:
                    resp.headers["Warning"] = schemas.warning_header(warns)
                return resp
            finally:
                managedfields.MANAGER.reset(mgr_token)
                schemas.FIELD_VALIDATION.reset(fv_token)
                _WARNINGS.reset(token)
        except APIError as e:
            r = _json(e.code, e.status())
            r.headers.update(e.headers)
            return r
        except (StoreError, StorageFailure) as e:
            return _json(e.code, status_obj(e.code, e.reason, e.message))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug, not bad input: still a Status, never a crash
            import logging

            logging.getLogger("gpuyard.apiserver").exception(
                "internal error on %s %s", method, path
            )
            return _json(500, status_obj(500, "InternalError", f"internal error: {exc!r}"))

    def route(self, path: str) -> tuple[str, Any]:
        """Classify a raw (percent-encoded) path with `paths.parse`: ("root"|"api"|
        "apis"|"group"|"gv"|"other", info) or ("resource", (res, ns, name, sub, watch))."""
        r = paths.parse(path)
        if r.kind in ("root", "api", "apis"):
            return r.kind, None
        if r.kind == "group":
            return "group", r.group
        if r.kind == "gv":
            return "gv", (r.group, r.version)
        if r.kind == "other":
            return "other", r.other
        # No such route: a NotFound with empty details, as kube-apiserver writes it
        # (clients tell it from a missing object by details.name; kubectl debug reads it).
        no_route = APIError(404, "NotFound", "the server could not find the requested resource", {})
        res = self.registry.get(r.group, r.version, r.plural)
        if res is None:
            raise no_route
        ns, name, sub = r.namespace, r.name, r.sub
        if (ns is not None and not res.namespaced) or (
            ns is None and res.namespaced and name is not None
        ):
            raise no_route
        if sub is not None and sub not in res.subresources:
            if not (
                res.group == ""
                and res.plural == "pods"
                and name is not None
                and sub in simkubelet.CONNECT_SUBRESOURCES
            ):
                raise no_route
        return "resource", (res, ns, name, sub, r.watch)

    async def _dispatch(
        self,
        method: str,
        path: str,
        query: Mapping[str, str],
        headers: Mapping[str, str],
        body: bytes,
    ) -> Response:
        if len(body) > MAX_BODY:
            raise APIError(
                413,
                "RequestEntityTooLarge",
                f"the request body is too large: limit is {MAX_BODY} bytes",
            )
        if "?" in path:  # an in-process caller's target with its query string
            path, more = paths.split_target(path)
            query = {**more, **query}
        kind, info = self.route(path)
        if kind != "resource":
            if method not in ("GET", "HEAD"):
                raise APIError(
                    405,
                    "MethodNotAllowed",
                    "the server does not allow this method on the requested resource",
                )
            return await self.serve_other(kind, info, query, headers)
        res, ns, name, sub, watch = info
        if res.group == metricsapi.GROUP and self.metrics_provider is not None:
            if method != "GET" or sub is not None or watch or _qbool(query, "watch"):
                raise APIError(
                    405,
                    "MethodNotAllowed",
                    "the server does not allow this method on the requested resource",
                )
            return _json(200, metricsapi.serve(self.metrics_provider, res, ns, name, dict(query)))
        hget = _header_getter(headers)
        if sub is not None and name is not None and res.group == "" and res.plural == "pods":
            if sub in simkubelet.CONNECT_SUBRESOURCES:
                raise simkubelet.refuse_connect(self._entry(res, ns or "", name).obj(), sub)
            if sub == "log" and method == "GET":
                return self._pod_log(res, ns or "", name, query)
        if not res.allows(_verb(method, name, watch or _qbool(query, "watch")), sub):
            raise APIError(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
            )
        if sub == "scale" and name is not None:
            if method in _WRITE_OPTIONS:
                schemas.FIELD_VALIDATION.set(schemas.directive(query, _WRITE_OPTIONS[method]))
            return await scale.serve(
                self,
                method,
                res,
                ns or "",
                name,
                body,
                hget("content-type"),
                query,
                self._dry_run(query),
            )
        if res.plural == "bindings" and res.group == "":
            if method != "POST" or name is not None:
                raise APIError(
                    405,
                    "MethodNotAllowed",
                    "the server does not allow this method on the requested resource",
                )
            body_obj = self._body_obj(body, hget("content-type"))
            pod_name = str(body_obj["metadata"].get("name") or "")
            if not pod_name:
                raise bad_request("metadata.name of the Binding is required")
            return await self.bind(
                self._res("", "pods"), ns or "", pod_name, body_obj, self._dry_run(query)
            )
        if method == "GET":
            if name is None or watch:
                if watch or _qbool(query, "watch"):
                    if name is not None:
                        query = dict(query)
                        fs = _qget(query, "fieldSelector")
                        query["fieldSelector"] = (fs + "," if fs else "") + f"metadata.name={name}"
                    resp = self.watch_objects(res, ns, query)
                    stream: Any = resp.body
                    if self._wants_table(hget("accept")):
                        resp.body = self._table_stream(res, stream, query)
                    elif "as=PartialObjectMetadata" in hget("accept"):
                        resp.body = self._table_stream(res, stream, query, partial=True)
                    return resp
                return self.list_objects(res, ns, query, hget("accept"))
            return self.get_object(res, ns, name, query, hget("accept"))
        if watch:
            raise APIError(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
            )
        ctype = hget("content-type")
        dry = self._dry_run(query)
        if method in _WRITE_OPTIONS:
            schemas.FIELD_VALIDATION.set(schemas.directive(query, _WRITE_OPTIONS[method]))
            managedfields.for_request(query, hget("user-agent"), method, ctype)
        sres = self._storage_res(res) if method in _WRITE_OPTIONS else None
        if sres is not None and sub not in ("binding", "eviction"):
            return await self._write_converted(
                res, sres, method, ns or "", name, sub, body, ctype, query, dry
            )
        if method == "POST":
            if name is None:
                obj = self._body_obj(body, ctype)
                st, out = await self.create_object(res, ns or "", obj, dry_run=dry)
                return _raw(st, out)
            if sub == "binding":
                return await self.bind(res, ns or "", name, self._body_obj(body, ctype), dry)
            if sub == "eviction":
                return await self.evict(res, ns or "", name, self._body_obj(body, ctype), dry)
            raise APIError(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
            )
        if method == "PUT" and name is not None and sub in _UPDATABLE:
            obj = self._body_obj(body, ctype)
            return await self.update(res, ns or "", name, sub, obj, dry)
        if method == "PATCH" and name is not None and sub in _UPDATABLE:
            return await self.patch(res, ns or "", name, sub, body, ctype, query, dry)
        if method == "DELETE":
            opts: dict[str, Any] = {}
            if body.strip():
                parsed = parse_body(body, hget("content-type"))
                if not isinstance(parsed, dict):
                    raise bad_request("DeleteOptions must be an object")
                opts = parsed
            for q in ("gracePeriodSeconds", "propagationPolicy"):
                if q in query:
                    opts[q] = _qint(query, q) if q == "gracePeriodSeconds" else query[q]
            if _qget(query, "orphanDependents") in ("true", "false"):
                opts["orphanDependents"] = _qbool(query, "orphanDependents")
            if "dryRun" in opts:
                dry = dry or bool(opts.get("dryRun"))
            if name is None:
                return await self.delete_collection(res, ns, query, opts, dry)
            if sub is not None:
                raise APIError(
                    405,
                    "MethodNotAllowed",
                    "the server does not allow this method on the requested resource",
                )
            return await self.delete(res, ns or "", name, opts, dry)
        raise APIError(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )

    async def serve_other(
        self, kind: str, info: Any, query: Mapping[str, str], headers: Mapping[str, str]
    ) -> Response:
        raise APIError(404, "NotFound", "the server could not find the requested resource")

    def _dry_run(self, query: Mapping[str, str]) -> bool:
        v = _qget(query, "dryRun")
        if v == "":
            return False
        if v != "All":
            raise bad_request(f'unsupported dryRun value "{v}": only "All" is supported')
        return True

    def _body_obj(self, body: bytes, ctype: str) -> dict[str, Any]:
        dups: list[str] = []
        obj = parse_body(body, ctype, dups)
        _DUPLICATES.set(dups or None)  # for this request's decode (by fieldValidation)
        if not isinstance(obj, dict):
            raise bad_request("the request body must be a JSON or YAML object")
        md = obj.get("metadata")
        if md is None:
            obj["metadata"] = {}
        elif not isinstance(md, dict):
            raise bad_request("metadata must be an object")
        return obj

    # ------------------------------------------------------------------ reads

    def _entry(self, res: Resource, ns: str, name: str, latest: bool = False) -> Entry:
        """The committed object (what reads show), or with latest the newest state,
        pending writes included (what a write is checked against)."""
        store = self.store
        e = (store.latest if latest else store.get)(res.key, make_key(ns, name))
        if e is None:
            raise not_found(res.group_resource, name, res.plural, res.group)
        return e

    def _raw_for(self, res: Resource, e: Entry) -> bytes:
        """What a read of the stored entry answers (a custom object in the served
        version, pruned and defaulted by its CRD's schema of now: readviews.py)."""
        if res.custom:
            return self.views.raw(res, make_key(e.namespace, e.name), e.rv, e.raw)
        if res.kind in conversion.KINDS:
            return self._served_raw(res, e.raw)
        return e.raw

    def _served_raw(self, res: Resource, raw: bytes) -> bytes:
        """Stored bytes of a multi-version kind in the version `res` serves."""
        prefix = b'{"apiVersion":"' + res.api_version.encode() + b'"'
        if raw.startswith(prefix) or conversion.storage_version(res.group, res.kind) is None:
            return raw
        obj = orjson.loads(raw)
        return orjson.dumps(self._served_obj(res, obj))

    def _served_obj(self, res: Resource, obj: Any) -> Any:
        if (
            not isinstance(obj, dict)
            or obj.get("kind") != res.kind
            or conversion.storage_version(res.group, res.kind) is None
        ):
            return obj
        try:
            return conversion.convert(obj, res.group, res.kind, res.version)
        except conversion.ConversionError as exc:
            raise APIError(500, "InternalError", str(exc)) from None

    def _storage_res(self, res: Resource) -> Resource | None:
        """The stored version's resource when `res` is another served version of a
        kind that kube-apiserver converts (conversion.py), else None."""
        if res.custom or res.kind not in conversion.KINDS:
            return None
        version = conversion.storage_version(res.group, res.kind)
        if version is None or version == res.version:
            return None
        return self.registry.get(res.group, version, res.plural)

    async def _write_converted(
        self,
        res: Resource,
        sres: Resource,
        method: str,
        ns: str,
        name: str | None,
        sub: str | None,
        body: bytes,
        ctype: str,
        query: Mapping[str, str],
        dry: bool,
    ) -> Response:
        """A write through a version other than the stored one: the body decoded and
        defaulted in its version, converted, written as the stored version, and the
        answer converted back. Its field manager's entry records the version written
        (managedfields.WIRE, set for the length of the write)."""

        def stored(obj: dict[str, Any], origin: str) -> dict[str, Any]:
            obj = self._normalize(res, obj)
            self._decode(res, obj, origin)
            try:
                return conversion.convert(obj, res.group, res.kind, sres.version)
            except conversion.ConversionError as exc:
                raise invalid(
                    res.kind,
                    str(obj["metadata"].get("name") or ""),
                    [{"reason": "FieldValueInvalid", "message": str(exc), "field": "metadata"}],
                    res.group,
                ) from None

        def served(out: Any) -> bytes:
            raw = out if isinstance(out, bytes) else b""
            return orjson.dumps(self._served_obj(res, orjson.loads(raw)))

        token = managedfields.WIRE.set(res)
        try:
            if method == "POST" and name is None:
                obj = stored(self._body_obj(body, ctype), "create")
                st, out = await self.create_object(sres, ns, obj, dry_run=dry)
                return _raw(st, served(out))
            if method == "PUT" and name is not None and sub in (None, "status"):
                obj = stored(self._body_obj(body, ctype), "update")
                resp = await self.update(sres, ns, name, sub, obj, dry)
                return _raw(resp.status, served(resp.body))
            if method != "PATCH" or name is None or sub not in (None, "status"):
                raise APIError(
                    405,
                    "MethodNotAllowed",
                    "the server does not allow this method on the requested resource",
                )
            ct = _patch_type(ctype, strategic=True)
            applied = ct == APPLY_PATCH
            for _attempt in range(5):
                e = self.store.latest(sres.key, make_key(ns, name))
                if e is None:
                    if applied and sub is None:
                        obj = self._applied_new(res, ns, name, body, query)
                        st, out = await self.create_object(
                            sres, ns, stored(obj, "patch"), dry, applied=True
                        )
                        return _raw(st, served(out))
                    raise not_found(res.group_resource, name, res.plural, res.group)
                cur = self._served_obj(res, e.obj())
                obj = self._apply_patch(res, cur, body, ct, query, sub)
                md = obj.setdefault("metadata", {})
                if not isinstance(md, dict) or md.get("name", name) != name:
                    raise bad_request("the name of the object does not match the name on the URL")
                want = _rv_int(md.get("resourceVersion"))
                if want is not None and want != e.rv:
                    raise conflict(res.group_resource, name, res.plural)
                new = stored(obj, "patch")
                defaults.apply(sres, new)
                self._check_ns(sres, ns, new, creating=False)
                try:
                    out = await self._write_update(sres, e, new, sub, dry, applied=applied)
                except APIError as ae:
                    if ae.reason == "Conflict":
                        continue
                    raise
                return _raw(200, served(out))
            raise conflict(res.group_resource, name, res.plural)
        finally:
            managedfields.WIRE.reset(token)

    def _read_obj(self, res: Resource, e: Entry) -> dict[str, Any]:
        """A fresh copy of the stored object as a read shows it (what a write of it
        starts from, as kube-apiserver's update reads it from storage)."""
        if res.custom:
            return self.views.obj(res, make_key(e.namespace, e.name), e.rv, e.raw)
        return e.obj()

    def _wants_table(self, accept: str) -> bool:
        return "as=Table" in accept

    def _pod_log(self, res: Resource, ns: str, name: str, query: Mapping[str, str]) -> Response:
        """GET pods/NAME/log: the simulated container's lines (simkubelet.py)."""
        uid = (self._entry(res, ns, name).obj().get("metadata") or {}).get("uid")

        def refetch() -> dict[str, Any] | None:
            try:
                pod = self._entry(res, ns, name).obj()
            except APIError:
                return None
            return pod if (pod.get("metadata") or {}).get("uid") == uid else None

        q = {k: _qget(query, k) for k in query}
        body, _ = simkubelet.log_response(self._entry(res, ns, name).obj(), q, refetch)
        return Response(200, body, {"Content-Type": "text/plain"})

    def get_object(
        self, res: Resource, ns: str | None, name: str, query: Mapping[str, str], accept: str
    ) -> Response:
        e = self._entry(res, ns or "", name)
        if self._wants_table(accept):
            return self._table(res, [e], query, None)
        if "as=PartialObjectMetadata" in accept:
            return _json(200, _partial(e.obj()))
        return _raw(200, self._raw_for(res, e))

    def _table(
        self,
        res: Resource,
        entries: list[Entry],
        query: Mapping[str, str],
        list_meta: dict[str, Any] | None,
    ) -> Response:
        objs = [orjson.loads(self._raw_for(res, e)) for e in entries]
        inc = _qget(query, "includeObject", "Metadata")
        table = tables.to_table(res, objs, inc, list_meta)
        return _json(200, table, newline=True)

    def _filter(self, res: Resource, ns: str | None, query: Mapping[str, str]) -> Filter:
        try:
            flt = Filter.parse(
                ns,
                _qget(query, "labelSelector"),
                _qget(query, "fieldSelector"),
                res.group,
                res.plural,
            )
        except SelectorError as exc:
            raise bad_request(str(exc)) from None
        flt.cluster_scoped = not res.namespaced
        return flt

    def list_objects(
        self, res: Resource, ns: str | None, query: Mapping[str, str], accept: str = ""
    ) -> Response:
        flt = self._filter(res, ns, query)
        limit = _qint(query, "limit") or 0
        if limit < 0:
            raise bad_request("limit must not be negative")
        cont = _qget(query, "continue")
        rv = self.store.published_rv
        start = ""
        if cont:
            rvq = _qget(query, "resourceVersion")
            if rvq not in ("", "0"):
                raise bad_request("specifying resource version is not allowed when using continue")
            try:
                tok = orjson.loads(base64.urlsafe_b64decode(cont.encode() + b"=="))
                rv, start = int(tok["rv"]), str(tok["start"])
            except Exception:
                raise bad_request(
                    "continue key is not valid: incorrect encoded start "
                    "resourceVersion (version meta.k8s.io/v1)"
                ) from None
            if rv < self.store.compacted_rv(res.key):
                raise expired(
                    "The provided continue parameter is too old to display a "
                    "consistent list result. You can start a new list without "
                    "the continue parameter."
                )
        entries, last = self.store.list_sorted(res.key, flt, start, limit)
        meta: dict[str, Any] = {"resourceVersion": str(rv)}
        if last:
            meta["continue"] = (
                base64.urlsafe_b64encode(orjson.dumps({"rv": rv, "start": last}))
                .decode()
                .rstrip("=")
            )
        if self._wants_table(accept):
            return self._table(res, entries, query, meta)
        if "as=PartialObjectMetadata" in accept:
            return _json(
                200,
                {
                    "kind": "PartialObjectMetadataList",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": meta,
                    "items": [_partial(e.obj()) for e in entries],
                },
                newline=True,
            )
        head = orjson.dumps(
            {"kind": res.list_kind, "apiVersion": res.api_version, "metadata": meta}
        )
        # The body in one copy of the items, its closing newline included (the server
        # adds none to a body that ends with it): the head and the end go onto the
        # first and last item (small copies) instead of concatenating the whole list.
        start_items = head[:-1] + b',"items":['
        raws = [self._raw_for(res, e) for e in entries]
        if not raws:
            return _raw(200, start_items + b"]}\n")
        raws[0] = start_items + raws[0]
        raws[-1] += b"]}\n"
        return _raw(200, b",".join(raws))

    # ------------------------------------------------------------------ watch

    async def _table_stream(
        self,
        res: Resource,
        lines: AsyncIterator[bytes],
        query: Mapping[str, str],
        partial: bool = False,
    ) -> AsyncIterator[bytes]:
        """Watch events whose objects are one-row Tables (kubectl get -w), or with
        partial, PartialObjectMetadata."""
        inc = _qget(query, "includeObject", "Metadata")
        first = True
        try:
            async for chunk in lines:
                if not chunk:
                    yield chunk
                    continue
                out = []
                for line in chunk.splitlines():
                    ev = orjson.loads(line)
                    obj = ev.get("object") or {}
                    if partial and ev.get("type") in ("ADDED", "MODIFIED", "DELETED"):
                        ev["object"] = _partial(obj)
                    elif ev.get("type") in ("ADDED", "MODIFIED", "DELETED"):
                        table = tables.to_table(res, [obj], inc, None)
                        if not first:
                            table.pop("columnDefinitions", None)
                            table["columnDefinitions"] = None
                        first = False
                        ev["object"] = table
                    out.append(orjson.dumps(ev) + b"\n")
                yield b"".join(out)
        finally:
            aclose = getattr(lines, "aclose", None)
            if aclose is not None:
                await aclose()

    def watch_objects(self, res: Resource, ns: str | None, query: Mapping[str, str]) -> Response:
        flt = self._filter(res, ns, query)
        rvs = _qget(query, "resourceVersion")
        send_initial = _qget(query, "sendInitialEvents")
        bookmarks = _qbool(query, "allowWatchBookmarks")
        timeout = _qint(query, "timeoutSeconds")
        since = None if rvs in ("", "0") else _rv_int(rvs)
        initial = since is None or send_initial == "true"
        if send_initial == "false":
            initial = False
        store = self.store
        if initial:
            w, _ = store.watch(res.key, flt, None)
            snapshot = list(store.entries(res.key, flt))
            backlog: list[bytes] | None = []
            if since is not None and since > 0:
                snapshot = snapshot  # NotOlderThan: the current state qualifies
        else:
            w, backlog = store.watch(res.key, flt, since)
            snapshot = []
        end_marker = send_initial == "true"

        def bookmark(extra_annotation: bool = False) -> bytes:
            md: dict[str, Any] = {"resourceVersion": str(store.published_rv)}
            if extra_annotation:
                md["annotations"] = {"k8s.io/initial-events-end": "true"}
            return (
                orjson.dumps(
                    {
                        "type": "BOOKMARK",
                        "object": {"kind": res.kind, "apiVersion": res.api_version, "metadata": md},
                    }
                )
                + b"\n"
            )

        interval = self.bookmark_interval
        converting = res.kind in conversion.KINDS and not res.custom
        # Custom objects as reads show them (readviews.py): checked only while some
        # stored object reads otherwise, or where the CRD serves other versions.
        many = res.custom and len(self.registry.versions_of(res.group, res.plural)) > 1
        viewing = res.custom and (many or self.views.any_stale(res, store.entries(res.key)))

        def convert(lines: list[bytes]) -> list[bytes]:
            """Events of a multi-version kind with their objects in the watched version."""
            if viewing:
                return [
                    self.views.event_line(res, line, many) + b"\n"
                    for chunk in lines
                    for line in chunk.splitlines()
                    if line.strip()
                ]
            if not converting:
                return lines
            out = []
            for chunk in lines:
                for line in chunk.splitlines():
                    if not line.strip():
                        continue
                    ev = orjson.loads(line)
                    if ev.get("type") in ("ADDED", "MODIFIED", "DELETED"):
                        ev["object"] = self._served_obj(res, ev.get("object"))
                    out.append(orjson.dumps(ev) + b"\n")
            return out

        async def stream() -> AsyncIterator[bytes]:
            try:
                deadline = time.monotonic() + timeout if timeout else None
                if backlog is None:
                    err = status_obj(
                        410,
                        "Expired",
                        f"too old resource version: {since} ({store.compacted_rv(res.key)})",
                    )
                    yield orjson.dumps({"type": "ERROR", "object": err}) + b"\n"
                    return
                chunk: list[bytes] = []
                for e in snapshot:
                    chunk.append(b'{"type":"ADDED","object":' + self._raw_for(res, e) + b"}\n")
                    if len(chunk) >= 500:
                        yield b"".join(chunk)
                        chunk = []
                chunk.extend(convert(backlog))
                if end_marker:
                    chunk.extend(convert(w.drain()))
                    chunk.append(bookmark(True))
                if chunk:
                    yield b"".join(chunk)
                next_bm = time.monotonic() + interval
                while True:
                    if w.buf:
                        yield b"".join(convert(w.drain()))
                        continue
                    if w.closed:
                        return
                    now = time.monotonic()
                    if deadline is not None and now >= deadline:
                        return
                    wait = min(5.0, next_bm - now if bookmarks else 5.0)
                    if deadline is not None:
                        wait = min(wait, deadline - now)
                    if not await w.wait(max(wait, 0.0)):
                        if bookmarks and time.monotonic() >= next_bm:
                            next_bm = time.monotonic() + interval
                            yield bookmark()
                        else:
                            yield b""  # heartbeat: lets the transport notice a gone client
            finally:
                store.unwatch(res.key, w)

        return Response(200, stream(), {"Content-Type": JSON, "Transfer-Encoding": "chunked"})

    # ------------------------------------------------------------------ writes

    def _normalize(self, res: Resource, obj: dict[str, Any]) -> dict[str, Any]:
        av, kind = obj.get("apiVersion"), obj.get("kind")
        if av is not None and av != res.api_version:
            raise bad_request(
                f"the API version in the data ({av}) does not match the expected API "
                f"version ({res.api_version})"
            )
        if kind is not None and kind != res.kind:
            raise bad_request(
                f"the kind in the data ({kind}) does not match the expected kind ({res.kind})"
            )
        rest = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}
        return {"apiVersion": res.api_version, "kind": res.kind, **rest}

    def _decode(
        self,
        res: Resource,
        obj: dict[str, Any],
        origin: str,
        patched: dict[str, Any] | None = None,
    ) -> None:
        """Types, unknown and required fields as kube-apiserver decodes the body (for a
        patch, of the parts it changed of `patched`, the stored object: schemas.decode)."""
        dups = _DUPLICATES.get()
        if dups is not None:
            _DUPLICATES.set(None)  # the fields the parser saw twice in this request's body
        warnings = schemas.decode(
            res,
            obj,
            origin,
            schemas.FIELD_VALIDATION.get(),
            dups if origin != "patch" else None,
            patched,
        )
        defaults.apply(res, obj)
        acc = _WARNINGS.get()
        if warnings and acc is not None:
            acc.extend(warnings)

    def _check_ns(self, res: Resource, ns: str, obj: dict[str, Any], creating: bool) -> None:
        md = obj["metadata"]
        if not res.namespaced:
            md.pop("namespace", None)
            return
        body_ns = md.get("namespace")
        if body_ns and body_ns != ns:
            raise bad_request(
                "the namespace of the provided object does not match the "
                "namespace sent on the request"
            )
        md["namespace"] = ns
        if creating:
            nse = self.store.get(NS_KEY, ns)
            if nse is None:
                raise not_found("namespaces", ns, "namespaces")
            if b'"deletionTimestamp"' in nse.raw:
                raise APIError(
                    403,
                    "Forbidden",
                    f'{res.plural} "{md.get("name") or md.get("generateName", "")}" is '
                    f"forbidden: unable to create new content in namespace {ns} because it "
                    "is being terminated",
                    {
                        "name": md.get("name", ""),
                        "kind": res.plural,
                        "causes": [
                            {
                                "reason": "NamespaceTerminating",
                                "message": f"namespace {ns} is being terminated",
                                "field": "metadata.namespace",
                            }
                        ],
                    },
                )

    async def _admit_and_validate(
        self,
        res: Resource,
        op: str,
        obj: dict[str, Any],
        old: dict[str, Any] | None,
        dry: bool,
        sub: str | None,
    ) -> tuple[dict[str, Any], list[str]]:
        warnings: list[str] = []
        if sub is None:
            sent = obj
            obj, warnings = await self._admit(res, op, obj, old, dry)
            mutated = obj is not sent
            if mutated:
                # (what every caller sends is normalized already: only a webhook's
                # answer needs it)
                obj = self._normalize(res, obj) if isinstance(obj, dict) else obj
                # A mutating webhook's object is decoded again: defaulted, and a
                # custom object pruned by its schema.
                defaults.apply(res, obj)
                schemas.prune_and_default(res, obj)
                if old is not None and "status" in res.subresources:
                    # the status is its subresource's to write: what a webhook changes
                    # there on a write of the object is dropped, as the status was
                    _keep_status(obj, old)
        causes = self._validate(res, obj, old)
        if causes:
            md = obj.get("metadata") or {}
            raise invalid(
                res.kind, md.get("name") or md.get("generateName") or "", causes, res.group
            )
        ws = await admission_policy.validate(
            self.store, self.registry, res, op, obj, old, dry, requestctx.user_info(), sub=sub or ""
        )
        if ws:
            acc = _WARNINGS.get()
            if acc is not None:
                acc.extend(ws)
            warnings = [*warnings, *ws]
        return obj, warnings

    def _validate(
        self, res: Resource, obj: dict[str, Any], old: dict[str, Any] | None
    ) -> list[dict[str, Any]]:
        causes = _meta_causes(obj)
        if causes:
            return causes  # the store relies on these shapes; checked whatever else runs
        try:
            return list(validation.validate_object(res, obj, old))
        except Exception as exc:  # a validator bug must not become a 500 for the user
            return [
                {
                    "reason": "FieldValueInvalid",
                    "field": "",
                    "message": f"could not validate the object: {exc}",
                }
            ]

    async def _admit(
        self,
        res: Resource,
        op: str,
        obj: dict[str, Any],
        old: dict[str, Any] | None,
        dry: bool,
        sub: str = "",
        kind: tuple[str, str, str] | None = None,
    ) -> tuple[dict[str, Any], list[str]]:
        if res.key == WEBHOOKS:
            return obj, []
        configs = [e.obj() for e in self.store.entries(WEBHOOKS)]
        if not configs:
            return obj, []
        ns_obj = None
        ns = (obj.get("metadata") or {}).get("namespace")
        if res.namespaced and ns:
            nse = self.store.get(NS_KEY, ns)
            ns_obj = nse.obj() if nse is not None else None
        md = obj.get("metadata") or {}
        attrs = webhooks.AdmissionAttributes(
            operation=op,
            resource=res,
            name=md.get("name") or "",
            namespace=md.get("namespace") or "",
            user_info=requestctx.user_info(),
            dry_run=dry,
            sub_resource=sub,
            kind=kind,
            namespace_labels=((ns_obj or {}).get("metadata") or {}).get("labels") or {},
            namespace_object=ns_obj,
        )
        try:
            new_obj, warnings = await webhooks.admit(configs, attrs, obj, old)
        except webhooks.AdmissionDenied as exc:
            code = exc.code or 403
            msg = exc.message or str(exc)
            reason = {
                400: "BadRequest",
                403: "Forbidden",
                422: "Invalid",
                500: "InternalError",
            }.get(code, "Forbidden")
            raise APIError(code, reason, msg) from None
        ws = [str(w) for w in warnings or []]
        acc = _WARNINGS.get()
        if acc is not None:
            acc.extend(ws)
        return new_obj, ws

    async def _admit_sub(
        self, res: Resource, sub: str, new: dict[str, Any], old: dict[str, Any], dry: bool
    ) -> dict[str, Any]:
        """Mutating admission of a subresource write: webhooks whose rules name the
        subresource (`pods/status`, `pods/*`, `*/*`) see the object as it would be
        stored; of what they change, only the part the subresource writes is kept (the
        status through /status, the ephemeral containers through
        /ephemeralcontainers), as kube-apiserver's status strategies reset the rest."""
        mutated, _ = await self._admit(res, "UPDATE", new, old, dry, sub)
        if mutated is new or not isinstance(mutated, dict):
            return new
        if sub == ephemeral.SUBRESOURCE:
            return ephemeral.take_update(mutated, new)
        kept = dict(new)
        _keep_status(kept, mutated)
        schemas.prune_and_default(res, kept)  # a custom object's status: pruned by its schema
        return kept

    def _defaults_on_create(self, res: Resource, obj: dict[str, Any]) -> None:
        strategies.prepare_for_create(res, obj)
        defaults.on_create(res, obj, self.cluster)
        if res.key == CRDS:
            obj.pop("status", None)  # the server's to set, as kube's CRD strategy resets it
            self._crd_status(obj)
        elif res.custom and "status" in res.subresources:
            obj.pop("status", None)

    def _crd_status(self, obj: dict[str, Any]) -> None:
        try:
            rs = resources_from_crd(obj)
        except (CRDError, KeyError, TypeError) as exc:
            raise invalid(
                "CustomResourceDefinition",
                obj["metadata"].get("name", ""),
                [{"reason": "FieldValueInvalid", "message": str(exc), "field": "spec"}],
                "apiextensions.k8s.io",
            ) from None
        spec = obj.get("spec") or {}
        want = f"{spec.get('names', {}).get('plural')}.{spec.get('group')}"
        if obj["metadata"].get("name") != want:
            raise invalid(
                "CustomResourceDefinition",
                obj["metadata"].get("name", ""),
                [
                    {
                        "reason": "FieldValueInvalid",
                        "field": "metadata.name",
                        "message": f'Invalid value: must be spec.names.plural+"."+'
                        f"spec.group ({want})",
                    }
                ],
                "apiextensions.k8s.io",
            )
        if not rs:
            raise invalid(
                "CustomResourceDefinition",
                want,
                [
                    {
                        "reason": "FieldValueRequired",
                        "field": "spec.versions",
                        "message": "Required value: must have exactly one version "
                        "marked as storage version",
                    }
                ],
                "apiextensions.k8s.io",
            )
        for r in rs:
            existing = self.registry.get(r.group, r.version, r.plural)
            if existing is not None and not existing.custom:
                raise invalid(
                    "CustomResourceDefinition",
                    want,
                    [
                        {
                            "reason": "FieldValueInvalid",
                            "field": "spec.names.plural",
                            "message": f"{r.group_resource} is a built-in resource",
                        }
                    ],
                    "apiextensions.k8s.io",
                )
        now = _ts(_now())
        status = obj.get("status") or {}
        for t, reason, msg in (
            ("NamesAccepted", "NoConflicts", "no conflicts found"),
            ("Established", "InitialNamesAccepted", "the initial names have been accepted"),
        ):
            conds = status.get("conditions") or []
            if any(c.get("type") == t and c.get("status") == "True" for c in conds):
                continue  # already true: its lastTransitionTime stays (an update is no transition)
            conds = [c for c in conds if c.get("type") != t]
            conds.append(
                {
                    "type": t,
                    "status": "True",
                    "reason": reason,
                    "message": msg,
                    "lastTransitionTime": now,
                }
            )
            status["conditions"] = conds
        status["acceptedNames"] = spec.get("names") or {}
        # every version ever marked storage, kept until an administrator removes it
        stored = [str(v) for v in status.get("storedVersions") or [] if isinstance(v, str)]
        for v in spec.get("versions") or []:
            if v.get("storage") and v["name"] not in stored:
                stored.append(v["name"])
        names = {v.get("name") for v in spec.get("versions") or []}
        gone = [
            {
                "reason": "FieldValueInvalid",
                "message": f'Invalid value: "{v}": must appear in spec.versions',
                "field": f"status.storedVersions[{i}]",
            }
            for i, v in enumerate(stored)
            if v not in names
        ]
        if gone:
            raise invalid("CustomResourceDefinition", want, gone, "apiextensions.k8s.io")
        status["storedVersions"] = stored
        obj["status"] = status

    def _stored_response(self, res: Resource, raw: bytes) -> bytes:
        """A write's answer: what it stored, as a read in the version written shows it
        (a custom object stored in another version: crdversions.py)."""
        if res.custom:
            prefix = b'{"apiVersion":"' + res.api_version.encode() + b'"'
            if not raw.startswith(prefix):
                return orjson.dumps(crdversions.view(res, orjson.loads(raw)))
        return raw

    async def create_object(
        self,
        res: Resource,
        ns: str,
        obj: dict[str, Any],
        dry_run: bool = False,
        applied: bool = False,
    ) -> tuple[int, bytes]:
        """Create; returns (201, stored bytes)."""
        if "create" not in res.verbs:
            raise APIError(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
            )
        obj = self._normalize(res, obj)
        self._decode(res, obj, "create")
        md = obj["metadata"]
        self._check_ns(res, ns, obj, creating=True)
        if md.get("generateName") == "":
            md.pop("generateName")
        gen = md.get("generateName")
        if not md.get("name") and gen and isinstance(gen, str):
            md["name"] = gen + uuid.uuid4().hex[:5]
        obj, _ = await self._admit_and_validate(res, "CREATE", obj, None, dry_run, None)
        md = obj["metadata"]
        for k in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"):
            md.pop(k, None)
        md["uid"] = ids.new_id()
        md["creationTimestamp"] = _now_ts()
        if strategies.has_generation(res):
            md["generation"] = 1
        self._defaults_on_create(res, obj)
        if not applied:
            managedfields.track_update(
                res, None, obj, managedfields.MANAGER.get(), None, md["creationTimestamp"]
            )
        if dry_run:
            key = make_key(md.get("namespace") or "", md["name"])
            if self.store.latest(res.key, key) is not None:
                raise already_exists(res.group_resource, md["name"], res.plural, res.group)
            return 201, orjson.dumps(obj)
        key = make_key(md.get("namespace") or "", md["name"])
        if res.custom:
            obj = crdversions.to_storage(res, obj)  # in the CRD's storage version
        while True:
            try:
                e, fut = self.store.put_nowait(res.key, obj, create=True)
                break
            except StoreError:
                if not self.store.pending(res.key, key):
                    raise already_exists(
                        res.group_resource, md["name"], res.plural, res.group
                    ) from None
                # The object in the way is not committed yet: "already exists" would
                # show it before a GET can (and a failed commit may take it back).
                await self.store.settled(res.key, key)
        if fut is not None:
            await fut
        if res.key == CRDS:
            self.registry.add_crd(obj)  # once stored: a failed write serves nothing
        return 201, self._stored_response(res, e.raw)

    async def update(
        self, res: Resource, ns: str, name: str, sub: str | None, obj: dict[str, Any], dry: bool
    ) -> Response:
        obj = self._normalize(res, obj)
        self._decode(res, obj, "update")
        md = obj["metadata"]
        if md.get("name") and md["name"] != name:
            raise bad_request(
                f"the name of the object ({md['name']}) does not match the name on the URL ({name})"
            )
        md["name"] = name
        self._check_ns(res, ns, obj, creating=False)
        e = self.store.latest(res.key, make_key(ns, name))
        if e is None:
            raise not_found(res.group_resource, name, res.plural, res.group)
        want = _rv_int(md.get("resourceVersion"))
        if want is not None and want != e.rv:
            raise conflict(res.group_resource, name, res.plural)
        out = await self._write_update(res, e, obj, sub, dry)
        return _raw(200, out)

    async def _write_update(
        self,
        res: Resource,
        e: Entry,
        obj: dict[str, Any],
        sub: str | None,
        dry: bool,
        applied: bool = False,
    ) -> bytes:
        """Apply an update of the stored entry e; handles status separation, generation,
        finalizer removal, field ownership, and the conflict check against e.rv (applied:
        obj is a server-side apply's result, its managedFields already kept)."""
        old = self._read_obj(res, e)
        omd = old["metadata"]
        if sub == ephemeral.SUBRESOURCE:
            new = ephemeral.take_update(obj, old)
            new = await self._admit_sub(res, sub, new, old, dry)
            causes = ephemeral.update_causes(new, old)
            if causes:
                raise invalid(res.kind, e.name, causes, res.group)
            if _spec_part(new) != _spec_part(old) and "generation" in omd:
                new["metadata"]["generation"] = int(omd.get("generation") or 0) + 1
        elif sub == "status":
            new = dict(old)
            new["status"] = obj.get("status")
            if new["status"] is None:
                new.pop("status")
            new["metadata"] = dict(omd)
            if applied and "managedFields" in (obj.get("metadata") or {}):
                new["metadata"]["managedFields"] = obj["metadata"]["managedFields"]
            new = await self._admit_sub(res, sub, new, old, dry)
        else:
            new = dict(obj)
            if "status" in res.subresources:
                if "status" in old:
                    new["status"] = old["status"]
                else:
                    new.pop("status", None)
            md = new["metadata"] = dict(new.get("metadata") or {})
            for k in (
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "namespace",
            ):
                if k in omd:
                    md[k] = omd[k]
                else:
                    md.pop(k, None)
            if omd.get("deletionTimestamp"):
                # Finalizers may only be removed once deletion started.
                pass
            strategies.prepare_for_update(res, new, old)
            if sub == scale.SUBRESOURCE:
                # admitted as the Scale (scale.py); validated here as the parent
                causes = self._validate(res, new, old)
                if causes:
                    raise invalid(res.kind, e.name, causes, res.group)
            else:
                new, _ = await self._admit_and_validate(res, "UPDATE", new, old, dry, None)
            defaults.on_update(res, new, old, self.cluster)
            md = new["metadata"]
            if "generation" in omd:
                md["generation"] = omd["generation"]
            if strategies.has_generation(res) and strategies.generation_part(
                res, new
            ) != strategies.generation_part(res, old):
                md["generation"] = int(omd.get("generation") or 0) + 1
        if sub in ("status", ephemeral.SUBRESOURCE):
            # mutated above (_admit_sub), then validated and admitted by policies and
            # validating webhooks whose rules name the subresource (`nodes/status`,
            # `pods/ephemeralcontainers`), as kube-apiserver admits it
            new, _ = await self._admit_and_validate(res, "UPDATE", new, old, dry, sub)
        if res.key == CRDS and sub is None:
            self._crd_status(new)
        if not applied:
            managedfields.track_update(res, old, new, managedfields.MANAGER.get(), sub, _now_ts())
        new["metadata"]["resourceVersion"] = str(e.rv)
        if new == old:
            # No-op update: nothing written. Answer with committed state only.
            cur = await self.store.committed(res.key, make_key(e.namespace, e.name))
            if cur is None or cur.rv != e.rv:
                raise conflict(res.group_resource, e.name, res.plural)
            return self._stored_response(res, cur.raw)
        nmd = new["metadata"]
        if (
            nmd.get("deletionTimestamp")
            and not nmd.get("finalizers")
            and not (self._graceful_pod(res, new))
            # A pod being deleted gracefully stays while its kubelet writes how its
            # containers ended (Failed, exit codes), until the kubelet's own DELETE
            # with a zero grace period, as in Kubernetes; only removing its last
            # finalizer removes it here.
            and (res.key != PODS or (old.get("metadata") or {}).get("finalizers"))
        ):
            # Last finalizer removed: the object goes now.
            if dry:
                return orjson.dumps(new)
            await self._remove(res, e, new)
            return orjson.dumps(new)
        if dry:
            return orjson.dumps(new)
        if res.custom:
            new = crdversions.to_storage(res, new)  # in the CRD's storage version
        try:
            ne, fut = self.store.put_nowait(res.key, new, expect_rv=e.rv)
        except StoreError as se:
            if se.code == 404:
                raise not_found(res.group_resource, e.name, res.plural, res.group) from None
            raise conflict(res.group_resource, e.name, res.plural) from None
        if fut is not None:
            await fut
        if res.key == CRDS:
            try:
                self.registry.add_crd(new)
            except CRDError:
                pass
        return self._stored_response(res, ne.raw)

    async def patch(
        self,
        res: Resource,
        ns: str,
        name: str,
        sub: str | None,
        body: bytes,
        ctype: str,
        query: Mapping[str, str],
        dry: bool,
    ) -> Response:
        ct = _patch_type(ctype, strategic=not res.custom)
        for _attempt in range(5):
            e = self.store.latest(res.key, make_key(ns, name))
            if e is None:
                if ct == APPLY_PATCH and sub is None:
                    obj = self._applied_new(res, ns, name, body, query)
                    st, out = await self.create_object(res, ns, obj, dry, applied=True)
                    return _raw(st, out)
                raise not_found(res.group_resource, name, res.plural, res.group)
            cur = self._read_obj(res, e)
            obj = self._apply_patch(res, cur, body, ct, query, sub)
            if not isinstance(obj, dict):
                raise bad_request("the patch produced something that is not an object")
            obj.setdefault("metadata", {})
            if not isinstance(obj["metadata"], dict):
                raise bad_request("metadata must be an object")
            if obj["metadata"].get("name", name) != name:
                raise bad_request("the name of the object does not match the name on the URL")
            obj["metadata"]["name"] = name
            want = _rv_int(obj["metadata"].get("resourceVersion"))
            if want is not None and want != e.rv:
                raise conflict(res.group_resource, name, res.plural)
            obj = self._normalize(res, obj)
            # A merge, strategic or JSON patch leaves `cur` as read (they copy along
            # what they change); server-side apply's merge is checked whole.
            self._decode(res, obj, "patch", None if ct == APPLY_PATCH else cur)
            self._check_ns(res, ns, obj, creating=False)
            try:
                out = await self._write_update(res, e, obj, sub, dry, applied=ct == APPLY_PATCH)
            except APIError as ae:
                if ae.reason == "Conflict":
                    # Raced with another writer: re-apply on the new state (a patch
                    # that names a resourceVersion is refused above on the retry).
                    continue
                raise
            return _raw(200, out)
        raise conflict(res.group_resource, name, res.plural)

    def _applied_new(
        self, res: Resource, ns: str | None, name: str, body: bytes, query: Mapping[str, str]
    ) -> dict[str, Any]:
        """What a server-side apply of an object that does not exist creates: the applied
        configuration over an empty object of the kind, named by the URL."""
        base = {
            "apiVersion": res.api_version,
            "kind": res.kind,
            "metadata": {"name": name, **({"namespace": ns} if ns else {})},
        }
        obj = self._apply_patch(res, base, body, APPLY_PATCH, query, None)
        obj.setdefault("metadata", {})["name"] = name
        return obj

    def _apply_patch(
        self,
        res: Resource,
        obj: dict[str, Any],
        body: bytes,
        ct: str,
        query: Mapping[str, str],
        sub: str | None = None,
    ) -> dict[str, Any]:
        try:
            out = patch.apply_patch(
                obj, body, ct, res, query.get("fieldManager"), query.get("force") == "true", sub
            )
        except patch.PatchError as exc:
            raise APIError(exc.code, exc.reason, exc.message) from None
        if not isinstance(out, dict):
            raise bad_request("the patch produced something that is not an object")
        return out

    # ------------------------------------------------------------------ delete

    def _graceful_pod(self, res: Resource, obj: dict[str, Any]) -> bool:
        """A bound, running pod is removed by its kubelet, not by the API server."""
        if res.key != PODS:
            return False
        if not (obj.get("spec") or {}).get("nodeName") or _pod_terminal(obj):
            return False
        return (obj["metadata"].get("deletionGracePeriodSeconds") or 0) > 0

    async def delete(
        self, res: Resource, ns: str, name: str, opts: dict[str, Any], dry: bool
    ) -> Response:
        e = self._entry(res, ns, name, latest=True)
        ws = await admission_policy.validate(
            self.store, self.registry, res, "DELETE", None, e.obj(), dry, requestctx.user_info()
        )
        acc = _WARNINGS.get()
        if ws and acc is not None:
            acc.extend(ws)
        obj, gone = await self.delete_entry(res, e, opts, dry)
        obj = self._served_obj(res, obj)
        if res.custom and isinstance(obj, dict) and obj.get("kind") == res.kind:
            obj = readviews.view_of(res, obj)  # as a read shows it
        if strategies.delete_returns_object(res) or not gone:
            return _json(200, obj)
        return _json(200, strategies.delete_status(res, obj))

    async def delete_entry(
        self, res: Resource, e: Entry, opts: dict[str, Any], dry: bool
    ) -> tuple[dict[str, Any], bool]:
        """Delete as DELETE does; returns (object, removed now)."""
        obj = e.obj()
        md = obj["metadata"]
        pre = opts.get("preconditions") or {}
        if pre.get("uid") and pre["uid"] != md.get("uid"):
            raise conflict(
                res.group_resource,
                e.name,
                res.plural,
                f"Precondition failed: UID in precondition: {pre['uid']}, UID in "
                f"object meta: {md.get('uid')}",
            )
        if pre.get("resourceVersion") and str(pre["resourceVersion"]) != str(e.rv):
            raise conflict(
                res.group_resource,
                e.name,
                res.plural,
                f"Precondition failed: ResourceVersion in precondition: "
                f"{pre['resourceVersion']}, ResourceVersion in object meta: {e.rv}",
            )
        policy = opts.get("propagationPolicy")
        if policy is None and opts.get("orphanDependents") is True:
            policy = "Orphan"
        if policy not in (None, "Background", "Foreground", "Orphan"):
            raise bad_request(f'propagationPolicy: Unsupported value: "{policy}"')
        grace = opts.get("gracePeriodSeconds")
        if grace is not None:
            try:
                grace = int(grace)
            except (TypeError, ValueError):
                raise bad_request("gracePeriodSeconds must be an integer") from None
        if res.key == PODS and grace is None:
            grace = int((obj.get("spec") or {}).get("terminationGracePeriodSeconds", 30) or 0)
        finalizers = list(md.get("finalizers") or [])
        deps = self.store.dependents(e.uid) if e.uid else []
        if md.get("deletionTimestamp"):
            # Already being deleted: a zero grace period on a pod forces it out.
            if res.key == PODS and grace == 0 and not finalizers:
                if not dry:
                    await self._remove(res, e, obj)
                return obj, True
            if res.key == PODS and grace == 0 and md.get("deletionGracePeriodSeconds"):
                # Forced, but finalizers remain: the pod goes when they are removed.
                md["deletionGracePeriodSeconds"] = 0
                if not dry:
                    ne = await self.store.put(res.key, obj, expect_rv=e.rv)
                    return ne.obj(), False
                return obj, False
            if policy == "Foreground" and deps and "foregroundDeletion" not in finalizers:
                finalizers.append("foregroundDeletion")
                md["finalizers"] = finalizers
                if not dry:
                    ne = await self.store.put(res.key, obj, expect_rv=e.rv)
                    return ne.obj(), False
            if dry:
                return obj, False
            # Nothing to write: answer with the committed state, never a pending one.
            cur = await self.store.committed(res.key, make_key(e.namespace, e.name))
            if cur is None:
                return obj, True
            if cur.rv != e.rv:
                raise conflict(res.group_resource, e.name, res.plural)
            return cur.obj(), False
        if policy == "Orphan" and deps and not dry:
            await self._orphan(e.uid, deps)
        if policy == "Foreground" and deps:
            finalizers.append("foregroundDeletion")
        if res.key == NS_KEY:
            finalizers_spec = True
        else:
            finalizers_spec = False
        grace = grace or 0
        graceful = (
            res.key == PODS
            and grace
            and (obj.get("spec") or {}).get("nodeName")
            and not _pod_terminal(obj)
        )
        if finalizers or graceful or finalizers_spec:
            now = _now()
            md["deletionTimestamp"] = _ts(now + timedelta(seconds=grace if graceful else 0))
            md["deletionGracePeriodSeconds"] = int(grace) if graceful else 0
            if int(md.get("generation") or 0) > 0:
                # deletion starting is a change of the object, as in kube-apiserver
                md["generation"] = int(md["generation"]) + 1
            md["finalizers"] = finalizers
            if not finalizers:
                md.pop("finalizers")
            if res.key == NS_KEY:
                obj.setdefault("status", {})["phase"] = "Terminating"
            if dry:
                return obj, False
            ne = await self.store.put(res.key, obj, expect_rv=e.rv)
            if res.key == NS_KEY:
                self._ns_dirty.add(e.name)
                if self._ns_wake is not None:
                    self._ns_wake.set()
            if "foregroundDeletion" in finalizers:
                self._gc_kick("uid", e.uid)
            return ne.obj(), False
        if dry:
            return obj, True
        await self._remove(res, e, obj)
        return obj, True

    async def _remove(self, res: Resource, e: Entry, obj: dict[str, Any]) -> None:
        try:
            await self.store.delete(res.key, make_key(e.namespace, e.name))
        except StoreError:
            raise not_found(res.group_resource, e.name, res.plural, res.group) from None
        if res.key == CRDS:
            for r in self.registry.remove_crd(e.name)[:1]:
                for de in list(self.store.entries(r.key)):
                    try:
                        await self.store.delete(r.key, make_key(de.namespace, de.name))
                    except StoreError:
                        pass

    async def _orphan(self, uid: str, deps: list[tuple[CollKey, str]]) -> None:
        for ck, key in deps:
            de = self.store.latest(ck, key)
            if de is None:
                continue
            d = de.obj()
            refs = [r for r in d["metadata"].get("ownerReferences") or [] if r.get("uid") != uid]
            if refs:
                d["metadata"]["ownerReferences"] = refs
            else:
                d["metadata"].pop("ownerReferences", None)
            try:
                await self.store.put(ck, d, expect_rv=de.rv)
            except StoreError:
                pass

    async def delete_collection(
        self,
        res: Resource,
        ns: str | None,
        query: Mapping[str, str],
        opts: dict[str, Any],
        dry: bool,
    ) -> Response:
        if "deletecollection" not in res.verbs:
            raise APIError(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
            )
        flt = self._filter(res, ns, query)
        entries, _ = self.store.list_sorted(res.key, flt)
        items = []
        for e in entries:
            try:
                obj, _ = await self.delete_entry(res, e, dict(opts), dry)
                obj = self._served_obj(res, obj)
                if res.custom and isinstance(obj, dict):
                    obj = readviews.view_of(res, obj)
                items.append(obj)
            except APIError:
                continue
        return _json(
            200,
            {
                "kind": res.list_kind,
                "apiVersion": res.api_version,
                "metadata": {"resourceVersion": str(self.store.published_rv)},
                "items": items,
            },
        )

    # ------------------------------------------------------------------ pods

    async def bind(
        self, res: Resource, ns: str, name: str, body: dict[str, Any], dry: bool
    ) -> Response:
        bname = (body.get("metadata") or {}).get("name")
        if bname and bname != name:
            raise bad_request("name in URL does not match name in Binding object")
        target = body.get("target") or {}
        node = target.get("name") if isinstance(target, dict) else None
        if not node:
            raise invalid(
                "Binding",
                name,
                [
                    {
                        "reason": "FieldValueRequired",
                        "field": "target.name",
                        "message": "Required value",
                    }
                ],
            )
        if target.get("kind") not in (None, "", "Node"):
            raise invalid(
                "Binding",
                name,
                [
                    {
                        "reason": "FieldValueNotSupported",
                        "field": "target.kind",
                        "message": "must be empty or 'Node'",
                    }
                ],
            )
        e = self._entry(res, ns, name, latest=True)
        pod = e.obj()
        md = pod["metadata"]
        if md.get("deletionTimestamp"):
            raise conflict(
                "pods", name, "pods", f"pod {name} is being deleted, cannot be assigned to a host"
            )
        cur = (pod.get("spec") or {}).get("nodeName")
        if cur:
            raise conflict("pods", name, "pods", f'pod {name} is already assigned to node "{cur}"')
        pod.setdefault("spec", {})["nodeName"] = node
        ann = (body.get("metadata") or {}).get("annotations") or {}
        if ann:
            md["annotations"] = {**(md.get("annotations") or {}), **ann}
        status = pod.setdefault("status", {})
        conds = [c for c in status.get("conditions") or [] if c.get("type") != "PodScheduled"]
        conds.append(
            {
                "type": "PodScheduled",
                "status": "True",
                "lastProbeTime": None,
                "lastTransitionTime": _now_ts(),
            }
        )
        status["conditions"] = conds
        if not dry:
            try:
                await self.store.put(res.key, pod, expect_rv=e.rv)
            except StoreError:
                raise conflict("pods", name, "pods") from None
        return _raw(201, _BIND_OK)

    async def evict(
        self, res: Resource, ns: str, name: str, body: dict[str, Any], dry: bool
    ) -> Response:
        if body.get("kind") not in (None, "Eviction"):
            raise bad_request(f"the kind in the data ({body.get('kind')}) is not Eviction")
        e = self._entry(res, ns, name, latest=True)
        pod = e.obj()
        opts = body.get("deleteOptions") or {}
        if not isinstance(opts, dict):
            raise bad_request("deleteOptions must be an object")
        dry = dry or bool(opts.get("dryRun"))
        phase = (pod.get("status") or {}).get("phase") or "Pending"
        if not pod["metadata"].get("deletionTimestamp") and phase not in _PDB_IGNORES:
            await self._take_budget(ns, pod, dry)
        opts = dict(opts)
        if not dry and not pod["metadata"].get("deletionTimestamp"):
            e, opts = await self._say_evicted(res, e, opts)
        await self.delete_entry(res, e, opts, dry)
        return _json(201, status_obj(201, "", ""))

    async def _say_evicted(
        self, res: Resource, e: Entry, opts: dict[str, Any]
    ) -> tuple[Entry, dict[str, Any]]:
        """Before an eviction deletes the pod, say why on it as kube-apiserver does: a
        DisruptionTarget condition, reason EvictionByEvictionAPI, unless the pod already
        says who takes it (a scheduler's preemption evicts through this API too).
        Preconditions are checked against the pod as the caller saw it; the condition is
        written with that resourceVersion, so the delete's own check would only see ours."""
        pod = e.obj()
        md = pod["metadata"]
        pre = opts.get("preconditions") or {}
        if (pre.get("uid") and pre["uid"] != md.get("uid")) or (
            pre.get("resourceVersion") and str(pre["resourceVersion"]) != str(e.rv)
        ):
            return e, opts  # the delete refuses it with the precondition's message
        status = pod.setdefault("status", {})
        conds = [c for c in status.get("conditions") or [] if isinstance(c, dict)]
        if any(c.get("type") == DISRUPTION_TARGET and c.get("status") == "True" for c in conds):
            return e, opts
        node = (pod.get("spec") or {}).get("nodeName")
        msg = "Eviction API: evicting" + (f" from node {node}" if node else "")
        conds = [c for c in conds if c.get("type") != DISRUPTION_TARGET]
        status["conditions"] = [*conds, disruption_condition(EVICTION_BY_EVICTION_API, msg)]
        try:
            ne = await self.store.put(res.key, pod, expect_rv=e.rv)
        except StoreError:
            raise conflict("pods", e.name, "pods") from None
        if pre.get("resourceVersion"):
            opts = {
                **opts,
                "preconditions": {k: v for k, v in pre.items() if k != "resourceVersion"},
            }
        return ne, opts

    async def _take_budget(self, ns: str, pod: dict[str, Any], dry: bool) -> None:
        """The PodDisruptionBudget check of an eviction, as kube-apiserver makes it: from
        the budget's status, which the disruption controller keeps. An unready pod may go
        while the budget holds; otherwise disruptionsAllowed must be above 0, and is
        taken down by one with the pod recorded in disruptedPods (until the controller
        sees it gone). A budget its controller has not seen since it changed refuses."""
        labels = pod["metadata"].get("labels") or {}
        pdbs = []
        for pe in list(self.store.entries(PDBS, Filter(ns))):
            sel = (pe.obj().get("spec") or {}).get("selector")
            if sel is None:
                continue  # policy/v1: no selector selects nothing, an empty one everything
            if not sel or requirements_match(label_selector_requirements(sel), labels):
                pdbs.append(pe)
        if not pdbs:
            return
        if len(pdbs) > 1:
            raise APIError(
                500,
                "InternalError",
                "This pod has more than one PodDisruptionBudget, which the eviction "
                "subresource does not support.",
            )
        pe = pdbs[0]
        pdb = pe.obj()
        spec, st = pdb.get("spec") or {}, pdb.get("status") or {}
        healthy, desired = int(st.get("currentHealthy") or 0), int(st.get("desiredHealthy") or 0)
        if not _pod_ready(pod):
            if spec.get("unhealthyPodEvictionPolicy") == "AlwaysAllow":
                return
            if healthy >= desired and desired > 0:
                return
        gen = int((pdb.get("metadata") or {}).get("generation") or 0)
        if int(st.get("observedGeneration") or 0) < gen:
            raise self._budget_refusal(
                f"The disruption budget {pe.name} is still being processed by the server.", 10
            )
        allowed = int(st.get("disruptionsAllowed") or 0)
        if allowed < 0:
            raise APIError(403, "Forbidden", "pdb disruptions allowed is negative")
        if len(st.get("disruptedPods") or {}) > MAX_DISRUPTED_PODS:
            raise APIError(
                403,
                "Forbidden",
                "DisruptedPods map too big - too many evictions not confirmed by PDB controller",
            )
        if allowed == 0:
            raise self._budget_refusal(
                f"The disruption budget {pe.name} needs {desired} healthy pods and has "
                f"{healthy} currently"
            )
        if dry:
            return
        st = dict(st)
        st["disruptionsAllowed"] = allowed - 1
        if allowed - 1 == 0:
            conds = [c for c in st.get("conditions") or [] if c.get("type") != "DisruptionAllowed"]
            conds.append(
                {
                    "type": "DisruptionAllowed",
                    "status": "False",
                    "reason": "InsufficientPods",
                    "message": "",
                    "observedGeneration": gen,
                    "lastTransitionTime": _now_ts(),
                }
            )
            st["conditions"] = conds
        st["disruptedPods"] = {
            **(st.get("disruptedPods") or {}),
            pod["metadata"]["name"]: _now_ts(),
        }
        pdb["status"] = st
        try:
            await self.store.put(PDBS, pdb, expect_rv=pe.rv)
        except StoreError:
            raise self._budget_refusal(
                f"The disruption budget {pe.name} changed while the eviction was checked"
            ) from None

    @staticmethod
    def _budget_refusal(cause: str, retry_after: int = 0) -> APIError:
        """429 with the budget's reason. A spent budget suggests no wait (clients would
        sit out a Retry-After inside their HTTP layer: kubectl drain retries itself,
        saying why); a budget being processed suggests 10 s, as kube-apiserver does."""
        details: dict[str, Any] = {"causes": [{"reason": "DisruptionBudget", "message": cause}]}
        if retry_after:
            details["retryAfterSeconds"] = retry_after
        headers = {"Retry-After": str(retry_after)} if retry_after else None
        return APIError(429, "TooManyRequests", PDB_MESSAGE, details, headers)

    # ------------------------------------------------------------------ GC & namespaces

    def _on_event(self, ck: CollKey, ev: Any) -> None:
        if self._gc_queue is None:
            return
        if ev.type == "DELETED":
            if ev.entry.uid in self.store.owner_index:
                self._gc_queue.put_nowait(("gone", ev.entry.uid))
            for u in ev.entry.owners:
                self._gc_queue.put_nowait(("uid", u))
            if ev.entry.namespace in self._ns_dirty and self._ns_wake is not None:
                self._ns_wake.set()
        elif b'"foregroundDeletion"' in ev.entry.raw and b'"deletionTimestamp"' in ev.entry.raw:
            self._gc_queue.put_nowait(("uid", ev.entry.uid))

    def _gc_kick(self, what: str, uid: str) -> None:
        if self._gc_queue is not None:
            self._gc_queue.put_nowait((what, uid))

    def _resource_for(self, ck: CollKey) -> Resource | None:
        rs = self.registry.versions_of(*ck)
        return rs[0] if rs else None

    async def _gc_loop(self) -> None:
        assert self._gc_queue is not None
        while True:
            what, uid = await self._gc_queue.get()
            try:
                await self._gc_one(what, uid)
            except asyncio.CancelledError:
                raise
            except StorageFailure:
                # Not stored (disk full): the work stays to do; try again shortly.
                await asyncio.sleep(1.0)
                self._gc_kick(what, uid)
            except Exception:
                import logging

                logging.getLogger("gpuyard.apiserver").exception("garbage collection")

    async def _gc_one(self, what: str, uid: str) -> None:
        store = self.store
        loc = store.uids.get(uid)
        if loc is None:
            # Owner gone: delete dependents whose owners are all gone.
            for ck, key in store.dependents(uid):
                de = store.latest(ck, key)
                res = self._resource_for(ck)
                if de is None or res is None:
                    continue
                if any(o in store.uids for o in de.owners):
                    continue
                try:
                    await self.delete_entry(res, de, {"propagationPolicy": "Background"}, False)
                except (APIError, StoreError):
                    pass
            return
        ck, key = loc
        e = store.latest(ck, key)
        res = self._resource_for(ck)
        if e is None or res is None:
            return
        obj = e.obj()
        md = obj["metadata"]
        fins = md.get("finalizers") or []
        if not md.get("deletionTimestamp") or "foregroundDeletion" not in fins:
            return
        blocking = 0
        for dck, dkey in store.dependents(uid):
            de = store.latest(dck, dkey)
            dres = self._resource_for(dck)
            if de is None or dres is None:
                continue
            d = de.obj()
            if any(
                r.get("uid") == uid and r.get("blockOwnerDeletion")
                for r in d["metadata"].get("ownerReferences") or []
            ):
                blocking += 1
            if not d["metadata"].get("deletionTimestamp"):
                try:
                    await self.delete_entry(dres, de, {"propagationPolicy": "Foreground"}, False)
                except (APIError, StoreError):
                    pass
        if blocking == 0:
            e = store.latest(ck, key)
            if e is None:
                return
            obj = e.obj()
            obj["metadata"]["finalizers"] = [
                f for f in obj["metadata"].get("finalizers") or [] if f != "foregroundDeletion"
            ]
            try:
                await self._write_update(res, e, obj, None, False)
            except (APIError, StoreError):
                self._gc_kick("uid", uid)

    async def _ns_loop(self) -> None:
        assert self._ns_wake is not None
        while True:
            await self._ns_wake.wait()
            self._ns_wake.clear()
            await asyncio.sleep(0.02)  # let a burst of deletions settle
            for ns in list(self._ns_dirty):
                try:
                    await self._ns_one(ns)
                except asyncio.CancelledError:
                    raise
                except StorageFailure:
                    await asyncio.sleep(1.0)  # disk full: the namespace stays dirty
                    self._ns_wake.set()
                except Exception:
                    import logging

                    logging.getLogger("gpuyard.apiserver").exception("namespace %s", ns)

    async def _ns_one(self, ns: str) -> None:
        nse = self.store.get(NS_KEY, ns)
        if nse is None or b'"deletionTimestamp"' not in nse.raw:
            self._ns_dirty.discard(ns)
            return
        remaining = 0
        for ck, coll in list(self.store.colls.items()):
            res = self._resource_for(ck)
            if res is None or not res.namespaced:
                continue
            for de in [d for d in coll.items.values() if d.namespace == ns]:
                remaining += 1
                if b'"deletionTimestamp"' in de.raw:
                    continue
                try:
                    await self.delete_entry(res, de, {}, False)
                except (APIError, StoreError):
                    pass
        if remaining:
            # Check again soon (pods held by kubelets or finalizers go later).
            still = any(
                d.namespace == ns for c in self.store.colls.values() for d in c.items.values()
            )
            if still:
                return
        nse = self.store.latest(NS_KEY, ns)
        if nse is None:
            return
        obj = nse.obj()
        if obj["metadata"].get("finalizers"):
            return  # metadata finalizers hold it, as in Kubernetes
        self._ns_dirty.discard(ns)
        try:
            await self.store.delete(NS_KEY, ns, expect_rv=nse.rv)
        except StoreError:
            self._ns_dirty.add(ns)


def _keep_status(obj: dict[str, Any], source: dict[str, Any]) -> None:
    """Give obj the status of source (none when source has none), in place."""
    status = source.get("status")
    if status is None:
        obj.pop("status", None)
    else:
        obj["status"] = status


def _partial(obj: dict[str, Any]) -> dict[str, Any]:
    """An object as meta.k8s.io/v1 PartialObjectMetadata (metadata-only clients)."""
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata") or {},
    }


def _is_str_map(v: Any) -> bool:
    return isinstance(v, dict) and all(
        isinstance(k, str) and isinstance(x, str) for k, x in v.items()
    )


def _meta_causes(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """Shape checks on metadata that the store and selectors depend on."""
    md = obj.get("metadata")
    out: list[dict[str, Any]] = []

    def bad(field: str, msg: str, reason: str = "FieldValueInvalid") -> None:
        out.append({"reason": reason, "field": field, "message": msg})

    if not isinstance(md, dict):
        bad("metadata", "Invalid value: must be an object")
        return out
    name = md.get("name")
    if not name:
        bad(
            "metadata.name",
            "Required value: name or generateName is required",
            "FieldValueRequired",
        )
    elif not isinstance(name, str) or len(name) > 253 or "/" in name or name in (".", ".."):
        bad("metadata.name", f"Invalid value: {name!r}: must be a valid object name")
    for f in ("labels", "annotations"):
        if md.get(f) is not None and not _is_str_map(md[f]):
            bad(f"metadata.{f}", "Invalid value: must be a map of strings to strings")
    fins = md.get("finalizers")
    if fins is not None and not (isinstance(fins, list) and all(isinstance(x, str) for x in fins)):
        bad("metadata.finalizers", "Invalid value: must be a list of strings")
    refs = md.get("ownerReferences")
    if refs is not None:
        if not isinstance(refs, list) or not all(
            isinstance(r, dict) and isinstance(r.get("uid"), str) and r.get("uid") for r in refs
        ):
            bad("metadata.ownerReferences", "Invalid value: each needs a uid")
    for f in ("namespace", "generateName", "resourceVersion"):
        if md.get(f) is not None and not isinstance(md[f], str):
            bad(f"metadata.{f}", "Invalid value: must be a string")
    for f in ("spec", "status"):
        if obj.get(f) is not None and not isinstance(obj[f], dict) and f in obj:
            bad(f, "Invalid value: must be an object")
    return out


_VERB_OF = {"POST": "create", "PUT": "update", "PATCH": "patch"}


def _verb(method: str, name: str | None, watch: bool) -> str:
    """The API verb of a request, as authorization and discovery name it."""
    if method in ("GET", "HEAD"):
        if watch:
            return "watch"
        return "list" if name is None else "get"
    if method == "DELETE":
        return "deletecollection" if name is None else "delete"
    return _VERB_OF.get(method, method.lower())


def _header_getter(headers: Mapping[str, str]) -> Any:
    lower: dict[str, str] | None = None

    def get(name: str) -> str:
        nonlocal lower
        v = headers.get(name)
        if v is None:
            if lower is None:
                lower = {k.lower(): val for k, val in headers.items()}
            v = lower.get(name.lower())
        return v or ""

    return get


__all__ = ["Core", "Response", "parse_body", "status_bytes"]
