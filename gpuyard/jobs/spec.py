"""TrainingJob specs: local validation (before anything is sent) and defaults.

`validate_job(obj)` returns one-line errors naming the field ("spec.replicas: must be an
integer, not 'four'"); `gpuyard submit` refuses a job with any. It checks the same
schema the CRD gives the API server, plus what a schema cannot say (a template with
containers, each with a name and an image).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gpuyard import names
from gpuyard.apiserver.validation import schema_errors
from gpuyard.jobs.crds import trainingjob_schema

DEFAULT_GPUS = 8
DEFAULT_BACKOFF = 3
DEFAULT_PORT = 29500


def validate_job(obj: Any) -> list[str]:
    if not isinstance(obj, dict):
        return ["the file must hold one TrainingJob object"]
    errors = []
    if obj.get("apiVersion") != names.API_VERSION:
        errors.append(f"apiVersion: must be {names.API_VERSION}, not {obj.get('apiVersion')!r}")
    if obj.get("kind") != "TrainingJob":
        errors.append(f"kind: must be TrainingJob, not {obj.get('kind')!r}")
    md = obj.get("metadata")
    if not isinstance(md, dict) or not (md.get("name") or md.get("generateName")):
        errors.append("metadata.name: required")
    for c in schema_errors(trainingjob_schema(), obj, "", top=True):
        errors.append(f"{c['field'] or '(root)'}: {c['message']}")
    spec: dict[str, Any] = obj["spec"] if isinstance(obj.get("spec"), dict) else {}
    tpl = spec.get("template") if isinstance(spec.get("template"), dict) else None
    if tpl is not None:
        pspec = tpl.get("spec")
        containers = pspec.get("containers") if isinstance(pspec, dict) else None
        if not isinstance(containers, list) or not containers:
            errors.append("spec.template.spec.containers: required (at least one container)")
        else:
            for i, c in enumerate(containers):
                if not isinstance(c, dict):
                    errors.append(f"spec.template.spec.containers[{i}]: must be an object")
                    continue
                for field in ("name", "image"):
                    if not isinstance(c.get(field), str) or not c.get(field):
                        errors.append(f"spec.template.spec.containers[{i}].{field}: required")
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

    @classmethod
    def of(cls, job: dict[str, Any], namespace_team: str | None = None) -> JobSpec:
        md = job.get("metadata") or {}
        spec = job.get("spec") or {}
        ns = md.get("namespace") or "default"
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
        )
