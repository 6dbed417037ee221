"""The twin replays the nodes' topology: a planner asks "what if our gangs must fit one
NVLink domain" (`gpuyard twin --require-topology nvidia.com/gpu.clique`) and every gang
runs inside one clique, gangs larger than any clique are named as never fitting, and
the waits are told against the unconstrained replay."""

from __future__ import annotations

import json
import random
from collections import defaultdict
from pathlib import Path

import pytest

from gpuyard import names
from gpuyard.cli import main
from gpuyard.cluster.shapes import load_shapes
from gpuyard.scheduling.topology import Request
from gpuyard.twin.engine import Engine
from gpuyard.twin.report import metrics
from gpuyard.twin.traces import TraceJob, write_trace

GB200 = str(Path(__file__).resolve().parents[2] / "examples" / "gb200-nvl72.yaml")
CLIQUE = names.LABEL_CLIQUE


def trays() -> list:  # type: ignore[type-arg]
    return [s for s in load_shapes(GB200) if s.gpu_product == "NVIDIA-GB200"]


def jobs(n: int = 60, seed: int = 3) -> list[TraceJob]:
    rng = random.Random(seed)
    return [
        TraceJob(
            f"j{i}",
            submit=i * 120.0,
            duration=rng.choice([1800.0, 3600.0, 7200.0]),
            replicas=rng.choice([2, 4, 8, 12, 16]),
            gpus=4,
            gpu_model="NVIDIA-GB200",
        )
        for i in range(n)
    ]


def test_every_gang_runs_inside_one_clique_when_required() -> None:
    shapes = trays()
    clique = {s.name: s.clique for s in shapes}
    eng = Engine(
        shapes, jobs(), "gpuyard", record_bindings=True, topology=Request(required=(CLIQUE,))
    )
    res = eng.run()
    assert metrics(res)["finished"] == 60
    assert eng.bindings is not None
    where: dict[str, set[str]] = defaultdict(set)
    for _, pod, node in eng.bindings:
        job_gen = pod.rsplit("-", 1)[0]  # team/job-g<gen>
        where[job_gen].add(clique[node])
    multi = [j for j in where if len(where[j]) > 1]
    assert not multi, multi
    # without the requirement the same trace spans cliques
    free = Engine(shapes, jobs(), "gpuyard", record_bindings=True)
    free.run()
    assert free.bindings is not None
    spans: dict[str, set[str]] = defaultdict(set)
    for _, pod, node in free.bindings:
        spans[pod.rsplit("-", 1)[0]].add(clique[node])
    assert any(len(c) > 1 for c in spans.values())


def test_a_gang_larger_than_any_clique_never_fits() -> None:
    shapes = trays()
    big = [TraceJob("huge", 0, 60, replicas=19, gpus=4, gpu_model="NVIDIA-GB200")]
    # 19 trays fit the cluster (72 of them) ...
    assert metrics(Engine(shapes, big, "gpuyard").run())["finished"] == 1
    # ... but no NVL72 rack (18 trays)
    with pytest.raises(ValueError, match=r"can never run on one nvidia.com/gpu.clique of this"):
        Engine(shapes, big, "gpuyard", topology=Request(required=(CLIQUE,)))
    eng = Engine(
        shapes, big, "gpuyard", topology=Request(required=(CLIQUE,)), skip_never_fitting=True
    )
    assert eng.skipped == 1


def test_twin_cli_require_topology(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = tmp_path / "trace.jsonl"
    write_trace(jobs(20), str(trace))
    out = tmp_path / "out"
    args = ["twin", "--cluster", GB200, "--trace", str(trace), "--quiet"]
    assert main([*args, "--out", str(out), "--require-topology", CLIQUE]) == 0
    assert json.loads((out / "metrics.json").read_text())["finished"] == 20
    assert "--require-topology nvidia.com/gpu.clique" in (out / "report.html").read_text()
    assert (
        main([*args, "--out", str(tmp_path / "o2"), "--require-topology", "example.com/pod"]) != 0
    )
    err = capsys.readouterr().err
    assert "--require-topology example.com/pod: no node of" in err


def test_a_trace_says_which_jobs_must_fit_one_domain(tmp_path: Path) -> None:
    from gpuyard.twin.traces import TraceError, load_trace

    shapes = trays()
    clique = {s.name: s.clique for s in shapes}
    js = jobs(40)
    for j in js[::2]:
        j.required_topology = CLIQUE
    trace = tmp_path / "t.csv"
    write_trace(js, str(trace))
    back = load_trace(str(trace)).jobs
    assert [j.required_topology for j in back] == [j.required_topology for j in js]
    eng = Engine(shapes, back, "gpuyard", record_bindings=True)
    assert metrics(eng.run())["finished"] == 40
    assert eng.bindings is not None
    where: dict[str, set[str]] = defaultdict(set)
    for _, pod, node in eng.bindings:
        where[pod.rsplit("-", 2)[0].split("/", 1)[1]].add(clique[node])
    assert all(len(where[j.name]) == 1 for j in back if j.required_topology)
    # a job of 19 trays that must fit one clique is named as never fitting
    big = [TraceJob("huge", 0, 60, replicas=19, gpus=4, required_topology=CLIQUE)]
    with pytest.raises(ValueError, match="can never run on one nvidia.com/gpu.clique of this"):
        Engine(shapes, big, "gpuyard")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"submit_time": 0, "team": "t", "priority": 0, "replicas": 2, "gpus_per_replica": 4,'
        ' "duration": 5, "checkpoint_interval": 0, "required_topology": "not a key"}\n'
    )
    with pytest.raises(TraceError, match=r"bad.jsonl:1: .*required_topology.*not a node label key"):
        load_trace(str(bad))
