"""The cost of a CEL expression, estimated the way Kubernetes budgets validation rules.

kube-apiserver refuses a CRD whose rule could cost too much on the largest object its
schema allows (estimated cost over 10,000,000 for one evaluation, or over 100,000,000
for all of a schema's rules times how often each runs), and stops a write whose rules
actually cost more than 1,000,000 in one evaluation or 10,000,000 together (one custom
object, or one ValidatingAdmissionPolicy binding's evaluation). A policy's expressions
are not estimated when the policy is written: `object` has no schema there (kube
compiles them against a dynamic type), so only the runtime limits apply to them.

The model follows kube's estimator (cel-go's checker and kube's library costs): reading
a variable or a field, or indexing, costs 1, a call 1 unless costed otherwise; `&&`,
`||` and `?:` only their operands (the dearer branch); a list literal 10, a map literal
30; a presence test only its operand. Comprehensions expand as CEL's macros do (per
element: `all` 3, `exists` 4, `exists_one` 2, `map` 12 and `filter` 13 besides the body).
Equality, and ordering of strings, cost a tenth of the smaller side: a number or bool
read from the schema has size 0 (so `x == 0` is free), one written in the rule or
computed has size 1. String functions cost a tenth of the bytes they traverse:
`contains` the receiver's times the argument's, `startsWith`/`endsWith` the affix,
`matches`/`find` the receiver (plus one) times a quarter of the pattern,
`lowerAscii`/`upperAscii`/`trim`/`substring` the receiver, `split` and `replace` twice
the receiver, `join` the longest result; `quantity`, `isQuantity`, `semver` and `url`
their argument; list scans (`isSorted`, `sum`, `min`, `max`, `indexOf`) 1 per item plus
a tenth of each string item; quantity and semver methods 1. Sizes come from the
schema: a string's `maxLength` times 4 (bytes of a character at most), its longest
`enum` value or its format's longest form; `maxItems` and `maxProperties`; without
them, as many of the smallest elements as the largest request body (3 MiB) holds (a
map entry takes 6 bytes besides its value); a map's keys have size 0, and a value
read from a map by field name (`self.labels.x`) has no schema node, so it is unbounded
unless it is a number or bool. On kube's own estimator tests this gives kube's figures
(tests/apiserver/test_cel_cost.py). A computed value whose size kube's estimator does
not know has the largest size, 2^64 - 1, wherever its size counts, as in kube: the
result of `string(x)`, `format`, `charAt`, a quantity, semver or URL, `min`/`max` of
strings, and of any function without a size of its own (a number, bool, timestamp or
duration has size 1). So `'n is ' + string(self.n)` is refused as a real cluster
refuses it, while `string(self.n) == '5'` costs 4. Sums saturate at 2^64 - 1, and a
tenth of that is rounded as Go rounds the float. Where it still differs: `duration`,
`date` and `date-time` strings are sized but not typed; an expression this reader
cannot follow is not budgeted (the CEL engine has compiled it).

The runtime cost is counted from what ran (celtrace). `runtime_bound` is the most that
count can be on values within given shapes (the estimate, with a number or bool sized
1 and `join` charged a fifth of its result, as the runtime tracker does): a rule whose
bound cannot reach a limit is not counted until the bounds of several could.
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
LIST_BASE = 10  # creating a list
MAP_BASE = 30  # creating a map
UNKNOWN = 2**64 - 1  # a size the estimate cannot bound (kube's largest uint64)
AUTHZ_CHECK = 350_000  # one authorizer check, fixed

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
    key: Shape | None = None  # a map's keys, where known (an actual value's)
    lost: bool = False  # reached through a map by field name: no schema node is known


SCALAR = Shape("scalar")  # a number or bool written in the rule or computed by it
UNSIZED = Shape("any", UNKNOWN)  # a computed value whose size kube's estimator does not know
RUNTIME = "\0runtime"  # an env key: estimate as the runtime counts (a scalar has size 1)
SCHEMA_SCALAR = Shape("scalar", 0)  # one read from the schema: kube sizes it 0
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
        return Shape("object", 0, props={k: from_schema(v) for k, v in props.items()})
    return SCHEMA_SCALAR if t else ANY


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
            key=Shape("string", max((len(str(k)) for k in v), default=0)),
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
_LIST_SCANS = frozenset({"isSorted", "sum", "min", "max", "indexOf", "lastIndexOf"})
_NOMINAL = frozenset(
    {"sign", "asInteger", "isInteger", "asApproximateFloat", "isGreaterThan", "isLessThan"}
    | {"compareTo", "major", "minor", "patch"}
)
# Functions whose result is a number, bool, timestamp or duration: a fixed size (1), as
# kube's estimator sizes a scalar type. Any other call's result has an unknown size.
_SCALAR_RESULTS = frozenset(
    {"size", "int", "uint", "double", "bool", "timestamp", "duration", "isURL", "isIP"}
    | {"isCIDR", "isCanonical", "isLoopback", "isUnspecified", "isLinkLocalMulticast"}
    | {"isLinkLocalUnicast", "isGlobalUnicast", "family", "prefixLength", "containsIP"}
    | {"containsCIDR", "allowed", "errored", "isQuantity", "isSemver", "getPort"}
    | {"getFullYear", "getMonth", "getDayOfYear", "getDayOfMonth", "getDate", "getDayOfWeek"}
    | {"getHours", "getMinutes", "getSeconds", "getMilliseconds", "sets.contains"}
    | {"sets.equivalent", "sets.intersects"}
    | {f"math.{f}" for f in ("abs", "ceil", "floor", "round", "trunc", "sign", "sqrt")}
    | {f"math.{f}" for f in ("isNaN", "isInf", "isFinite", "greatest", "least")}
    | {f"math.bit{f}" for f in ("And", "Or", "Xor", "Not", "ShiftLeft", "ShiftRight")}
)
NAMESPACES = frozenset({"math", "sets", "strings", "base64", "lists"})
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
        "semver",
        "isSemver",
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
        if self.peek("-") and self.i + 1 < len(self.toks) and self.toks[self.i + 1][0] == "num":
            self.take()  # a negative number is one literal in CEL's grammar
            return self.member(self.primary())
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
            try:
                return ("lit", int(v.rstrip("uU"), 0))
            except ValueError:
                try:
                    return ("lit", float(v))
                except ValueError:
                    return ("lit", 0.0)
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
            if v in _CONSTANTS:
                return ("lit", _CONSTANTS[v])
            return ("id", v)
        raise ValueError(f"unexpected {v!r}")


_CONSTANTS = {"true": True, "false": False, "null": None}


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


def _ceil(size: int, factor: float = STRING_FACTOR) -> int:
    return math.ceil(size * factor)


def _string_cost(s: Shape) -> int:
    return _ceil(s.size) if s.kind in ("string", "any") else 1


def _lost(s: Shape | None) -> Shape:
    """A value read through a map by field name: kube's estimator finds no schema node
    for it, so a scalar has its type's size (1) and anything else an unknown size."""
    if s is None or s.kind == "any":
        return ANY
    if s.kind == "scalar":
        return SCALAR
    return Shape(s.kind, 0 if s.kind == "object" else UNKNOWN, s.elem, s.props, s.key, lost=True)


def _child(s: Shape, child: Shape | None) -> Shape:
    return _lost(child) if s.lost else (child or ANY)


def _elem(s: Shape) -> Shape:
    """A list's items, or a map's values (the schema node `@items` / `@values`)."""
    return _child(s, s.elem)


def _key(s: Shape) -> Shape:
    """What a comprehension over `s` binds: a list's items, a map's keys (a schema map's
    keys have no bound of their own: kube sizes them 0)."""
    if s.kind == "list":
        return _elem(s)
    if s.key is not None:
        return s.key
    return Shape("string", UNKNOWN if s.lost else 0)


def estimate(node: Node | None, env: dict[str, Shape]) -> int:
    """The largest cost of evaluating `node` once with variables of the given shapes."""
    if node is None:
        return 0
    return min(_cost(node, env)[0], UNKNOWN)


def runtime_bound(node: Node | None, env: dict[str, Shape]) -> int:
    """The most the runtime can count for `node` on values within these shapes. kube's
    runtime tracker sizes a number or bool 1 where the estimate sizes one read from the
    schema 0, and charges `join` a fifth of its result where the estimate charges a
    tenth, so this is the estimate with those two figures of the runtime."""
    return estimate(node, {**env, RUNTIME: ANY})


def _min_len(node: Node) -> int:
    """The shortest a string argument can be: a literal's length, else 0."""
    return len(node[1]) if node[0] == "lit" and isinstance(node[1], str) else 0


def _comprehension(n: Node, env: dict[str, Shape]) -> tuple[int, Shape]:
    # The macros expand as CEL's parser expands them; each iteration costs the loop
    # condition and the step: all (2 + 1 + body), exists (3 + 1 + body), exists_one
    # (body + 2, then a comparison), map (the list append, 12 + body) and filter
    # (body + 13), the last two building their result from an empty list (10).
    _, name, target, var, rest = n
    c, s = _cost(target, env)
    count = s.size if s.kind in ("list", "map", "object") else 1
    inner = dict(env)
    inner[var] = _key(s) if s.kind in ("list", "map", "object") else ANY
    parts = [_cost(b, inner) for b in rest]
    body = sum(p[0] for p in parts)
    if name == "all":
        return c + count * (3 + body) + 1, SCALAR
    if name == "exists":
        return c + count * (4 + body) + 1, SCALAR
    if name == "exists_one":
        return c + count * (2 + body) + 2, SCALAR
    if name == "filter":
        return c + LIST_BASE + count * (13 + body) + 1, Shape("list", count, elem=inner[var])
    # map(x, f) or map(x, filter, f)
    out = parts[-1][1] if parts else ANY
    return c + LIST_BASE + count * (12 + body) + 1, Shape("list", count, elem=out)


def _cost(n: Node, env: dict[str, Shape]) -> tuple[int, Shape]:
    tag = n[0]
    if tag == "lit":
        return 0, Shape("string", len(n[1])) if isinstance(n[1], str) else SCALAR
    if tag == "id":
        return 1, env.get(n[1], ANY)
    if tag == "sel":
        c, s = _cost(n[1], env)
        if s.kind == "object":
            return c + 1, _child(s, s.props.get(n[2], s.elem))
        if s.kind == "map":
            return c + 1, _lost(s.elem)  # a map read by field name: no schema node
        return c + 1, ANY
    if tag == "has":
        # presence tests cost nothing of their own (kube's environment), only their operand
        total = 0
        for a in n[1]:
            total += _cost(a[1], env)[0] if a[0] == "sel" else _cost(a, env)[0]
        return total, SCALAR
    if tag == "idx":
        c, s = _cost(n[1], env)
        ci, _ = _cost(n[2], env)
        return c + ci + 1, _elem(s) if s.kind in ("list", "map", "object") else ANY
    if tag == "list":
        costs = [_cost(x, env) for x in n[1]]
        return LIST_BASE + sum(c for c, _ in costs), Shape(
            "list", len(costs), elem=_widest([s for _, s in costs])
        )
    if tag == "mapl":
        total = MAP_BASE
        for k, v in n[1]:
            total += _cost(k, env)[0] + _cost(v, env)[0]
        return total, Shape("map", len(n[1]), elem=ANY)
    if tag == "cond":
        c, _ = _cost(n[1], env)
        a, sa = _cost(n[2], env)
        b, sb = _cost(n[3], env)
        return c + max(a, b), _widest([sa, sb])
    if tag == "un":
        c, s = _cost(n[2], env)
        return c + 1, s if n[1] == "-" else SCALAR
    if tag == "bin":
        return _binary(n, env)
    if tag == "macro":
        return _comprehension(n, env)
    if tag == "call":
        return _call(n, env)
    return 1, ANY


def _binary(n: Node, env: dict[str, Shape]) -> tuple[int, Shape]:
    a, sa = _cost(n[2], env)
    b, sb = _cost(n[3], env)
    op = n[1]
    args = a + b
    if op in ("&&", "||"):
        return args, SCALAR  # no cost of their own beyond both sides
    strings = "string" in (sa.kind, sb.kind)
    if op in ("==", "!=") or (op in ("<", "<=", ">", ">=") and strings):
        # equality stops at the smaller value (a number read from the schema has size 0,
        # one computed or written in the rule size 1); so does comparing strings
        smaller = min(sa.size, sb.size)
        if RUNTIME in env:
            smaller = max(smaller, 1)
        return args + _ceil(smaller), SCALAR
    if op == "in":
        return args + (sb.size if sb.kind == "list" else 1), SCALAR
    if op == "+" and strings:
        size = sa.size + sb.size
        return args + _ceil(size), Shape("string", size)
    if op == "+" and sa.kind == "list":
        return args + 1, Shape("list", sa.size + sb.size, elem=sa.elem or sb.elem)
    return args + 1, SCALAR


def _call(n: Node, env: dict[str, Shape]) -> tuple[int, Shape]:
    _, name, target, args = n
    total = 0
    shapes = []
    if target is not None and target[0] == "id" and target[1] in NAMESPACES:
        name, target = f"{target[1]}.{name}", None  # math.greatest(...), strings.quote(...)
    if target is not None:
        c, s = _cost(target, env)
        total += c
        shapes.append(s)
    for a in args:
        c, s = _cost(a, env)
        total += c
        shapes.append(s)
    recv = shapes[0] if shapes else ANY
    arg = shapes[1] if len(shapes) > 1 else ANY
    member = target is not None
    if name in ("matches", "find", "findAll") and len(shapes) >= 2:
        # the string (plus one) times a quarter of the pattern's length
        cost = _ceil(recv.size + 1) * _ceil(arg.size, REGEX_FACTOR)
        if name == "matches":
            return total + cost, SCALAR
        return total + cost, Shape("list" if name == "findAll" else "string", recv.size)
    if name == "contains" and member and len(shapes) >= 2:
        return total + _ceil(recv.size) * _ceil(arg.size), SCALAR
    if name in ("startsWith", "endsWith") and member and len(shapes) >= 2:
        return total + _ceil(arg.size), SCALAR  # only the affix is compared
    if name in ("lowerAscii", "upperAscii", "substring", "trim") and member:
        return total + _ceil(recv.size), Shape("string", recv.size)
    if name == "replace" and member and len(shapes) >= 3:
        with_ = shapes[2]
        shortest = _min_len(args[0])
        if shortest == 0:
            size = (recv.size + 1) * with_.size + recv.size
        elif with_.size <= shortest:
            size = recv.size
        else:
            size = math.ceil(recv.size / shortest) * with_.size
        return total + _ceil(recv.size, 2 * STRING_FACTOR), Shape("string", size)
    if name == "split" and member:
        most = recv.size
        if len(args) > 1 and args[1][0] == "lit" and isinstance(args[1][1], int):
            most = max(args[1][1], 0)
        return total + _ceil(recv.size, 2 * STRING_FACTOR), Shape(
            "list", most, elem=Shape("string", recv.size)
        )
    if name == "join" and member and recv.kind == "list":
        size = recv.size * _elem(recv).size
        if args:
            size += arg.size * max(recv.size - 1, 0)
        factor = 2 * STRING_FACTOR if RUNTIME in env else STRING_FACTOR
        return total + _ceil(size, factor), Shape("string", size)
    if name in _LIST_SCANS and member:
        if recv.kind == "list":
            elem = _elem(recv)
            per = 1 + (_ceil(elem.size) if elem.kind == "string" else 0)
            # min and max of strings give a string whose size the estimate does not know
            out = UNSIZED if name in ("min", "max") and elem.kind != "scalar" else SCALAR
            return total + recv.size * per, out
        return total + _string_cost(recv), SCALAR  # indexOf on a string
    if name in ("quantity", "isQuantity", "semver", "isSemver", "url") and shapes:
        # a quantity, semver or URL is an object of no known size
        return total + _ceil(shapes[-1].size), SCALAR if name.startswith("is") else UNSIZED
    if name == "strings.quote" and shapes:
        s = shapes[0]  # each character escaped, and the two quotes
        return total + _ceil(s.size), Shape("string", s.size * 2 + 2)
    if name == "format" and member:
        return total + _string_cost(recv), UNSIZED
    if name == "check":
        return total + AUTHZ_CHECK, UNSIZED
    if name in ("add", "sub") and member:
        return total + 1, UNSIZED  # a quantity
    if name == "dyn" and shapes:
        return total + 1, shapes[0]
    if name in _SCALAR_RESULTS or name in _NOMINAL:
        return total + 1, SCALAR
    # string(x), charAt, base64, lists, url parts and any function without a size of
    # its own: kube's estimator knows no size for the result (the largest, 2^64 - 1)
    return total + 1, Shape("string", UNKNOWN) if name in ("string", "charAt") else UNSIZED


def size_dependent(node: Any) -> bool:
    """Whether the cost of `node` grows with the values it reads (a comprehension, or a
    function over a string or list)."""
    if not isinstance(node, tuple):
        if isinstance(node, list):
            return any(size_dependent(x) for x in node)
        return False
    if node[0] == "macro":
        return True
    if node[0] == "call" and (
        node[1] in _STRING_FUNCS or node[1] in _LIST_SCANS or node[1] in ("matches", "check")
    ):
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
