"""The cost of a CEL expression, estimated the way Kubernetes budgets validation rules.

kube-apiserver refuses a CRD whose rule could cost too much on the largest object its
schema allows (estimated cost over 10,000,000 for one evaluation, or over 100,000,000
for all of a schema's rules times how often each runs), and stops a write whose rules
actually cost more than 1,000,000 in one evaluation or 10,000,000 together (one custom
object, or one ValidatingAdmissionPolicy binding's evaluation). A policy's expressions
are not estimated when the policy is written: `object` has no schema there (kube
compiles them against a dynamic type), so only the runtime limits apply to them.

The model follows kube's estimator: reading a variable, a field or an index costs 1,
an operator or other call 1; a comprehension (`all`, `exists`, ...) costs its range,
1, and per element its body plus 3; comparing strings costs a tenth of the shorter's
bytes, concatenating them a tenth of both, `contains` a tenth of the receiver,
`startsWith`/`endsWith` a tenth of the affix, `matches` that of the receiver times a
quarter of the pattern's length (rounded up each). Sizes come from the schema: a
string's `maxLength` times 4 (bytes of a character at most), its longest `enum` value
or its format's longest form; `maxItems` and `maxProperties`; without them, as many of
the smallest elements as the largest request body (3 MiB) holds (a map entry takes 6
bytes besides its value). On kube's own estimator tests this gives kube's figures for
comprehensions, string functions and bounds (tests/apiserver/test_cel_cost.py). Where
it still differs: a comparison of numbers costs 1 (kube sometimes 0); other library
functions (`split`, `join`, `lowerAscii`, `quantity`, lists' `isSorted`...) are
costed as a tenth of the receiver, not by kube's per-function formulas; `duration`,
`date` and `date-time` strings are sized but not typed; an expression this reader
cannot follow is not budgeted (the CEL engine has compiled it). So a rule near a limit may
be judged differently, while the rules the limits exist for (comprehensions nested
over unbounded lists, regular expressions over unbounded strings in a loop) are
refused as kube refuses them.

The runtime cost is the same estimate over the sizes of the actual values, computed only
for rules whose estimate could exceed the runtime limits (most rules cost nothing more).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

MAX_REQUEST_BYTES = 3 * 1024 * 1024
PER_CALL_LIMIT = 1_000_000  # runtime, one evaluation of one expression
RUNTIME_BUDGET = 10_000_000  # runtime, all rules of one object (one policy evaluation)
RULE_ESTIMATE_LIMIT = 10_000_000  # estimated, one evaluation of one CRD rule
SCHEMA_ESTIMATE_LIMIT = 100_000_000  # estimated, all rules of a schema, times cardinality
STRING_FACTOR = 0.1
REGEX_FACTOR = 0.25
UTF8_MAX = 4  # bytes of one character at most: a string's size from its maxLength
MAP_ENTRY_BYTES = 6  # a map entry's bytes besides its value: `"k":` and a comma
FORMAT_SIZES = {"duration": 32, "date": 12, "date-time": 32}  # longest JSON of each
LOOP_STEP = 3  # one iteration of a comprehension besides its body

OUT_OF_BUDGET = (
    "validation failed due to running out of cost budget, no further validation rules will be run"
)
CALL_LIMIT_ERROR = "operation cancelled: actual cost limit exceeded"


# ---------------------------------------------------------------- shapes


@dataclass
class Shape:
    """What the estimate knows of a value: its kind and the largest size it can have."""

    kind: str = "any"  # string, list, map, object, scalar, any
    size: int = 1  # a string's length, a list's items, a map's entries
    elem: Shape | None = None  # a list's items, a map's values
    props: dict[str, Shape] = field(default_factory=dict)


SCALAR = Shape("scalar")
ANY = Shape("any")


def _min_size(schema: dict[str, Any]) -> int:
    """The smallest serialized size of a value of `schema` (for unbounded lists)."""
    t = schema.get("type")
    if t == "string":
        return 2 + int(schema.get("minLength") or 0)
    if t == "boolean":
        return 4
    if t in ("object", "array"):
        return 2
    return 1


def from_schema(schema: Any) -> Shape:
    """The largest value a structural schema node allows."""
    if not isinstance(schema, dict):
        return ANY
    t = schema.get("type")
    if schema.get("x-kubernetes-int-or-string"):
        return Shape("string", MAX_REQUEST_BYTES - 2)
    if t == "string":
        n = schema.get("maxLength")
        if isinstance(n, int):
            # maxLength counts characters; sizes here are bytes (up to 4 per character)
            return Shape("string", max(n, 0) * UTF8_MAX)
        enum = [v for v in schema.get("enum") or () if isinstance(v, str)]
        if enum:
            return Shape("string", max(len(v) for v in enum))
        return Shape("string", FORMAT_SIZES.get(str(schema.get("format")), MAX_REQUEST_BYTES - 2))
    if t == "array":
        items = schema.get("items") if isinstance(schema.get("items"), dict) else {}
        n = schema.get("maxItems")
        if not isinstance(n, int):
            n = (MAX_REQUEST_BYTES - 2) // (_min_size(items or {}) + 1)
        return Shape("list", n, elem=from_schema(items))
    if t == "object":
        addl = schema.get("additionalProperties")
        if isinstance(addl, dict):
            n = schema.get("maxProperties")
            if not isinstance(n, int):
                n = (MAX_REQUEST_BYTES - 2) // (_min_size(addl) + MAP_ENTRY_BYTES)
            return Shape("map", n, elem=from_schema(addl))
        got = schema.get("properties")
        props: dict[str, Any] = got if isinstance(got, dict) else {}
        return Shape("object", len(props), props={k: from_schema(v) for k, v in props.items()})
    return SCALAR if t else ANY


def from_value(v: Any) -> Shape:
    """The shape of an actual value (its sizes as they are)."""
    if isinstance(v, str):
        return Shape("string", len(v))
    if isinstance(v, list):
        elem = _widest([from_value(x) for x in v])
        return Shape("list", len(v), elem=elem)
    if isinstance(v, dict):
        return Shape(
            "object",
            len(v),
            elem=_widest([from_value(x) for x in v.values()]),
            props={str(k): from_value(x) for k, x in v.items()},
        )
    return SCALAR


def _widest(shapes: list[Shape]) -> Shape:
    if not shapes:
        return ANY
    out = shapes[0]
    for s in shapes[1:]:
        if s.kind != out.kind:
            return Shape(out.kind, max(out.size, s.size), out.elem, out.props)
        if s.size > out.size:
            out = Shape(out.kind, s.size, s.elem or out.elem, {**out.props, **s.props})
        elif s.props:
            out = Shape(out.kind, out.size, out.elem or s.elem, {**s.props, **out.props})
    return out


# ---------------------------------------------------------------- parsing

_TOKEN = re.compile(
    r"""\s*(?:
    (?P<str>[rR]?[bB]?(?:\"\"\"(?:.|\n)*?\"\"\"|'''(?:.|\n)*?'''|"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'))
    |(?P<num>0x[0-9a-fA-F]+u?|\d+\.\d*(?:[eE][+-]?\d+)?|\d+(?:[eE][+-]?\d+)|\.\d+|\d+u?)
    |(?P<id>[A-Za-z_][A-Za-z0-9_]*)
    |(?P<op>==|!=|<=|>=|&&|\|\||\.\?|[-+*/%<>!?:.,()\[\]{}])
    )""",
    re.VERBOSE,
)
_MACROS = ("all", "exists", "exists_one", "map", "filter")
_STRING_FUNCS = frozenset(
    {
        "contains",
        "startsWith",
        "endsWith",
        "split",
        "lowerAscii",
        "upperAscii",
        "replace",
        "trim",
        "join",
        "indexOf",
        "lastIndexOf",
        "substring",
        "charAt",
        "quantity",
        "isQuantity",
        "url",
        "isURL",
        "find",
        "findAll",
        "format",
        "string",
    }
)

Node = tuple[Any, ...]


class _Parser:
    def __init__(self, src: str) -> None:
        self.toks: list[tuple[str, str]] = []
        pos = 0
        src = src.rstrip()
        while pos < len(src):
            m = _TOKEN.match(src, pos)
            if m is None or m.end() == pos:
                raise ValueError(f"cannot read the expression at {pos}")
            pos = m.end()
            kind = m.lastgroup or ""
            self.toks.append((kind, m.group(kind)))
        self.i = 0

    def peek(self, v: str | None = None) -> bool:
        if self.i >= len(self.toks):
            return False
        return v is None or self.toks[self.i][1] == v

    def take(self, v: str | None = None) -> tuple[str, str]:
        if self.i >= len(self.toks) or (v is not None and self.toks[self.i][1] != v):
            raise ValueError(f"expected {v!r}")
        t = self.toks[self.i]
        self.i += 1
        return t

    def expr(self) -> Node:
        c = self.binary(0)
        if self.peek("?"):
            self.take("?")
            a = self.expr()
            self.take(":")
            b = self.expr()
            return ("cond", c, a, b)
        return c

    _LEVELS = (
        ("||",),
        ("&&",),
        ("==", "!=", "<", "<=", ">", ">=", "in"),
        ("+", "-"),
        ("*", "/", "%"),
    )

    def binary(self, level: int) -> Node:
        if level == len(self._LEVELS):
            return self.unary()
        left = self.binary(level + 1)
        while self.i < len(self.toks) and self.toks[self.i][1] in self._LEVELS[level]:
            op = self.take()[1]
            right = self.binary(level + 1)
            left = ("bin", op, left, right)
        return left

    def unary(self) -> Node:
        if self.peek("!") or self.peek("-"):
            op = self.take()[1]
            return ("un", op, self.unary())
        return self.member(self.primary())

    def args(self) -> list[Node]:
        out: list[Node] = []
        self.take("(")
        while not self.peek(")"):
            out.append(self.expr())
            if not self.peek(")"):
                self.take(",")
        self.take(")")
        return out

    def member(self, node: Node) -> Node:
        while True:
            if self.peek(".") or self.peek(".?"):
                self.take()
                name = self.take()[1]
                if self.peek("("):
                    args = self.args()
                    if name in _MACROS and args and args[0][0] == "id":
                        node = ("macro", name, node, args[0][1], args[1:])
                    else:
                        node = ("call", name, node, args)
                else:
                    node = ("sel", node, name)
            elif self.peek("["):
                self.take("[")
                idx = self.expr()
                self.take("]")
                node = ("idx", node, idx)
            else:
                return node

    def primary(self) -> Node:
        kind, v = self.take()
        if kind == "str":
            return ("lit", _unquote(v))
        if kind == "num":
            return ("lit", 0)
        if v == "(":
            e = self.expr()
            self.take(")")
            return e
        if v == "[":
            items = []
            while not self.peek("]"):
                items.append(self.expr())
                if not self.peek("]"):
                    self.take(",")
            self.take("]")
            return ("list", items)
        if v == "{":
            entries = []
            while not self.peek("}"):
                k = self.expr()
                self.take(":")
                entries.append((k, self.expr()))
                if not self.peek("}"):
                    self.take(",")
            self.take("}")
            return ("mapl", entries)
        if v == ".":
            return self.primary()
        if kind == "id":
            if self.peek("("):
                args = self.args()
                if v == "has":
                    return ("has", args)
                return ("call", v, None, args)
            if v in ("true", "false", "null"):
                return ("lit", None)
            return ("id", v)
        raise ValueError(f"unexpected {v!r}")


def _unquote(s: str) -> str:
    s = s.lstrip("rRbB")
    q = 3 if s[:3] in ('"""', "'''") else 1
    return s[q:-q]


def parse(src: str) -> Node | None:
    """The expression's tree, or None where this reader cannot follow it (then the
    expression is not budgeted: the engine has compiled it already)."""
    try:
        p = _Parser(src)
        node = p.expr()
        return node if p.i == len(p.toks) else None
    except (ValueError, IndexError):
        return None


# ---------------------------------------------------------------- the estimate


def _string_cost(s: Shape) -> int:
    return math.ceil(s.size * STRING_FACTOR) if s.kind in ("string", "any") else 1


def estimate(node: Node | None, env: dict[str, Shape]) -> int:
    """The largest cost of evaluating `node` once with variables of the given shapes."""
    if node is None:
        return 0
    return _cost(node, env)[0]


def _cost(n: Node, env: dict[str, Shape]) -> tuple[int, Shape]:
    tag = n[0]
    if tag == "lit":
        return 0, Shape("string", len(n[1])) if isinstance(n[1], str) else SCALAR
    if tag == "id":
        return 1, env.get(n[1], ANY)
    if tag == "sel":
        c, s = _cost(n[1], env)
        if s.kind == "object":
            return c + 1, s.props.get(n[2], s.elem or ANY)
        if s.kind == "map":
            return c + 1, s.elem or ANY
        return c + 1, ANY
    if tag == "has":
        return 1 + sum(_cost(a, env)[0] for a in n[1]), SCALAR
    if tag == "idx":
        c, s = _cost(n[1], env)
        ci, _ = _cost(n[2], env)
        return c + ci + 1, (s.elem or ANY) if s.kind in ("list", "map", "object") else ANY
    if tag == "list":
        costs = [_cost(x, env) for x in n[1]]
        return 1 + sum(c for c, _ in costs), Shape(
            "list", len(costs), elem=_widest([s for _, s in costs])
        )
    if tag == "mapl":
        total = 1
        for k, v in n[1]:
            total += _cost(k, env)[0] + _cost(v, env)[0]
        return total, Shape("map", len(n[1]), elem=ANY)
    if tag == "cond":
        c, _ = _cost(n[1], env)
        a, sa = _cost(n[2], env)
        b, sb = _cost(n[3], env)
        return c + max(a, b) + 1, _widest([sa, sb])
    if tag == "un":
        c, s = _cost(n[2], env)
        return c + 1, s if n[1] == "-" else SCALAR
    if tag == "bin":
        a, sa = _cost(n[2], env)
        b, sb = _cost(n[3], env)
        op = n[1]
        extra = 1
        if op in ("==", "!=") and "string" in (sa.kind, sb.kind):
            # comparing stops at the shorter string
            extra = math.ceil(min(sa.size, sb.size) * STRING_FACTOR)
        elif op == "+" and "string" in (sa.kind, sb.kind):
            extra = math.ceil((sa.size + sb.size) * STRING_FACTOR)
        if op == "in" and sb.kind in ("list",):
            extra += sb.size
        shape = SCALAR
        if op == "+" and sa.kind == "string":
            shape = Shape("string", sa.size + sb.size)
        elif op == "+" and sa.kind == "list":
            shape = Shape("list", sa.size + sb.size, elem=sa.elem or sb.elem)
        return a + b + extra, shape
    if tag == "macro":
        _, name, target, var, rest = n
        c, s = _cost(target, env)
        elem = s.elem if s.kind in ("list", "map") else ANY
        if s.kind == "object":
            elem = Shape("string", 63)  # an object's keys
        count = s.size if s.kind in ("list", "map", "object") else 1
        inner = dict(env)
        inner[var] = elem or ANY
        body = sum(_cost(b, inner)[0] for b in rest)
        out = Shape(
            "list", count, elem=_cost(rest[-1], inner)[1] if name == "map" and rest else elem
        )
        if name in ("all", "exists", "exists_one"):
            out = SCALAR
        return c + count * (body + LOOP_STEP) + 1, out
    if tag == "call":
        _, name, target, args = n
        total = 1
        shapes = []
        if target is not None:
            c, s = _cost(target, env)
            total += c
            shapes.append(s)
        for a in args:
            c, s = _cost(a, env)
            total += c
            shapes.append(s)
        recv = shapes[0] if shapes else ANY
        if name == "matches" and len(shapes) >= 2:
            pattern = n[3][-1]
            plen = len(pattern[1]) if pattern[0] == "lit" and isinstance(pattern[1], str) else 64
            return total - 1 + _string_cost(recv) * math.ceil(plen * REGEX_FACTOR), SCALAR
        if name == "contains" and target is not None:
            return total - 1 + _string_cost(recv), SCALAR  # the receiver is traversed
        if name in ("startsWith", "endsWith") and target is not None and len(shapes) >= 2:
            return total - 1 + _string_cost(shapes[1]), SCALAR  # only the affix is compared
        if name in _STRING_FUNCS:
            total += _string_cost(recv)
            if name == "split":
                return total, Shape("list", max(1, recv.size), elem=Shape("string", recv.size))
            if name in ("lowerAscii", "upperAscii", "replace", "trim", "substring", "format"):
                return total, Shape("string", recv.size)
            return total, SCALAR
        if name == "size":
            return total, SCALAR
        if name in ("isSorted", "sum", "min", "max", "indexOf", "lastIndexOf"):
            return total + (recv.size if recv.kind == "list" else 1), SCALAR
        return total, ANY
    return 1, ANY


def size_dependent(node: Any) -> bool:
    """Whether the cost of `node` grows with the values it reads (a comprehension, or a
    function over a string or list)."""
    if not isinstance(node, tuple):
        if isinstance(node, list):
            return any(size_dependent(x) for x in node)
        return False
    if node[0] == "macro":
        return True
    if node[0] == "call" and (node[1] in _STRING_FUNCS or node[1] == "matches"):
        return True
    return any(size_dependent(x) for x in node[1:])


def factor_text(cost: int, limit: int) -> str:
    """How far over its limit an estimate is, as kube words it."""
    f = cost / limit
    if f > 100:
        return "more than 100x"
    if f < 1.5:
        return f"{f:f}x"
    return f"{f:.1f}x"


def over_budget_message(what: str, cost: int, limit: int) -> str:
    return (
        f"{what} exceeds budget by factor of {factor_text(cost, limit)} (try simplifying the "
        "rule, or adding maxItems, maxProperties, and maxLength where arrays, maps, and "
        "strings are declared)"
    )
