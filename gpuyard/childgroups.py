"""Process groups a test or benchmark started, killed when it ends however it ends.

`adopt(pid)` records a child started with `start_new_session=True` (so its pid is its
process group); `release(pid)` forgets it once it has been stopped. `run(cmd)` is
subprocess.run for a child that starts servers of its own: it is stopped with SIGTERM
(so it stops them) before SIGKILL. `at_exit(fn)`
records any other cleanup (a temporary git worktree) and returns its remover.
Whatever is still recorded is cleaned up (groups get SIGTERM, then SIGKILL
after a grace period)

- at a normal interpreter exit (atexit), and
- on SIGTERM or SIGHUP: where nothing else handles the signal, the groups are killed
  and the cleanups run, then the signal is delivered again with its default action,
  so the process ends as it would have (a test runner's own handling is untouched).

Scripts whose `with`/`finally` blocks must run on a signal (benchmarks: a pool of
client processes, a server block) call `exit_on_signals()` first: SIGTERM and SIGHUP
then raise SystemExit in the main thread, as SIGINT raises KeyboardInterrupt, and
what is still recorded afterwards is killed at exit. A forked child (a
multiprocessing worker) inherits none of this: it never kills its parent's groups.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGTERM, signal.SIGHUP)
GRACE_S = 5.0  # how long a stopped group may take to end before SIGKILL

_owner = os.getpid()
_groups: dict[int, None] = {}
_cleanups: dict[int, Callable[[], None]] = {}
_next = 0
_lock = threading.Lock()
_hooked = False


def adopt(pid: int) -> None:
    """Kill process group `pid` when this process ends, unless released before."""
    _hook()
    with _lock:
        _groups[pid] = None


def release(pid: int) -> None:
    with _lock:
        _groups.pop(pid, None)


def at_exit(fn: Callable[[], None]) -> Callable[[], None]:
    """Run `fn` when this process ends (normally or on SIGTERM/SIGHUP); returns a
    function that forgets it again."""
    global _next
    _hook()
    with _lock:
        _next += 1
        key = _next
        _cleanups[key] = fn

    def forget() -> None:
        with _lock:
            _cleanups.pop(key, None)

    return forget


def clean_up() -> None:
    """Kill every recorded group and run every recorded cleanup (this process only)."""
    if os.getpid() != _owner:
        return
    with _lock:
        groups = list(_groups)
        _groups.clear()
        cleanups = list(_cleanups.values())
        _cleanups.clear()
    _stop_groups(groups)
    for fn in cleanups:
        with contextlib.suppress(Exception):
            fn()


def _gone(pid: int) -> bool:
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return True  # our child, reaped now
    except ChildProcessError:
        pass
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        pass
    return False


def _stop_groups(groups: list[int], grace: float = GRACE_S) -> None:
    """SIGTERM each group (a child that started its own children stops them), SIGKILL
    whatever is left after `grace` seconds."""
    for pid in groups:
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    left = groups
    while left and time.monotonic() < deadline:
        left = [pid for pid in left if not _gone(pid)]
        if left:
            time.sleep(0.05)
    for pid in left:
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)


def run(
    cmd: list[str], timeout: float | None = None, **popen: Any
) -> subprocess.CompletedProcess[str]:
    """`subprocess.run(cmd, capture_output=True, text=True)` in a process group of its
    own that is stopped (SIGTERM, then SIGKILL) if this process ends or is interrupted
    first: a child that started servers of its own gets to stop them."""
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        **popen,
    )
    adopt(proc.pid)
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException:
        release(proc.pid)
        _stop_groups([proc.pid])
        proc.wait()
        raise
    release(proc.pid)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _redeliver(signum: int) -> None:
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _on_signal(signum: int, frame: FrameType | None) -> None:
    clean_up()
    _redeliver(signum)


def _hook() -> None:
    global _hooked
    if _hooked:
        return
    _hooked = True
    atexit.register(clean_up)
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers can only be set from the main thread
    for sig in SIGNALS:
        if signal.getsignal(sig) == signal.SIG_DFL:
            signal.signal(sig, _on_signal)


def _raise_exit(signum: int, frame: FrameType | None) -> None:
    if os.getpid() != _owner:  # a forked child: end as the signal says
        _redeliver(signum)
    # A second signal while unwinding: stop at once, killing what is recorded.
    for sig in SIGNALS:
        signal.signal(sig, _on_signal)
    raise SystemExit(128 + signum)


def exit_on_signals() -> None:
    """SIGTERM and SIGHUP raise SystemExit(128 + signal) in the main thread from now on
    (call it from the main thread, first thing in a script's main)."""
    global _hooked
    if not _hooked:
        _hooked = True
        atexit.register(clean_up)
    for sig in SIGNALS:
        signal.signal(sig, _raise_exit)
