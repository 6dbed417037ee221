"""gpuyard.apiserver.managedfields against plain definitions: the FieldsV1 tree of a
set of paths, trees edited in place of rebuilt, the diff of two objects (equal subtrees
skipped) against comparing every field, and a create's tree against its field set."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gpuyard.apiserver import managedfields as mf
from gpuyard.apiserver.resources import Registry

REG = Registry()
PODS = REG.get("", "v1", "pods")
assert PODS is not None

ELEMS = st.sampled_from(["f:a", "f:b", "f:c", 'k:{"name":"x"}', 'v:"y"'])
PATHS = st.sets(st.lists(ELEMS, min_size=1, max_size=4).map(tuple), max_size=12)


@settings(max_examples=300, deadline=None)
@given(PATHS, PATHS, PATHS)
def test_edited_tree_is_the_tree_of_the_edited_set(have: Any, add: Any, remove: Any) -> None:
    add = add - remove
    want = mf.to_fields_v1((have | add) - remove)
    got = mf._edit(mf.to_fields_v1(have), sorted(add), sorted(remove)) or {}
    assert got == want
    assert mf.from_fields_v1(got) == (have | add) - remove


def test_fields_v1_round_trip_marks_members_with_children() -> None:
    paths = {("f:spec",), ("f:spec", "f:replicas"), ("f:metadata", "f:labels", "f:app")}
    tree = mf.to_fields_v1(paths)
    assert tree == {
        "f:metadata": {"f:labels": {"f:app": {}}},
        "f:spec": {".": {}, "f:replicas": {}},
    }
    assert mf.from_fields_v1(tree) == paths


def pod() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "labels": {"a": "1"}, "finalizers": ["x"]},
        "spec": {
            "containers": [
                {
                    "name": "main",
                    "image": "img:1",
                    "env": [{"name": "A", "value": "1"}],
                    "ports": [{"containerPort": 80, "protocol": "TCP"}],
                    "args": ["--a"],
                }
            ],
            "tolerations": [{"key": "t", "operator": "Exists"}],
            "nodeSelector": {"pool": "gpu"},
        },
    }


def _main(o: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in o["spec"]["containers"] if c["name"] == "main")


MUTATIONS = [
    lambda o: o["metadata"]["labels"].update(b="2"),
    lambda o: o["metadata"]["labels"].pop("a", None),
    lambda o: o["metadata"].setdefault("finalizers", []).append("z"),
    lambda o: o["metadata"].pop("finalizers", None),
    lambda o: _main(o).update(image="img:2"),
    lambda o: _main(o)["env"].append({"name": "B", "value": "2"}),
    lambda o: _main(o)["env"].append({"name": "A", "value": "dup"}),
    lambda o: _main(o)["env"].clear(),
    lambda o: _main(o)["args"].append("--b"),
    lambda o: o["spec"]["containers"].append({"name": "side", "image": "s"}),
    lambda o: o["spec"]["containers"].reverse(),
    lambda o: o["spec"]["tolerations"].clear(),
    lambda o: o["spec"].update(nodeSelector="not-a-map"),
    lambda o: o["spec"].pop("nodeSelector", None),
    lambda o: o["spec"].update(hostNetwork=True),
    lambda o: o.update(status={"phase": "Running"}),
]


def _reference(old: dict[str, Any], new: dict[str, Any]) -> tuple[set[Any], set[Any]]:
    before = mf.flatten(PODS, old, None).values
    after = mf.flatten(PODS, new, None).values
    changed = {p for p, v in after.items() if p not in before or before[p] != v}
    changed |= {p for p in before if p not in after}
    return changed, {p for p in before if p not in after}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, len(MUTATIONS) - 1), max_size=5))
def test_diff_is_a_comparison_of_every_field(which: list[int]) -> None:
    old = pod()
    new = copy.deepcopy(old)
    for i in which:
        MUTATIONS[i](new)
    changed, gone = mf.diff(PODS, old, new, None)
    want_changed, want_gone = _reference(old, new)
    assert set(changed) == want_changed
    assert set(gone) == want_gone


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, len(MUTATIONS) - 1), max_size=5))
def test_create_tree_is_the_tree_of_its_fields(which: list[int]) -> None:
    obj = pod()
    for i in which:
        MUTATIONS[i](obj)
    assert mf.tree_of(PODS, obj, None) == mf.to_fields_v1(set(mf.flatten(PODS, obj, None).values))


def test_updates_move_fields_between_managers() -> None:
    obj = pod()
    mf.track_update(PODS, None, obj, "creator", None, "t0")
    new = copy.deepcopy(obj)
    new["metadata"]["labels"]["a"] = "2"
    new["spec"]["containers"][0]["env"] = []
    mf.track_update(PODS, obj, new, "editor", None, "t1")
    entries = {e["manager"]: e for e in new["metadata"]["managedFields"]}
    creator = mf.from_fields_v1(entries["creator"]["fieldsV1"])
    editor = mf.from_fields_v1(entries["editor"]["fieldsV1"])
    assert ("f:metadata", "f:labels", "f:a") in editor
    assert ("f:metadata", "f:labels", "f:a") not in creator
    env_a = ("f:spec", "f:containers", 'k:{"name":"main"}', "f:env", 'k:{"name":"A"}')
    assert not any(p[: len(env_a)] == env_a for p in creator | editor)  # gone: nobody's
    assert entries["editor"]["time"] == "t1" and entries["creator"]["time"] == "t0"
    # A write that changes nothing keeps managedFields as they were.
    again = copy.deepcopy(new)
    mf.track_update(PODS, new, again, "third", None, "t2")
    assert again["metadata"]["managedFields"] == new["metadata"]["managedFields"]
