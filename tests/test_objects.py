"""The shared object helpers: quantities, tolerations, selectors, affinity, conditions."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gpuyard.kube import objects as o


@pytest.mark.parametrize(
    ("text", "milli", "whole"),
    [
        ("500m", 500, 1),
        ("2", 2000, 2),
        ("1.5", 1500, 2),
        ("16Gi", 16 * 2**30 * 1000, 16 * 2**30),
        ("1k", 1_000_000, 1000),
        ("1e3", 1_000_000, 1000),
        (8, 8000, 8),
    ],
)
def test_quantities(text: str | int, milli: int, whole: int) -> None:
    assert o.quantity_to_milli(text) == milli
    assert o.quantity_to_int(text) == whole


@pytest.mark.parametrize("bad", ["", "abc", "1.2.3", "5Qi", "--1"])
def test_bad_quantities_are_clear_errors(bad: str) -> None:
    with pytest.raises(o.QuantityError):
        o.parse_quantity(bad)


def test_format_quantity_round_trips() -> None:
    assert o.format_quantity(500, "cpu") == "500m"
    assert o.format_quantity(4000, "cpu") == "4"
    assert o.format_quantity(16 * 2**30) == "16Gi"
    assert o.quantity_to_int(o.format_quantity(3 * 2**20)) == 3 * 2**20


def test_pod_requests_sum_containers_and_take_largest_init() -> None:
    pod = {
        "spec": {
            "containers": [
                {"resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}},
                {"resources": {"limits": {"nvidia.com/gpu": 8, "cpu": "2"}}},
            ],
            "initContainers": [{"resources": {"requests": {"cpu": "4"}}}],
        }
    }
    assert o.pod_requests(pod) == {"cpu": 4000, "memory": 2**30, "nvidia.com/gpu": 8}


TEAM = {"key": "gpuyard.io/team", "value": "vision", "effect": "NoSchedule"}


@pytest.mark.parametrize(
    ("toleration", "ok"),
    [
        ({"key": "gpuyard.io/team", "operator": "Equal", "value": "vision"}, True),
        ({"key": "gpuyard.io/team", "value": "vision", "effect": "NoSchedule"}, True),
        ({"key": "gpuyard.io/team", "value": "speech"}, False),
        ({"key": "gpuyard.io/team", "operator": "Exists"}, True),
        ({"key": "gpuyard.io/team", "operator": "Exists", "effect": "NoExecute"}, False),
        ({"operator": "Exists"}, True),
        ({"key": "other", "operator": "Exists"}, False),
    ],
)
def test_toleration_matching(toleration: dict, ok: bool) -> None:
    assert o.toleration_matches(toleration, TEAM) is ok


def test_untolerated_taints_ignore_prefer_no_schedule() -> None:
    node = {
        "spec": {
            "taints": [
                TEAM,
                {"key": "soft", "effect": "PreferNoSchedule"},
                {"key": "gpuyard.io/unhealthy", "value": "xid-79", "effect": "NoExecute"},
            ]
        }
    }
    left = o.untolerated_taints(node, [{"key": "gpuyard.io/team", "operator": "Exists"}])
    assert [o.taint_str(t) for t in left] == ["gpuyard.io/unhealthy=xid-79:NoExecute"]


def test_with_and_without_taint() -> None:
    taints = o.with_taint([TEAM], "gpuyard.io/preflight", None, "NoSchedule")
    assert [t["key"] for t in taints] == ["gpuyard.io/team", "gpuyard.io/preflight"]
    taints = o.with_taint(taints, "gpuyard.io/team", "speech", "NoSchedule")
    assert o.find_taint({"spec": {"taints": taints}}, "gpuyard.io/team")["value"] == "speech"
    assert o.without_taint(taints, "gpuyard.io/team") == [
        {"key": "gpuyard.io/preflight", "effect": "NoSchedule"}
    ]


@pytest.mark.parametrize(
    ("selector", "labels", "ok"),
    [
        ("a=b", {"a": "b"}, True),
        ("a==b", {"a": "c"}, False),
        ("a!=b", {}, True),
        ("a in (x, y),b", {"a": "y", "b": ""}, True),
        ("a notin (x,y)", {"a": "x"}, False),
        ("!gpuyard.io/team", {"gpuyard.io/team": "v"}, False),
        ("gpuyard.io/pool=gpu,env notin (dev)", {"gpuyard.io/pool": "gpu"}, True),
        ("", {"anything": "x"}, True),
    ],
)
def test_label_selector_strings(selector: str, labels: dict, ok: bool) -> None:
    assert o.requirements_match(o.parse_label_selector(selector), labels) is ok


@pytest.mark.parametrize("bad", ["a in (b", "=b", "a=b=c", "a in ()", "bad key!=x", "a=,"])
def test_bad_label_selectors_raise(bad: str) -> None:
    with pytest.raises(o.SelectorError):
        o.parse_label_selector(bad)


label_keys = st.from_regex(r"\A[a-z][a-z0-9]{0,8}\Z")
label_values = st.from_regex(r"\A[a-z0-9]{1,8}\Z")


@given(
    st.dictionaries(label_keys, label_values, max_size=5),
    st.dictionaries(label_keys, label_values, max_size=5),
)
def test_match_labels_selector_agrees_with_its_string_form(match: dict, labels: dict) -> None:
    selector = {"matchLabels": match}
    expected = all(labels.get(k) == v for k, v in match.items())
    assert o.selector_matches(selector, labels) is expected
    assert (
        o.requirements_match(o.parse_label_selector(o.selector_string(selector)), labels)
        is expected
    )


def test_match_expressions_and_bad_operator() -> None:
    sel = {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a", "b"]}]}
    assert o.selector_matches(sel, {"zone": "a"})
    assert not o.selector_matches(sel, {"zone": "c"})
    with pytest.raises(o.SelectorError):
        o.selector_matches({"matchExpressions": [{"key": "z", "operator": "Near"}]}, {})


def _node(labels: dict, name: str = "n1") -> dict:
    return {"metadata": {"name": name, "labels": labels}}


def test_node_selector_and_required_affinity() -> None:
    pod = {
        "spec": {
            "nodeSelector": {"gpuyard.io/pool": "gpu"},
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {
                                "matchExpressions": [
                                    {
                                        "key": "gpuyard.io/team",
                                        "operator": "In",
                                        "values": ["vision"],
                                    }
                                ]
                            },
                            {
                                "matchExpressions": [
                                    {"key": "gpuyard.io/team", "operator": "DoesNotExist"}
                                ]
                            },
                        ]
                    }
                }
            },
        }
    }
    assert o.node_matches_pod(pod, _node({"gpuyard.io/pool": "gpu", "gpuyard.io/team": "vision"}))
    assert o.node_matches_pod(pod, _node({"gpuyard.io/pool": "gpu"}))
    assert not o.node_matches_pod(
        pod, _node({"gpuyard.io/pool": "gpu", "gpuyard.io/team": "speech"})
    )
    assert not o.node_matches_pod(pod, _node({"gpuyard.io/team": "vision"}))


def test_match_fields_on_node_name_and_gt() -> None:
    term = {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n2"]}]}
    assert o.node_selector_term_matches(term, _node({}, "n2"))
    assert not o.node_selector_term_matches(term, _node({}, "n1"))
    gt = {"matchExpressions": [{"key": "gpus", "operator": "Gt", "values": ["4"]}]}
    assert o.node_selector_term_matches(gt, _node({"gpus": "8"}))
    assert not o.node_selector_term_matches(gt, _node({"gpus": "x"}))


def test_set_condition_moves_transition_time_only_on_status_change() -> None:
    conds, changed = o.set_condition([], "Ready", "True", "KubeletReady", "ok", now="t1")
    assert changed and conds[0]["lastTransitionTime"] == "t1"
    same, changed = o.set_condition(conds, "Ready", "True", "KubeletReady", "ok", now="t2")
    assert not changed and same[0]["lastTransitionTime"] == "t1"
    msg, changed = o.set_condition(conds, "Ready", "True", "KubeletReady", "still ok", now="t3")
    assert changed and msg[0]["lastTransitionTime"] == "t1"
    down, changed = o.set_condition(conds, "Ready", "Unknown", "NodeStatusUnknown", "", now="t4")
    assert changed and down[0]["lastTransitionTime"] == "t4"
    assert o.condition_true({"status": {"conditions": conds}}, "Ready")
    assert not o.condition_true({"status": {"conditions": down}}, "Ready")
