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
import os
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
