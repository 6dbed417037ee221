"""nftables in-process, through the system's libnftables (the library the ``nft`` command is).

Where the time of an ``nft -f -`` batch went at 110 pods (benchmarks/network.py): a fresh
process (and ``ip netns exec`` in front of it) costs ~7 ms before nft reads its input, and
each new process fetches its ruleset cache from the kernel again. One library context per
engine keeps the netlink socket and the cache between batches (the cache is fetched again
only when the ruleset's generation moved): a pod's batch took ~2 ms, not ~15.

A buffer of commands is still one kernel transaction (all or nothing), as with ``nft -f``.
For another network namespace, the calling thread enters it for the call and comes back
(``setns`` moves only the calling thread): the context's socket is made there and every
command runs there. The library is found with ctypes; where it is missing, ``load`` says
why and the caller runs the ``nft`` command instead.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

CLONE_NEWNET = 0x40000000
OUTPUT_JSON = 1 << 4  # NFT_CTX_OUTPUT_JSON
T = TypeVar("T")


class LibnftError(RuntimeError):
    """The library refused a command; the message is its error text."""


def _library() -> ctypes.CDLL:
    name = ctypes.util.find_library("nftables") or "libnftables.so.1"
    lib = ctypes.CDLL(name)
    vp = ctypes.c_void_p
    lib.nft_ctx_new.argtypes, lib.nft_ctx_new.restype = [ctypes.c_uint32], vp
    lib.nft_ctx_free.argtypes, lib.nft_ctx_free.restype = [vp], None
    lib.nft_ctx_buffer_output.argtypes, lib.nft_ctx_buffer_output.restype = [vp], ctypes.c_int
    lib.nft_ctx_buffer_error.argtypes, lib.nft_ctx_buffer_error.restype = [vp], ctypes.c_int
    for fn in (lib.nft_ctx_get_output_buffer, lib.nft_ctx_get_error_buffer):
        fn.argtypes, fn.restype = [vp], ctypes.c_char_p
    lib.nft_ctx_output_set_flags.argtypes = [vp, ctypes.c_uint]
    lib.nft_ctx_output_set_flags.restype = None
    lib.nft_run_cmd_from_buffer.argtypes = [vp, ctypes.c_char_p]
    lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
    return lib


_lib: ctypes.CDLL | None = None
_lib_error = ""
_lib_lock = threading.Lock()


def _get() -> ctypes.CDLL | None:
    global _lib, _lib_error
    with _lib_lock:
        if _lib is None and not _lib_error:
            try:
                _lib = _library()
            except (OSError, AttributeError) as exc:
                _lib_error = f"libnftables not usable: {exc}"
        return _lib


class Libnft:
    """One libnftables context, in ``netns`` (a name under /run/netns) or this namespace."""

    def __init__(self, lib: ctypes.CDLL, netns: str | None):
        self._lib = lib
        self.netns = netns
        self._lock = threading.Lock()  # a context is not for two threads at once
        self._ctx: int | None = None

    @contextmanager
    def _inside(self) -> Iterator[None]:
        if not self.netns:
            yield
            return
        libc = ctypes.CDLL(None, use_errno=True)
        here = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            try:
                there = os.open(f"/run/netns/{self.netns}", os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                raise LibnftError(f"no network namespace {self.netns!r}") from None
            try:
                if libc.setns(there, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise LibnftError(f"cannot enter {self.netns!r}: {os.strerror(err)}")
            finally:
                os.close(there)
            try:
                yield
            finally:
                # Back to where the thread was; a thread left elsewhere would be a bug
                # far from here, so failing to return is fatal to the call.
                if libc.setns(here, CLONE_NEWNET) != 0:  # pragma: no cover - kernel refusal
                    raise OSError(ctypes.get_errno(), "cannot return to the agent's namespace")
        finally:
            os.close(here)

    def _call(self, fn: Callable[[], T]) -> T:
        with self._lock, self._inside():
            if self._ctx is None:
                ctx = self._lib.nft_ctx_new(0)
                if not ctx:
                    raise LibnftError("nft_ctx_new failed")
                self._lib.nft_ctx_buffer_output(ctx)
                self._lib.nft_ctx_buffer_error(ctx)
                self._ctx = ctx
            return fn()

    def run(self, commands: str, json: bool = False) -> str:
        """Run ``commands`` (nft's language; several lines are one transaction); returns
        what the library printed (JSON text when ``json``)."""

        def go() -> str:
            lib, ctx = self._lib, self._ctx
            lib.nft_ctx_output_set_flags(ctx, OUTPUT_JSON if json else 0)
            rc = lib.nft_run_cmd_from_buffer(ctx, commands.encode())
            out = (lib.nft_ctx_get_output_buffer(ctx) or b"").decode()
            err = (lib.nft_ctx_get_error_buffer(ctx) or b"").decode()
            if rc != 0:
                raise LibnftError(err.strip() or f"nft command failed ({rc})")
            return out

        return self._call(go)

    def close(self) -> None:
        with self._lock:
            if self._ctx is not None:
                self._lib.nft_ctx_free(self._ctx)
                self._ctx = None

    def __del__(self) -> None:  # pragma: no cover - at interpreter exit
        try:
            self.close()
        except Exception:
            pass


def load(netns: str | None) -> Libnft | None:
    """A context for ``netns``, or None where the library is missing (see ``why_not``)."""
    lib = _get()
    return None if lib is None else Libnft(lib, netns)


def why_not() -> str:
    return _lib_error


# -- counters straight from the kernel ------------------------------------------------------
# One netlink dump of the table's counter objects (NFT_MSG_GETOBJ, filtered by table and
# type in the kernel): no ruleset cache to fetch and nothing to print and parse again.
_NETLINK_NETFILTER = 12
_NFNL_SUBSYS_NFTABLES = 10
_NFT_MSG_GETOBJ = 19
_NLM_F_REQUEST, _NLM_F_DUMP = 0x1, 0x300
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_NLM_F_DUMP_INTR = 0x10


class _Interrupted(Exception):
    pass


_NFPROTO_INET = 1
_OBJ_TABLE, _OBJ_NAME, _OBJ_TYPE, _OBJ_DATA, _OBJ_USERDATA = 1, 2, 3, 4, 8
_OBJECT_COUNTER = 1
_COUNTER_BYTES, _COUNTER_PACKETS = 1, 2
_UDATA_OBJ_COMMENT = 0


def _attr(kind: int, value: bytes) -> bytes:
    n = 4 + len(value)
    return struct.pack("=HH", n, kind) + value + b"\0" * (-n % 4)


_HDR = struct.Struct("=HH").unpack_from
_U64 = struct.Struct("!Q").unpack_from


def _attrs(buf: bytes, at: int, end: int) -> dict[int, tuple[int, int]]:
    """Attribute type to (start, end) of its value in ``buf``."""
    out = {}
    while at + 4 <= end:
        n, kind = _HDR(buf, at)
        if n < 4:
            break
        out[kind & 0x3FFF] = (at + 4, at + n)
        at += (n + 3) & ~3
    return out


def _comment(udata: bytes) -> str:
    at = 0
    while at + 2 <= len(udata):
        kind, n = udata[at], udata[at + 1]
        if kind == _UDATA_OBJ_COMMENT:
            return udata[at + 2 : at + 2 + n].rstrip(b"\0").decode(errors="replace")
        at += 2 + n
    return ""


def _dump_counters(table: str) -> list[tuple[str, str, int, int]]:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_NETFILTER)
    try:
        sock.bind((0, 0))
        body = struct.pack("!BBH", _NFPROTO_INET, 0, 0)
        body += _attr(_OBJ_TABLE, table.encode() + b"\0")
        body += _attr(_OBJ_TYPE, struct.pack("!I", _OBJECT_COUNTER))
        kind = (_NFNL_SUBSYS_NFTABLES << 8) | _NFT_MSG_GETOBJ
        sock.send(
            struct.pack("=IHHII", 16 + len(body), kind, _NLM_F_REQUEST | _NLM_F_DUMP, 1, 0) + body
        )
        rows: list[tuple[str, str, int, int]] = []
        comments: dict[bytes, str] = {}
        while True:
            buf = sock.recv(1 << 20)
            at = 0
            while at + 16 <= len(buf):
                n, mtype, flags, _, _ = struct.unpack_from("=IHHII", buf, at)
                if n < 16:
                    raise LibnftError("bad netlink message from the kernel")
                if flags & _NLM_F_DUMP_INTR:
                    raise _Interrupted  # the ruleset changed during the dump
                if mtype == _NLMSG_DONE:
                    return rows
                if mtype == _NLMSG_ERROR:
                    (err,) = struct.unpack_from("=i", buf, at + 16)
                    if err == 0:
                        return rows
                    if -err == errno.ENOENT:
                        return []
                    raise LibnftError(f"counter dump refused: {os.strerror(-err)}")
                a = _attrs(buf, at + 20, at + n)
                name, data = a.get(_OBJ_NAME), a.get(_OBJ_DATA)
                if name is None or data is None:
                    raise LibnftError("counter without name or data from the kernel")
                d = _attrs(buf, *data)
                u = a.get(_OBJ_USERDATA)
                udata = buf[u[0] : u[1]] if u else b""
                comment = comments.get(udata)
                if comment is None:  # a pod's eight counters share one comment
                    comment = comments[udata] = _comment(udata)
                rows.append(
                    (
                        buf[name[0] : name[1]].rstrip(b"\0").decode(),
                        comment,
                        _U64(buf, d[_COUNTER_PACKETS][0])[0],
                        _U64(buf, d[_COUNTER_BYTES][0])[0],
                    )
                )
                at += (n + 3) & ~3
    finally:
        sock.close()


def read_counters(ctx: Libnft, table: str) -> list[tuple[str, str, int, int]]:
    """Every counter object of ``inet table`` in ``ctx``'s namespace: name, comment,
    packets, bytes (the socket is made, so bound, in that namespace)."""
    with ctx._lock, ctx._inside():
        for _ in range(20):
            try:
                return _dump_counters(table)
            except _Interrupted:
                continue  # another change came in the middle: a consistent dump again
        raise LibnftError("counter dump interrupted by ruleset changes 20 times in a row")
