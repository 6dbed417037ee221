"""Validating admission: ValidatingAdmissionPolicies (CEL) and validating webhooks.

Runs after mutation and after the object passed validation, as kube-apiserver's
validating admission does. `validate(...)` returns the warnings to send, or raises the
refusal as an APIError.

ValidatingAdmissionPolicy (admissionregistration.k8s.io/v1) applies through its
bindings: a binding names the policy (`policyName`), may narrow what it matches
(`matchResources`), picks the parameters (`paramRef`: by name, or by selector, in the
request's namespace unless it names one; `parameterNotFoundAction` Allow or Deny) and
says what a failure does (`validationActions`: Deny refuses, Warn adds a `Warning`
header, Audit is accepted). A policy matches by `matchConstraints` (resourceRules,
excludeResourceRules, namespaceSelector, objectSelector), then by its `matchConditions`;
its `variables` are evaluated in order; each of its `validations` (expression, message,
messageExpression, reason) sees `object`, `oldObject`, `request`, `params`,
`namespaceObject` and `variables` (objects without their metadata.managedFields). An expression that fails to evaluate, or parameters
that cannot be found, follow the policy's `failurePolicy` (Fail refuses, Ignore skips).
Expressions are compiled once (`celexpr`); a policy whose expressions do not compile is
refused when it is written. With no bindings stored, a request costs one look-up.

ValidatingWebhookConfigurations are matched like mutating ones (`webhooks`), all
matching webhooks are called at once, and any refusal refuses the request.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import orjson

from gpuyard.apiserver import celauthz, celcost, celtrace, requestctx, webhooks
from gpuyard.apiserver.celexpr import CELError, Program, compile_expr, message_text, run
from gpuyard.apiserver.errors import APIError, invalid
from gpuyard.apiserver.resources import Registry, Resource
from gpuyard.apiserver.selectors import Filter
from gpuyard.apiserver.store import Store, make_key
from gpuyard.kube.objects import SelectorError, selector_matches

GROUP = "admissionregistration.k8s.io"
POLICIES = (GROUP, "validatingadmissionpolicies")
BINDINGS = (GROUP, "validatingadmissionpolicybindings")
VALIDATING_WEBHOOKS = (GROUP, "validatingwebhookconfigurations")
NAMESPACES = ("", "namespaces")

RESOURCES = [
    Resource(
        GROUP,
        "v1",
        "ValidatingAdmissionPolicy",
        "validatingadmissionpolicies",
        "validatingadmissionpolicy",
        False,
        subresources=("status",),
        categories=("api-extensions",),
    ),
    Resource(
        GROUP,
        "v1",
        "ValidatingAdmissionPolicyBinding",
        "validatingadmissionpolicybindings",
        "validatingadmissionpolicybinding",
        False,
        categories=("api-extensions",),
    ),
    Resource(
        GROUP,
        "v1",
        "ValidatingWebhookConfiguration",
        "validatingwebhookconfigurations",
        "validatingwebhookconfiguration",
        False,
        categories=("api-extensions",),
    ),
]
_REASON_CODES = {
    "Unauthorized": 401,
    "Forbidden": 403,
    "Invalid": 422,
    "RequestEntityTooLarge": 413,
}
_ADMISSION_KINDS = {r.key for r in RESOURCES}


def register(registry: Registry) -> None:
    """Serve the kinds of validating admission where the registry lacks them."""
    registry.ensure_builtin(RESOURCES)


# ---------------------------------------------------------------- checks on write


def policy_causes(policy: dict[str, Any]) -> list[dict[str, str]]:
    """Causes for a ValidatingAdmissionPolicy whose expressions do not compile or whose
    enumerated fields hold values kube-apiserver refuses."""
    out: list[dict[str, str]] = []
    spec = policy.get("spec")
    if not isinstance(spec, dict):
        return out
    for section, key in (
        ("validations", "expression"),
        ("matchConditions", "expression"),
        ("variables", "expression"),
        ("auditAnnotations", "valueExpression"),
    ):
        items = spec.get(section)
        if not isinstance(items, list):
            continue
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                continue
            for k in (key, "messageExpression"):
                src = item.get(k)
                if k == "messageExpression" and src is None:
                    continue
                field = f"spec.{section}[{i}].{k}"
                if not isinstance(src, str) or not src.strip():
                    out.append(
                        {
                            "reason": "FieldValueRequired",
                            "message": "Required value",
                            "field": field,
                        }
                    )
                    continue
                try:
                    compile_expr(src)
                except CELError as exc:
                    out.append(
                        {
                            "reason": "FieldValueInvalid",
                            "message": f"Invalid value: {_q(src)}: compilation failed: {exc}",
                            "field": field,
                        }
                    )
            reason = item.get("reason") if section == "validations" else None
            if reason is not None and reason not in _REASON_CODES:
                out.append(
                    {
                        "reason": "FieldValueNotSupported",
                        "message": f"Unsupported value: {_q(str(reason))}: supported values: "
                        '"Forbidden", "Invalid", "RequestEntityTooLarge", "Unauthorized"',
                        "field": f"spec.validations[{i}].reason",
                    }
                )
    seen: set[str] = set()
    for i, item in enumerate(spec.get("auditAnnotations") or []):
        if not isinstance(item, dict):
            continue
        akey = item.get("key")
        where = f"spec.auditAnnotations[{i}].key"
        if not isinstance(akey, str) or not akey:
            out.append(
                {"reason": "FieldValueRequired", "message": "Required value", "field": where}
            )
        elif akey in seen:
            out.append(
                {
                    "reason": "FieldValueDuplicate",
                    "message": f"Duplicate value: {_q(akey)}",
                    "field": where,
                }
            )
        elif len(akey) > 63:
            out.append(
                {
                    "reason": "FieldValueTooLong",
                    "message": "Too long: may not be more than 63 bytes",
                    "field": where,
                }
            )
        elif not _QUALIFIED_NAME.match(akey):
            out.append(
                {
                    "reason": "FieldValueInvalid",
                    "message": f"Invalid value: {_q(akey)}: name part must consist of "
                    "alphanumeric characters, '-', '_' or '.', and must start and end with an "
                    "alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', "
                    "regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')",
                    "field": where,
                }
            )
        else:
            seen.add(akey)
    fp = spec.get("failurePolicy")
    if fp is not None and fp not in ("Fail", "Ignore"):
        out.append(
            {
                "reason": "FieldValueNotSupported",
                "message": f'Unsupported value: {_q(str(fp))}: supported values: "Fail", "Ignore"',
                "field": "spec.failurePolicy",
            }
        )
    return out


def binding_causes(binding: dict[str, Any]) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    spec = binding.get("spec")
    if not isinstance(spec, dict):
        return out
    if not spec.get("policyName"):
        out.append(
            {
                "reason": "FieldValueRequired",
                "message": "Required value",
                "field": "spec.policyName",
            }
        )
    actions = spec.get("validationActions")
    if not isinstance(actions, list) or not actions:
        out.append(
            {
                "reason": "FieldValueRequired",
                "message": "Required value: at least one validation action is required",
                "field": "spec.validationActions",
            }
        )
    else:
        for i, a in enumerate(actions):
            if a not in ("Deny", "Warn", "Audit"):
                out.append(
                    {
                        "reason": "FieldValueNotSupported",
                        "message": f'Unsupported value: {_q(str(a))}: supported values: "Audit", '
                        '"Deny", "Warn"',
                        "field": f"spec.validationActions[{i}]",
                    }
                )
        if "Deny" in actions and "Warn" in actions:
            out.append(
                {
                    "reason": "FieldValueInvalid",
                    "message": "Invalid value: cannot use both Deny and Warn",
                    "field": "spec.validationActions",
                }
            )
    ref = spec.get("paramRef")
    if isinstance(ref, dict):
        if ref.get("name") and ref.get("selector") is not None:
            out.append(
                {
                    "reason": "FieldValueForbidden",
                    "message": "Forbidden: name and selector are mutually exclusive",
                    "field": "spec.paramRef.name",
                }
            )
        if ref.get("parameterNotFoundAction") not in ("Allow", "Deny"):
            out.append(
                {
                    "reason": "FieldValueRequired",
                    "message": 'Required value: must be "Allow" or "Deny"',
                    "field": "spec.paramRef.parameterNotFoundAction",
                }
            )
    return out


_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")


def _q(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


# ---------------------------------------------------------------- at admission


def _matches(
    constraints: Any,
    attrs: webhooks.AdmissionAttributes,
    obj: dict[str, Any] | None,
    old: dict[str, Any] | None,
    require_rules: bool = True,
) -> bool:
    if not isinstance(constraints, dict):
        return True
    rules = constraints.get("resourceRules")
    if not isinstance(rules, list) or not rules:
        # A binding's matchResources without rules narrows by its selectors only.
        rules = (
            []
            if require_rules
            else [
                {
                    "operations": ["*"],
                    "apiGroups": ["*"],
                    "apiVersions": ["*"],
                    "resources": ["*/*"],
                }
            ]
        )
    hook = {
        "rules": rules,
        "namespaceSelector": constraints.get("namespaceSelector"),
        "objectSelector": constraints.get("objectSelector"),
    }
    if not webhooks.webhook_matches(hook, attrs, obj, old):
        return False
    excluded = constraints.get("excludeResourceRules")
    if isinstance(excluded, list) and any(webhooks.rule_matches(r, attrs) for r in excluded):
        return False
    return True


class _Refusal(Exception):
    def __init__(self, message: str, reason: str = "Invalid") -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason


def _request(attrs: webhooks.AdmissionAttributes, dry: bool) -> dict[str, Any]:
    res = attrs.resource
    g, v, k = attrs.kind or (res.group, res.version, res.kind)
    kind = {"group": g, "version": v, "kind": k}
    resource = {"group": res.group, "version": res.version, "resource": res.plural}
    return {
        "operation": attrs.operation,
        "name": attrs.name,
        "namespace": attrs.namespace,
        "userInfo": attrs.user_info,
        "kind": kind,
        "resource": resource,
        "subResource": attrs.sub_resource,
        "requestKind": kind,
        "requestResource": resource,
        "requestSubResource": attrs.sub_resource,
        "dryRun": dry,
    }


def _params(
    store: Store, registry: Registry, policy: dict[str, Any], binding: dict[str, Any], ns: str
) -> list[Any] | None:
    """The parameter objects of a binding ([None] for a policy without parameters); None
    when none were found and the binding allows that."""
    kind = (policy.get("spec") or {}).get("paramKind")
    if not isinstance(kind, dict):
        return [None]
    ref = (binding.get("spec") or {}).get("paramRef")
    if not isinstance(ref, dict):
        raise _Refusal("the policy has a paramKind but its binding has no paramRef")
    av = str(kind.get("apiVersion") or "")
    group, _, version = av.rpartition("/")
    res = registry.by_kind(str(kind.get("kind") or ""), group, version or None)
    if res is None:
        raise _Refusal(f"paramKind {av} {kind.get('kind')} is not served")
    pns = str(ref.get("namespace") or (ns if res.namespaced else ""))
    found: list[Any] = []
    if ref.get("name"):
        e = store.get(res.key, make_key(pns if res.namespaced else "", str(ref["name"])))
        if e is not None:
            found.append(e.obj())
    else:
        sel = ref.get("selector")
        for e in store.entries(res.key, Filter(pns if res.namespaced else None)):
            try:
                if sel is None or selector_matches(sel, e.labels or {}):
                    found.append(e.obj())
            except SelectorError:
                raise _Refusal("the binding's paramRef.selector is not valid") from None
    if found:
        return found
    if ref.get("parameterNotFoundAction") == "Allow":
        return None
    target = f"{pns}/{ref['name']}" if ref.get("name") and pns else ref.get("name") or "selector"
    raise _Refusal(
        f"no params found for policy binding with `Deny` parameterNotFoundAction: {target}"
    )


_VARIABLES = ("object", "oldObject", "request", "params", "namespaceObject", "authorizer")


class _Compiled:
    """A policy's programs, made once per stored version of the policy: its validations
    also as one list expression (one conversion of the object for all of them), and the
    variables any of its expressions read (only those are built and converted)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.conditions = [
            (str(mc.get("name") or ""), compile_expr(str(mc.get("expression") or "")))
            for mc in spec.get("matchConditions") or []
            if isinstance(mc, dict)
        ]
        self.variables = [
            (str(v.get("name") or ""), compile_expr(str(v.get("expression") or "")))
            for v in spec.get("variables") or []
            if isinstance(v, dict)
        ]
        self.validations: list[tuple[str, Program, str, Program | None, str]] = []
        for val in spec.get("validations") or []:
            if not isinstance(val, dict):
                continue
            expr = str(val.get("expression") or "")
            me = val.get("messageExpression")
            self.validations.append(
                (
                    expr,
                    compile_expr(expr),
                    str(val.get("message") or ""),
                    compile_expr(me) if isinstance(me, str) and me else None,
                    str(val.get("reason") or "Invalid"),
                )
            )
        self.audit = [
            (str(a.get("key") or ""), compile_expr(str(a.get("valueExpression") or "")))
            for a in spec.get("auditAnnotations") or []
            if isinstance(a, dict)
        ]
        self.combined = None
        if len(self.validations) > 1:
            try:
                self.combined = compile_expr(
                    "[" + ", ".join(f"({v[0]})" for v in self.validations) + "]"
                )
            except CELError:
                self.combined = None
        # Validations whose cost depends on the sizes of what they read (comprehensions,
        # regular expressions): their runtime cost is worked out before they run.
        self.costed = [
            (v[0], tree)
            for v in self.validations
            if (tree := celcost.parse(v[0])) is not None and celcost.size_dependent(tree)
        ]
        reads: set[str] = set()
        for prog in (
            *(p for _, p in self.conditions),
            *(p for _, p in self.variables),
            *(v[1] for v in self.validations),
            *(v[3] for v in self.validations if v[3] is not None),
            *(p for _, p in self.audit),
        ):
            reads |= prog.variables
        self.reads = frozenset(n for n in _VARIABLES if n in reads)


_COMPILED: dict[tuple[str, int], _Compiled] = {}


def _compiled(name: str, rv: int, policy: dict[str, Any]) -> _Compiled:
    c = _COMPILED.get((name, rv))
    if c is None:
        if len(_COMPILED) > 1024:
            _COMPILED.clear()
        try:
            c = _Compiled(policy.get("spec") or {})
        except CELError as exc:
            raise _Refusal(f"the policy's expressions do not compile: {exc}") from None
        _COMPILED[(name, rv)] = c
    return c


def _without_managed_fields(obj: dict[str, Any] | None) -> dict[str, Any] | None:
    """The object as expressions see it: without metadata.managedFields (bookkeeping no
    policy reads, and the largest part of many objects to convert)."""
    if not isinstance(obj, dict):
        return obj
    md = obj.get("metadata")
    if not isinstance(md, dict) or "managedFields" not in md:
        return obj
    return {**obj, "metadata": {k: v for k, v in md.items() if k != "managedFields"}}


def _check_cost(c: _Compiled, variables: dict[str, Any]) -> None:
    """Refuse, as kube-apiserver stops them, validations whose runtime cost on these
    values is over the per-expression limit or the policy's budget, counting what each
    actually runs (celtrace). A validation whose bound on these values (the estimate
    over their sizes) is within the per-expression limit is counted only once such
    bounds together could pass what is left of the budget."""
    shapes = {k: celcost.from_value(v) for k, v in variables.items() if k != "authorizer"}
    left = celcost.RUNTIME_BUDGET
    waiting: list[Any] = []
    bound = 0

    def charge(cost: int) -> None:
        nonlocal left
        if cost > left:
            raise _Refusal(celcost.OUT_OF_BUDGET)
        left -= cost

    for expr, tree in c.costed:
        b = celcost.runtime_bound(tree, shapes)
        if b <= celcost.PER_CALL_LIMIT:
            waiting.append(tree)
            bound += b
            if bound <= left:
                continue
        for t in waiting:
            charge(celtrace.actual_cost(t, variables, left))
        waiting, bound = [], 0
        if b <= celcost.PER_CALL_LIMIT:
            continue
        cost = celtrace.actual_cost(tree, variables, celcost.PER_CALL_LIMIT)
        charge(cost)
        if cost > celcost.PER_CALL_LIMIT:
            raise _Refusal(f"expression '{expr}' resulted in error: {celcost.CALL_LIMIT_ERROR}")


def _evaluate(
    c: _Compiled, variables: dict[str, Any], audit: dict[str, str] | None = None
) -> list[tuple[str, str, int]]:
    """(message, reason, index) of each failed validation, the values of the policy's
    auditAnnotations added to `audit` by key; _Refusal for an evaluation error."""
    for name, prog in c.conditions:
        try:
            if run(prog, variables) is not True:
                return []
        except CELError as exc:
            raise _Refusal(f"failed to evaluate match condition {name!r}: {exc}") from None
    computed: dict[str, Any] = {}
    if c.variables:
        variables["variables"] = computed
        for name, prog in c.variables:
            try:
                computed[name] = run(prog, variables)
            except CELError as exc:
                raise _Refusal(f"failed to evaluate variable {name!r}: {exc}") from None
            variables["variables"] = computed
    if c.costed:
        _check_cost(c, variables)
    results: Any = None
    if c.combined is not None:
        try:
            results = run(c.combined, variables)
        except CELError:
            results = None  # one of them failed: run each, to say which and why
    if type(results) is not list or len(results) != len(c.validations):
        results = []
        for expr, prog, *_ in c.validations:
            try:
                results.append(run(prog, variables))
            except CELError as exc:
                raise _Refusal(f"expression '{expr}' resulted in error: {exc}") from None
    failed = []
    for i, ((expr, _, message, mprog, reason), ok) in enumerate(
        zip(c.validations, results, strict=True)
    ):
        if ok is True:
            continue
        msg = message or f"failed expression: {expr}"
        if mprog is not None:
            try:
                m = message_text(run(mprog, variables))
                if m is not None:
                    msg = m
            except CELError:
                pass
        failed.append((msg, reason, i))
    if audit is not None:
        for key, prog in c.audit:
            try:
                v = run(prog, variables)
            except CELError as exc:
                raise _Refusal(f"failed to evaluate auditAnnotation {key!r}: {exc}") from None
            if v is None:
                continue  # null: no annotation
            if not isinstance(v, str):
                raise _Refusal(
                    f"auditAnnotation {key!r}: valueExpression must evaluate to a string or "
                    f"null, got {type(v).__name__}"
                )
            audit[key] = v[:_AUDIT_VALUE_MAX]
    return failed


async def validate(
    store: Store,
    registry: Registry,
    res: Resource,
    op: str,
    obj: dict[str, Any] | None,
    old: dict[str, Any] | None,
    dry: bool,
    user: dict[str, Any],
    sub: str = "",
    kind: tuple[str, str, str] | None = None,
) -> list[str]:
    """Validating admission of one request (`sub`: the subresource written, as in
    `nodes/status`; `kind`: (group, version, kind) of the objects when not the
    resource's own, as autoscaling/v1 Scale for `deployments/scale`): the warnings to
    send; APIError to refuse."""
    has_policies = next(iter(store.entries(BINDINGS)), None) is not None
    has_hooks = next(iter(store.entries(VALIDATING_WEBHOOKS)), None) is not None
    if not has_policies and not has_hooks:
        return []
    if res.key in _ADMISSION_KINDS:
        return []  # as in kube-apiserver: admission configuration is not admitted by itself
    md = (obj or old or {}).get("metadata") or {}
    ns = str(md.get("namespace") or "") if res.namespaced else ""
    ns_obj = None
    if ns:
        nse = store.get(NAMESPACES, ns)
        ns_obj = nse.obj() if nse is not None else None
    attrs = webhooks.AdmissionAttributes(
        operation=op,
        resource=res,
        sub_resource=sub,
        name=str(md.get("name") or ""),
        namespace=ns,
        user_info=user,
        dry_run=dry,
        namespace_labels=((ns_obj or {}).get("metadata") or {}).get("labels") or {},
        namespace_object=ns_obj,
        kind=kind,
    )
    warnings: list[str] = []
    if has_policies:
        warnings += _policies(store, registry, attrs, obj, old, dry, ns, ns_obj)
    if has_hooks:
        warnings += await _webhooks(store, attrs, obj, old)
    return warnings


def _policies(
    store: Store,
    registry: Registry,
    attrs: webhooks.AdmissionAttributes,
    obj: dict[str, Any] | None,
    old: dict[str, Any] | None,
    dry: bool,
    ns: str,
    ns_obj: dict[str, Any] | None,
) -> list[str]:
    warnings: list[str] = []
    res = attrs.resource
    for be in sorted(store.entries(BINDINGS), key=lambda e: e.name):
        binding = be.obj()
        bspec = binding.get("spec") or {}
        pe = store.get(POLICIES, make_key("", str(bspec.get("policyName") or "")))
        if pe is None:
            continue
        policy = pe.obj()
        pspec = policy.get("spec") or {}
        if not _matches(pspec.get("matchConstraints"), attrs, obj, old):
            continue
        narrow = bspec.get("matchResources")
        if narrow and not _matches(narrow, attrs, obj, old, require_rules=False):
            continue
        actions = bspec.get("validationActions") or ["Deny"]
        who = f"ValidatingAdmissionPolicy '{pe.name}' with binding '{be.name}'"
        try:
            compiled = _compiled(pe.name, pe.rv, policy)
            params = _params(store, registry, policy, binding, ns)
            failed: list[tuple[str, str, int]] = []
            reads = compiled.reads
            base: dict[str, Any] = {}
            if "object" in reads:
                base["object"] = (
                    _without_managed_fields(obj) if attrs.operation != "DELETE" else None
                )
            if "oldObject" in reads:
                base["oldObject"] = _without_managed_fields(old)
            if "request" in reads:
                base["request"] = _request(attrs, dry)
            if "namespaceObject" in reads:
                base["namespaceObject"] = _without_managed_fields(ns_obj)
            if "authorizer" in reads:
                base["authorizer"] = celauthz.value(
                    requestctx.user(),
                    {
                        "group": res.group,
                        "resource": res.plural,
                        "subresource": attrs.sub_resource,
                        "namespace": attrs.namespace,
                        "name": attrs.name,
                    },
                )
            annotations: dict[str, str] = {}
            for p in params or ():
                variables = dict(base)
                if "params" in reads:
                    variables["params"] = _without_managed_fields(p)
                failed += _evaluate(compiled, variables, annotations)
            for key, v in annotations.items():
                requestctx.annotate_audit(f"{pe.name}/{key}", v)
        except _Refusal as exc:
            if pspec.get("failurePolicy", "Fail") == "Ignore":
                continue
            failed = [(exc.message, "Invalid", -1)]
        for msg, reason, index in failed:
            text = f"{who} denied request: {msg}"
            if "Audit" in actions:
                _audit_failure(pe.name, be.name, msg, index, actions)
            if "Warn" in actions:
                warnings.append(f"Validation failed for {who}: {msg}")
            if "Deny" in actions:
                raise _denied(res, attrs.name, text, reason)
    return warnings


_AUDIT_VALUE_MAX = 10 * 1024
VALIDATION_FAILURE = "validation.policy.admission.k8s.io/validation_failure"


def _audit_failure(policy: str, binding: str, msg: str, index: int, actions: list[str]) -> None:
    """A failed validation of a binding with the Audit action, in the request's audit
    event as kube-apiserver writes it: one annotation holding a JSON list of failures."""
    acc = requestctx.AUDIT_ANNOTATIONS.get()
    if acc is None:
        return
    items = orjson.loads(acc[VALIDATION_FAILURE]) if VALIDATION_FAILURE in acc else []
    item: dict[str, Any] = {"message": msg, "policy": policy, "binding": binding}
    if index >= 0:
        item["expressionIndex"] = index
    item["validationActions"] = list(actions)
    items.append(item)
    acc[VALIDATION_FAILURE] = orjson.dumps(items).decode()


def _denied(res: Resource, name: str, message: str, reason: str) -> APIError:
    code = _REASON_CODES.get(reason, 422)
    if code == 422:
        err = invalid(
            res.kind,
            name,
            [{"reason": "FieldValueInvalid", "message": message, "field": ""}],
            res.group,
        )
        return err
    gr = res.group_resource
    return APIError(
        code,
        reason,
        f'{gr} "{name}" is forbidden: {message}' if code == 403 else message,
        {"name": name, "group": res.group, "kind": res.plural},
    )


async def _webhooks(
    store: Store,
    attrs: webhooks.AdmissionAttributes,
    obj: dict[str, Any] | None,
    old: dict[str, Any] | None,
) -> list[str]:
    configs = [e.obj() for e in store.entries(VALIDATING_WEBHOOKS)]
    hooks = webhooks.matching_webhooks(configs, attrs, obj, old)
    if not hooks:
        return []
    results = await asyncio.gather(
        *(webhooks.validate_one(h, attrs, obj, old) for h in hooks), return_exceptions=True
    )
    warnings: list[str] = []
    for r in results:
        if isinstance(r, webhooks.AdmissionDenied):
            code = r.code or 403
            reason = {400: "BadRequest", 403: "Forbidden", 422: "Invalid", 500: "InternalError"}
            raise APIError(code, reason.get(code, "Forbidden"), r.message or str(r))
        if isinstance(r, BaseException):
            raise r
        warnings.extend(r)
    return warnings
