"""Decoding Kubernetes protobuf request bodies into the dicts a JSON body gives.

kubectl's typed clients (`kubectl create deployment|job|cronjob|service|role|...`, the
Eviction of `kubectl drain`, typed DeleteOptions) send
`application/vnd.kubernetes.protobuf` bodies and accept JSON answers. Any built-in kind
decodes: the message is walked with the wire numbers of gpuyard/k8s/data/protobuf.json
(generated from k8s.io/api's generated.proto files by gpuyard.k8s.proto_gen). Pure: no
I/O.

Wire format: magic b"k8s\\x00", then a runtime.Unknown message {1: TypeMeta{1:
apiVersion, 2: kind}, 2: raw (the object's own message), 3: contentEncoding,
4: contentType}.

What JSON would show, as kube-apiserver's own JSON encoding of the decoded object does:
a zero value of a field that is not a pointer and is `omitempty` in Go is left out (Go's
protobuf encoder writes every such field); a pointer's zero value that was sent is kept;
Time and MicroTime are RFC 3339 text, Quantity and IntOrString their short forms, bytes
base64, RawExtension and FieldsV1 the JSON they carry, a slice type (ExtraValue) a list,
and an embedded struct's fields (Go's embedded `json:""` fields, such as an Ingress rule's
IngressRuleValue or a Volume's VolumeSource) those of the message holding it.
"""

from __future__ import annotations

import base64
import struct
from datetime import UTC, datetime
from functools import cache
from importlib import resources as importlib_resources
from typing import Any

import orjson

MAGIC = b"k8s\x00"
CONTENT_TYPE = "application/vnd.kubernetes.protobuf"

_META = "k8s.io.apimachinery.pkg.apis.meta.v1."
_UNKNOWN = "k8s.io.apimachinery.pkg.runtime.Unknown"
_MAX_DEPTH = 100


class ProtobufError(ValueError):
    """A body that is not a protobuf message of a kind this module knows."""


@cache
def _table() -> tuple[dict[str, dict[int, tuple[str, str, str, str]]], frozenset[str]]:
    raw = (importlib_resources.files("gpuyard.k8s") / "data" / "protobuf.json").read_bytes()
    data = orjson.loads(raw)
    msgs = {
        name: {f[0]: (f[1], f[2], f[3], f[4]) for f in fields}
        for name, fields in data["messages"].items()
    }
    return msgs, frozenset(data["slices"])


def message_for(api_version: str, kind: str) -> str | None:
    """The protobuf message of a built-in kind, by the official definitions' names."""
    from gpuyard.apiserver.schemas import definitions

    if kind == "DeleteOptions":  # the one message of every group's DeleteOptions
        return _META + "DeleteOptions"
    group, _, version = api_version.rpartition("/")
    name = definitions().by_gvk.get((group, version, kind))
    if not name or not name.startswith("io.k8s."):
        return None
    full = "k8s.io." + name[len("io.k8s.") :]
    return full if full in _table()[0] else None


# ------------------------------------------------------------ wire format


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
    n = len(buf)
    while i < n:
        key, i = _varint(buf, i)
        num, wt = key >> 3, key & 7
        if num == 0:
            raise ProtobufError("field number 0")
        if wt == 0:
            v, i = _varint(buf, i)
            out.append((num, wt, v))
        elif wt == 2:
            ln, i = _varint(buf, i)
            if i + ln > n:
                raise ProtobufError("truncated field")
            out.append((num, wt, buf[i : i + ln]))
            i += ln
        elif wt == 1:
            if i + 8 > n:
                raise ProtobufError("truncated field")
            out.append((num, wt, buf[i : i + 8]))
            i += 8
        elif wt == 5:
            if i + 4 > n:
                raise ProtobufError("truncated field")
            out.append((num, wt, buf[i : i + 4]))
            i += 4
        else:
            raise ProtobufError(f"unsupported wire type {wt}")
    return out


def _signed(v: int, bits: int) -> int:
    v &= (1 << 64) - 1
    if v >= 1 << 63:
        v -= 1 << 64
    if bits == 32:
        v = (v + (1 << 31)) % (1 << 32) - (1 << 31)
    return v


def _scalar(typ: str, wt: int, v: Any, path: str) -> Any:
    if typ == "string":
        if wt != 2:
            raise ProtobufError(f"{path}: wrong wire type for a string")
        try:
            return bytes(v).decode()
        except UnicodeDecodeError:
            raise ProtobufError(f"{path}: a string that is not UTF-8") from None
    if typ == "bytes":
        if wt != 2:
            raise ProtobufError(f"{path}: wrong wire type for bytes")
        return base64.b64encode(bytes(v)).decode()
    if typ == "bool":
        if wt != 0:
            raise ProtobufError(f"{path}: wrong wire type for a bool")
        return bool(v)
    if typ in ("int32", "int64", "uint32", "uint64"):
        if wt != 0:
            raise ProtobufError(f"{path}: wrong wire type for an integer")
        if typ.startswith("u"):
            return v
        return _signed(v, 32 if typ == "int32" else 64)
    if typ == "double":
        if wt != 1:
            raise ProtobufError(f"{path}: wrong wire type for a double")
        return struct.unpack("<d", v)[0]
    if typ == "float":
        if wt != 5:
            raise ProtobufError(f"{path}: wrong wire type for a float")
        return struct.unpack("<f", v)[0]
    raise ProtobufError(f"{path}: unknown type {typ}")


def _zero(v: Any) -> bool:
    return v == "" or v == 0 or v is False or v is None


def _time(buf: bytes, micro: bool) -> str | None:
    secs, nanos = 0, 0
    for num, wt, v in _fields(buf):
        if num == 1 and wt == 0:
            secs = _signed(v, 64)
        elif num == 2 and wt == 0:
            nanos = _signed(v, 32)
    if secs == 0 and nanos == 0:
        return None  # Go's zero time: JSON null, left out
    try:
        t = datetime.fromtimestamp(secs, UTC)
    except (OverflowError, OSError, ValueError):
        raise ProtobufError("a time out of range") from None
    if micro:
        return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{nanos // 1000:06d}Z"
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _special(name: str, buf: bytes) -> tuple[bool, Any]:
    """(handled, JSON value) for messages whose JSON form is not an object."""
    if name == _META + "Time":
        return True, _time(buf, False)
    if name == _META + "MicroTime":
        return True, _time(buf, True)
    if name == _META + "Duration":
        for num, wt, v in _fields(buf):
            if num == 1 and wt == 0:
                return True, _duration(_signed(v, 64))
        return True, "0s"
    if name == "k8s.io.apimachinery.pkg.api.resource.Quantity":
        for num, wt, v in _fields(buf):
            if num == 1 and wt == 2:
                return True, bytes(v).decode(errors="replace")
        return True, "0"
    if name == "k8s.io.apimachinery.pkg.util.intstr.IntOrString":
        typ, ival, sval = 0, 0, ""
        for num, wt, v in _fields(buf):
            if num == 1 and wt == 0:
                typ = v
            elif num == 2 and wt == 0:
                ival = _signed(v, 32)
            elif num == 3 and wt == 2:
                sval = bytes(v).decode(errors="replace")
        return True, sval if typ == 1 else ival
    if name in ("k8s.io.apimachinery.pkg.runtime.RawExtension", _META + "FieldsV1"):
        for num, wt, v in _fields(buf):
            if num == 1 and wt == 2:
                try:
                    return True, orjson.loads(bytes(v)) if v else None
                except orjson.JSONDecodeError:
                    raise ProtobufError(f"{name.rsplit('.', 1)[-1]} that is not JSON") from None
        return True, None
    return False, None


def _duration(ns: int) -> str:
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    ns = abs(ns)
    h, rem = divmod(ns, 3600 * 10**9)
    m, rem = divmod(rem, 60 * 10**9)
    s = rem / 10**9
    text = f"{s:.9f}".rstrip("0").rstrip(".") + "s"
    if h:
        return f"{sign}{h}h{m}m{text}"
    if m:
        return f"{sign}{m}m{text}"
    return sign + text


def _value(typ: str, wt: int, v: Any, path: str, depth: int) -> Any:
    msgs, _ = _table()
    if typ in msgs:
        if wt != 2:
            raise ProtobufError(f"{path}: wrong wire type for a message")
        return decode_message(bytes(v), typ, path, depth + 1)
    return _scalar(typ, wt, v, path)


def decode_message(buf: bytes, name: str, path: str = "", depth: int = 0) -> Any:
    """One message as its JSON value (an object for most)."""
    if depth > _MAX_DEPTH:
        raise ProtobufError("the message nests too deeply")
    handled, special = _special(name, buf)
    if handled:
        return special
    msgs, slices = _table()
    schema = msgs[name]
    if name in slices:  # a Go slice type: {1: repeated items} is the list itself
        out_list = []
        for num, wt, v in _fields(buf):
            spec = schema.get(num)
            if spec is not None:
                out_list.append(_value(spec[1], wt, v, path, depth))
        return out_list
    out: dict[str, Any] = {}
    for num, wt, v in _fields(buf):
        spec = schema.get(num)
        if spec is None:
            continue  # a field of a newer API than the table: not known here
        fname, typ, label, flag = spec
        fpath = f"{path}.{fname}" if path else fname
        if label == "m":
            if wt != 2:
                raise ProtobufError(f"{fpath}: wrong wire type for a map entry")
            ktype, vtype = typ.split(",", 1)
            key: Any = ""
            val: Any = None
            for n2, w2, v2 in _fields(bytes(v)):
                if n2 == 1:
                    key = _value(ktype, w2, v2, fpath, depth)
                elif n2 == 2:
                    val = _value(vtype, w2, v2, f"{fpath}[{key}]", depth)
            if val is None:
                val = "" if vtype in ("string", "bytes") else ({} if vtype in msgs else 0)
            out.setdefault(fname, {})[str(key)] = val
        elif label == "r":
            if wt == 2 and typ in ("int32", "int64", "uint32", "uint64", "bool"):
                # a packed repeated scalar
                i, data, items = 0, bytes(v), []
                while i < len(data):
                    x, i = _varint(data, i)
                    items.append(_scalar(typ, 0, x, fpath))
                out.setdefault(fname, []).extend(items)
            else:
                out.setdefault(fname, []).append(_value(typ, wt, v, fpath, depth))
        elif flag == "i":
            # an embedded struct (no JSON name of its own): its fields are this message's
            val = _value(typ, wt, v, path, depth)
            if isinstance(val, dict):
                out.update(val)
        else:
            val = _value(typ, wt, v, fpath, depth)
            if val is None or (flag == "e" and _zero(val)):
                out.pop(fname, None)
                continue
            out[fname] = val
    return out


def decode(body: bytes) -> dict[str, Any]:
    """A Kubernetes protobuf body as the equivalent JSON-shaped dict."""
    if not body.startswith(MAGIC):
        raise ProtobufError("not a Kubernetes protobuf message (missing k8s magic)")
    env = decode_message(body[len(MAGIC) :], _UNKNOWN)
    # (its TypeMeta is embedded: apiVersion and kind are the envelope's own fields)
    api_version, kind = str(env.get("apiVersion", "")), str(env.get("kind", ""))
    if env.get("contentEncoding"):
        raise ProtobufError(f"content encoding {env['contentEncoding']!r} is not supported")
    name = message_for(api_version, kind)
    if name is None:
        raise ProtobufError(
            f"protobuf bodies of kind {kind or '(none)'!r} in {api_version or '(none)'!r} "
            "are not supported; send JSON"
        )
    raw = base64.b64decode(env.get("raw", "")) if env.get("raw") else b""
    obj = decode_message(raw, name)
    if not isinstance(obj, dict):
        raise ProtobufError(f"{kind} is not an object")
    out: dict[str, Any] = {"apiVersion": api_version, "kind": kind}
    out.update(obj)
    if "metadata" not in out and kind != "DeleteOptions":
        out["metadata"] = {}
    return out
