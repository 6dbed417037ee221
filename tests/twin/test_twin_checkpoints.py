"""The twin's checkpoints: each job's first pod says when the job last checkpointed, so
preemption picks its victims as the live scheduler does (least work lost since the
last checkpoint first, gpuyard.scheduling.preemption), and the report counts the
GPU-hours lost to preemption apart.

Two low-priority 2-node gangs that checkpoint hourly fill 4 nodes: `a-early` from 0
(last checkpoint at 7,200 s), `b-late` from 3,000 s (last at 6,600 s). At 7,500 s a
high-priority 2-node gang arrives and one of them must go. Evicting a loses 300 s on
16 GPUs, evicting b 900 s. Told only when each started (plain: no pod says when it
checkpointed), preemption takes b, which has run for less time (4,500 s against
7,500 s); told the checkpoints, a."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpuyard import names
from gpuyard.cli import main
from gpuyard.cluster.shapes import default_shapes, expand
from gpuyard.twin.engine import Engine
from gpuyard.twin.report import metrics
from gpuyard.twin.traces import TraceJob, write_trace

PRIO_LOW = names.PRIORITY_CLASSES[names.PRIORITY_LOW]
PRIO_HIGH = names.PRIORITY_CLASSES[names.PRIORITY_HIGH]


def jobs(checkpoint: float = 3600.0) -> list[TraceJob]:
    gang = {"replicas": 2, "gpus": 8, "checkpoint": checkpoint}
    return [
        TraceJob("a-early", 0, 20_000, priority=PRIO_LOW, **gang),  # type: ignore[arg-type]
        TraceJob("b-late", 3000, 20_000, priority=PRIO_LOW, **gang),  # type: ignore[arg-type]
        TraceJob("c-urgent", 7500, 1000, replicas=2, gpus=8, priority=PRIO_HIGH),
    ]


def replay(victims: str) -> tuple[dict[str, int], float]:
    res = Engine(expand(default_shapes(4)), jobs(), "gpuyard", victims=victims).run()
    return {r.job.name: r.preemptions for r in res.jobs}, metrics(res)["preemption_lost_gpu_hours"]


def test_checkpoint_aware_victims_lose_fewer_gpu_hours_than_the_plain_choice() -> None:
    plain, plain_lost = replay("plain")
    aware, aware_lost = replay("checkpoint")
    assert plain == {"a-early": 0, "b-late": 1, "c-urgent": 0}
    assert aware == {"a-early": 1, "b-late": 0, "c-urgent": 0}
    assert plain_lost == round(16 * 900 / 3600, 3)  # 4.0
    assert aware_lost == round(16 * 300 / 3600, 3)  # 1.333
    assert aware_lost < plain_lost


def test_the_replay_flags_set_the_interval_and_the_json_reports_the_loss(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = tmp_path / "jobs.jsonl"
    write_trace(jobs(checkpoint=0.0), str(trace))  # the trace says no interval
    got = {}
    for victims in ("checkpoint", "plain"):
        out = tmp_path / victims
        argv = ["twin", "--cluster", "nodes:4", "--trace", str(trace), "--out", str(out)]
        argv += ["--checkpoint-interval", "1h", "--victims", victims, "--quiet"]
        assert main(argv) == 0
        got[victims] = json.loads((out / "metrics.json").read_text())
    assert got["checkpoint"]["preemption_lost_gpu_hours"] == 1.333
    assert got["plain"]["preemption_lost_gpu_hours"] == 4.0
    assert got["checkpoint"]["preemptions"] == got["plain"]["preemptions"] == 1
    capsys.readouterr()


def test_a_bad_checkpoint_interval_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["twin", "--cluster", "nodes:4", "--trace", "x", "--out", "y"]
             + ["--checkpoint-interval", "10"])  # fmt: skip
    assert exc.value.code == 2
    assert "not a duration: '10'" in capsys.readouterr().err
