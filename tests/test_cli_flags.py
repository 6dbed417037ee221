"""Every numeric flag of every gpuyard command is typed: a bad value exits 2 with one
line naming the flag, before anything starts, and never a traceback.

The flags are found by walking each command's parser (subcommands too), so a flag
added later with a bare `type=int` or `type=float` fails `test_numeric_flags_are_typed`,
and every typed one is run through `gpuyard` in a subprocess with a value it must
refuse.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import math
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from gpuyard import cli
from gpuyard.cliargs import Float, HostPort, Int


def _walk(path: list[str], parser: argparse.ArgumentParser) -> Iterator[tuple[list[str], Any]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _walk([*path, name], sub)
        elif action.option_strings:
            yield path, action


def _flags() -> list[tuple[list[str], str, object]]:
    """(command words, flag, its type) for every option of every command."""
    out = []
    for name, (modname, _) in cli.COMMANDS.items():
        mod = importlib.import_module(modname)
        parser = argparse.ArgumentParser(prog=f"gpuyard {name}")
        mod.add_arguments(parser, name) if cli._takes_name(mod) else mod.add_arguments(parser)
        for path, action in _walk([name], parser):
            out.append((path, action.option_strings[-1], action.type))
    return out


FLAGS = _flags()
# Flags that take a number, alone or as HOST:PORT.
NUMERIC = [(p, f, t) for p, f, t in FLAGS if isinstance(t, Int | Float | HostPort)]


def _bad_values(kind: Int | Float | HostPort) -> list[str]:
    """Values the type must refuse: not a number, and each side of its range."""
    if isinstance(kind, HostPort):
        lo, hi = kind.port.lo, kind.port.hi
        assert lo is not None and hi is not None
        return ["x", "", ":80", "h:x", "h:1.5", f"h:{lo - 1}", f"h:{hi + 1}"]
    bad = ["x", ""]
    if isinstance(kind, Float):
        bad += ["nan", "inf"]
        if kind.gt is not None:
            bad.append(f"{kind.gt:g}")
    else:
        bad.append("1.5")
    if kind.lo is not None:
        bad.append(f"{kind.lo - 1:g}")
    if kind.hi is not None:
        bad.append(f"{kind.hi + 1:g}")
    return bad


def _one_bad_value(kind: Int | Float | HostPort) -> str:
    """The most telling value to try from the command line: out of range if it has one."""
    return _bad_values(kind)[-1]


def _id(case: tuple[list[str], str, object]) -> str:
    return " ".join(case[0]) + " " + case[1]


def test_flags_were_found() -> None:
    commands = {p[0] for p, _, _ in NUMERIC}
    # The commands that take numbers: if one drops out, the walk is broken.
    for name in (
        "up",
        "apiserver",
        "fault",
        "scheduler",
        "controllers",
        "health",
        "gpu-test",
        "twin",
    ):
        assert name in commands, name
    assert "teams-webhook" in commands


def test_numeric_flags_are_typed() -> None:
    """No flag parses numbers with bare int() or float(): those accept -1, nan and inf
    and say nothing of the range."""
    untyped = [_id(c) for c in FLAGS if c[2] in (int, float)]
    assert untyped == []


def test_peer_flags_check_host_and_port() -> None:
    """--peer HOST:PORT is parsed where it is given: a port out of range was an
    OverflowError traceback from the first connection."""
    peers = [" ".join(p) for p, f, t in NUMERIC if f == "--peer"]
    assert peers == ["health agent", "health check"]


@pytest.mark.parametrize("case", NUMERIC, ids=_id)
def test_every_bad_value_is_refused_by_the_parser(case: tuple[list[str], str, object]) -> None:
    """In process, each bad value of each numeric flag: argparse exits 2 naming it."""
    path, flag, kind = case
    assert isinstance(kind, Int | Float | HostPort)
    name = path[0]
    mod = importlib.import_module(cli.COMMANDS[name][0])
    for value in _bad_values(kind):
        parser = argparse.ArgumentParser(prog=f"gpuyard {name}")
        mod.add_arguments(parser, name) if cli._takes_name(mod) else mod.add_arguments(parser)
        err = io.StringIO()
        with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exit_:
            parser.parse_args([*path[1:], f"{flag}={value}"])
        assert exit_.value.code == 2, (flag, value)
        assert f"argument {flag}" in err.getvalue(), (flag, value, err.getvalue())


def _gpuyard(*args: str) -> subprocess.CompletedProcess[str]:
    """`python -m gpuyard ARGS`; a command that wrongly starts is killed with its children."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "gpuyard", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"gpuyard {' '.join(args)} did not refuse its argument: {out}{err}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.parametrize("case", NUMERIC, ids=_id)
def test_bad_value_exits_2_naming_the_flag(case: tuple[list[str], str, object]) -> None:
    path, flag, kind = case
    assert isinstance(kind, Int | Float | HostPort)
    value = _one_bad_value(kind)
    r = _gpuyard(*path, f"{flag}={value}")
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"argument {flag}: " in r.stderr
    assert value in r.stderr  # the message shows what was given
    assert "Traceback" not in r.stderr


def test_fault_xid_outside_the_catalog_says_the_range() -> None:
    r = _gpuyard("fault", "gpu-xid", "gpu-node-0000", "--xid", "12345")
    assert r.returncode == 2
    assert "argument --xid: 12345 is out of range: want an integer >= 1 and <= 255" in r.stderr
    assert "Traceback" not in r.stderr


def test_bounds_of_a_few_flags_as_a_user_reads_them() -> None:
    """The ranges the help promises, from the types the commands declare."""
    kinds = {(" ".join(p), f): t for p, f, t in NUMERIC}
    assert kinds[("fault", "--factor")].check(1.0) == 1.0
    with pytest.raises(ValueError):
        kinds[("fault", "--factor")].check(0.0)
    assert kinds[("health controller", "--max-share")].check(1) == 1.0
    assert kinds[("health preflight", "--retries")].check(0) == 0
    assert kinds[("scheduler", "--metrics-port")].check(0) == 0
    peer = kinds[("health check", "--peer")]
    assert isinstance(peer, HostPort) and peer.split("[fd00::1]:8080") == ("fd00::1", 8080)
    for _, _, t in NUMERIC:
        if isinstance(t, Float):
            with pytest.raises(ValueError):
                t.check(math.inf)


def test_unexpected_exception_is_reported_as_a_bug(tmp_path: object) -> None:
    """The entry point's guard: an exception no command expects prints its traceback,
    says it is a bug in gpuyard, and exits 70 (EX_SOFTWARE)."""
    code = (
        "import sys, gpuyard.cli as c, gpuyard.manifests as m\n"
        "def boom(args):\n"
        "    raise KeyError('deliberate')\n"
        "m.run = boom\n"
        "sys.exit(c.main(['manifests']))\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    assert r.returncode == 70, r.stdout + r.stderr
    assert "Traceback" in r.stderr and "KeyError: 'deliberate'" in r.stderr
    assert "internal error (a bug in gpuyard" in r.stderr
    assert "gpuyard: error:" not in r.stderr


def test_expected_error_is_one_line_not_a_bug() -> None:
    """The other side of the guard: a ValueError from a command is bad input, exit 1,
    one 'gpuyard: error:' line and no traceback."""
    code = (
        "import sys, gpuyard.cli as c, gpuyard.manifests as m\n"
        "def bad(args):\n"
        "    raise ValueError('no such thing')\n"
        "m.run = bad\n"
        "sys.exit(c.main(['manifests']))\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    assert r.returncode == 1
    assert r.stderr.strip() == "gpuyard: error: no such thing"
