"""Typed command-line values, declared once and used by every command.

Each value type both parses text (an argparse `type=`, a `--set KEY=VALUE`) and checks a
value a program passes in directly, with the same ranges and the same messages:

    parser.add_argument("--port", type=PORT, default=6443)
    parser.add_argument("--node-grace", type=Float(gt=0), default=40.0)

`Option` declares a `--set` key (type, default, help); `parse_settings` turns a list
of `KEY=VALUE` strings into typed values, refusing an unknown key (listing the known
ones) or a value of the wrong type (naming key, value and the expected type) before
anything starts. `CommandError` is bad input a command reports in one line.

Stdlib only: any command may import it without pulling in more.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


class CommandError(Exception):
    """Bad input or an unusable environment: `gpuyard: error: MESSAGE`, exit `code`."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


class Value:
    """A kind of value: `parse(text)` from the command line, `check(value)` for a value
    given as data. Both raise ValueError with a message that says what is expected."""

    expected = "a value"

    def parse(self, text: str) -> Any:
        return self.check(text)

    def check(self, value: Any) -> Any:
        return value

    def __call__(self, text: str) -> Any:  # argparse's type=
        try:
            return self.parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    def __repr__(self) -> str:
        return self.expected


def _bounds(lo: float | None, hi: float | None, gt: float | None, what: str) -> str:
    parts = []
    if gt is not None:
        parts.append(f"> {gt:.15g}")
    if lo is not None:
        parts.append(f">= {lo:.15g}")
    if hi is not None:
        parts.append(f"<= {hi:.15g}")
    return what + (" " + " and ".join(parts) if parts else "")


class Int(Value):
    def __init__(self, lo: int | None = None, hi: int | None = None, note: str = "") -> None:
        self.lo, self.hi = lo, hi
        self.expected = _bounds(lo, hi, None, "an integer") + (f" ({note})" if note else "")

    def parse(self, text: str) -> int:
        try:
            value = int(str(text).strip(), 10)
        except ValueError:
            raise ValueError(f"{text!r} is not {self.expected}") from None
        return self.check(value)

    def check(self, value: Any) -> int:
        if isinstance(value, str):
            return self.parse(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{value!r} is not {self.expected}")
        if (self.lo is not None and value < self.lo) or (self.hi is not None and value > self.hi):
            raise ValueError(f"{value} is out of range: want {self.expected}")
        return value


class Float(Value):
    """A finite number (NaN and infinities are refused), optionally bounded: `gt` is a
    strict lower bound (durations: `Float(gt=0)`), `lo` an inclusive one (`Float(lo=0,
    note="0: off")`)."""

    def __init__(
        self,
        lo: float | None = None,
        hi: float | None = None,
        gt: float | None = None,
        note: str = "",
        what: str = "a number",
    ) -> None:
        self.lo, self.hi, self.gt = lo, hi, gt
        self.expected = _bounds(lo, hi, gt, what) + (f" ({note})" if note else "")

    def parse(self, text: str) -> float:
        try:
            value = float(str(text).strip())
        except ValueError:
            raise ValueError(f"{text!r} is not {self.expected}") from None
        return self.check(value)

    def check(self, value: Any) -> float:
        if isinstance(value, str):
            return self.parse(value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{value!r} is not {self.expected}")
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"{value} is not {self.expected}: want a finite number")
        if (
            (self.gt is not None and value <= self.gt)
            or (self.lo is not None and value < self.lo)
            or (self.hi is not None and value > self.hi)
        ):
            raise ValueError(f"{value:g} is out of range: want {self.expected}")
        return value


class Bool(Value):
    expected = "true or false"
    _WORDS = {"true": True, "yes": True, "on": True, "1": True}
    _WORDS |= {"false": False, "no": False, "off": False, "0": False}

    def parse(self, text: str) -> bool:
        word = str(text).strip().lower()
        if word not in self._WORDS:
            raise ValueError(f"{text!r} is not {self.expected}")
        return self._WORDS[word]

    def check(self, value: Any) -> bool:
        if isinstance(value, str):
            return self.parse(value)
        if not isinstance(value, bool):
            raise ValueError(f"{value!r} is not {self.expected}")
        return value


class Choice(Value):
    def __init__(self, *choices: str) -> None:
        self.choices = choices
        self.expected = "one of " + ", ".join(choices)

    def check(self, value: Any) -> str:
        if value not in self.choices:
            raise ValueError(f"{value!r} is not {self.expected}")
        return str(value)


class Text(Value):
    """A string: non-empty unless `empty`."""

    def __init__(self, empty: bool = False) -> None:
        self.empty = empty
        self.expected = "text" if empty else "non-empty text"

    def check(self, value: Any) -> str:
        if not isinstance(value, str) or (not self.empty and not value.strip()):
            raise ValueError(f"{value!r} is not {self.expected}")
        return value


class HostPort(Value):
    """`HOST:PORT` (an IPv6 address in brackets: `[::1]:443`), the port in `port`'s range;
    `split` gives the host and the port as an integer."""

    def __init__(self, port: Int | None = None) -> None:
        self.port = port or Int(1, 65535)
        self.expected = f"HOST:PORT, the port {self.port.lo}..{self.port.hi}"

    def split(self, value: Any) -> tuple[str, int]:
        if not isinstance(value, str):
            raise ValueError(f"{value!r} is not {self.expected}")
        host, sep, port = value.strip().rpartition(":")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        if not sep or not host or any(c.isspace() or c in "/[]" for c in host):
            raise ValueError(f"{value!r} is not {self.expected}")
        try:
            number = self.port.parse(port)
        except ValueError as exc:
            raise ValueError(f"{value!r}: port {exc}") from None
        return host, number

    def check(self, value: Any) -> str:
        self.split(value)
        return str(value).strip()


# The value types commands share.
PORT = Int(0, 65535, "0: pick a free one")
PORT_OR_OFF = Int(0, 65535, "0: off")  # an optional listener, such as metrics
SECONDS = Float(gt=0, what="a number of seconds")  # a period, a timeout, a grace time
SECONDS_OR_OFF = Float(lo=0, what="a number of seconds", note="0: off")
COUNT = Int(lo=1)  # how many of something: at least one
NATURAL = Int(lo=0)  # an index or a count that may be zero
SHARE = Float(0, 1, what="a share")  # a fraction between 0 and 1
ENDPOINT = HostPort()  # a peer to connect to: HOST:PORT, the port 1..65535


def private_dir(path: str, what: str = "data directory") -> str:
    """Make (or take) a directory only its owner can use (0700) and check that it can be
    written, before a program starts on it; CommandError names it and the cause."""
    import os
    import tempfile

    path = os.path.abspath(path)
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        if not os.path.isdir(path):
            raise NotADirectoryError(20, "not a directory", path)
        st = os.stat(path)
        if st.st_uid == os.getuid() and st.st_mode & 0o077:
            os.chmod(path, 0o700)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise CommandError(f"cannot use {what} {path}: {exc.strerror or exc}", 1) from None
    return path


@dataclass(frozen=True)
class Option:
    """A `--set KEY=VALUE` option of a component: its type, default and meaning.
    A default of None means the component works it out (the help says how)."""

    key: str
    kind: Value
    default: Any
    help: str = ""

    def describe(self) -> str:
        default = "automatic" if self.default is None else str(self.default).lower()
        return f"{self.key} ({self.kind.expected}; default {default}): {self.help}"


def index(options: Iterable[Option]) -> dict[str, Option]:
    out: dict[str, Option] = {}
    for o in options:
        if o.key in out:
            raise AssertionError(f"option {o.key} declared twice")
        out[o.key] = o
    return out


def check_settings(values: Mapping[str, Any], known: Mapping[str, Option]) -> dict[str, Any]:
    """Typed copies of `values` (text or already typed), or ValueError naming the key."""
    out: dict[str, Any] = {}
    for key, raw in values.items():
        opt = known.get(key)
        if opt is None:
            raise ValueError(
                f"unknown option {key!r}; known options: {', '.join(sorted(known)) or 'none'}"
            )
        try:
            out[key] = opt.kind.check(raw)
        except ValueError as exc:  # the message says what was expected
            raise ValueError(f"option {key}={raw}: {exc}") from None
    return out


def parse_settings(items: Iterable[str], known: Mapping[str, Option]) -> dict[str, Any]:
    """`KEY=VALUE` strings (repeated `--set`) as typed values; ValueError when one is bad."""
    raw: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--set wants KEY=VALUE, got {item!r}")
        raw[key] = value
    return check_settings(raw, known)


def get(options: Mapping[str, Any] | Any, opt: Option) -> Any:
    """A component's option from a dict (or an object with attributes), checked against
    its declaration; the declared default when it is not given."""
    if isinstance(options, Mapping):
        value = options.get(opt.key)
    else:
        value = getattr(options, opt.key, None)
    if value is None:
        return opt.default
    return opt.kind.check(value)
