"""TrainingJob specs: local validation (before anything is sent) and defaults.

`validate_job(obj)` returns one-line errors naming the field ("spec.replicas: must be an
integer, not 'four'"); `gpuyard submit` refuses a job with any. It checks the same
schema the CRD gives the API server (which says what the workers' template must hold);
what no schema can say (that the PriorityClass exists) the controller reports on the
job when the workers are refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gpuyard import names
from gpuyard.jobs.crds import trainingjob_schema
from gpuyard.k8s.schema_check import schema_errors

DEFAULT_GPUS = 8
DEFAULT_BACKOFF = 3
DEFAULT_PORT = 29500
UPSTREAM = "upstream"
SCHEDULER_PLUGINS = "scheduler-plugins"


def validate_job(obj: Any) -> list[str]:
    """Every error of a TrainingJob, one line each, naming its field. The same checks
    the API server makes with the CRD's schema (types, ranges, quantities, containers
    with a name and an image), so a job `gpuyard submit` accepts the server accepts,
    and the controller reports the same lines for a job that reached it another way."""
    if not isinstance(obj, dict):
        return ["the file must hold one TrainingJob object"]
    errors = []
    if obj.get("apiVersion") != names.API_VERSION:
        errors.append(f"apiVersion: must be {names.API_VERSION}, not {obj.get('apiVersion')!r}")
    if obj.get("kind") != "TrainingJob":
        errors.append(f"kind: must be TrainingJob, not {obj.get('kind')!r}")
    md = obj.get("metadata")
    if not isinstance(md, dict) or not (md.get("name") or md.get("generateName")):
        errors.append("metadata.name: Required value")
    for c in schema_errors(trainingjob_schema(), obj, "", top=True):
        errors.append(f"{c['field'] or '(root)'}: {c['message']}")
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        spec = {}
    if spec.get("podGroupAPI") == UPSTREAM and spec.get("scheduleTimeoutSeconds"):
        errors.append(
            "spec.scheduleTimeoutSeconds: the upstream PodGroup has no schedule timeout; "
            "use podGroupAPI scheduler-plugins or leave it out"
        )
    return errors


@dataclass(frozen=True)
class JobSpec:
    """A TrainingJob's spec with defaults applied."""

    name: str
    namespace: str
    uid: str
    replicas: int
    gpus: int
    template: dict[str, Any]
    priority_class: str
    team: str
    restart_policy: str
    backoff_limit: int
    deadline: int | None
    schedule_timeout: int | None
    master_port: int
    # "upstream" or "scheduler-plugins": the gang API its PodGroup speaks (resolved)
    pod_group_api: str = SCHEDULER_PLUGINS
    required_topology: str | None = None

    @classmethod
    def of(
        cls, job: dict[str, Any], namespace_team: str | None = None, upstream_served: bool = False
    ) -> JobSpec:
        """With `upstream_served` (the cluster serves scheduling.k8s.io/v1beta1
        PodGroups) a job that names no podGroupAPI takes the upstream one, unless it
        sets scheduleTimeoutSeconds."""
        md = job.get("metadata") or {}
        spec = job.get("spec") or {}
        ns = md.get("namespace") or "default"
        api = spec.get("podGroupAPI") or (
            UPSTREAM if upstream_served and not spec.get("scheduleTimeoutSeconds") else ""
        )
        return cls(
            name=md.get("name", ""),
            namespace=ns,
            uid=md.get("uid", ""),
            replicas=int(spec.get("replicas") or 1),
            gpus=int(spec["gpusPerReplica"])
            if spec.get("gpusPerReplica") is not None
            else DEFAULT_GPUS,
            template=dict(spec.get("template") or {}),
            priority_class=spec.get("priorityClassName") or names.PRIORITY_NORMAL,
            team=spec.get("team") or namespace_team or ns,
            restart_policy=spec.get("restartPolicy") or "RestartGang",
            backoff_limit=int(spec["backoffLimit"])
            if spec.get("backoffLimit") is not None
            else DEFAULT_BACKOFF,
            deadline=int(spec["activeDeadlineSeconds"])
            if spec.get("activeDeadlineSeconds")
            else None,
            schedule_timeout=int(spec["scheduleTimeoutSeconds"])
            if spec.get("scheduleTimeoutSeconds")
            else None,
            master_port=int(spec.get("masterPort") or DEFAULT_PORT),
            pod_group_api=api or SCHEDULER_PLUGINS,
            required_topology=spec.get("requiredTopology") or None,
        )


def refusal(message: str, causes: list[dict[str, Any]] | None = None) -> str:
    """The API server's refusal of a worker pod, said in the job's own fields: a pod's
    `spec.priorityClassName` is the job's `spec.priorityClassName`, any other
    `spec.<x>` of the pod is the job's `spec.template.spec.<x>`."""

    def job_field(f: str) -> str:
        if f == "spec.priorityClassName":
            return f
        return "spec.template." + f if f.startswith(("spec.", "metadata.")) else f

    if "PriorityClass" in message and "priorityClassName" not in message:
        return f"spec.priorityClassName: {message}"
    named = [
        f"{job_field(str(c['field']))}: {c.get('message') or c.get('reason') or 'invalid'}"
        for c in causes or []
        if c.get("field")
    ]
    return "; ".join(named) if named else message
