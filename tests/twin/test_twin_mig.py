"""MIG in the twin: nodes whose shape says `mig: true` publish their GPUs as
partitionable devices, jobs of a trace claim MIG slices of a profile, and the twin
allocates them with the policy's own counter bookkeeping, as the live scheduler does."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpuyard.cluster.shapes import NodeShape
from gpuyard.twin.engine import Engine
from gpuyard.twin.traces import TraceError, TraceJob, load_trace, write_trace

H200 = "NVIDIA-H200-141GB-HBM3"


def test_mig_slices_share_a_gpu_by_its_counters_and_a_whole_gpu_waits() -> None:
    """One H200: a 4g and a 3g slice take all 8 of its memory slices, so a 1g slice
    (one of seven free 1g devices) waits for them by the counters, and a whole GPU
    waits for every slice of it to be given back."""
    shape = NodeShape("h200-0", 96_000, 2**40, 1, H200, mig=True)
    jobs = [
        TraceJob("a-4g", 0.0, 100.0, mig_profile="4g.71gb", mig_slices=1),
        TraceJob("b-3g", 0.0, 100.0, mig_profile="3g", mig_slices=1),
        TraceJob("c-1g", 0.0, 10.0, mig_profile="1g", mig_slices=1),
        TraceJob("d-gpu", 0.0, 10.0, gpus=1),
    ]
    res = Engine([shape], jobs, "gpuyard").run()
    start = {r.job.name: r.first_start for r in res.jobs}
    # c first (it came first), then the whole GPU once c's slice is given back
    assert start == {"a-4g": 0.0, "b-3g": 0.0, "c-1g": 100.0, "d-gpu": 110.0}
    # seven 1g jobs fill the GPU's seven compute slices; an eighth waits for one
    jobs = [TraceJob(f"s{i}", 0.0, 50.0, mig_profile="1g", mig_slices=1) for i in range(8)]
    res = Engine([shape], jobs, "gpuyard").run()
    assert sorted(r.first_start for r in res.jobs) == [0.0] * 7 + [50.0]


def test_a_trace_carries_mig_requests_and_without_mig_nodes_they_never_fit(
    tmp_path: Path,
) -> None:
    jobs = [TraceJob("m", 0.0, 10.0, replicas=2, mig_profile="2g.35gb", mig_slices=3)]
    path = tmp_path / "t.csv"
    write_trace(jobs, path)
    back = load_trace(str(path)).jobs
    assert [(j.mig_profile, j.mig_slices) for j in back] == [("2g.35gb", 3)]
    plain = NodeShape("h200-0", 96_000, 2**40, 8, H200)
    with pytest.raises(ValueError, match="claims MIG slices"):
        Engine([plain], back, "gpuyard")
    res = Engine([NodeShape("h200-0", 96_000, 2**40, 8, H200, mig=True)], back).run()
    assert res.jobs[0].first_start == 0.0 and res.jobs[0].end == 10.0
    with pytest.raises(TraceError, match="mig_profile"):
        TraceJob("bad", 0.0, 1.0, mig_profile="big", mig_slices=1)
    with pytest.raises(TraceError, match="mig_slices"):
        TraceJob("bad", 0.0, 1.0, mig_slices=2)
