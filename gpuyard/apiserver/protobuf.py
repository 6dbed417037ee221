"""Decoding the few Kubernetes protobuf request bodies kubectl sends.

kubectl's typed clients (`kubectl create configmap|namespace|secret|serviceaccount|
priorityclass`, the Eviction that `kubectl drain` posts, typed DeleteOptions) send
`application/vnd.kubernetes.protobuf` bodies and accept JSON answers. This decodes those
kinds into the same dicts a JSON body gives; any other kind is refused with 415 by the
caller. Pure: no I/O.

Wire format: magic b"k8s\\x00", then a runtime.Unknown message {1: TypeMeta{1:
apiVersion, 2: kind}, 2: raw (the object's own message), 3: contentEncoding,
4: contentType}.
"""

from __future__ import annotations

import base64
from typing import Any

MAGIC = b"k8s\x00"
CONTENT_TYPE = "application/vnd.kubernetes.protobuf"


class ProtobufError(ValueError):
    """A body that is not a protobuf message of a kind this module knows."""


# A schema: field number -> (json name, type, sub-schema name for messages)
Schema = dict[int, tuple[str, str, str | None]]

SCHEMAS: dict[str, Schema] = {
    "ObjectMeta": {
        1: ("name", "string", None),
        2: ("generateName", "string", None),
        3: ("namespace", "string", None),
        5: ("uid", "string", None),
        6: ("resourceVersion", "string", None),
        11: ("labels", "map_ss", None),
        12: ("annotations", "map_ss", None),
        13: ("ownerReferences", "rep_msg", "OwnerReference"),
        14: ("finalizers", "rep_string", None),
    },
    "OwnerReference": {
        1: ("kind", "string", None),
        3: ("name", "string", None),
        4: ("uid", "string", None),
        5: ("apiVersion", "string", None),
        6: ("controller", "bool", None),
        7: ("blockOwnerDeletion", "bool", None),
    },
    "Preconditions": {1: ("uid", "string", None), 2: ("resourceVersion", "string", None)},
    "DeleteOptions": {
        1: ("gracePeriodSeconds", "int", None),
        2: ("preconditions", "msg", "Preconditions"),
        3: ("orphanDependents", "bool", None),
        4: ("propagationPolicy", "string", None),
        5: ("dryRun", "rep_string", None),
    },
    "Eviction": {
        1: ("metadata", "msg", "ObjectMeta"),
        2: ("deleteOptions", "msg", "DeleteOptions"),
    },
    "ConfigMap": {
        1: ("metadata", "msg", "ObjectMeta"),
        2: ("data", "map_ss", None),
        3: ("binaryData", "map_sb", None),
        4: ("immutable", "bool", None),
    },
    "Secret": {
        1: ("metadata", "msg", "ObjectMeta"),
        2: ("data", "map_sb", None),
        3: ("type", "string", None),
        4: ("stringData", "map_ss", None),
        5: ("immutable", "bool", None),
    },
    "NamespaceSpec": {1: ("finalizers", "rep_string", None)},
    "Namespace": {1: ("metadata", "msg", "ObjectMeta"), 2: ("spec", "msg", "NamespaceSpec")},
    "ServiceAccount": {1: ("metadata", "msg", "ObjectMeta")},
    "PriorityClass": {
        1: ("metadata", "msg", "ObjectMeta"),
        2: ("value", "int", None),
        3: ("globalDefault", "bool", None),
        4: ("description", "string", None),
        5: ("preemptionPolicy", "string", None),
    },
    "Binding": {1: ("metadata", "msg", "ObjectMeta"), 2: ("target", "msg", "ObjectReference")},
    "ObjectReference": {
        1: ("kind", "string", None),
        2: ("namespace", "string", None),
        3: ("name", "string", None),
        4: ("uid", "string", None),
        5: ("apiVersion", "string", None),
    },
    "SelfSubjectAccessReview": {
        1: ("metadata", "msg", "ObjectMeta"),
        2: ("spec", "msg", "SelfSubjectAccessReviewSpec"),
    },
    "SelfSubjectAccessReviewSpec": {
        1: ("resourceAttributes", "msg", "ResourceAttributes"),
        2: ("nonResourceAttributes", "msg", "NonResourceAttributes"),
    },
    "ResourceAttributes": {
        1: ("namespace", "string", None),
        2: ("verb", "string", None),
        3: ("group", "string", None),
        4: ("version", "string", None),
        5: ("resource", "string", None),
        6: ("subresource", "string", None),
        7: ("name", "string", None),
    },
    "NonResourceAttributes": {1: ("path", "string", None), 2: ("verb", "string", None)},
    # Identities and RBAC: `kubectl auth whoami`, `auth can-i --list`, `create token`,
    # `create role|clusterrole|rolebinding|clusterrolebinding`.
    "SelfSubjectReview": {1: ("metadata", "msg", "ObjectMeta")},
    "SelfSubjectRulesReview": {
        1: ("metadata", "msg", "ObjectMeta"),
        2: ("spec", "msg", "SelfSubjectRulesReviewSpec"),
    },
    "SelfSubjectRulesReviewSpec": {1: ("namespace", "string", None)},
    "TokenRequest": {1: ("metadata", "msg", "ObjectMeta"), 2: ("spec", "msg", "TokenRequestSpec")},
    "TokenRequestSpec": {
        1: ("audiences", "rep_string", None),
        3: ("boundObjectRef", "msg", "BoundObjectReference"),
        4: ("expirationSeconds", "int", None),
    },
    "BoundObjectReference": {
        1: ("kind", "string", None),
        2: ("apiVersion", "string", None),
        3: ("name", "string", None),
        4: ("uid", "string", None),
    },
    "PolicyRule": {
        1: ("verbs", "rep_string", None),
        2: ("apiGroups", "rep_string", None),
        3: ("resources", "rep_string", None),
        4: ("resourceNames", "rep_string", None),
        5: ("nonResourceURLs", "rep_string", None),
    },
    "Role": {1: ("metadata", "msg", "ObjectMeta"), 2: ("rules", "rep_msg", "PolicyRule")},
    "ClusterRole": {
        1: ("metadata", "msg", "ObjectMeta"),
        2: ("rules", "rep_msg", "PolicyRule"),
        3: ("aggregationRule", "msg", "AggregationRule"),
    },
    "AggregationRule": {1: ("clusterRoleSelectors", "rep_msg", "LabelSelector")},
    "LabelSelector": {
        1: ("matchLabels", "map_ss", None),
        2: ("matchExpressions", "rep_msg", "LabelSelectorRequirement"),
    },
    "LabelSelectorRequirement": {
        1: ("key", "string", None),
        2: ("operator", "string", None),
        3: ("values", "rep_string", None),
    },
    "Subject": {
        1: ("kind", "string", None),
        2: ("apiGroup", "string", None),
        3: ("name", "string", None),
        4: ("namespace", "string", None),
    },
    "RoleRef": {
        1: ("apiGroup", "string", None),
        2: ("kind", "string", None),
        3: ("name", "string", None),
    },
    "RoleBinding": {
        1: ("metadata", "msg", "ObjectMeta"),
        2: ("subjects", "rep_msg", "Subject"),
        3: ("roleRef", "msg", "RoleRef"),
    },
    "ClusterRoleBinding": {
        1: ("metadata", "msg", "ObjectMeta"),
        2: ("subjects", "rep_msg", "Subject"),
        3: ("roleRef", "msg", "RoleRef"),
    },
    "TypeMeta": {1: ("apiVersion", "string", None), 2: ("kind", "string", None)},
    "Unknown": {
        1: ("typeMeta", "msg", "TypeMeta"),
        2: ("raw", "bytes", None),
        3: ("contentEncoding", "string", None),
        4: ("contentType", "string", None),
    },
}


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = 0
    out = 0
    while True:
        if i >= len(buf) or shift > 63:
            raise ProtobufError("truncated varint")
        b = buf[i]
        i += 1
        out |= (b & 0x7F) << shift
        if not b & 0x80:
            return out, i
        shift += 7


def _fields(buf: bytes) -> list[tuple[int, int, Any]]:
    out: list[tuple[int, int, Any]] = []
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = _varint(buf, i)
            out.append((num, wt, v))
        elif wt == 2:
            n, i = _varint(buf, i)
            if i + n > len(buf):
                raise ProtobufError("truncated field")
            out.append((num, wt, buf[i : i + n]))
            i += n
        elif wt == 1:
            i += 8
        elif wt == 5:
            i += 4
        else:
            raise ProtobufError(f"unsupported wire type {wt}")
    return out


def decode_message(buf: bytes, schema_name: str) -> dict[str, Any]:
    schema = SCHEMAS[schema_name]
    out: dict[str, Any] = {}
    for num, _wt, v in _fields(buf):
        spec = schema.get(num)
        if spec is None:
            continue  # fields we do not need (timestamps, managed fields)
        name, typ, sub = spec
        if typ == "string":
            text = bytes(v).decode()
            if text:  # Go encodes empty strings; JSON omits them
                out[name] = text
        elif typ == "bytes":
            out[name] = bytes(v)
        elif typ == "int":
            out[name] = v - (1 << 64) if v >= 1 << 63 else v
        elif typ == "bool":
            out[name] = bool(v)
        elif typ == "msg":
            assert sub is not None
            out[name] = decode_message(v, sub)
        elif typ == "rep_string":
            out.setdefault(name, []).append(bytes(v).decode())
        elif typ == "rep_msg":
            assert sub is not None
            out.setdefault(name, []).append(decode_message(v, sub))
        elif typ in ("map_ss", "map_sb"):
            k = ""
            val: Any = "" if typ == "map_ss" else b""
            for n2, _, v2 in _fields(v):
                if n2 == 1:
                    k = bytes(v2).decode()
                elif n2 == 2:
                    val = bytes(v2).decode() if typ == "map_ss" else bytes(v2)
            if typ == "map_sb":
                val = base64.b64encode(val).decode()
            out.setdefault(name, {})[k] = val
    return out


def decode(body: bytes) -> dict[str, Any]:
    """A Kubernetes protobuf body as the equivalent JSON-shaped dict."""
    if not body.startswith(MAGIC):
        raise ProtobufError("not a Kubernetes protobuf message (missing k8s magic)")
    env = decode_message(body[len(MAGIC) :], "Unknown")
    tm = env.get("typeMeta") or {}
    kind = tm.get("kind", "")
    if kind not in SCHEMAS or kind in ("Unknown", "TypeMeta"):
        raise ProtobufError(
            f"protobuf bodies of kind {kind or '(none)'!r} are not supported; send JSON"
        )
    obj = decode_message(env.get("raw", b""), kind)
    out = {"apiVersion": tm.get("apiVersion", ""), "kind": kind}
    out.update(obj)
    if "metadata" not in out and kind != "DeleteOptions":
        out["metadata"] = {}
    return out
