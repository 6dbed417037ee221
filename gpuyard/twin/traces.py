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
  cpu_milli, memory_mib, gpu_model, required_topology: a node label whose one domain
  the gang must fit inside, such as nvidia.com/gpu.clique; mig_profile, mig_slices:
  each replica also claims that many MIG slices of the profile, such as 1g.18gb, or 1g
  for that compute size whatever its memory; mig_slices defaults to 1 with a profile).

A malformed line stops everything with "FILE:LINE: what is wrong".
"""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpuyard import names
from gpuyard.cliargs import Float, Int, Text, Value
from gpuyard.k8s.decode import INT64_MAX, INT64_MIN, DecodeError, loads_json
from gpuyard.scheduling.topology import is_label_key

# Limits on what a trace may ask for, checked on every job however it was made (a file,
# `twin synth`, a test): a gang has at most MAX_REPLICAS pods, as Kubernetes caps an
# Indexed Job's completions and parallelism; a workload (with its `*K` copies) at most
# MAX_JOBS jobs; times and durations are finite, in seconds, at most MAX_SECONDS (2^32 s,
# about 136 years: room for Unix timestamps).
MAX_REPLICAS = 100_000
MAX_JOBS = 2_000_000
MAX_SECONDS = float(2**32)
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


class TraceError(ValueError):
    """A trace that cannot be replayed; the message names the file, line and field.
    `field` is the TraceJob attribute at fault when a check of TraceJob found it."""

    def __init__(self, message: str, field: str = "", problem: str = "") -> None:
        super().__init__(message)
        self.field = field
        self.problem = problem or message


_SECONDS = Float(lo=0, hi=MAX_SECONDS, what="a number of seconds")
_DURATION = Float(gt=0, hi=MAX_SECONDS, what="a number of seconds")
_REPLICAS = Int(1, MAX_REPLICAS)
_AMOUNT = Int(lo=0)
_PRIORITY = Int(INT32_MIN, INT32_MAX)
_NAME = re.compile(r"[^\s/\x00-\x1f\x7f]{1,253}")

# TraceJob's numeric attributes and the kind of value each must be.
_KINDS: dict[str, Value] = {
    "submit": _SECONDS,
    "duration": _DURATION,
    "replicas": _REPLICAS,
    "gpus": _AMOUNT,
    "cpu_milli": _AMOUNT,
    "memory": _AMOUNT,
    "priority": _PRIORITY,
    "checkpoint": _SECONDS,
    "mig_slices": _AMOUNT,
}
_MIG_PROFILE = re.compile(r"[1-9]\d?g(\.[1-9]\d{0,3}gb)?")


@dataclass
class TraceJob:
    """One job of a workload. Every job is checked when it is made, whatever made it
    (TraceError naming the attribute): finite times within MAX_SECONDS (duration > 0),
    whole numbers where counts are meant, 1 to MAX_REPLICAS replicas, a name and a team
    without spaces, slashes or control characters."""

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
    # a node label whose one domain the gang must fit inside ("": none; the replay's
    # --require-topology then)
    required_topology: str = ""
    # MIG slices each replica claims (ResourceClaims of the mig.nvidia.com class on
    # nodes whose shape says mig): the profile ("1g.18gb", or "1g" for any memory) and
    # how many
    mig_profile: str = ""
    mig_slices: int = 0
    trace_wait: float | None = None  # how long the trace itself made it wait
    flags: set[str] = field(default_factory=set)  # "unscheduled-in-trace", "gpu-shared", ...

    def __post_init__(self) -> None:
        for attr in ("name", "team"):
            value = getattr(self, attr)
            if not isinstance(value, str) or not _NAME.fullmatch(value):
                _bad(attr, f"{value!r} is not a name (1 to 253 characters, no spaces or /)")
        if not isinstance(self.gpu_model, str):
            _bad("gpu_model", f"{self.gpu_model!r} is not text")
        rt = self.required_topology
        if not isinstance(rt, str) or (rt and not is_label_key(rt)):
            _bad("required_topology", f"{rt!r} is not a node label key")
        for attr, kind in _KINDS.items():
            value = getattr(self, attr)
            try:
                if isinstance(value, str):
                    raise ValueError(f"{value!r} is not {kind.expected}")
                kind.check(value)
            except ValueError as exc:
                _bad(attr, str(exc))
        mp = self.mig_profile
        if not isinstance(mp, str) or (mp and not _MIG_PROFILE.fullmatch(mp)):
            _bad("mig_profile", f"{mp!r} is not a MIG profile (such as 1g.18gb, or 3g)")
        if self.mig_slices and not mp:
            _bad("mig_slices", f"{self.mig_slices} MIG slices of no profile: give mig_profile")
        if mp and not self.mig_slices:
            _bad("mig_slices", f"0 MIG slices of profile {mp}: give at least 1")
        if self.trace_wait is not None and not (
            isinstance(self.trace_wait, int | float)
            and not isinstance(self.trace_wait, bool)
            and math.isfinite(self.trace_wait)
        ):
            _bad("trace_wait", f"{self.trace_wait!r} is not a finite number")


def _bad(attr: str, problem: str) -> None:
    raise TraceError(f"{attr}: {problem}", attr, problem)


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
        if k * len(wl.jobs) > MAX_JOBS:
            raise TraceError(
                f"{spec}*{k}: {k} copies of {len(wl.jobs)} jobs is more than the "
                f"{MAX_JOBS} jobs a workload may have"
            )
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
    except UnicodeDecodeError as exc:
        raise TraceError(f"{path}: not a text file: byte {exc.start} is not UTF-8") from None


_MISSING: Any = object()


def _field(rec: dict[str, Any], col: str, kind: Value, text: bool, default: Any = _MISSING) -> Any:
    """The column `col` of a record as `kind`: parsed when the record is text (CSV),
    checked as it is when it is typed (JSON), where a string is not a number."""
    raw = rec.get(col)
    if raw is None or raw == "":
        if default is _MISSING:
            raise ValueError("missing")
        return default
    if text:
        return kind.parse(raw)
    if isinstance(raw, str) and not isinstance(kind, Text):
        raise ValueError(f"{raw!r} is not {kind.expected}")
    return kind.check(raw)


class _Jobs:
    """Jobs as a loader reads them: each made where its record is (`FILE:LINE`), with
    a TraceJob check's attribute named as the file's column, at most MAX_JOBS, names
    unique."""

    def __init__(self, path: Path, columns: dict[str, str]) -> None:
        self.path = path
        self.columns = columns
        self.jobs: list[TraceJob] = []
        self.lines: dict[str, int] = {}

    def add(self, line: int, **kw: Any) -> None:
        where = f"{self.path}:{line}"
        if len(self.jobs) >= MAX_JOBS:
            raise TraceError(f"{where}: more than {MAX_JOBS} jobs")
        try:
            job = TraceJob(**kw)
        except TraceError as exc:
            col = self.columns.get(exc.field, exc.field)
            raise TraceError(f"{where}: {col}: {exc.problem}") from None
        if job.name in self.lines:
            raise TraceError(
                f"{where}: name: duplicate job name {job.name!r} (line {self.lines[job.name]})"
            )
        self.lines[job.name] = line
        self.jobs.append(job)


QOS_PRIORITY = {"LS": 1000, "Guaranteed": 1000, "Burstable": 0, "BE": 0}
_OPENB_COLUMNS = {
    "submit": "creation_time",
    "duration": "deletion_time",
    "gpus": "num_gpu",
    "memory": "memory_mib",
    "team": "qos",
    "gpu_model": "gpu_spec",
    "trace_wait": "scheduled_time",
}


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
    out = _Jobs(path, _OPENB_COLUMNS)
    counts = {"tasks": 0, "unscheduled-in-trace": 0, "no-deletion-time": 0, "gpu-shared": 0}
    horizon = 0.0
    rows = []
    for row in reader:
        line = reader.line_num
        col = ""
        try:
            col = "creation_time"
            created = _field(row, col, _SECONDS, True)
            col = "deletion_time"
            deleted = _field(row, col, _SECONDS, True, None)
            col = "scheduled_time"
            sched = _field(row, col, _SECONDS, True, None)
            col = "num_gpu"
            gpus = _field(row, col, _AMOUNT, True, 0)
            col = "gpu_milli"
            gpu_milli = _field(row, col, _AMOUNT, True, 0)
            col = "cpu_milli"
            cpu = _field(row, col, _AMOUNT, True)
            col = "memory_mib"
            mem = _field(row, col, _AMOUNT, True)
        except ValueError as exc:
            raise TraceError(f"{path}:{line}: {col}: {exc}") from None
        if deleted is not None and deleted < created:
            raise TraceError(f"{path}:{line}: deletion_time: before creation_time")
        horizon = max(horizon, created, deleted or 0.0)
        rows.append((line, row, created, deleted, sched, gpus, gpu_milli, cpu, mem))
    for line, row, created, deleted, sched, gpus, gpu_milli, cpu, mem in rows:
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
        out.add(
            line,
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
    return Workload(out.jobs, counts, str(path))


_FIELDS = (
    "submit_time",
    "team",
    "priority",
    "replicas",
    "gpus_per_replica",
    "duration",
    "checkpoint_interval",
)
_GPUYARD_COLUMNS = {
    "submit": "submit_time",
    "gpus": "gpus_per_replica",
    "checkpoint": "checkpoint_interval",
    "memory": "memory_mib",
}


def _job_from(rec: dict[str, Any], out: _Jobs, line: int, text: bool) -> None:
    where = f"{out.path}:{line}"
    missing = [f for f in _FIELDS if rec.get(f) in (None, "")]
    if missing:
        raise TraceError(f"{where}: missing {', '.join(missing)}")
    col = ""
    try:
        col = "priority"
        prio_raw = rec["priority"]
        if isinstance(prio_raw, str) and prio_raw in names.PRIORITY_CLASSES:
            priority = names.PRIORITY_CLASSES[prio_raw]
        elif text:
            priority = _PRIORITY.parse(prio_raw)
        elif isinstance(prio_raw, str):
            raise ValueError(
                f"{prio_raw!r} is neither a priority class "
                f"({', '.join(names.PRIORITY_CLASSES)}) nor {_PRIORITY.expected}"
            )
        else:
            priority = _PRIORITY.check(prio_raw)
        kw: dict[str, Any] = {"priority": priority}
        for col, attr, kind, default in (
            ("name", "name", Text(), f"job-{len(out.jobs):06d}"),
            ("submit_time", "submit", _SECONDS, _MISSING),
            ("duration", "duration", _DURATION, _MISSING),
            ("replicas", "replicas", _REPLICAS, _MISSING),
            ("gpus_per_replica", "gpus", _AMOUNT, _MISSING),
            ("cpu_milli", "cpu_milli", _AMOUNT, 1000),
            ("memory_mib", "memory", _AMOUNT, 1024),
            ("team", "team", Text(), _MISSING),
            ("checkpoint_interval", "checkpoint", _SECONDS, _MISSING),
            ("gpu_model", "gpu_model", Text(empty=True), ""),
            ("required_topology", "required_topology", Text(empty=True), ""),
            ("mig_profile", "mig_profile", Text(empty=True), ""),
            ("mig_slices", "mig_slices", _AMOUNT, 0),
        ):
            kw[attr] = _field(rec, col, kind, text, default)
        if kw["mig_profile"] and rec.get("mig_slices") in (None, ""):
            kw["mig_slices"] = 1
    except ValueError as exc:
        raise TraceError(f"{where}: {col}: {exc}") from None
    kw["memory"] *= 2**20
    out.add(line, **kw)


def _json_field(line: str) -> str:
    """`FIELD: ` for the field of a JSON line refused for a number JSON cannot carry
    (NaN, an infinity, 1e400, an integer past int64), read again leniently; else ""."""
    bad: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        for key, value in items:
            if (isinstance(value, float) and not math.isfinite(value)) or (
                isinstance(value, int) and not INT64_MIN <= value <= INT64_MAX
            ):
                bad.append(key)
        return dict(items)

    try:
        json.loads(line, object_pairs_hook=pairs)
    except (ValueError, RecursionError):
        pass
    return f"{bad[0]}: " if bad else ""


def _read_gpuyard(path: Path) -> Workload:
    text = _open(path)
    out = _Jobs(path, _GPUYARD_COLUMNS)
    first = next((ln for ln in text.splitlines() if ln.strip()), "")
    if first.lstrip().startswith("{"):
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = loads_json(line)
            except DecodeError as exc:
                raise TraceError(f"{path}:{n}: {_json_field(line)}{exc.message}") from None
            if not isinstance(rec, dict):
                raise TraceError(f"{path}:{n}: each line must be a JSON object")
            _job_from(rec, out, n, text=False)
    else:
        reader = csv.DictReader(text.splitlines())
        if not reader.fieldnames or not set(_FIELDS) <= set(reader.fieldnames):
            raise TraceError(f"{path}:1: expected a CSV header with {', '.join(_FIELDS)}")
        for rec in reader:
            _job_from(rec, out, reader.line_num, text=True)
    if not out.jobs:
        raise TraceError(f"{path}: no jobs")
    return Workload(out.jobs, {"tasks": len(out.jobs)}, str(path))


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
            **({"required_topology": j.required_topology} if j.required_topology else {}),
            **({"mig_profile": j.mig_profile, "mig_slices": j.mig_slices} if j.mig_slices else {}),
        }
        for j in jobs
    ]
    with open(path, "w", newline="") as fh:
        if path.suffix.lower() == ".csv":
            fields = ["name", *_FIELDS, "cpu_milli", "memory_mib", "gpu_model"]
            if any(j.required_topology for j in jobs):
                fields.append("required_topology")
            if any(j.mig_slices for j in jobs):
                fields += ["mig_profile", "mig_slices"]
            w = csv.DictWriter(fh, fieldnames=fields)
            w.writeheader()
            w.writerows(rows)
        else:
            for row in rows:
                fh.write(json.dumps(row) + "\n")
