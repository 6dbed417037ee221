"""The digital twin: hand-checked scenarios, the naive policies' deadlock and starvation,
the openb trace replay, and malformed input reported as FILE:LINE."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpuyard.cli import main
from gpuyard.cluster.shapes import default_shapes, expand
from gpuyard.twin.engine import Engine, FailureSpec
from gpuyard.twin.report import metrics
from gpuyard.twin.synth import synth
from gpuyard.twin.traces import TraceError, TraceJob, load_trace

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "traces" / "alibaba-openb"


def nodes(n: int):  # type: ignore[no-untyped-def]
    return expand(default_shapes(n))


def by_name(res):  # type: ignore[no-untyped-def]
    return {r.job.name: r for r in res.jobs}


def test_fifo_queueing_delays_by_hand() -> None:
    # 2 nodes x 8 GPUs. a (8 GPUs, 100 s) at 0, b (8, 50 s) at 0, c (16 GPUs as a gang of 2) at 10.
    jobs = [
        TraceJob("a", 0, 100, gpus=8),
        TraceJob("b", 0, 50, gpus=8),
        TraceJob("c", 10, 30, replicas=2, gpus=8),
        TraceJob("d", 20, 5, gpus=4),
    ]
    res = by_name(Engine(nodes(2), jobs, "gpuyard").run())
    assert res["a"].first_start == 0 and res["b"].first_start == 0
    # c waits for both nodes: b frees one at 50 (held for c), a the other at 100.
    assert res["c"].first_start == 100 and res["c"].end == 130
    # d (5 s) is sure to end before c can start: it backfills onto the node b frees.
    assert res["d"].first_start == 50 and res["d"].end == 55
    # Without known runtimes c's start is unknown and it holds nothing yet (it has not
    # waited starve_after): d takes the freed node all the same, and c still starts at 100.
    res = by_name(Engine(nodes(2), jobs, "gpuyard", runtimes=False).run())
    assert res["c"].first_start == 100 and res["d"].first_start == 50


def test_compare_shows_fifo_deadlock() -> None:
    # Two 3-node gangs arrive together on 4 nodes: pod by pod, each gets 2 nodes and
    # both wait forever for their third; with gangs, one runs, then the other.
    jobs = [TraceJob("g1", 0, 100, replicas=3, gpus=8), TraceJob("g2", 0, 100, replicas=3, gpus=8)]
    fifo = Engine(nodes(4), jobs, "fifo").run()
    m = metrics(fifo)
    assert m["deadlocked_gangs"] == 2 and m["finished"] == 0
    assert all(r.bound == 2 for r in fifo.jobs)
    full = by_name(Engine(nodes(4), jobs, "gpuyard").run())
    assert sorted((full["g1"].first_start, full["g2"].first_start)) == [0, 100]
    assert metrics(Engine(nodes(4), jobs, "gpuyard").run())["deadlocked_gangs"] == 0


def test_gangs_without_reservations_starve_the_big_gang() -> None:
    # A stream of one-node jobs keeps at least one of 4 nodes busy until t=1075;
    # a 4-node gang arriving at t=5 starts at 100 with reservations, only at the end without.
    jobs = [TraceJob(f"s{i:02d}", i * 25.0, 100, gpus=8) for i in range(40)]
    jobs.append(TraceJob("big", 5, 50, replicas=4, gpus=8))
    jobs.sort(key=lambda j: j.submit)
    full = by_name(Engine(nodes(4), jobs, "gpuyard").run())
    assert full["big"].first_start == 100
    naive = by_name(Engine(nodes(4), jobs, "gangs").run())
    assert naive["big"].first_start == 39 * 25 + 100


def test_failure_restarts_gang_from_checkpoint() -> None:
    jobs = [TraceJob("g", 0, 10_000, replicas=2, gpus=8, checkpoint=1000)]
    eng = Engine(nodes(3), jobs, "gpuyard")
    eng._push(2500.0, "fail", "gpu-node-0000")  # a node of the gang fails at 2500
    res = eng.run()
    r = res.jobs[0]
    assert r.restarts == 1
    # Work since the checkpoint at 2000 is lost on 16 GPUs; it restarts on the spare node
    # at once and needs 8000 s more.
    assert r.lost_gpu_s == pytest.approx(500 * 16)
    assert r.end == pytest.approx(2500 + 8000)
    assert res.node_failures + res.xid_faults == 1


def test_failure_spec_parsing() -> None:
    f = FailureSpec.parse("mtbf=30d,xid=0.1,repair=4h,preflight=20m")
    assert (f.mtbf, f.xid, f.repair, f.preflight) == (30 * 86400, 0.1, 4 * 3600, 1200)
    with pytest.raises(ValueError):
        FailureSpec.parse("mtbf=soon")


def test_synth_is_seeded_and_shaped() -> None:
    a = synth(200, 7, 2000, seed=3)
    b = synth(200, 7, 2000, seed=3)
    assert [(j.name, j.submit) for j in a] == [(j.name, j.submit) for j in b]
    assert len(a) == 2000
    huge = [j for j in a if j.name.startswith("huge")]
    assert huge and all(j.replicas >= 20 and j.gpus == 8 and j.duration >= 2 * 86400 for j in huge)
    assert len({j.team for j in a}) >= 4
    res = Engine(nodes(200), a, "gpuyard", FailureSpec.parse("mtbf=30d,xid=0.3")).run()
    m = metrics(res)
    assert m["jobs"] == 2000 and m["finished"] + m["running_at_end"] + m["never_started"] >= 2000
    assert res.node_failures + res.xid_faults > 0


def test_malformed_lines_name_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    p = tmp_path / "jobs.csv"
    p.write_text(
        "submit_time,team,priority,replicas,gpus_per_replica,duration,checkpoint_interval\n"
        "0,a,100,1,8,60,0\n"
        "5,a,100,two,8,60,0\n"
    )
    with pytest.raises(TraceError, match=rf"^{p}:3: "):
        load_trace(str(p))
    j = tmp_path / "jobs.jsonl"
    j.write_text('{"submit_time":0,"team":"a","priority":1,"replicas":1,"gpus_per_replica":1,'
                 '"duration":5,"checkpoint_interval":0}\n{oops\n')  # fmt: skip
    with pytest.raises(TraceError, match=rf"^{j}:2: "):
        load_trace(str(j))
    o = tmp_path / "pods.csv"
    o.write_text(
        "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,"
        "deletion_time,scheduled_time\np0,1000,100,1,1000,,LS,Running,0,100,0\n"
        "p1,1000,100,1,1000,,LS,Running,abc,100,0\n"
    )
    nl = tmp_path / "nodes.csv"
    nl.write_text("sn,cpu_milli,memory_mib,gpu,model\nn0,96000,786432,8,V100M32\n")
    out = tmp_path / "out"
    rc = main(["twin", "--cluster", f"openb:{nl}", "--trace", f"openb:{o}", "--out", str(out)])
    assert rc != 0
    assert f"{o}:3:" in capsys.readouterr().err
    assert not out.exists()


def test_gpuyard_format_via_cli(tmp_path: Path) -> None:
    p = tmp_path / "jobs.csv"
    p.write_text(
        "submit_time,team,priority,replicas,gpus_per_replica,duration,checkpoint_interval,name\n"
        "0,a,100,1,8,60,0,j1\n0,b,100,3,8,60,0,j2\n0,b,100,3,8,60,0,j3\n"
    )
    shapes = tmp_path / "shapes.yaml"
    shapes.write_text(
        "nodes:\n  - name: n\n    count: 4\n    gpus: 8\n    cpu: 64\n    memory: 512Gi\n"
    )
    out = tmp_path / "out"
    rc = main(["twin", "--cluster", str(shapes), "--trace", str(p), "--out", str(out), "--compare",
               "--quiet"])  # fmt: skip
    assert rc == 0
    doc = json.loads((out / "metrics.json").read_text())["compare"]
    assert set(doc) == {"fifo", "gangs", "gpuyard"}
    assert doc["gpuyard"]["finished"] == 3 and doc["gpuyard"]["deadlocked_gangs"] == 0
    # pod by pod, j2 and j3 interleave on 4 nodes; when j1 ends each holds 2 of 3: stuck.
    assert doc["fifo"]["deadlocked_gangs"] == 2 and doc["fifo"]["finished"] == 1
    html = (out / "report.html").read_text()
    assert "<script type='application/json' id='chart-" in html and "Deadlocked gangs" in html
    rows = (out / "jobs.csv").read_text().splitlines()
    assert rows[0].startswith("name,team") and len(rows) == 4


@pytest.mark.parametrize("name", ["jobs.csv", "jobs.jsonl"])
def test_synth_file_replays_on_nodes_n(tmp_path: Path, name: str) -> None:
    """`twin synth` writes CSV or JSON lines by the name, into a folder it makes; the
    twin reads it back on `nodes:N` and every job runs."""
    trace = tmp_path / "new" / "folder" / name
    rc = main(["twin", "synth", "--nodes", "20", "--days", "0.5", "--jobs", "120", "--seed",
               "2", "--out", str(trace)])  # fmt: skip
    assert rc == 0
    first = trace.read_text().splitlines()[0]
    assert first.startswith("name,submit_time") if name.endswith(".csv") else first[0] == "{"
    assert [j.name for j in load_trace(str(trace)).jobs] == [
        j.name for j in synth(20, 0.5, 120, seed=2)
    ]
    out = tmp_path / "out"
    rc = main(["twin", "--cluster", "nodes:20", "--trace", str(trace), "--out", str(out),
               "--quiet"])  # fmt: skip
    assert rc == 0
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["finished"] == doc["jobs"] == 120


def test_bad_cluster_and_unwritable_out_are_clear_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(["twin", "--cluster", "nodes:0", "--trace", "x.csv", "--out", str(tmp_path)])
    assert rc == 2 and "nodes:N" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("")
    rc = main(["twin", "synth", "--jobs", "10", "--out", str(blocker / "jobs.csv")])
    assert rc == 2 and "cannot write" in capsys.readouterr().err


@pytest.mark.skipif(not SHARED.exists(), reason="shared openb traces not present")
def test_openb_default_trace_on_its_node_list(tmp_path: Path) -> None:
    out = tmp_path / "out"
    rc = main(["twin", "--cluster", f"openb:{SHARED / 'openb_node_list_all_node.csv'}",
               "--trace", f"openb:{SHARED / 'openb_pod_list_default.csv'}", "--out", str(out),
               "--quiet"])  # fmt: skip
    assert rc == 0
    m = json.loads((out / "metrics.json").read_text())
    counts = m["trace_counts"]
    assert counts["tasks"] == m["jobs"] > 8000
    assert counts["unscheduled-in-trace"] > 0 and counts["gpu-shared"] > 0
    scheduled_in_trace = counts["tasks"] - counts["unscheduled-in-trace"]
    # every task the trace scheduled is scheduled by the twin too
    assert m["twin_wait_s_same_tasks"]["n"] == m["trace_wait_s"]["n"] == scheduled_in_trace
    assert m["never_started"] == 0
    assert "Twin vs trace queueing delay" in (out / "report.html").read_text()


def test_batch_ticks_delay_decisions_to_the_tick() -> None:
    jobs = [TraceJob("a", 3, 100, gpus=8), TraceJob("b", 12, 10, gpus=8)]
    res = by_name(Engine(nodes(2), jobs, "gpuyard", batch=10).run())
    assert res["a"].first_start == 10 and res["b"].first_start == 20
    assert res["a"].end == 110
