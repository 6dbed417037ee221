"""Workloads for the digital twin: the Alibaba openb pod list and gpuyard's own format.

A workload is a list of `TraceJob`s: submit time, team, priority, replicas, GPUs per
replica (and cpu, memory), duration, checkpoint interval, an optional GPU model
constraint, and — for real traces — when the trace itself scheduled it.

- `openb:PATH[*K]`: name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,
  creation_time,deletion_time,scheduled_time. Run time is deletion_time −
  scheduled_time. A task the trace never scheduled (no scheduled_time) is replayed
  from its creation with deletion_time − creation_time as its length and counted as
  such; a task with no deletion time runs to the end. GPU sharing (num_gpu 1 with
  gpu_milli < 1000) is modelled as a whole GPU, and counted. `*K` replays K copies
  with unique names.
- gpuyard's format, CSV with a header or JSON lines: submit_time, team, priority,
  replicas, gpus_per_replica, duration, checkpoint_interval (optional: name,
  cpu_milli, memory_mib, gpu_model).

A malformed line stops everything with "FILE:LINE: what is wrong".
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpuyard import names


class TraceError(ValueError):
    """A trace that cannot be replayed; the message names the file and line."""


@dataclass
class TraceJob:
    name: str
    submit: float
    duration: float
    replicas: int = 1
    gpus: int = 0
    cpu_milli: int = 1000
    memory: int = 2**30
    team: str = "default"
    priority: int = names.PRIORITY_CLASSES[names.PRIORITY_NORMAL]
    checkpoint: float = 0.0  # seconds between checkpoints; 0: none (a restart loses all)
    gpu_model: str = ""
    trace_wait: float | None = None  # how long the trace itself made it wait
    flags: set[str] = field(default_factory=set)  # "unscheduled-in-trace", "gpu-shared", ...


@dataclass
class Workload:
    jobs: list[TraceJob]
    counts: dict[str, int] = field(default_factory=dict)
    source: str = ""


_REPEAT = re.compile(r"^(.*)\*(\d+)$")


def load_trace(spec: str) -> Workload:
    k = 1
    m = _REPEAT.match(spec)
    if m:
        spec, k = m.group(1), int(m.group(2))
        if k < 1:
            raise TraceError(f"{spec}: repeat count must be at least 1")
    if spec.startswith("openb:"):
        wl = _read_openb(Path(spec[len("openb:") :]))
    else:
        wl = _read_gpuyard(Path(spec))
    if k > 1:
        jobs = []
        for c in range(k):
            for j in wl.jobs:
                jobs.append(
                    TraceJob(**{**j.__dict__, "name": f"{j.name}-r{c}", "flags": set(j.flags)})
                )
        wl = Workload(jobs, {key: v * k for key, v in wl.counts.items()}, wl.source)
    wl.jobs.sort(key=lambda j: (j.submit, j.name))
    wl.source = spec + (f"*{k}" if k > 1 else "")
    return wl


def _open(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as exc:
        raise TraceError(f"{path}: cannot read trace: {exc.strerror}") from None


QOS_PRIORITY = {"LS": 1000, "Guaranteed": 1000, "Burstable": 0, "BE": 0}


def _read_openb(path: Path) -> Workload:
    text = _open(path)
    reader = csv.DictReader(text.splitlines())
    need = {
        "name",
        "cpu_milli",
        "memory_mib",
        "num_gpu",
        "gpu_milli",
        "creation_time",
        "deletion_time",
        "scheduled_time",
    }
    if not reader.fieldnames or not need <= set(reader.fieldnames):
        missing = sorted(need - set(reader.fieldnames or []))
        raise TraceError(
            f"{path}:1: not an openb pod list with times (missing {', '.join(missing)})"
        )
    jobs: list[TraceJob] = []
    counts = {"tasks": 0, "unscheduled-in-trace": 0, "no-deletion-time": 0, "gpu-shared": 0}
    horizon = 0.0
    rows = []
    for row in reader:
        line = reader.line_num
        try:
            created = float(row["creation_time"])
            deleted = float(row["deletion_time"]) if row["deletion_time"] else None
            sched = float(row["scheduled_time"]) if row["scheduled_time"] else None
            gpus = int(row["num_gpu"] or 0)
            gpu_milli = int(row["gpu_milli"] or 0)
            cpu = int(row["cpu_milli"])
            mem = int(row["memory_mib"])
        except (TypeError, ValueError) as exc:
            raise TraceError(f"{path}:{line}: bad value: {exc}") from None
        if gpus < 0 or cpu < 0 or mem < 0:
            raise TraceError(f"{path}:{line}: negative resources")
        if deleted is not None and deleted < created:
            raise TraceError(f"{path}:{line}: deletion_time before creation_time")
        horizon = max(horizon, created, deleted or 0.0)
        rows.append((row, created, deleted, sched, gpus, gpu_milli, cpu, mem))
    for row, created, deleted, sched, gpus, gpu_milli, cpu, mem in rows:
        counts["tasks"] += 1
        flags: set[str] = set()
        if sched is None:
            flags.add("unscheduled-in-trace")
            start = created
        else:
            start = sched
        if deleted is None:
            flags.add("no-deletion-time")
            deleted = horizon
        if gpus == 1 and 0 < gpu_milli < 1000:
            flags.add("gpu-shared")
        for f in flags:
            counts[f] += 1
        jobs.append(
            TraceJob(
                name=row["name"],
                submit=created,
                duration=max(1.0, deleted - start),
                replicas=1,
                gpus=gpus,
                cpu_milli=cpu,
                memory=mem * 2**20,
                team=row.get("qos") or "default",
                priority=QOS_PRIORITY.get(row.get("qos") or "", 0),
                gpu_model=(row.get("gpu_spec") or "").split("|")[0],
                trace_wait=None if sched is None else sched - created,
                flags=flags,
            )
        )
    return Workload(jobs, counts, str(path))


_FIELDS = (
    "submit_time",
    "team",
    "priority",
    "replicas",
    "gpus_per_replica",
    "duration",
    "checkpoint_interval",
)


def _job_from(rec: dict[str, Any], where: str, i: int) -> TraceJob:
    missing = [f for f in _FIELDS if rec.get(f) in (None, "")]
    if missing:
        raise TraceError(f"{where}: missing {', '.join(missing)}")
    try:
        prio_raw = rec["priority"]
        priority = (
            names.PRIORITY_CLASSES[prio_raw]
            if prio_raw in names.PRIORITY_CLASSES
            else int(prio_raw)
        )
        job = TraceJob(
            name=str(rec.get("name") or f"job-{i:06d}"),
            submit=float(rec["submit_time"]),
            duration=float(rec["duration"]),
            replicas=int(rec["replicas"]),
            gpus=int(rec["gpus_per_replica"]),
            cpu_milli=int(rec.get("cpu_milli") or 1000),
            memory=int(rec.get("memory_mib") or 1024) * 2**20,
            team=str(rec["team"]),
            priority=priority,
            checkpoint=float(rec["checkpoint_interval"]),
            gpu_model=str(rec.get("gpu_model") or ""),
        )
    except (TypeError, ValueError) as exc:
        raise TraceError(f"{where}: bad value: {exc}") from None
    if (
        job.replicas < 1
        or job.gpus < 0
        or job.duration <= 0
        or job.submit < 0
        or job.checkpoint < 0
    ):
        raise TraceError(f"{where}: replicas must be >= 1, gpus >= 0, duration > 0, times >= 0")
    return job


def _read_gpuyard(path: Path) -> Workload:
    text = _open(path)
    jobs: list[TraceJob] = []
    first = next((ln for ln in text.splitlines() if ln.strip()), "")
    if first.lstrip().startswith("{"):
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise TraceError(f"{path}:{n}: not valid JSON: {exc.msg}") from None
            if not isinstance(rec, dict):
                raise TraceError(f"{path}:{n}: each line must be a JSON object")
            jobs.append(_job_from(rec, f"{path}:{n}", len(jobs)))
    else:
        reader = csv.DictReader(text.splitlines())
        if not reader.fieldnames or not set(_FIELDS) <= set(reader.fieldnames):
            raise TraceError(f"{path}:1: expected a CSV header with {', '.join(_FIELDS)}")
        for rec in reader:
            jobs.append(_job_from(rec, f"{path}:{reader.line_num}", len(jobs)))
    if not jobs:
        raise TraceError(f"{path}: no jobs")
    seen: set[str] = set()
    for j in jobs:
        if j.name in seen:
            raise TraceError(f"{path}: duplicate job name {j.name!r}")
        seen.add(j.name)
    return Workload(jobs, {"tasks": len(jobs)}, str(path))


def write_trace(jobs: list[TraceJob], path: str | Path) -> None:
    """Write jobs in gpuyard's own format: CSV when the name ends in .csv, else JSON
    lines. Missing parent folders are made."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [
        {
            "name": j.name,
            "submit_time": round(j.submit, 3),
            "team": j.team,
            "priority": j.priority,
            "replicas": j.replicas,
            "gpus_per_replica": j.gpus,
            "duration": round(j.duration, 3),
            "checkpoint_interval": j.checkpoint,
            "cpu_milli": j.cpu_milli,
            "memory_mib": j.memory // 2**20,
            **({"gpu_model": j.gpu_model} if j.gpu_model else {}),
        }
        for j in jobs
    ]
    with open(path, "w", newline="") as fh:
        if path.suffix.lower() == ".csv":
            fields = ["name", *_FIELDS, "cpu_milli", "memory_mib", "gpu_model"]
            w = csv.DictWriter(fh, fieldnames=fields)
            w.writeheader()
            w.writerows(rows)
        else:
            for row in rows:
                fh.write(json.dumps(row) + "\n")
