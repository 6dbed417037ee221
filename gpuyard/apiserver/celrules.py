"""CRD validation rules: the `x-kubernetes-validations` of a structural schema.

Each rule (`rule`, and optionally `message`, `messageExpression`, `fieldPath`,
`reason`) is compiled once per schema (`celexpr`); a schema is walked once into a tree
of only the nodes that hold rules or lead to one, so a custom resource whose CRD has no
rules costs one look-up per write. A rule sees the value at its node as `self`; a rule
that reads `oldSelf` is a transition rule, run only on updates where the old value can
be correlated (object fields and map keys by name, items of `x-kubernetes-list-type:
map` lists by their keys). As in kube-apiserver (validation ratcheting), a value that
an update leaves unchanged is not checked again.

A failing rule is a 422 cause at the node's field (plus `fieldPath`), with the rule's
reason (FieldValueInvalid by default, or FieldValueForbidden, FieldValueRequired,
FieldValueDuplicate) and its message: the messageExpression's string, else `message`,
else `failed rule: RULE`. A CRD whose rules do not compile is refused naming the rule.
"""

from __future__ import annotations

from typing import Any

from gpuyard.apiserver import celcost, celtrace
from gpuyard.apiserver.celexpr import CELError, Program, compile_expr, message_text, run
from gpuyard.apiserver.resources import Resource

Cause = dict[str, str]
ROOT = "<nil>"  # the field kube-apiserver names for a rule on the whole object
REASONS = ("FieldValueInvalid", "FieldValueForbidden", "FieldValueRequired", "FieldValueDuplicate")


class _Rule:
    __slots__ = (
        "source",
        "program",
        "message",
        "message_program",
        "field_path",
        "reason",
        "transition",
        "tree",
        "estimate",
        "bound",
        "message_estimate",
    )

    def __init__(self, spec: dict[str, Any], shape: celcost.Shape | None = None) -> None:
        self.source = str(spec.get("rule") or "")
        self.program: Program = compile_expr(self.source)
        self.message = spec.get("message") if isinstance(spec.get("message"), str) else ""
        me = spec.get("messageExpression")
        self.message_program = compile_expr(me) if isinstance(me, str) and me else None
        fp = spec.get("fieldPath")
        self.field_path = fp if isinstance(fp, str) else ""
        reason = spec.get("reason")
        self.reason = reason if reason in REASONS else "FieldValueInvalid"
        self.transition = "oldSelf" in self.program.variables
        # The estimated cost of one evaluation at the node (celcost); the most its
        # runtime count can be on a value the schema allows; the tree the runtime cost
        # is counted on (celtrace) where those bounds could pass the limits.
        self.tree = celcost.parse(self.source)
        env = {"self": shape or celcost.ANY, "oldSelf": shape or celcost.ANY}
        self.estimate = celcost.estimate(self.tree, env)
        self.bound = celcost.runtime_bound(self.tree, env)
        self.message_estimate = (
            celcost.estimate(celcost.parse(me), env) if isinstance(me, str) and me else 0
        )


class _Node:
    __slots__ = ("rules", "props", "addl", "items", "type_name", "keys", "groups")

    def __init__(self, schema: dict[str, Any]) -> None:
        self.rules: list[_Rule] = []
        self.props: dict[str, _Node] = {}
        self.addl: _Node | None = None
        self.items: _Node | None = None
        t = schema.get("type")
        self.type_name = t if isinstance(t, str) else ""
        self.keys: tuple[str, ...] = ()
        # (transition, rules, one program evaluating them all as a list), made by _group
        self.groups: list[tuple[bool, list[_Rule], Program | None]] = []
        if schema.get("x-kubernetes-list-type") == "map":
            self.keys = tuple(str(k) for k in schema.get("x-kubernetes-list-map-keys") or ())


def _build(
    schema: Any,
    path: str,
    causes: list[Cause],
    cardinality: int = 1,
    totals: list[tuple[int, str]] | None = None,
    root: bool = False,
) -> _Node | None:
    """The rule tree of `schema`; causes for rules that do not compile or cost too
    much; totals collects (estimate times how often the node is evaluated, field)."""
    if not isinstance(schema, dict):
        return None
    node = _Node(schema)
    shape = celcost.from_schema(schema)
    if root and shape.kind == "object":
        shape.props.setdefault("apiVersion", celcost.Shape("string", 253))
        shape.props.setdefault("kind", celcost.Shape("string", 63))
        shape.props["metadata"] = celcost.Shape(
            "object",
            2,
            props={
                "name": celcost.Shape("string", 253),
                "generateName": celcost.Shape("string", 253),
            },
        )
    rules = schema.get("x-kubernetes-validations")
    if isinstance(rules, list):
        for i, spec in enumerate(rules):
            where = f"{path}.x-kubernetes-validations[{i}]"
            if not isinstance(spec, dict) or not isinstance(spec.get("rule"), str):
                causes.append(_cause(f"{where}.rule", "Required value", "FieldValueRequired"))
                continue
            if spec.get("reason") not in (None, *REASONS):
                causes.append(
                    _cause(
                        f"{where}.reason",
                        f'Unsupported value: "{spec.get("reason")}": supported values: '
                        + ", ".join(f'"{r}"' for r in REASONS),
                        "FieldValueNotSupported",
                    )
                )
            bad = _compile_error(spec)
            if bad is not None:
                causes.append(_cause(f"{where}.{bad[0]}", bad[1]))
                continue
            rule = _Rule(spec, shape)
            for what, cost in (
                ("rule", rule.estimate),
                ("messageExpression", rule.message_estimate),
            ):
                if cost > celcost.RULE_ESTIMATE_LIMIT:
                    causes.append(
                        _cause(
                            f"{where}.{what}",
                            "Forbidden: "
                            + celcost.over_budget_message(
                                f"estimated {what} cost", cost, celcost.RULE_ESTIMATE_LIMIT
                            ),
                            "FieldValueForbidden",
                        )
                    )
                if totals is not None:
                    totals.append((cost * cardinality, f"{where}.{what}"))
            node.rules.append(rule)
    props = schema.get("properties")
    if isinstance(props, dict):
        for k, sub in props.items():
            child = _build(sub, f"{path}.properties[{k}]", causes, cardinality, totals)
            if child is not None:
                node.props[k] = child
    addl = schema.get("additionalProperties")
    if isinstance(addl, dict):
        node.addl = _build(
            addl, f"{path}.additionalProperties", causes, cardinality * max(shape.size, 1), totals
        )
    node.items = _build(
        schema.get("items"), f"{path}.items", causes, cardinality * max(shape.size, 1), totals
    )
    if not node.rules and not node.props and node.addl is None and node.items is None:
        return None
    _group(node)
    return node


def _group(node: _Node) -> None:
    """The node's rules in two groups (plain, transition), each evaluated as one list
    expression: one conversion of `self` and one run for all of a node's rules."""
    for transition in (False, True):
        rules = [r for r in node.rules if r.transition == transition]
        if not rules:
            continue
        combined = None
        if len(rules) > 1:
            try:
                combined = compile_expr("[" + ", ".join(f"({r.source})" for r in rules) + "]")
            except CELError:
                combined = None
        node.groups.append((transition, rules, combined))


def _compile_error(spec: dict[str, Any]) -> tuple[str, str] | None:
    """(field, message) for a rule or messageExpression that does not compile."""
    for which in ("rule", "messageExpression"):
        src = spec.get(which)
        if which == "messageExpression" and not src:
            continue
        if not isinstance(src, str):
            return which, "Invalid value: must be a string"
        try:
            compile_expr(src)
        except CELError as exc:
            return which, f"Invalid value: {_quote(src)}: compilation failed: {exc}"
    return None


def _quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _cause(field: str, message: str, reason: str = "FieldValueInvalid") -> Cause:
    return {"reason": reason, "message": message, "field": field}


def schema_rule_causes(schema: dict[str, Any], path: str) -> list[Cause]:
    """Causes for rules of a CRD version's schema that do not compile, or whose
    estimated cost is over the limits (one evaluation; all of the schema's rules)."""
    causes: list[Cause] = []
    totals: list[tuple[int, str]] = []
    _build(schema, path, causes, 1, totals, root=True)
    total = sum(c for c, _ in totals)
    if total > celcost.SCHEMA_ESTIMATE_LIMIT:
        rest = total
        for cost, field in sorted(totals, reverse=True):
            if rest <= celcost.SCHEMA_ESTIMATE_LIMIT or cost == 0:
                break
            rest -= cost
            causes.append(
                _cause(
                    field,
                    "Forbidden: contributed to estimated rule cost total exceeding cost limit "
                    "for entire OpenAPIv3 schema",
                    "FieldValueForbidden",
                )
            )
        causes.append(
            _cause(
                path,
                "Forbidden: "
                + celcost.over_budget_message(
                    "x-kubernetes-validations estimated rule cost total for entire OpenAPIv3 "
                    "schema",
                    total,
                    celcost.SCHEMA_ESTIMATE_LIMIT,
                ),
                "FieldValueForbidden",
            )
        )
    return causes


_CACHE: dict[int, tuple[dict[str, Any], _Node | None]] = {}


def _validator(res: Resource) -> _Node | None:
    schema = res.schema
    if not isinstance(schema, dict):
        return None
    hit = _CACHE.get(id(schema))
    if hit is not None and hit[0] is schema:
        return hit[1]
    causes: list[Cause] = []
    node = _build(schema, "", causes, root=True)
    if len(_CACHE) > 4096:
        _CACHE.clear()
    _CACHE[id(schema)] = (schema, node)
    return node


def has_rules(res: Resource) -> bool:
    return res.custom and _validator(res) is not None


def validate(res: Resource, obj: dict[str, Any], old: dict[str, Any] | None) -> list[Cause]:
    """Causes for the rules `obj` (a custom object of `res`) breaks; old on updates."""
    if not res.custom:
        return []
    node = _validator(res)
    if node is None:
        return []
    out: list[Cause] = []
    root = obj
    if node.rules:
        got = obj.get("metadata")
        md: dict[str, Any] = got if isinstance(got, dict) else {}
        root = {
            **obj,
            "metadata": {k: md[k] for k in ("name", "generateName") if k in md},
        }
    budget = _Budget()
    try:
        # what still waits is within what is left of the budget: it is never counted
        _eval(node, root, old, old is not None, "", out, budget, top=True)
    except _OutOfBudget:
        pass
    return out


class _OutOfBudget(Exception):
    """The object's rules spent the runtime budget: no further rule is run."""


class _Budget:
    """The runtime budget of one object's rules (10,000,000), charged what each
    evaluation actually cost (celtrace). Counting is put off while it cannot matter: an
    evaluation whose bound (the most its count can be on a value the schema allows) is
    within the per-call limit waits, and the waiting ones are counted only once their
    bounds together could pass what is left of the budget. Where they do pass it, the
    evaluation that ran out is named and its causes, and those of every evaluation
    after it, are dropped: kube stops there."""

    __slots__ = ("left", "waiting", "bound")

    def __init__(self) -> None:
        self.left = celcost.RUNTIME_BUDGET
        self.waiting: list[tuple[_Rule, dict[str, Any], str, str, int]] = []
        self.bound = 0

    def settle(self, out: list[Cause]) -> None:
        waiting, self.waiting, self.bound = self.waiting, [], 0
        for r, variables, path, type_name, mark in waiting:
            self.charge(
                celtrace.actual_cost(r.tree, variables, self.left), path, type_name, out, mark
            )

    def charge(self, cost: int, path: str, type_name: str, out: list[Cause], mark: int) -> None:
        if cost > self.left:
            del out[mark:]
            out.append(
                _cause(path or ROOT, f"Invalid value: {_quote(type_name)}: {celcost.OUT_OF_BUDGET}")
            )
            raise _OutOfBudget
        self.left -= cost


_MISSING = object()


def _eval(
    node: _Node,
    value: Any,
    old: Any,
    has_old: bool,
    path: str,
    out: list[Cause],
    budget: _Budget,
    top: bool = False,
) -> None:
    if value is None:
        return
    if has_old and not top and value == old:
        return  # unchanged: ratcheted
    for transition, rules, combined in node.groups:
        if transition and not has_old:
            continue
        variables = {"self": value, "oldSelf": old if transition else None}
        kept = _within_cost(node, rules, variables, path, out, budget)
        if len(kept) != len(rules):
            rules, combined = kept, None
        results: Any = None
        if combined is not None:
            try:
                results = run(combined, variables)
            except CELError:
                results = None  # one of them failed: run each, to say which and why
        if type(results) is list and len(results) == len(rules):
            for r, ok in zip(rules, results, strict=True):
                if ok is not True:
                    _judge(node, r, ok, variables, path, out)
            continue
        for r in rules:
            try:
                result = run(r.program, variables)
            except CELError as exc:
                out.append(
                    _cause(
                        path or ROOT,
                        f"Invalid value: {_quote(node.type_name)}: {exc} evaluating rule: "
                        f"{r.source}",
                    )
                )
                continue
            if result is not True:
                _judge(node, r, result, variables, path, out)
    if type(value) is dict:
        old_map = old if has_old and type(old) is dict else None
        for k, sub in node.props.items():
            if top and k == "metadata":
                continue
            if k in value:
                o = old_map.get(k, _MISSING) if old_map is not None else _MISSING
                f = f"{path}.{k}" if path else k
                _eval(sub, value[k], o, o is not _MISSING, f, out, budget)
        if node.addl is not None:
            for k, x in value.items():
                o = old_map.get(k, _MISSING) if old_map is not None else _MISSING
                _eval(node.addl, x, o, o is not _MISSING, f"{path}[{k}]", out, budget)
    elif type(value) is list and node.items is not None:
        olds: dict[tuple[Any, ...], Any] = {}
        if node.keys and has_old and type(old) is list:
            for item in old:
                if type(item) is dict:
                    olds[tuple(item.get(k) for k in node.keys)] = item
        for i, x in enumerate(value):
            o = _MISSING
            if olds and type(x) is dict:
                o = olds.get(tuple(x.get(k) for k in node.keys), _MISSING)
            _eval(node.items, x, o, o is not _MISSING, f"{path}[{i}]", out, budget)


def _within_cost(
    node: _Node,
    rules: list[_Rule],
    variables: dict[str, Any],
    path: str,
    out: list[Cause],
    budget: _Budget,
) -> list[_Rule]:
    """The rules that may run on this value. A rule whose bound passes the per-call
    limit is counted now, as far as the limit: over it, it is a cause and does not
    run; the others wait to be counted (_Budget). The object's budget spent stops all
    rules."""
    kept = []
    for r in rules:
        if r.tree is None:
            kept.append(r)
            continue
        if r.bound > celcost.PER_CALL_LIMIT:
            budget.settle(out)
            cost = celtrace.actual_cost(r.tree, variables, celcost.PER_CALL_LIMIT)
            budget.charge(cost, path, node.type_name, out, len(out))
            if cost > celcost.PER_CALL_LIMIT:
                out.append(
                    _cause(
                        path or ROOT,
                        f"Invalid value: {_quote(node.type_name)}: '{celcost.CALL_LIMIT_ERROR}': "
                        f"call cost exceeds limit for rule: {r.source}",
                    )
                )
                continue
        else:
            budget.waiting.append((r, variables, path, node.type_name, len(out)))
            budget.bound += r.bound
            if budget.bound > budget.left:
                budget.settle(out)
        kept.append(r)
    return kept


def _judge(
    node: _Node, r: _Rule, result: Any, variables: dict[str, Any], path: str, out: list[Cause]
) -> None:
    if result is False:
        out.append(_failure(node, r, variables, path))
    else:
        out.append(
            _cause(
                path or ROOT,
                f"Invalid value: {_quote(node.type_name)}: rule did not evaluate to a bool: "
                f"{r.source}",
            )
        )


def _failure(node: _Node, r: _Rule, variables: dict[str, Any], path: str) -> Cause:
    msg = r.message or f"failed rule: {r.source}"
    if r.message_program is not None:
        try:
            m = message_text(run(r.message_program, variables))
            if m is not None:
                msg = m
        except CELError:
            pass
    field = path
    if r.field_path:
        fp = r.field_path
        field = (path + fp) if path else fp.lstrip(".")
    field = field or ROOT
    if r.reason == "FieldValueForbidden":
        return _cause(field, f"Forbidden: {msg}", r.reason)
    if r.reason == "FieldValueRequired":
        return _cause(field, f"Required value: {msg}", r.reason)
    if r.reason == "FieldValueDuplicate":
        return _cause(field, f"Duplicate value: {_quote(msg)}", r.reason)
    return _cause(field, f"Invalid value: {_quote(node.type_name)}: {msg}", r.reason)
