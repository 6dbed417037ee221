"""Team weights on `gpuyard up`: `spec.weight` is checked by the API server (a weight of
0 is refused naming the field), `kubectl get teams` shows each team's weight, its share
of the shared pool and borrowed nodes its pods use, and its fair share; and the
scheduler orders equal-priority work of teams by their weighted share."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

from gpuyard import names
from gpuyard.cluster.testing import ClusterProcess
from gpuyard.kube.resources import TEAMS
from gpuyard.teams.assign import NodeView, TeamSpec, parse_team, plan

ARGS = ["--components", "scheduler,teams"]


def team(name: str, weight: object, gpu: int = 0) -> str:
    return json.dumps(
        {
            "apiVersion": "gpuyard.io/v1alpha1",
            "kind": "Team",
            "metadata": {"name": name},
            "spec": {"namespaces": [f"ns-{name}"], "capacity": {"gpu": gpu}, "weight": weight},
        }
    )


def test_plan_reports_shares_of_shared_nodes_and_fair_shares() -> None:
    teams = [
        parse_team(json.loads(team("a", 1))),
        parse_team(json.loads(team("b", 3))),
    ]
    assert [t.weight for t in teams] == [1.0, 3.0]
    views = [
        NodeView(f"n{i}", {names.LABEL_POOL: "gpu"}, True, None, None, frozenset(pods))
        for i, pods in enumerate([{"a"}, {"a"}, {"a"}, {"b"}])
    ]
    st = plan(teams, views).status
    assert (st["a"].share, st["b"].share) == (0.75, 0.25)
    assert (st["a"].fair_share, st["b"].fair_share) == (0.25, 0.75)
    assert TeamSpec("c", ()).weight == 1.0  # the default


def test_weights_are_checked_and_shown_by_kubectl(
    make_cluster: Callable[..., ClusterProcess],
) -> None:
    c = make_cluster(nodes=4, args=ARGS)
    bad = c.kubectl("apply", "-f", "-", input=team("zero", 0), check=False)
    assert bad.returncode != 0
    assert "spec.weight" in bad.stderr and "must be greater than 0" in bad.stderr, bad.stderr
    bad = c.kubectl("apply", "-f", "-", input=team("word", "lots"), check=False)
    assert bad.returncode != 0 and "spec.weight" in bad.stderr, bad.stderr
    for name, w in (("a", 1), ("b", 3)):
        c.kubectl("create", "namespace", f"ns-{name}")
        c.kubectl("apply", "-f", "-", input=team(name, w))

    async def fair_shares() -> dict[str, float]:
        async with c.client() as k:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                got = {
                    t["metadata"]["name"]: (t.get("status") or {}).get("fairShare")
                    for t in (await k.list(TEAMS))["items"]
                }
                if all(v is not None for v in got.values()):
                    return got
                await asyncio.sleep(0.2)
        raise AssertionError("no fairShare in the teams' status")

    assert asyncio.run(fair_shares()) == {"a": 0.25, "b": 0.75}
    out = c.kubectl("get", "teams").stdout.splitlines()
    head = out[0].split()
    assert {"WEIGHT", "SHARE", "FAIR-SHARE"} <= set(head), out
    rows = {line.split()[0]: dict(zip(head, line.split(), strict=False)) for line in out[1:]}
    assert rows["a"]["WEIGHT"] == "1" and rows["b"]["WEIGHT"] == "3"
    assert rows["a"]["FAIR-SHARE"] == "0.25" and rows["b"]["FAIR-SHARE"] == "0.75"
