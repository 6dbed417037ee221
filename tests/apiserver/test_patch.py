"""gpuyard.apiserver.patch: JSON, merge, strategic merge and apply patches, and that bad
patches only ever raise PatchError."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpuyard.apiserver.patch import PatchError, apply_patch, merge_patch, strategic_merge_patch
from gpuyard.apiserver.resources import Registry, Resource

REG = Registry()


def _res(plural: str) -> Resource:
    r = REG.get("", "v1", plural)
    assert r is not None
    return r


PODS = _res("pods")
WIDGETS = Resource("example.com", "v1", "Widget", "widgets", "widget", True, custom=True)

SMP = "application/strategic-merge-patch+json"
MERGE = "application/merge-patch+json"
JSONP = "application/json-patch+json"
APPLY = "application/apply-patch+yaml"


def pod() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "labels": {"a": "1", "b": "2"}, "finalizers": ["x", "y"]},
        "spec": {
            "containers": [
                {
                    "name": "main",
                    "image": "img:1",
                    "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                    "ports": [{"containerPort": 80, "name": "http"}],
                    "volumeMounts": [{"name": "v", "mountPath": "/data"}],
                },
                {"name": "side", "image": "side:1"},
            ],
            "tolerations": [{"key": "t1", "operator": "Exists"}],
        },
        "status": {"conditions": [{"type": "Ready", "status": "False"}]},
    }


def smp(obj: dict[str, Any], p: Any) -> dict[str, Any]:
    return apply_patch(obj, orjson.dumps(p), SMP, PODS)


def test_strategic_merges_lists_by_key() -> None:
    out = smp(
        pod(),
        {
            "spec": {
                "containers": [
                    {"name": "main", "image": "img:2", "env": [{"name": "C", "value": "3"}]}
                ],
                "tolerations": [{"key": "t2", "operator": "Exists"}],
            },
            "status": {"conditions": [{"type": "Ready", "status": "True"}]},
            "metadata": {"finalizers": ["z", "x"]},
        },
    )
    main, side = out["spec"]["containers"]
    assert main["image"] == "img:2" and side == {"name": "side", "image": "side:1"}
    assert [e["name"] for e in main["env"]] == ["A", "B", "C"]
    assert main["ports"] == [{"containerPort": 80, "name": "http"}]
    # tolerations have no merge key: replaced whole
    assert out["spec"]["tolerations"] == [{"key": "t2", "operator": "Exists"}]
    assert out["status"]["conditions"] == [{"type": "Ready", "status": "True"}]
    assert sorted(out["metadata"]["finalizers"]) == ["x", "y", "z"]


def test_strategic_directives() -> None:
    out = smp(
        pod(),
        {
            "metadata": {"labels": {"a": None}, "$deleteFromPrimitiveList/finalizers": ["x"]},
            "spec": {
                "containers": [
                    {"name": "side", "$patch": "delete"},
                    {
                        "name": "main",
                        "env": [{"name": "A", "$patch": "delete"}],
                        "volumeMounts": [{"mountPath": "/logs", "name": "l"}],
                    },
                ],
                "$setElementOrder/containers": [{"name": "main"}],
            },
        },
    )
    assert out["metadata"]["labels"] == {"b": "2"}
    assert out["metadata"]["finalizers"] == ["y"]
    assert [c["name"] for c in out["spec"]["containers"]] == ["main"]
    main = out["spec"]["containers"][0]
    assert [e["name"] for e in main["env"]] == ["B"]
    assert {m["mountPath"] for m in main["volumeMounts"]} == {"/data", "/logs"}
    replaced = smp(
        pod(), {"spec": {"containers": [{"name": "x", "image": "i"}], "$patch": "replace"}}
    )
    assert replaced["spec"] == {"containers": [{"name": "x", "image": "i"}]}


def test_strategic_is_refused_for_custom_resources() -> None:
    with pytest.raises(PatchError) as exc:
        apply_patch({"spec": {}}, b'{"spec":{"a":1}}', SMP, WIDGETS)
    assert exc.value.code == 415
    out = apply_patch({"spec": {"a": 1, "b": [1, 2]}}, b'{"spec":{"b":[3]}}', MERGE, WIDGETS)
    assert out == {"spec": {"a": 1, "b": [3]}}


def test_json_patch_and_errors() -> None:
    ops = [
        {"op": "add", "path": "/metadata/labels/c", "value": "3"},
        {"op": "remove", "path": "/spec/containers/1"},
        {"op": "test", "path": "/metadata/name", "value": "p"},
    ]
    before = pod()
    out = apply_patch(before, orjson.dumps(ops), JSONP, PODS)
    assert out["metadata"]["labels"]["c"] == "3" and len(out["spec"]["containers"]) == 1
    assert before == pod(), "the input object is not modified"
    bad = [
        (b"not json", 400),
        (b'{"op": "add"}', 400),
        (orjson.dumps([{"op": "test", "path": "/metadata/name", "value": "q"}]), 422),
        (orjson.dumps([{"op": "remove", "path": "/nope/x"}]), 422),
        (orjson.dumps([{"op": "frob", "path": "/a"}]), 422),
        (orjson.dumps([{"op": "replace", "path": "", "value": [1]}]), 422),
    ]
    for body, code in bad:
        with pytest.raises(PatchError) as exc:
            apply_patch(pod(), body, JSONP, PODS)
        assert exc.value.code in (code, 400, 422), body
    with pytest.raises(PatchError) as exc:
        apply_patch(pod(), b"{}", "text/plain", PODS)
    assert exc.value.code == 415


def test_server_side_apply_records_manager() -> None:
    body = b"apiVersion: v1\nkind: Pod\nmetadata: {name: p, labels: {c: '3'}}\n"
    out = apply_patch(pod(), body, APPLY, PODS, field_manager="me")
    assert out["metadata"]["labels"] == {"a": "1", "b": "2", "c": "3"}
    (entry,) = out["metadata"]["managedFields"]
    assert entry["manager"] == "me" and entry["operation"] == "Apply"
    assert "f:labels" in orjson.dumps(entry["fieldsV1"]).decode()
    again = apply_patch(out, body, APPLY, PODS, field_manager="me")
    assert len(again["metadata"]["managedFields"]) == 1
    with pytest.raises(PatchError) as exc:
        apply_patch(pod(), b"apiVersion: v1\nkind: Node\n", APPLY, PODS)
    assert exc.value.code == 400
    with pytest.raises(PatchError):
        apply_patch(pod(), b"metadata: [\n  - :", APPLY, PODS)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-100, 100) | st.text(max_size=5),
    lambda kids: (
        st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=3), kids, max_size=3)
    ),
    max_leaves=10,
)
json_objects = st.dictionaries(st.text(max_size=3), json_values, max_size=4)


def _no_nulls(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _no_nulls(x) for k, x in v.items() if x is not None}
    return v


@settings(max_examples=200, deadline=None)
@given(target=json_objects, patch=json_objects)
def test_merge_patch_properties(target: dict[str, Any], patch: dict[str, Any]) -> None:
    keep = copy.deepcopy(target)
    out = merge_patch(target, patch)
    assert target == keep
    # applying the same patch twice changes nothing more (RFC 7386 is idempotent)
    assert merge_patch(out, patch) == out
    # keys set to null are gone; other patch values are there (objects merged)
    for k, v in patch.items():
        if v is None:
            assert k not in out
        elif not isinstance(v, dict):
            assert out[k] == v
    # a patch with no nulls applied to an empty object gives the patch itself
    assert merge_patch({}, _no_nulls(patch)) == _no_nulls(patch)


ops = st.fixed_dictionaries(
    {"op": st.sampled_from(["add", "remove", "replace", "move", "copy", "test", "x"])},
    optional={
        "path": st.sampled_from(["", "/", "/metadata/labels/a", "/spec/containers/0", "/a~1b", 5]),
        "from": st.sampled_from(["/metadata", "/spec/containers/-", "/zz"]),
        "value": json_values,
    },
)


@settings(max_examples=200, deadline=None)
@given(
    body=st.one_of(
        st.lists(ops, max_size=4).map(orjson.dumps),
        json_values.map(orjson.dumps),
        st.binary(max_size=40),
    ),
    ctype=st.sampled_from([JSONP, MERGE, SMP, APPLY]),
)
def test_bad_patches_raise_only_patch_error(body: bytes, ctype: str) -> None:
    before = pod()
    try:
        out = apply_patch(before, body, ctype, PODS, field_manager="m")
    except PatchError as exc:
        assert exc.code in (400, 409, 415, 422) and exc.message
    else:
        assert isinstance(out, dict)
    assert before == pod()


@settings(max_examples=150, deadline=None)
@given(patch=json_objects)
def test_strategic_never_crashes_on_odd_patches(patch: dict[str, Any]) -> None:
    try:
        out = strategic_merge_patch(pod(), {"spec": patch, "metadata": patch}, "Pod")
    except PatchError:
        return
    assert isinstance(out, dict)


def test_applied_yaml_with_a_key_that_is_not_a_string_is_a_bad_request() -> None:
    # YAML allows null or number keys; JSON (and Kubernetes objects) do not: numbers and
    # booleans become their strings, as Kubernetes converts YAML to JSON; null is refused.
    for body in (b"null: 1", b"spec: {null: 1}", b"metadata: {labels: {~: x}}"):
        with pytest.raises(PatchError) as err:
            apply_patch(pod(), body, APPLY, PODS, field_manager="m")
        assert err.value.code == 400 and "key must be a string" in err.value.message
    out = apply_patch(pod(), b"metadata: {labels: {1: x, true: y}}", APPLY, PODS, field_manager="m")
    assert out["metadata"]["labels"]["1"] == "x" and out["metadata"]["labels"]["true"] == "y"
