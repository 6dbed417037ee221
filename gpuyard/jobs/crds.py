"""The TrainingJob CustomResourceDefinition (gpuyard.io/v1alpha1)."""

from __future__ import annotations

from typing import Any

from gpuyard import names
from gpuyard.kube.crd import column, crd

PHASES = ["Pending", "Scheduling", "Running", "Restarting", "Succeeded", "Failed"]

_INT = {"type": "integer"}
_STR = {"type": "string"}

# A resource quantity as Kubernetes writes one ("500m", "16Gi", 4): the grammar of
# resource.Quantity, so the API server refuses `cpu: lots` on the job itself instead of
# on each worker the controller would create from it.
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
_QUANTITIES = {
    "type": "object",
    "additionalProperties": {"x-kubernetes-int-or-string": True, "pattern": QUANTITY_PATTERN},
}
# What the workers' pod template must hold; the rest of a PodSpec is kept as written.
_CONTAINER = {
    "type": "object",
    "description": "A container (name and image required; other Container fields kept).",
    "required": ["name", "image"],
    "x-kubernetes-preserve-unknown-fields": True,
    "properties": {
        "name": {"type": "string", "minLength": 1, "description": "The container's name."},
        "image": {"type": "string", "minLength": 1, "description": "The container image."},
        "resources": {
            "type": "object",
            "description": "requests and limits: resource quantities such as 32, 500m, 400Gi.",
            "x-kubernetes-preserve-unknown-fields": True,
            "properties": {"requests": _QUANTITIES, "limits": _QUANTITIES},
        },
    },
}
_DNS_SUBDOMAIN = {
    "type": "string",
    "maxLength": 253,
    "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
}


def _d(text: str, schema: dict[str, Any]) -> dict[str, Any]:
    """A schema with its description (what `kubectl explain` prints)."""
    return {"description": text, **schema}


def trainingjob_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "description": "A training job: `replicas` workers, one pod per replica, started by "
        "the gang scheduler all at once or not at all, and restarted as one gang.",
        "required": ["spec"],
        "properties": {
            "apiVersion": _STR,
            "kind": _STR,
            "metadata": {"type": "object"},
            "spec": {
                "type": "object",
                "description": "What the job runs and how it is scheduled and restarted.",
                "required": ["replicas", "template"],
                "properties": {
                    "replicas": _d(
                        "Number of workers (pods), started together as one gang "
                        "(the PodGroup's minMember).",
                        {"type": "integer", "minimum": 1, "maximum": 100000},
                    ),
                    "gpusPerReplica": _d(
                        "GPUs (nvidia.com/gpu) each worker asks for; 8 (a whole node) "
                        "when unset, 0 for CPU-only workers.",
                        {"type": "integer", "minimum": 0, "maximum": 64},
                    ),
                    "template": _d(
                        "The workers' pod template (metadata and a PodSpec with at least "
                        "one container). The controller adds RANK, WORLD_SIZE, "
                        "LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT and the hostfile.",
                        {
                            "type": "object",
                            "required": ["spec"],
                            "x-kubernetes-preserve-unknown-fields": True,
                            "properties": {
                                "metadata": _d(
                                    "Labels and annotations every worker gets.",
                                    {
                                        "type": "object",
                                        "x-kubernetes-preserve-unknown-fields": True,
                                    },
                                ),
                                "spec": _d(
                                    "The workers' PodSpec.",
                                    {
                                        "type": "object",
                                        "required": ["containers"],
                                        "x-kubernetes-preserve-unknown-fields": True,
                                        "properties": {
                                            "containers": _d(
                                                "The workers' containers; the first "
                                                "gets the job's GPUs.",
                                                {
                                                    "type": "array",
                                                    "minItems": 1,
                                                    "items": _CONTAINER,
                                                },
                                            ),
                                            "initContainers": _d(
                                                "Containers run before the workers' own.",
                                                {"type": "array", "items": _CONTAINER},
                                            ),
                                        },
                                    },
                                ),
                            },
                        },
                    ),
                    "priorityClassName": _d(
                        "The workers' PriorityClass: gpuyard-low (may borrow idle nodes, "
                        "preemptible), gpuyard-normal (the default) or gpuyard-high.",
                        _DNS_SUBDOMAIN,
                    ),
                    "team": _d(
                        "The team the job belongs to; by default the Team whose "
                        "spec.namespaces holds the job's namespace.",
                        _STR,
                    ),
                    "restartPolicy": _d(
                        "RestartGang (the default): when a worker fails or loses its node, "
                        "every worker is replaced by a new gang, up to backoffLimit times. "
                        "Never: the job fails instead.",
                        {"type": "string", "enum": ["RestartGang", "Never"]},
                    ),
                    "backoffLimit": _d(
                        "Restarts allowed before the job fails (default 3). Preemption "
                        "by the scheduler is not charged.",
                        {"type": "integer", "minimum": 0},
                    ),
                    "activeDeadlineSeconds": _d(
                        "Seconds the job may run from its start before it is failed.",
                        {"type": "integer", "minimum": 1},
                    ),
                    "scheduleTimeoutSeconds": _d(
                        "The PodGroup's scheduleTimeoutSeconds: how long the gang may "
                        "wait to be placed.",
                        {"type": "integer", "minimum": 1},
                    ),
                    "masterPort": _d(
                        "MASTER_PORT for torchrun (default 29500), on worker 0.",
                        {"type": "integer", "minimum": 1, "maximum": 65535},
                    ),
                    "podGroupAPI": _d(
                        "Which gang API the job's PodGroup speaks: upstream "
                        "(scheduling.k8s.io/v1beta1 PodGroup, workers joined by "
                        "spec.schedulingGroup) or scheduler-plugins "
                        "(scheduling.x-k8s.io/v1alpha1, workers joined by the "
                        "scheduling.x-k8s.io/pod-group label). By default upstream where "
                        "the cluster serves it and the job sets no scheduleTimeoutSeconds "
                        "(which only scheduler-plugins has).",
                        {"type": "string", "enum": ["upstream", "scheduler-plugins"]},
                    ),
                    "requiredTopology": _d(
                        "A node label (topology.kubernetes.io/zone, gpuyard.io/block, "
                        "gpuyard.io/rack, nvidia.com/gpu.clique): every worker runs inside "
                        "one domain of it, or the job waits.",
                        _STR,
                    ),
                },
            },
            "status": {
                "type": "object",
                "description": "What the controller observed.",
                "properties": {
                    "phase": _d("Where the job is.", {"type": "string", "enum": PHASES}),
                    "reason": _d("Why, in one word.", _STR),
                    "message": _d("Why, in a sentence.", _STR),
                    "restarts": _d("Gang restarts charged against backoffLimit.", _INT),
                    "preemptions": _d("Times the gang was preempted (not charged).", _INT),
                    "generation": _d("The current gang (0 first, +1 per new gang).", _INT),
                    "startTime": _STR,
                    "completionTime": _STR,
                    "readyWorkers": _INT,
                    "runningWorkers": _INT,
                    "observedGeneration": _INT,
                    "history": _d(
                        "How the last gangs ended (newest last): time, generation, reason "
                        "(RestartingGang, Preempted, ...) and cause.",
                        {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "time": _STR,
                                    "generation": _INT,
                                    "reason": _STR,
                                    "cause": _STR,
                                },
                            },
                        },
                    ),
                    "conditions": {
                        "type": "array",
                        "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                    },
                },
            },
        },
    }


def trainingjob_crd() -> dict[str, Any]:
    return crd(
        names.GROUP,
        names.VERSION,
        "TrainingJob",
        "trainingjobs",
        namespaced=True,
        schema=trainingjob_schema(),
        columns=[
            column("Replicas", "integer", ".spec.replicas"),
            column("Phase", "string", ".status.phase"),
            column("Restarts", "integer", ".status.restarts"),
            column("Running", "integer", ".status.runningWorkers"),
            column("Message", "string", ".status.message", priority=1),
        ],
        short_names=["tj"],
        categories=["gpuyard"],
    )


def crds() -> list[dict[str, Any]]:
    return [trainingjob_crd()]
