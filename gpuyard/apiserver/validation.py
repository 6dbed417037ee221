"""Validation of objects before they are stored: a list of causes, empty when valid.

Causes are Kubernetes-shaped (`{"reason", "message", "field"}`, field as a JSON path
like `spec.containers[0].image`) and become a 422 Invalid Status. Covered: object
names (DNS-1123 subdomain, or label for namespaces and services), label keys and
values and annotation keys (in kube-apiserver's words, naming the map), pods' containers and resource quantities, node capacity quantities, and for
custom resources their CRD's openAPIV3Schema (type, required, properties,
additionalProperties, items, enum, minimum/maximum, minLength/maxLength, pattern,
minItems/maxItems, x-kubernetes-int-or-string, x-kubernetes-preserve-unknown-fields).
Fields a custom resource's schema does not know are pruned before validation, by the
request's fieldValidation (`schemas.decode`); `schema_errors` reports them when asked
(client-side checks such as `gpuyard submit`), so a typo such as `replcas` is an error.
"""

from __future__ import annotations

import re
from typing import Any

from gpuyard.apiserver import admission_policy, celrules, strategies, structural
from gpuyard.apiserver.resources import Resource
from gpuyard.apiserver.seen import SeenClean
from gpuyard.k8s.schema_check import Cause, schema_errors
from gpuyard.k8s.schema_check import cause as _cause
from gpuyard.kube.objects import QuantityError, parse_quantity

_DNS1123_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_QUALIFIED = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")


# Label and annotation keys, and label values, seen valid: a cluster uses a few
# thousand distinct ones over and over, so a valid one costs one set lookup. Bounded.
_GOOD_KEYS: set[str] = set()
_GOOD_VALUES: set[str] = set()
_GOOD_MAX = 50_000


def _key_ok(key: str) -> bool:
    if key in _GOOD_KEYS:
        return True
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _DNS1123_SUBDOMAIN.match(prefix)):
        return False
    ok = 0 < len(name) <= 63 and bool(_QUALIFIED.match(name))
    if ok and len(_GOOD_KEYS) < _GOOD_MAX:
        _GOOD_KEYS.add(key)
    return ok


def _label_value_ok(v: str) -> bool:
    if v in _GOOD_VALUES:
        return True
    ok = len(v) <= 63 and bool(_LABEL_VALUE.match(v))
    if ok and len(_GOOD_VALUES) < _GOOD_MAX:
        _GOOD_VALUES.add(v)
    return ok


def _go_quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _regex_error(msg: str, fmt: str, *examples: str) -> str:
    """kube's wording of a value that does not match its pattern."""
    shown = " or ".join(f"'{e}', " for e in examples)
    return f"{msg} (e.g. {shown}regex used for validation is '{fmt}')"


_QUALIFIED_MSG = (
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end "
    "with an alphanumeric character"
)
_QUALIFIED_FMT = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
    "'-' or '.', and must start and end with an alphanumeric character"
)
_SUBDOMAIN_FMT = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
_LABEL_VALUE_MSG = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' "
    "or '.', and must start and end with an alphanumeric character"
)


def qualified_name_errors(value: str) -> list[str]:
    """Why `value` is not a qualified name (a label or annotation key), in kube's
    words: an optional DNS subdomain prefix and '/', then a name of at most 63
    characters."""
    parts = value.split("/")
    errs: list[str] = []
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            errs.append("prefix part must be non-empty")
        else:
            if len(prefix) > 253:
                errs.append("prefix part must be no more than 253 characters")
            if not _DNS1123_SUBDOMAIN.match(prefix):
                errs.append(
                    "prefix part " + _regex_error(_SUBDOMAIN_MSG, _SUBDOMAIN_FMT, "example.com")
                )
    else:
        return [
            "a qualified name "
            + _regex_error(_QUALIFIED_MSG, _QUALIFIED_FMT, "MyName", "my.name", "123-abc")
            + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
        ]
    if not name:
        errs.append("name part must be non-empty")
    elif len(name) > 63:
        errs.append("name part must be no more than 63 characters")
    if not _QUALIFIED.match(name):
        errs.append(
            "name part "
            + _regex_error(_QUALIFIED_MSG, _QUALIFIED_FMT, "MyName", "my.name", "123-abc")
        )
    return errs


def label_value_errors(value: str) -> list[str]:
    errs: list[str] = []
    if len(value) > 63:
        errs.append("must be no more than 63 characters")
    if not _LABEL_VALUE.match(value):
        errs.append(
            _regex_error(_LABEL_VALUE_MSG, f"({_QUALIFIED_FMT})?", "MyValue", "my_value", "12345")
        )
    return errs


def _metadata(res: Resource, obj: dict[str, Any]) -> list[Cause]:
    out: list[Cause] = []
    md = obj.get("metadata") or {}
    if not isinstance(md, dict):
        return [_cause("metadata", "must be an object")]
    out += strategies.name_causes(res, md)
    out += strategies.annotation_causes(md)
    for section in ("labels", "annotations"):
        items = md.get(section)
        if items is None:
            continue
        if not isinstance(items, dict):
            out.append(_cause(f"metadata.{section}", "must be a map of strings"))
            continue
        labels = section == "labels"
        for k, v in items.items():
            if not isinstance(k, str) or not _key_ok(k if labels else k.lower()):
                # kube checks an annotation's key in lower case, and names the map
                key = str(k)
                for msg in qualified_name_errors(key if labels else key.lower()) or [""]:
                    out.append(
                        _cause(f"metadata.{section}", f"Invalid value: {_go_quote(key)}: {msg}")
                    )
            if not isinstance(v, str):
                out.append(_cause(f"metadata.{section}.{k}", "must be a string"))
            elif labels and not _label_value_ok(v):
                for msg in label_value_errors(v):
                    out.append(_cause("metadata.labels", f"Invalid value: {_go_quote(v)}: {msg}"))
    return out


def _quantities(values: Any, field: str) -> list[Cause]:
    if values is None:
        return []
    if not isinstance(values, dict):
        return [_cause(field, "must be a map of resource quantities")]
    out = []
    for k, v in values.items():
        try:
            parse_quantity(v)
        except QuantityError as exc:
            out.append(_cause(f"{field}.{k}", f"Invalid value: {v!r}: {exc}"))
    return out


# PodSpecs found valid, by field and encoding (`_pod_spec` is a function of the two).
_GOOD_SPECS = SeenClean()


def _pod_spec(spec: Any, field: str) -> list[Cause]:
    key = SeenClean.key(field, spec)
    if key in _GOOD_SPECS:
        return []
    out = _pod_spec_causes(spec, field)
    if not out:
        _GOOD_SPECS.add(key)
    return out


def _pod_spec_causes(spec: Any, field: str) -> list[Cause]:
    if not isinstance(spec, dict):
        return [_cause(field, "Required value", "FieldValueRequired")]
    out: list[Cause] = []
    containers = spec.get("containers")
    if not isinstance(containers, list) or not containers:
        out.append(_cause(f"{field}.containers", "Required value", "FieldValueRequired"))
        containers = []
    for kind in ("initContainers", "containers"):
        seen: set[str] = set()
        listed = spec.get(kind) or []
        if not isinstance(listed, list):
            out.append(_cause(f"{field}.{kind}", "must be a list"))
            continue
        for i, c in enumerate(listed):
            f = f"{field}.{kind}[{i}]"
            if not isinstance(c, dict):
                out.append(_cause(f, "must be an object"))
                continue
            name = c.get("name")
            if not isinstance(name, str) or not name:
                out.append(_cause(f"{f}.name", "Required value", "FieldValueRequired"))
            elif not _DNS1123_LABEL.match(name):
                out.append(
                    _cause(f"{f}.name", f"Invalid value: {name!r}: must be a DNS-1123 label")
                )
            elif name in seen:
                out.append(_cause(f"{f}.name", f"Duplicate value: {name!r}", "FieldValueDuplicate"))
            else:
                seen.add(name)
            if not c.get("image"):
                out.append(_cause(f"{f}.image", "Required value", "FieldValueRequired"))
            res = c.get("resources") or {}
            if isinstance(res, dict):
                out += _quantities(res.get("requests"), f"{f}.resources.requests")
                out += _quantities(res.get("limits"), f"{f}.resources.limits")
    return out


def validate_object(
    resource: Resource, obj: dict[str, Any], old: dict[str, Any] | None
) -> list[Cause]:
    out = _metadata(resource, obj)
    if resource.custom:
        if resource.schema:
            out += schema_errors(resource.schema, obj, "", top=True, unknown=False)
            if not out:
                out += celrules.validate(resource, obj, old)
        return out
    out += strategies.validate(resource, obj, old)
    if resource.kind == "Pod":
        out += _pod_spec(obj.get("spec"), "spec")
    elif resource.kind in ("Deployment", "DaemonSet"):
        spec = obj.get("spec")
        tpl = spec.get("template") if isinstance(spec, dict) else None
        if isinstance(tpl, dict):
            out += _pod_spec(tpl.get("spec"), "spec.template.spec")
    elif resource.kind == "Node":
        st = obj.get("status") or {}
        if isinstance(st, dict):
            out += _quantities(st.get("capacity"), "status.capacity")
            out += _quantities(st.get("allocatable"), "status.allocatable")
    elif resource.kind == "CustomResourceDefinition":
        out += validate_crd(obj)
    elif resource.key == admission_policy.POLICIES:
        out += admission_policy.policy_causes(obj)
    elif resource.key == admission_policy.BINDINGS:
        out += admission_policy.binding_causes(obj)
    return out


def _conversion_causes(conv: Any) -> list[Cause]:
    """spec.conversion as kube-apiserver judges it (its internal form names the
    webhook's clientConfig spec.conversion.webhookClientConfig)."""
    if not isinstance(conv, dict):
        return []
    out: list[Cause] = []
    strategy = conv.get("strategy")
    hook = conv.get("webhook") if isinstance(conv.get("webhook"), dict) else None
    cfg = (hook or {}).get("clientConfig")
    versions = (hook or {}).get("conversionReviewVersions") or []
    if strategy not in ("None", "Webhook"):
        out.append(
            _cause(
                "spec.conversion.strategy",
                f'Unsupported value: "{strategy}": supported values: "None", "Webhook"',
                "FieldValueNotSupported",
            )
        )
    elif strategy == "Webhook":
        if not isinstance(cfg, dict):
            out.append(
                _cause(
                    "spec.conversion.webhookClientConfig",
                    "Required value: required when strategy is set to Webhook",
                    "FieldValueRequired",
                )
            )
        elif ("url" in cfg) == ("service" in cfg):
            out.append(
                _cause(
                    "spec.conversion.webhookClientConfig",
                    "Required value: exactly one of url or service is required",
                    "FieldValueRequired",
                )
            )
        if not versions:
            out.append(
                _cause(
                    "spec.conversion.conversionReviewVersions",
                    "Required value: must contain at least one version",
                    "FieldValueRequired",
                )
            )
        elif not any(v in ("v1", "v1beta1") for v in versions):
            out.append(
                _cause(
                    "spec.conversion.conversionReviewVersions",
                    f"Invalid value: {_go_list(versions)}: must include at least one of v1, "
                    "v1beta1",
                )
            )
    else:
        if cfg is not None:
            out.append(
                _cause(
                    "spec.conversion.webhookClientConfig",
                    "Forbidden: should not be set when strategy is not set to Webhook",
                    "FieldValueForbidden",
                )
            )
        if versions:
            out.append(
                _cause(
                    "spec.conversion.conversionReviewVersions",
                    "Forbidden: should not be set when strategy is not set to Webhook",
                    "FieldValueForbidden",
                )
            )
    return out


def _go_list(values: list[Any]) -> str:
    return "[]string{" + ", ".join(_go_quote(str(v)) for v in values) + "}"


def validate_crd(crd: dict[str, Any]) -> list[Cause]:
    out: list[Cause] = []
    spec = crd.get("spec")
    if not isinstance(spec, dict):
        return [_cause("spec", "Required value", "FieldValueRequired")]
    group = spec.get("group")
    names = spec.get("names") or {}
    if not group or not isinstance(group, str) or "." not in group:
        out.append(
            _cause(
                "spec.group", f"Invalid value: {group!r}: should be a domain with at least one dot"
            )
        )
    plural = names.get("plural") if isinstance(names, dict) else None
    if not plural or not isinstance(names, dict) or not names.get("kind"):
        out.append(_cause("spec.names", "Required value: plural and kind", "FieldValueRequired"))
    elif group and (crd.get("metadata") or {}).get("name") != f"{plural}.{group}":
        out.append(
            _cause(
                "metadata.name",
                f'Invalid value: must be spec.names.plural+"."+spec.group ({plural}.{group})',
            )
        )
    if spec.get("scope") not in ("Namespaced", "Cluster"):
        out.append(
            _cause(
                "spec.scope",
                f'Unsupported value: {spec.get("scope")!r}: supported values: "Cluster", "Namespaced"',
                "FieldValueNotSupported",
            )
        )
    out += _conversion_causes(spec.get("conversion"))
    out += structural.crd_schema_causes(spec)
    versions = spec.get("versions")
    for path, oas in structural.schema_paths(spec):
        if isinstance(oas, dict):
            out += celrules.schema_rule_causes(oas, path)
    if not isinstance(versions, list) or not versions:
        out.append(_cause("spec.versions", "Required value", "FieldValueRequired"))
    elif sum(1 for v in versions if isinstance(v, dict) and v.get("storage")) != 1:
        out.append(
            _cause(
                "spec.versions",
                "Invalid value: must have exactly one version marked as storage version",
            )
        )
    return out
