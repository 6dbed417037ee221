"""The actual cost of one CEL evaluation, counted from what ran.

kube-apiserver stops a rule whose evaluation costs more than 1,000,000, and the rules of
one object (or one policy evaluation) once they have cost 10,000,000 together, counting
what each evaluation actually did: `&&` and `||` stop at a deciding left side, `?:` runs
one branch, `all` stops at the first false item and `exists` at the first true one, and
a function costs what kube's runtime tracker charges for the values it got (a string
function a tenth of the characters it was given, `matches` the string times a quarter
of the pattern, `join` a fifth of its result, list scans one per item...). The engine
that evaluates rules here has no cost tracker, so this module walks the expression's
tree (celcost's reader) over the actual values and counts as kube counts: reading a
variable, a field or an index 1, a call 1 unless costed otherwise, a list literal 10, a
map literal 30, per loop iteration what the macro's expansion runs (`all` 3, `exists`
4, `exists_one` 2 or 1, `map` 12, `filter` 13 for a kept item and 1 for another,
besides the body), comparisons a tenth of the smaller value (a number or bool has size
1 at runtime).

Values are worked out as CEL would for the control flow that decides what runs; a
function this walker does not run itself (other than the core and the library table of
celexpr) gives an error value, which CEL's logical operators absorb as CEL does. Within
one loop, a body is a function of the item alone, so equal scalar items are costed once.

The walk stops as soon as the count passes `cap` (as kube's interrupt stops the
evaluation), so costing a runaway rule costs no more than the limit it breaks.
"""

from __future__ import annotations

import math
from typing import Any

from gpuyard.apiserver import celexpr
from gpuyard.apiserver.celcost import LIST_BASE, MAP_BASE, REGEX_FACTOR, STRING_FACTOR, Node

AUTHZ_CHECK = 350_000  # kube's fixed cost of one authorizer check
_NAMESPACES = frozenset({"math", "sets", "strings", "base64", "lists"})


class _Err:
    """An evaluation error (or a value this walker does not compute)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<error>"


ERR = _Err()


class OverCap(Exception):
    """The count passed the cap: the evaluation would have been stopped."""


def actual_cost(node: Node | None, variables: dict[str, Any], cap: int) -> int:
    """The runtime cost of evaluating `node` with `variables`; a figure over `cap` when
    the evaluation would pass it (the walk stops there)."""
    if node is None:
        return 0
    t = _Tracer(cap)
    try:
        t.eval(node, variables)
    except OverCap:
        pass
    except (RecursionError, MemoryError):
        return cap + 1
    return t.cost


def _size(v: Any) -> int:
    if isinstance(v, str | list | dict | bytes):
        return len(v)
    return 1


def _ceil(x: float) -> int:
    return math.ceil(x)


def _traversal(v: Any) -> int:
    """kube's traversal cost of a value (isSorted, sum, min, max, indexOf)."""
    if isinstance(v, str | bytes):
        return int(len(v) * STRING_FACTOR)
    if isinstance(v, list):
        return sum(_traversal(x) for x in v)
    if isinstance(v, dict):
        return sum(_traversal(k) + _traversal(x) for k, x in v.items())
    return 1


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _eq(a: Any, b: Any) -> Any:
    if a is ERR or b is ERR:
        return ERR
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if _is_num(a) and _is_num(b):
        return a == b
    if type(a) is not type(b):
        return False
    return bool(a == b)


def _truthy_and(a: Any, b: Any) -> Any:
    if a is False or b is False:
        return False
    if a is True and b is True:
        return True
    return ERR


def _truthy_or(a: Any, b: Any) -> Any:
    if a is True or b is True:
        return True
    if a is False and b is False:
        return False
    return ERR


def _cel_string(v: Any) -> Any:
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    return ERR


def _matches(s: Any, p: Any) -> Any:
    """`s.matches(p)` by the engine (its regular expressions run in linear time)."""
    if not isinstance(s, str) or not isinstance(p, str):
        return ERR
    try:
        return celexpr.run(celexpr.compile_expr("s.matches(p)"), {"s": s, "p": p})
    except celexpr.CELError:
        return ERR


class _Tracer:
    __slots__ = ("cost", "cap")

    def __init__(self, cap: int) -> None:
        self.cost = 0
        self.cap = cap

    def add(self, n: int) -> None:
        self.cost += n
        if self.cost > self.cap:
            raise OverCap

    # ------------------------------------------------------------ nodes

    def eval(self, n: Node, env: dict[str, Any]) -> Any:
        tag = n[0]
        if tag == "lit":
            return n[1]
        if tag == "id":
            self.add(1)
            v = env.get(n[1], ERR)
            if v is ERR and n[1] in _TYPE_NAMES:
                return ("type", n[1])
            return v
        if tag == "sel":
            v = self.eval(n[1], env)
            self.add(1)
            return v.get(n[2], ERR) if type(v) is dict else ERR
        if tag == "idx":
            v = self.eval(n[1], env)
            i = self.eval(n[2], env)
            self.add(1)
            return _index(v, i)
        if tag == "has":
            out: Any = ERR
            for a in n[1]:
                if a[0] == "sel":
                    v = self.eval(a[1], env)
                    out = a[2] in v if type(v) is dict else ERR
                else:
                    self.eval(a, env)
            return out
        if tag == "bin":
            return self.binary(n, env)
        if tag == "un":
            v = self.eval(n[2], env)
            self.add(1)
            if n[1] == "!":
                return (not v) if isinstance(v, bool) else ERR
            return -v if _is_num(v) else ERR
        if tag == "cond":
            c = self.eval(n[1], env)
            if c is True:
                return self.eval(n[2], env)
            if c is False:
                return self.eval(n[3], env)
            return ERR
        if tag == "list":
            self.add(LIST_BASE)
            return [self.eval(x, env) for x in n[1]]
        if tag == "mapl":
            self.add(MAP_BASE)
            m: dict[Any, Any] = {}
            for k, x in n[1]:
                key = self.eval(k, env)
                val = self.eval(x, env)
                if isinstance(key, str | int | bool):
                    m[key] = val
            return m
        if tag == "macro":
            return self.macro(n, env)
        if tag == "call":
            return self.call(n, env)
        self.add(1)
        return ERR

    def binary(self, n: Node, env: dict[str, Any]) -> Any:
        op = n[1]
        if op == "&&":
            a = self.eval(n[2], env)
            if a is False:
                return False
            return _truthy_and(a, self.eval(n[3], env))
        if op == "||":
            a = self.eval(n[2], env)
            if a is True:
                return True
            return _truthy_or(a, self.eval(n[3], env))
        a = self.eval(n[2], env)
        b = self.eval(n[3], env)
        if op in ("==", "!="):
            self.add(_ceil(min(_size(a), _size(b)) * STRING_FACTOR))
            r = _eq(a, b)
            return r if r is ERR or op == "==" else not r
        if op in ("<", "<=", ">", ">="):
            if isinstance(a, str) and isinstance(b, str):
                self.add(_ceil(min(len(a), len(b)) * STRING_FACTOR))
            else:
                self.add(1)
            try:
                if isinstance(a, bool) != isinstance(b, bool) or a is ERR or b is ERR:
                    return ERR
                if op == "<":
                    return a < b
                if op == "<=":
                    return a <= b
                if op == ">":
                    return a > b
                return a >= b
            except TypeError:
                return ERR
        if op == "in":
            if isinstance(b, list):
                self.add(len(b))
                return any(_eq(a, x) is True for x in b)
            self.add(1)
            return a in b if isinstance(b, dict) and isinstance(a, str | int) else ERR
        if op == "+":
            if isinstance(a, str) and isinstance(b, str):
                self.add(_ceil((len(a) + len(b)) * STRING_FACTOR))
                return a + b
            self.add(1)
            if isinstance(a, list) and isinstance(b, list):
                return a + b
            return a + b if _is_num(a) and _is_num(b) else ERR
        self.add(1)
        if not (_is_num(a) and _is_num(b)):
            return ERR
        try:
            if op == "-":
                return a - b
            if op == "*":
                return a * b
            if op == "/":
                if isinstance(a, int) and isinstance(b, int):
                    q = abs(a) // abs(b)
                    return q if (a >= 0) == (b >= 0) else -q
                return a / b
            if op == "%":
                if isinstance(a, int) and isinstance(b, int):
                    r = abs(a) % abs(b)
                    return r if a >= 0 else -r
                return ERR
        except (ZeroDivisionError, OverflowError):
            return ERR
        return ERR

    def macro(self, n: Node, env: dict[str, Any]) -> Any:
        _, name, target, var, rest = n
        items = self.eval(target, env)
        if isinstance(items, dict):
            items = list(items)
        elif not isinstance(items, list):
            return ERR
        if name in ("map", "filter"):
            self.add(LIST_BASE)  # the empty list the result starts from
        inner = dict(env)
        memo: dict[tuple[type, Any], tuple[tuple[Any, ...], int]] = {}
        result: Any
        count = 0
        if name == "all":
            result = True
        elif name == "exists":
            result = False
        else:
            result = []
        if name in ("all", "exists"):
            return self.quantifier(name == "all", items, rest, inner, var, memo)
        for x in items:
            vals = self.body(rest, inner, var, x, memo)
            if name == "exists_one":
                if vals[0] is True:
                    self.add(2)  # __result__ + 1
                    count += 1
                elif vals[0] is False:
                    self.add(1)
                else:
                    return ERR
            elif name == "filter":
                if vals[0] is True:
                    self.add(13)
                    result.append(x)
                else:
                    self.add(1)
            elif len(vals) == 2:  # map(x, predicate, transform)
                if vals[0] is True:
                    self.add(12)
                    result.append(vals[1])
                else:
                    self.add(1)
            else:
                self.add(12)
                result.append(vals[-1])
        if name == "exists_one":
            self.add(2)
            return count == 1
        self.add(1)
        return result

    def quantifier(
        self,
        every: bool,
        items: list[Any],
        rest: list[Node],
        env: dict[str, Any],
        var: str,
        memo: dict[tuple[type, Any], tuple[tuple[Any, ...], int]],
    ) -> Any:
        """`all` (every) or `exists` over items: each iteration costs the loop's
        condition and step (3 for all, 4 for exists) besides the body, and the loop
        stops once the result is decided (its condition, 2 or 3, found false)."""
        per, stop, decided = (3, False, 2) if every else (4, True, 3)
        result: Any = not stop
        last: Any = ERR  # the previous item, its value and cost (a run of one object)
        last_v: Any = ERR
        last_c = 0
        for x in items:
            if result is stop:
                self.add(decided)
                break
            if x is last and not isinstance(x, dict | list):
                self.cost += per + last_c
                if self.cost > self.cap:
                    raise OverCap
                v = last_v
            else:
                self.add(per)
                before = self.cost
                v = self.body(rest, env, var, x, memo)[0]
                last, last_v, last_c = x, v, self.cost - before
            if v is stop:
                result = stop
            elif v is not (not stop):
                result = ERR
        self.add(1)
        return result

    def body(
        self,
        rest: list[Node],
        env: dict[str, Any],
        var: str,
        x: Any,
        memo: dict[tuple[type, Any], tuple[tuple[Any, ...], int]],
    ) -> tuple[Any, ...]:
        """The values of a macro's body expressions for item x; for map(x, p, f) the
        transform runs only where the predicate holds. A body depends only on its item
        (the other variables are fixed during the loop), so an equal scalar item is
        charged what the first one cost."""
        key = (type(x), x) if isinstance(x, str | int | float | bool) or x is None else None
        if key is not None:
            hit = memo.get(key)
            if hit is not None:
                self.add(hit[1])
                return hit[0]
        before = self.cost
        env[var] = x
        if len(rest) == 2:
            p = self.eval(rest[0], env)
            vals: tuple[Any, ...] = (p, self.eval(rest[1], env) if p is True else ERR)
        else:
            vals = tuple(self.eval(b, env) for b in rest)
        if key is not None and len(memo) < 4096:
            memo[key] = (vals, self.cost - before)
        return vals

    # ------------------------------------------------------------ calls

    def call(self, n: Node, env: dict[str, Any]) -> Any:
        _, name, target, args = n
        fname = name
        vals: list[Any] = []
        if target is not None and target[0] == "id" and target[1] in _NAMESPACES:
            fname = f"{target[1]}.{name}"  # math.greatest(...), sets.contains(...)
        elif target is not None:
            vals.append(self.eval(target, env))
        vals.extend(self.eval(a, env) for a in args)
        recv = vals[0] if vals else ERR
        arg = vals[1] if len(vals) > 1 else ERR
        if fname == "join":  # charged by the size of its result
            result = self.value(fname, vals)
            self.add(self.charge(fname, recv, arg, vals, result))
            return result
        # charged before it runs: a call past the cap is not run at all
        self.add(self.charge(fname, recv, arg, vals, None))
        return self.value(fname, vals)

    @staticmethod
    def charge(name: str, recv: Any, arg: Any, vals: list[Any], result: Any) -> int:
        """What kube's runtime tracker charges for one call with these values."""
        if name in ("matches", "find", "findAll"):
            return _ceil((1 + _size(recv)) * STRING_FACTOR) * _ceil(_size(arg) * REGEX_FACTOR)
        if name == "contains" and isinstance(recv, str):
            return _ceil(len(recv) * STRING_FACTOR) * _ceil(_size(arg) * STRING_FACTOR)
        if name in ("startsWith", "endsWith"):
            return _ceil(_size(arg) * STRING_FACTOR)
        if name in ("isSorted", "sum", "max", "min", "indexOf", "lastIndexOf"):
            return _traversal(recv) if vals else 1
        if name in ("url", "lowerAscii", "upperAscii", "substring", "trim", "format"):
            return _ceil(_size(recv) * STRING_FACTOR)
        if name in ("quantity", "isQuantity", "semver", "isSemver", "strings.quote"):
            return _ceil(_size(recv) * STRING_FACTOR)
        if name in ("replace", "split"):
            return _ceil(_size(recv) * 2 * STRING_FACTOR)
        if name == "join":
            return _ceil(_size(result) * 2 * STRING_FACTOR)
        if name == "string" and isinstance(recv, bytes):
            return _ceil(len(recv) * STRING_FACTOR)
        if name == "check":
            return AUTHZ_CHECK
        return 1

    @staticmethod
    def value(name: str, vals: list[Any]) -> Any:
        if any(v is ERR for v in vals):
            return ERR
        n = len(vals)
        try:
            if name == "size" and n == 1:
                return _size(vals[0]) if isinstance(vals[0], str | list | dict | bytes) else ERR
            if name in ("contains", "startsWith", "endsWith") and n == 2:
                s, t = vals
                if isinstance(s, str) and isinstance(t, str):
                    if name == "contains":
                        return t in s
                    return s.startswith(t) if name == "startsWith" else s.endswith(t)
            if name == "matches" and n == 2:
                return _matches(vals[0], vals[1])
            if name == "string" and n == 1:
                return _cel_string(vals[0])
            if name == "int" and n == 1 and (_is_num(vals[0]) or isinstance(vals[0], str)):
                return int(vals[0])
            if name == "double" and n == 1 and (_is_num(vals[0]) or isinstance(vals[0], str)):
                return float(vals[0])
            if name == "dyn" and n == 1:
                return vals[0]
            if name == "type" and n == 1:
                return ("type", _type_name(vals[0]))
            f = celexpr.library_function(name)
            if f is not None:
                return f(*vals)
        except Exception:  # a library function refusing its arguments: an error value
            return ERR
        return ERR


_TYPE_NAMES = frozenset({"int", "uint", "double", "string", "bool", "bytes", "list", "map"})


def _type_name(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "double"
    if isinstance(v, str):
        return "string"
    if isinstance(v, bytes):
        return "bytes"
    if isinstance(v, list):
        return "list"
    if isinstance(v, dict):
        return "map"
    return "null_type" if v is None else "dyn"


def _index(v: Any, i: Any) -> Any:
    if isinstance(v, list) and isinstance(i, int) and not isinstance(i, bool):
        return v[i] if 0 <= i < len(v) else ERR
    if isinstance(v, dict):
        return v.get(i, ERR) if isinstance(i, str | int | bool) else ERR
    return ERR
