"""Bad workloads and flags are refused by `gpuyard twin` before anything is simulated:
exit 2, one `gpuyard: error:` line naming the file, the line and the field, no
traceback, and quickly (a trace that once hung the replay or filled memory must end
well within the timeout, which fails the test rather than the suite)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gpuyard import names
from gpuyard.cluster.shapes import default_shapes, expand
from gpuyard.twin.engine import Engine, FailureSpec
from gpuyard.twin.traces import MAX_REPLICAS, TraceError, TraceJob, load_trace

ROOT = Path(__file__).resolve().parents[2]
HEADER = "submit_time,team,priority,replicas,gpus_per_replica,duration,checkpoint_interval"
OPENB = (
    "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,"
    "deletion_time,scheduled_time"
)
GOOD_JSON = (
    '"submit_time": 0, "team": "a", "priority": 100, "replicas": 1, "gpus_per_replica": 8, '
    '"duration": 60, "checkpoint_interval": 0'
)


def gpuyard(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gpuyard", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def twin(trace: str, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    out = tmp_path / "out"
    r = gpuyard("twin", "--cluster", "nodes:2", "--trace", trace, "--out", str(out), *extra)
    assert not out.exists(), "nothing is written for a refused run"
    return r


def refused(r: subprocess.CompletedProcess[str], *parts: str) -> str:
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpuyard: error: "), r.stderr
    for part in parts:
        assert part in lines[0], (part, lines[0])
    return lines[0]


CSV_CASES = {
    "submit-nan": ("nan,a,100,1,8,60,0", "submit_time", "finite"),
    "submit-inf": ("inf,a,100,1,8,60,0", "submit_time", "finite"),
    "submit-1e400": ("1e400,a,100,1,8,60,0", "submit_time", "finite"),
    "submit-negative": ("-1,a,100,1,8,60,0", "submit_time", ">= 0"),
    "submit-beyond-limit": ("1e300,a,100,1,8,60,0", "submit_time", "out of range"),
    "replicas-billion": ("0,a,100,1000000000,0,60,0", "replicas", f"<= {MAX_REPLICAS}"),
    "replicas-fraction": ("0,a,100,2.5,8,60,0", "replicas", "not an integer"),
    "replicas-zero": ("0,a,100,0,8,60,0", "replicas", ">= 1"),
    "gpus-negative": ("0,a,100,1,-8,60,0", "gpus_per_replica", ">= 0"),
    "gpus-nan": ("0,a,100,1,nan,60,0", "gpus_per_replica", "not an integer"),
    "duration-nan": ("0,a,100,1,8,nan,0", "duration", "finite"),
    "duration-zero": ("0,a,100,1,8,0,0", "duration", "> 0"),
    "checkpoint-inf": ("0,a,100,1,8,60,inf", "checkpoint_interval", "finite"),
    "priority-word": ("0,a,urgent,1,8,60,0", "priority", "not an integer"),
    "team-missing": ("0,,100,1,8,60,0", "missing team", ""),
}


@pytest.mark.parametrize("case", sorted(CSV_CASES))
def test_bad_csv_field_names_file_line_and_field(tmp_path: Path, case: str) -> None:
    row, field, why = CSV_CASES[case]
    p = tmp_path / "jobs.csv"
    p.write_text(f"{HEADER},name\n0,a,100,1,8,60,0,ok\n{row},bad\n")
    refused(twin(str(p), tmp_path), f"{p}:3: {field}", why)


JSON_CASES = {
    "submit-NaN": ('"submit_time": NaN', "submit_time"),
    "submit-Infinity": ('"submit_time": Infinity', "submit_time"),
    "submit-1e400": ('"submit_time": 1e400', "submit_time"),
    "replicas-billion": ('"replicas": 1000000000', "replicas: 1000000000 is out of range"),
    "replicas-past-int64": ('"replicas": 100000000000000000000', "replicas"),
    "replicas-text": ('"replicas": "3"', "replicas: '3' is not an integer"),
    "replicas-float": ('"replicas": 3.0', "replicas: 3.0 is not an integer"),
    "replicas-bool": ('"replicas": true', "replicas: True is not an integer"),
    "gpus-list": ('"gpus_per_replica": [8]', "gpus_per_replica: [8] is not an integer"),
    "team-number": ('"team": 5', "team: 5 is not"),
    "submit-text": ('"submit_time": "soon"', "submit_time: 'soon' is not a number"),
    "priority-unknown-class": ('"priority": "urgent"', "priority: 'urgent' is neither"),
    "memory-text": ('"memory_mib": "lots"', "memory_mib: 'lots' is not an integer"),
}


@pytest.mark.parametrize("case", sorted(JSON_CASES))
def test_bad_json_line_names_file_line_and_field(tmp_path: Path, case: str) -> None:
    field, why = JSON_CASES[case]
    key = field.split(":")[0].strip('"')
    rec = ", ".join(f for f in GOOD_JSON.split(", ") if not f.startswith(f'"{key}"'))
    p = tmp_path / "jobs.jsonl"
    p.write_text(f'{{"name": "ok", {GOOD_JSON}}}\n\n{{"name": "bad", {rec}, {field}}}\n')
    refused(twin(str(p), tmp_path), f"{p}:3: {why}")


def test_json_line_missing_fields_and_not_objects(tmp_path: Path) -> None:
    p = tmp_path / "jobs.jsonl"
    p.write_text('{"submit_time": 0, "team": "a"}\n')
    refused(twin(str(p), tmp_path), f"{p}:1: missing priority, replicas, gpus_per_replica")
    p.write_text(f"{{{GOOD_JSON}}}\n[1, 2]\n")
    refused(twin(str(p), tmp_path), f"{p}:2: each line must be a JSON object")
    p.write_bytes(b'{"a": 1}\n\xff\xfe\x00junk\n')
    refused(twin(str(p), tmp_path), f"{p}: not a text file")


OPENB_CASES = {
    "creation-nan": ("p1,1000,100,1,1000,,LS,Running,nan,100,0", "creation_time", "finite"),
    "creation-1e400": ("p1,1000,100,1,1000,,LS,Running,1e400,,", "creation_time", "finite"),
    "deletion-inf": ("p1,1000,100,1,1000,,LS,Running,0,inf,0", "deletion_time", "finite"),
    "scheduled-nan": ("p1,1000,100,1,1000,,LS,Running,0,100,nan", "scheduled_time", "finite"),
    "gpus-fraction": ("p1,1000,100,1.5,1000,,LS,Running,0,100,0", "num_gpu", "integer"),
    "cpu-negative": ("p1,-1,100,1,1000,,LS,Running,0,100,0", "cpu_milli", ">= 0"),
    "memory-missing": ("p1,1000,,1,1000,,LS,Running,0,100,0", "memory_mib", "missing"),
    "duplicate-name": ("p0,1000,100,1,1000,,LS,Running,0,100,0", "name", "duplicate"),
    "no-name": ("p1", "creation_time", "missing"),
}


@pytest.mark.parametrize("case", sorted(OPENB_CASES))
def test_bad_openb_row_names_file_line_and_column(tmp_path: Path, case: str) -> None:
    row, column, why = OPENB_CASES[case]
    p = tmp_path / "pods.csv"
    p.write_text(f"{OPENB}\np0,1000,100,1,1000,,LS,Running,0,100,0\n{row}\n")
    refused(twin(f"openb:{p}", tmp_path), f"{p}:3: {column}", why)


def test_copies_beyond_the_job_limit_are_refused_before_they_are_made(tmp_path: Path) -> None:
    p = tmp_path / "jobs.csv"
    p.write_text(f"{HEADER}\n0,a,100,1,8,60,0\n0,a,100,1,8,60,0\n")
    refused(twin(f"{p}*1000000000", tmp_path), f"{p}*1000000000: ", "2000000 jobs")
    refused(twin(f"{p}*0", tmp_path), "repeat count must be at least 1")


def test_job_that_can_never_fit_is_refused_at_engine_build(tmp_path: Path) -> None:
    """nodes:2 is two 8-GPU nodes: a gang of 3 whole nodes, a replica asking 16 GPUs or
    a GPU model the cluster lacks could only wait forever; the largest gang the limit
    allows is refused as fast, without making its pods."""
    p = tmp_path / "jobs.csv"
    for row, why in (
        ("0,a,100,3,8,60,0,gang,", "needs 3 replica(s) of 8 GPU(s)"),
        ("0,a,100,1,16,60,0,wide,", "at most 0 fit"),
        (f"0,a,100,{MAX_REPLICAS},8,60,0,huge,", f"needs {MAX_REPLICAS} replica(s)"),
        ("0,a,100,1,1,60,0,model,Z9000", "needs 1 replica(s) of 1 Z9000 GPU(s)"),
    ):
        name = row.split(",")[7]
        p.write_text(f"{HEADER},name,gpu_model\n0,a,100,2,8,60,0,fits,\n{row}\n")
        refused(twin(str(p), tmp_path), f"{p}: job {name!r} can never run", why)


def test_skip_never_fitting_replays_the_rest_and_counts_them(tmp_path: Path) -> None:
    p = tmp_path / "jobs.csv"
    p.write_text(f"{HEADER},name\n0,a,100,2,8,60,0,fits\n0,a,100,3,8,60,0,gang\n")
    line = refused(twin(str(p), tmp_path), "job 'gang' can never run")
    assert "--skip-never-fitting" in line
    out = tmp_path / "out"
    r = gpuyard("twin", "--cluster", "nodes:2", "--trace", str(p), "--out", str(out),
                "--skip-never-fitting", "--quiet")  # fmt: skip
    assert r.returncode == 0, r.stderr
    m = json.loads((out / "metrics.json").read_text())
    assert m["capacity"]["never-fitting-jobs"] == 1
    assert m["jobs"] == m["finished"] == 1


def test_engine_refuses_never_fitting_and_duplicate_jobs_directly() -> None:
    nodes = expand(default_shapes(2))
    with pytest.raises(ValueError, match="can never run"):
        Engine(nodes, [TraceJob("g", 0, 10, replicas=3, gpus=8)])
    with pytest.raises(ValueError, match="two jobs have this name"):
        Engine(nodes, [TraceJob("g", 0, 10, gpus=8), TraceJob("g", 5, 10, gpus=8)])
    # jobs asking nothing fit however many replicas they have
    Engine(nodes, [TraceJob("z", 0, 10, replicas=MAX_REPLICAS, cpu_milli=0, memory=0)])


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"submit": float("nan")}, "submit"),
        ({"duration": float("inf")}, "duration"),
        ({"replicas": 10**9}, "replicas"),
        ({"replicas": 2.0}, "replicas"),
        ({"gpus": "8"}, "gpus"),
        ({"team": ""}, "team"),
        ({"name": "a/b"}, "name"),
        ({"trace_wait": float("nan")}, "trace_wait"),
    ],
)
def test_tracejob_checks_every_job_however_made(kw: dict[str, object], field: str) -> None:
    args: dict[str, object] = {"name": "j", "submit": 0.0, "duration": 10.0, **kw}
    with pytest.raises(TraceError, match=rf"^{field}: ") as exc:
        TraceJob(**args)  # type: ignore[arg-type]
    assert exc.value.field == field


def test_valid_json_and_csv_still_load(tmp_path: Path) -> None:
    p = tmp_path / "jobs.jsonl"
    rec = GOOD_JSON.replace('"priority": 100', f'"priority": "{names.PRIORITY_HIGH}"')
    p.write_text(f'{{"name": "j", {rec}}}\n')
    (job,) = load_trace(str(p)).jobs
    assert (job.submit, job.replicas, job.gpus, job.duration) == (0, 1, 8, 60)
    assert job.priority == names.PRIORITY_CLASSES[names.PRIORITY_HIGH]


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        ("mtbf=30", "a number and a unit: s, m, h or d"),
        ("mtbf=nand", "not a duration"),
        ("repair=1e400h", "not a duration"),
        ("repair=99999999999999999999d", "longer than"),
        ("preflight=1.2.3m", "not a duration"),
        ("xid=nan", "xid=nan"),
        ("xid=2", "out of range"),
        ("mtbf=-1d", "not a duration"),
    ],
)
def test_bad_failure_specs_are_refused(tmp_path: Path, spec: str, why: str) -> None:
    with pytest.raises(ValueError, match="bad failure spec"):
        FailureSpec.parse(spec)
    p = tmp_path / "jobs.csv"
    p.write_text(f"{HEADER}\n0,a,100,1,8,60,0\n")
    refused(twin(str(p), tmp_path, "--failures", spec), "bad failure spec", why)


def test_failures_too_many_to_simulate_are_refused(tmp_path: Path) -> None:
    """Two nodes over a 30-day job, failing every second and back two seconds later:
    about 1.7 million failures to simulate, a run that would practically never end."""
    p = tmp_path / "jobs.csv"
    p.write_text(f"{HEADER}\n0,a,100,1,8,2592000,0\n")
    spec = "mtbf=1s,repair=1s,preflight=1s"
    line = refused(twin(str(p), tmp_path, "--failures", spec), "--failures", "mtbf=1s")
    assert "longer mtbf" in line and "1000000" in line
    # A realistic spec on the same trace replays.
    out = tmp_path / "ok"
    r = gpuyard("twin", "--cluster", "nodes:2", "--trace", str(p), "--out", str(out),
                "--failures", "mtbf=30d,xid=0.1", "--quiet")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert out.exists()


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--nodes", "abc"),
        ("--nodes", "0"),
        ("--days", "inf"),
        ("--days", "nan"),
        ("--jobs", "1e9"),
        ("--jobs", "0"),
        ("--seed", "x"),
        ("--batch", "-1"),
        ("--batch", "nan"),
    ],
)
def test_bad_twin_flags_exit_2_naming_the_flag(tmp_path: Path, flag: str, value: str) -> None:
    r = gpuyard("twin", "synth", "--out", str(tmp_path / "j.csv"), flag, value)
    assert r.returncode == 2, r.stderr
    assert f"argument {flag}: " in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "j.csv").exists()


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        ("nodes:1000000000", "nodes:1000000000: at most 100000 nodes"),
        ("SHAPES:count: 1000000000", "1000000000 is out of range"),
        ("SHAPES:count: .inf", "shapes.yaml: .inf is not a finite number"),
        ("SHAPES:gpus: 8.5", "8.5 is not an integer"),
        ("SHAPES:count: 60000\n    gpus: 8", "*2: 120000 nodes, at most 100000"),
    ],
)
def test_cluster_specs_beyond_limits_are_refused(tmp_path: Path, spec: str, why: str) -> None:
    p = tmp_path / "jobs.csv"
    p.write_text(f"{HEADER}\n0,a,100,1,8,60,0\n")
    if spec.startswith("SHAPES:"):
        shapes = tmp_path / "shapes.yaml"
        shapes.write_text(f"nodes:\n  - name: n\n    {spec[len('SHAPES:') :]}\n")
        spec = f"{shapes}*2" if "*2" in why else str(shapes)
    out = tmp_path / "out"
    r = gpuyard("twin", "--cluster", spec, "--trace", str(p), "--out", str(out))
    refused(r, why)
    assert not out.exists()


def test_teams_file_is_read_within_the_decoding_limits(tmp_path: Path) -> None:
    """An alias bomb of a few hundred bytes is refused, not expanded, naming the file."""
    p = tmp_path / "jobs.csv"
    p.write_text(f"{HEADER}\n0,a,100,1,8,60,0\n")
    teams = tmp_path / "teams.yaml"
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 10):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    teams.write_text("\n".join(lines) + "\n")
    r = twin(str(p), tmp_path, "--teams", str(teams))
    refused(r, f"{teams}: ")
