"""CEL expressions as the API server evaluates them: compiled once, run with the
Kubernetes CEL library.

The engine is the `common-expression-language` package (Python bindings of a Rust CEL
implementation). It was chosen over `cel-python` (pure Python) by measurement on this
machine: compiling a typical rule cost about 15 µs against 200 µs, evaluating one about
20 µs against 300 µs (benchmarks/schemas.py prints the figures of this server's
use), and it has fewer dependencies at run time. It ships the CEL standard library and
macros (`has`, `all`, `exists`, `exists_one`, `map`, `filter`, `size`, `matches`,
`startsWith`, `endsWith`, `contains`, conversions) and the extension strings, lists,
sets, math and base64 libraries that Kubernetes enables too.

Added here from the Kubernetes CEL library: quantities (`quantity`, `isQuantity`, and on
a quantity `isGreaterThan`, `isLessThan`, `compareTo`, `add`, `sub`, `asInteger`,
`asApproximateFloat`, `isInteger`, `sign`), `isSorted`, regex `find` and `findAll`,
`indexOf`/`lastIndexOf` on lists, `isURL`, the strings extension's `format`, and the authorizer library of admission
policies (celauthz). A quantity is carried as its value in
base units (a double), so `quantity('1Gi') == quantity('1024Mi')` holds.

Programs are cached by their source text; a program is evaluated with `run(program,
variables)` and any failure is a `CELError` with the engine's message. The engine is
imported on first use: its package also loads a command-line interface (about 28 MiB),
which a server with no rules and no policies never pays for.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

from gpuyard.kube.objects import QuantityError, parse_quantity

_CACHE_MAX = 4096


class CELError(Exception):
    """An expression that does not compile, or failed while it ran."""


class Program:
    """One compiled expression, which variables it reads, and a context of its own
    holding only the library functions it calls (a context's every function costs
    each evaluation)."""

    __slots__ = ("source", "variables", "_prog", "_ctx")

    def __init__(self, source: str, prog: Any) -> None:
        self.source = source
        self._prog = prog
        self.variables = frozenset(prog.variables())
        engine, table = _engine()
        funcs = {n: f for n in prog.functions() if (f := table.get(n)) is not None}
        self._ctx = engine.Context(functions=funcs) if funcs else engine.Context()


_programs: dict[str, Program] = {}


def compile_expr(source: str) -> Program:
    """The compiled program of `source` (CELError with the parser's message)."""
    p = _programs.get(source)
    if p is not None:
        return p
    if not isinstance(source, str) or not source.strip():
        raise CELError("the expression is empty")
    engine, _ = _engine()
    try:
        p = Program(source, engine.compile(source))
    except (ValueError, RuntimeError) as exc:
        raise CELError(_first_line(str(exc))) from None
    if len(_programs) >= _CACHE_MAX:
        _programs.clear()
    _programs[source] = p
    return p


MESSAGE_MAX_BYTES = 5 * 1024


def message_text(value: Any) -> str | None:
    """A messageExpression's result as the message kube-apiserver shows: trimmed; None
    (use the rule's message instead) when it is not a string, empty, longer than 5 KiB
    or holds a line break."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    if not text or len(text.encode()) > MESSAGE_MAX_BYTES or "\n" in text:
        return None
    return text


def _first_line(msg: str) -> str:
    return msg.strip().replace("\n", " ")


# ---------------------------------------------------------------- the Kubernetes library


def _qty(s: Any) -> Decimal:
    if not isinstance(s, str):
        raise ValueError("quantity() takes a string")
    try:
        return parse_quantity(s)
    except QuantityError:
        raise ValueError(f"invalid quantity: {s!r}") from None


def _quantity(s: Any) -> float:
    return float(_qty(s))


def _is_quantity(s: Any) -> bool:
    try:
        _qty(s)
    except ValueError:
        return False
    return True


def _num(x: Any) -> float:
    if isinstance(x, bool) or not isinstance(x, int | float):
        raise ValueError("expected a quantity")
    return float(x)


def _compare(a: Any, b: Any) -> int:
    x, y = _num(a), _num(b)
    return (x > y) - (x < y)


def _as_integer(a: Any) -> int:
    x = _num(a)
    if x != int(x) or not -(2**63) <= x < 2**63:
        raise ValueError("cannot convert value to integer")
    return int(x)


def _sign(a: Any) -> int:
    x = _num(a)
    return (x > 0) - (x < 0)


def _is_sorted(items: Any) -> bool:
    if not isinstance(items, list):
        raise ValueError("isSorted() takes a list")
    return all(items[i] <= items[i + 1] for i in range(len(items) - 1))


_REGEX_CACHE: dict[str, re.Pattern[str]] = {}


def _regex(pattern: str) -> re.Pattern[str]:
    r = _REGEX_CACHE.get(pattern)
    if r is None:
        if len(_REGEX_CACHE) > 1024:
            _REGEX_CACHE.clear()
        r = _REGEX_CACHE[pattern] = re.compile(pattern)
    return r


def _find(s: str, pattern: str) -> str:
    m = _regex(pattern).search(s)
    return m.group(0) if m else ""


def _find_all(s: str, pattern: str, limit: int = -1) -> list[str]:
    found = [m.group(0) for m in _regex(pattern).finditer(s)]
    return found if limit < 0 else found[:limit]


def _index_of(container: Any, item: Any, *rest: Any) -> int:
    if isinstance(container, str):
        return int(_std("indexOf")(container, item, *rest))
    if isinstance(container, list):
        return container.index(item) if item in container else -1
    raise ValueError("indexOf() takes a string or a list")


def _last_index_of(container: Any, item: Any, *rest: Any) -> int:
    if isinstance(container, str):
        return int(_std("lastIndexOf")(container, item, *rest))
    if isinstance(container, list):
        for i in range(len(container) - 1, -1, -1):
            if container[i] == item:
                return i
        return -1
    raise ValueError("lastIndexOf() takes a string or a list")


def _is_url(s: Any) -> bool:
    if not isinstance(s, str):
        return False
    try:
        parts = urlsplit(s)
    except ValueError:
        return False
    return bool(parts.scheme) and (bool(parts.netloc) or s.startswith(parts.scheme + ":/"))


_VERB = re.compile(r"%(?:\.(\d+))?([a-zA-Z%])")


def _format_one(verb: str, precision: str | None, v: Any) -> str:
    if verb == "s":
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, list):
            return "[" + ", ".join(_format_one("s", None, x) for x in v) + "]"
        return str(v)
    if verb == "d" and isinstance(v, int) and not isinstance(v, bool):
        return str(v)
    if verb in ("f", "e") and isinstance(v, int | float) and not isinstance(v, bool):
        return f"{float(v):.{int(precision) if precision else 6}{verb}}"
    if verb in ("x", "X", "o", "b") and isinstance(v, int | str) and not isinstance(v, bool):
        if isinstance(v, str):
            text = v.encode().hex()
            return text.upper() if verb == "X" else text
        return format(v, verb)
    raise ValueError(
        f"error during formatting: unrecognized formatting clause or argument {verb!r}"
    )


def _format(template: Any, args: Any) -> str:
    """`'...'.format([args])` of the strings extension: %s, %d, %f and %e (with an
    optional precision, 6 by default), %x, %X, %o, %b and %%."""
    if not isinstance(template, str) or not isinstance(args, list):
        raise ValueError("format() takes a string and a list")
    out: list[str] = []
    pos = 0
    i = 0
    for m in _VERB.finditer(template):
        out.append(template[pos : m.start()])
        pos = m.end()
        if m.group(2) == "%":
            out.append("%")
            continue
        if i >= len(args):
            raise ValueError("error during formatting: index out of range")
        out.append(_format_one(m.group(2), m.group(1), args[i]))
        i += 1
    out.append(template[pos:])
    return "".join(out)


_K8S_FUNCTIONS: dict[str, Any] = {
    "format": _format,
    "quantity": _quantity,
    "isQuantity": _is_quantity,
    "isGreaterThan": lambda a, b: _compare(a, b) > 0,
    "isLessThan": lambda a, b: _compare(a, b) < 0,
    "compareTo": _compare,
    "add": lambda a, b: _num(a) + _num(b),
    "sub": lambda a, b: _num(a) - _num(b),
    "asInteger": _as_integer,
    "asApproximateFloat": _num,
    "isInteger": lambda a: _num(a) == int(_num(a)),
    "sign": _sign,
    "isSorted": _is_sorted,
    "find": _find,
    "findAll": _find_all,
    "isURL": _is_url,
}


_LOADED: list[Any] = []


def _engine() -> tuple[Any, dict[str, Any]]:
    """The engine module and the function table (its extension libraries, then the
    Kubernetes library here), loaded once."""
    if not _LOADED:
        import cel as engine
        from cel import stdlib

        from gpuyard.apiserver import celauthz

        strings = dict(stdlib.STDLIB_FUNCTIONS)
        table = {
            **strings,
            **celauthz.FUNCTIONS,
            **_K8S_FUNCTIONS,
            "indexOf": _index_of,
            "lastIndexOf": _last_index_of,
        }
        _LOADED.extend((engine, table, strings))
    return _LOADED[0], _LOADED[1]


def library_function(name: str) -> Any:
    """The Python function of a library function the engine is given (the extension
    libraries and the Kubernetes library above), or None for the engine's own."""
    return _engine()[1].get(name)


def _std(name: str) -> Any:
    """A function of the engine's own extension libraries."""
    _engine()
    return _LOADED[2][name]


def run(program: Program, variables: dict[str, Any]) -> Any:
    """Evaluate `program` with `variables` (CELError for any failure). The program's
    context is reused: evaluation is synchronous, one at a time, and every call sets
    all the variables the caller's programs read."""
    ctx = program._ctx
    for name, value in variables.items():
        ctx.add_variable(name, value)
    try:
        return program._prog.execute(ctx)
    except KeyError as exc:
        raise CELError(f"no such key: {exc.args[0] if exc.args else ''}") from None
    except ZeroDivisionError:
        raise CELError("division by zero") from None
    except (ValueError, RuntimeError, TypeError, OverflowError) as exc:
        raise CELError(_first_line(str(exc))) from None
    except Exception as exc:  # the engine's own errors: still a refusal, not a crash
        raise CELError(_first_line(str(exc))) from None
