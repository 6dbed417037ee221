"""gpuyard.apiserver.validation: names, labels, pods, nodes, CRDs and custom resources
against their openAPIV3Schema; and that no JSON makes it raise."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpuyard.apiserver.resources import Registry, Resource, resources_from_crd
from gpuyard.apiserver.validation import schema_errors, validate_crd, validate_object

from .api import Api, crd

REG = Registry()


def res(plural: str, group: str = "", version: str = "v1") -> Resource:
    r = REG.get(group, version, plural)
    assert r is not None
    return r


PODS, NODES, NAMESPACES, SERVICES, CONFIGMAPS = (
    res(p) for p in ("pods", "nodes", "namespaces", "services", "configmaps")
)
CRDS = res("customresourcedefinitions", "apiextensions.k8s.io")
DEPLOYMENTS = res("deployments", "apps")

CRD: dict[str, Any] = crd(
    "Widget",
    {
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "required": ["size"],
                "properties": {
                    "size": {"type": "integer", "minimum": 1, "maximum": 10},
                    "color": {"type": "string", "enum": ["red", "blue"]},
                    "tag": {
                        "type": "string",
                        "pattern": "^[a-z]+$",
                        "maxLength": 5,
                    },
                    "port": {"x-kubernetes-int-or-string": True},
                    "items": {
                        "type": "array",
                        "maxItems": 2,
                        "items": {"type": "string", "minLength": 2},
                    },
                    "extra": {
                        "type": "object",
                        "x-kubernetes-preserve-unknown-fields": True,
                    },
                },
            }
        },
    },
)
WIDGETS = resources_from_crd(CRD)[0]


def fields(causes: list[dict[str, Any]]) -> list[str]:
    return [c["field"] for c in causes]


def obj(name: str = "ok", **extra: Any) -> dict[str, Any]:
    return {"metadata": {"name": name}, **extra}


GOOD_POD: dict[str, Any] = {"spec": {"containers": [{"name": "c", "image": "x"}]}}


@pytest.mark.parametrize(
    ("resource", "name", "ok"),
    [
        (CONFIGMAPS, "a.b-c", True),
        (CONFIGMAPS, "Upper", False),
        (CONFIGMAPS, "under_score", False),
        (CONFIGMAPS, "-lead", False),
        (CONFIGMAPS, "a" * 253, True),
        (CONFIGMAPS, "a" * 254, False),
        (NAMESPACES, "team-a", True),
        (NAMESPACES, "a.b", False),
        (NAMESPACES, "a" * 64, False),
        (SERVICES, "svc.x", False),
        (NODES, "gpu-1.rack-2", True),
    ],
)
def test_names(resource: Resource, name: str, ok: bool) -> None:
    o = obj(name, **(GOOD_POD if resource is PODS else {}))
    causes = validate_object(resource, o, None)
    assert (causes == []) is ok, causes
    if not ok:
        assert fields(causes) == ["metadata.name"]
        assert causes[0]["reason"] == "FieldValueInvalid" and name[:20] in causes[0]["message"]


def test_labels_and_annotations() -> None:
    good = {"gpuyard.io/team": "vision", "app": "", "a_b.c-d": "x_y.z-1"}
    assert validate_object(CONFIGMAPS, {"metadata": {"name": "c", "labels": good}}, None) == []
    for labels in (
        {"bad key": "v"},
        {"-lead": "v"},
        {"UPPER.example.com/x": "v"},
        {"a": "bad value"},
        {"a": "x" * 64},
        {"a": 1},
        {"a" * 64: "v"},
    ):
        causes = validate_object(CONFIGMAPS, {"metadata": {"name": "c", "labels": labels}}, None)
        assert causes and all(c["field"].startswith("metadata.labels") for c in causes), labels
    # annotation values are free text, keys are checked like label keys
    note = {"metadata": {"name": "c", "annotations": {"note": "any text, even spaces!"}}}
    assert validate_object(CONFIGMAPS, note, None) == []
    bad_key = {"metadata": {"name": "c", "annotations": {"no spaces": "x"}}}
    assert fields(validate_object(CONFIGMAPS, bad_key, None)) == ["metadata.annotations"]


def test_pods() -> None:
    assert validate_object(PODS, obj(**GOOD_POD), None) == []
    missing = validate_object(PODS, obj(spec={}), None)
    assert missing[0]["field"] == "spec.containers" and missing[0]["reason"] == "FieldValueRequired"
    causes = validate_object(
        PODS,
        obj(
            spec={
                "containers": [
                    {"name": "c", "resources": {"limits": {"cpu": "lots", "memory": "1Gi"}}},
                    {"name": "c", "image": "x", "resources": {"requests": {"nvidia.com/gpu": "1"}}},
                    {"image": "x"},
                ]
            }
        ),
        None,
    )
    assert set(fields(causes)) == {
        "spec.containers[0].image",
        "spec.containers[0].resources.limits.cpu",
        "spec.containers[1].name",
        "spec.containers[2].name",
    }


def test_node_quantities() -> None:
    good = obj(status={"capacity": {"cpu": "8", "memory": "64Gi", "nvidia.com/gpu": "8"}})
    assert validate_object(NODES, good, None) == []
    bad = obj(status={"allocatable": {"memory": "64 GiB"}})
    assert fields(validate_object(NODES, bad, None)) == ["status.allocatable.memory"]


def widget(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {"name": "w"},
        "spec": spec,
    }


def test_custom_resource_schema() -> None:
    ok = widget(size=3, color="red", tag="abc", port="http", items=["ab"], extra={"any": [1]})
    assert validate_object(WIDGETS, ok, None) == []
    assert validate_object(WIDGETS, widget(size=1, port=8080), None) == []
    cases = [
        (widget(), "spec.size", "FieldValueRequired"),
        (widget(size="3"), "spec.size", "FieldValueTypeInvalid"),
        (widget(size=True), "spec.size", "FieldValueTypeInvalid"),
        (widget(size=0), "spec.size", "FieldValueInvalid"),
        (widget(size=11), "spec.size", "FieldValueInvalid"),
        (widget(size=1, color="green"), "spec.color", "FieldValueNotSupported"),
        (widget(size=1, tag="ABC"), "spec.tag", "FieldValueInvalid"),
        (widget(size=1, tag="abcdef"), "spec.tag", "FieldValueTooLong"),
        (widget(size=1, port=1.5), "spec.port", "FieldValueTypeInvalid"),
        (widget(size=1, items=["a"]), "spec.items[0]", "FieldValueInvalid"),
        (widget(size=1, items=["ab", "cd", "ef"]), "spec.items", "FieldValueTooMany"),
    ]
    for o, field, reason in cases:
        causes = validate_object(WIDGETS, o, None)
        assert [(c["field"], c["reason"]) for c in causes] == [(field, reason)], (o, causes)
    # Unknown fields are the decoder's (pruned or refused by fieldValidation, see
    # test_field_validation.py); client-side schema checks still name them.
    assert validate_object(WIDGETS, widget(size=1, replcas=2), None) == []
    assert fields(schema_errors(WIDGETS.schema or {}, widget(size=1, replcas=2), "", True)) == [
        "spec.replcas"
    ]
    # metadata is checked as for every kind
    bad_name = dict(widget(size=1), metadata={"name": "Bad"})
    assert fields(validate_object(WIDGETS, bad_name, None)) == ["metadata.name"]


def test_crds() -> None:
    assert validate_crd(CRD) == []
    assert validate_object(CRDS, CRD, None) == []

    def broken(**spec: Any) -> dict[str, Any]:
        return {**CRD, "spec": {**CRD["spec"], **spec}}

    assert "spec.group" in fields(validate_crd(broken(group="nodots")))
    assert fields(validate_crd(broken(scope="Everywhere"))) == ["spec.scope"]
    assert fields(validate_crd(broken(versions=[]))) == ["spec.versions"]
    two = [dict(CRD["spec"]["versions"][0]), dict(CRD["spec"]["versions"][0], name="v2")]
    assert fields(validate_crd(broken(versions=two))) == ["spec.versions"]
    renamed = {**CRD, "metadata": {"name": "gadgets.example.com"}}
    assert fields(validate_crd(renamed)) == ["metadata.name"]
    assert fields(validate_crd({"metadata": {"name": "x"}})) == ["spec"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4)
    ),
    max_leaves=20,
)
objects = st.fixed_dictionaries(
    {
        "metadata": st.fixed_dictionaries(
            {"name": st.text(max_size=10)},
            optional={"labels": json_values, "annotations": json_values},
        )
        | json_values
    },
    optional={
        "spec": json_values
        | st.fixed_dictionaries(
            {},
            optional={
                "containers": json_values,
                "initContainers": json_values,
                "template": st.fixed_dictionaries({"spec": json_values}),
            },
        ),
        "status": json_values,
        "kind": json_values,
    },
)


@settings(max_examples=300, deadline=None)
@given(
    resource=st.sampled_from([PODS, NODES, NAMESPACES, CONFIGMAPS, CRDS, WIDGETS, DEPLOYMENTS]),
    o=objects,
)
def test_never_raises_on_arbitrary_json(resource: Resource, o: dict[str, Any]) -> None:
    causes = validate_object(resource, o, None)
    assert isinstance(causes, list)
    for c in causes:
        assert set(c) == {"reason", "message", "field"}
        assert all(isinstance(v, str) for v in c.values())


def test_odd_shapes_are_causes_not_crashes() -> None:
    assert fields(validate_object(CONFIGMAPS, {"metadata": [1]}, None)) == ["metadata"]
    o = obj(spec={"containers": [{"name": "c", "image": "x"}], "initContainers": 5})
    assert fields(validate_object(PODS, o, None)) == ["spec.initContainers"]
    assert validate_object(DEPLOYMENTS, obj(spec=[1]), None) == []


async def test_label_and_annotation_errors_in_kube_apiserver_words(api: Api) -> None:
    """Raw HTTP: a bad label key, label value and annotation key are refused with the
    code, reason, field (the map) and words kube-apiserver gives; an annotation key is
    judged in lower case, as kube judges it; so is a bad name (metadata.name)."""
    cms = "/api/v1/namespaces/default/configmaps"
    name_part = (
        "name part must consist of alphanumeric characters, '-', '_' or '.', and must start "
        "and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or "
        "'123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
    )
    value = (
        "a valid label must be an empty string or consist of alphanumeric characters, '-', "
        "'_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',"
        "  or 'my_value',  or '12345', regex used for validation is "
        "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
    )
    cases = [
        ({"labels": {"bad key": "v"}}, "metadata.labels", f'Invalid value: "bad key": {name_part}'),
        ({"labels": {"a": "bad value"}}, "metadata.labels", f'Invalid value: "bad value": {value}'),
        (
            {"labels": {"a": "x" * 64}},
            "metadata.labels",
            f'Invalid value: "{"x" * 64}": must be no more than 63 characters',
        ),
        (
            {"annotations": {"no spaces": "x"}},
            "metadata.annotations",
            f'Invalid value: "no spaces": {name_part}',
        ),
    ]
    for i, (md, field, message) in enumerate(cases):
        st, err = await api.post(cms, {"metadata": {"name": f"c{i}", **md}})
        assert (st, err["reason"]) == (422, "Invalid"), err
        assert err["details"]["causes"] == [
            {"reason": "FieldValueInvalid", "message": message, "field": field}
        ], err
    st, out = await api.post(
        cms, {"metadata": {"name": "upper", "annotations": {"Example.COM/Note": "x"}}}
    )
    assert st == 201, out
    st, err = await api.post(cms, {"metadata": {"name": "Bad_Name"}})
    assert (st, err["reason"]) == (422, "Invalid"), err
    assert err["details"]["causes"] == [
        {
            "reason": "FieldValueInvalid",
            "message": 'Invalid value: "Bad_Name": a lowercase RFC 1123 subdomain must consist '
            "of lower case alphanumeric characters, '-' or '.', and must start and end with an "
            "alphanumeric character (e.g. 'example.com', regex used for validation is "
            r"'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
            "field": "metadata.name",
        }
    ], err
