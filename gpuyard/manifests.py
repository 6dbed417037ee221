"""`gpuyard manifests`: everything gpuyard needs on a real cluster, as YAML for
`kubectl apply -f -`: the namespace, the CustomResourceDefinitions (the same objects
`gpuyard up` installs), the PriorityClasses, and for the scheduler and the controllers
a ServiceAccount, a ClusterRole with what each one calls, its binding and a Deployment
of two leader-elected replicas; the team admission webhook (`gpuyard teams-webhook`:
its RBAC, a Role for its certificate Secret, a Service 443 -> 8443, a Deployment of two
replicas that all serve, and the MutatingWebhookConfiguration in service form, whose
caBundle the webhook fills in at start); then the node-health manifests
(gpuyard/health/deploy.yaml).

deploy/gpuyard.yaml is this command's output for the default image; a test keeps the two
the same.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from gpuyard import names
from gpuyard.teams.webhook import service_webhook_configuration

NAMESPACE = "gpuyard-system"
IMAGE = "ghcr.io/gpuyard/gpuyard:0.1.0"
HEALTH = Path(__file__).resolve().parent / "health" / "deploy.yaml"

Rule = tuple[str, list[str], list[str]]  # (apiGroup, resources, verbs)

WATCH = ["get", "list", "watch"]

SCHEDULER_RULES: list[Rule] = [
    ("", ["pods", "nodes", "namespaces"], WATCH),
    ("", ["pods/status"], ["patch", "update"]),
    ("", ["pods/binding", "pods/eviction"], ["create"]),
    ("", ["events"], ["create", "patch"]),
    ("scheduling.x-k8s.io", ["podgroups"], WATCH),
    ("scheduling.x-k8s.io", ["podgroups/status"], ["patch", "update"]),
    ("scheduling.k8s.io", ["priorityclasses", "podgroups"], WATCH),
    ("scheduling.k8s.io", ["podgroups/status"], ["patch", "update"]),
    # Teams' weights and namespaces divide the shared pool and borrowed nodes
    (names.GROUP, ["teams"], WATCH),
    ("coordination.k8s.io", ["leases"], ["get", "create", "update"]),
]

CONTROLLER_RULES: list[Rule] = [
    ("", ["pods", "services", "configmaps"], [*WATCH, "create", "update", "patch", "delete"]),
    ("", ["nodes"], [*WATCH, "patch"]),
    # The team manager watches namespaces and labels those of its teams.
    ("", ["namespaces"], [*WATCH, "create", "patch"]),
    ("", ["events"], ["create", "patch"]),
    ("scheduling.x-k8s.io", ["podgroups"], [*WATCH, "create", "update", "patch", "delete"]),
    (names.GROUP, ["trainingjobs", "teams", "balloonpools"], WATCH),
    (names.GROUP, ["trainingjobs/status", "teams/status", "balloonpools/status"], ["patch"]),
    ("coordination.k8s.io", ["leases"], ["get", "create", "update"]),
]


WEBHOOK = "gpuyard-teams-webhook"
WEBHOOK_PORT = 8443

WEBHOOK_RULES: list[Rule] = [
    (names.GROUP, ["teams"], WATCH),
    (
        "admissionregistration.k8s.io",
        ["mutatingwebhookconfigurations"],
        ["get", "create", "patch", "update"],
    ),
]
# In its own namespace only: the Secret that holds its CA and serving certificate.
WEBHOOK_NAMESPACE_RULES: list[Rule] = [
    ("", ["secrets"], [*WATCH, "create", "update"]),
]


def _meta(name: str, namespaced: bool = True) -> dict[str, Any]:
    md: dict[str, Any] = {"name": name, "labels": {"app.kubernetes.io/part-of": "gpuyard"}}
    if namespaced:
        md["namespace"] = NAMESPACE
    return md


def _rbac(name: str, rules: list[Rule]) -> list[dict[str, Any]]:
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(name)},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": _meta(name, namespaced=False),
            "rules": [
                {"apiGroups": [g], "resources": list(res), "verbs": list(verbs)}
                for g, res, verbs in rules
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": _meta(name, namespaced=False),
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": name,
            },
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": NAMESPACE}],
        },
    ]


def _deployment(name: str, image: str, command: list[str]) -> dict[str, Any]:
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "gpuyard"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(name),
        "spec": {
            "replicas": 2,  # leader-elected: one acts, the other waits
            "selector": {"matchLabels": {"app.kubernetes.io/name": name}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "serviceAccountName": name,
                    "priorityClassName": "system-cluster-critical",
                    "containers": [
                        {
                            "name": name.removeprefix("gpuyard-"),
                            "image": image,
                            "command": command,
                            "ports": [{"name": "metrics", "containerPort": 9100}],
                            "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}},
                        }
                    ],
                },
            },
        },
    }


def _webhook() -> list[dict[str, Any]]:
    """Role and binding for the Secret, the Service and the webhook configuration."""
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": _meta(WEBHOOK),
        "rules": [
            {"apiGroups": [g], "resources": list(res), "verbs": list(verbs)}
            for g, res, verbs in WEBHOOK_NAMESPACE_RULES
        ],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _meta(WEBHOOK),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": WEBHOOK},
        "subjects": [{"kind": "ServiceAccount", "name": WEBHOOK, "namespace": NAMESPACE}],
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(WEBHOOK),
        "spec": {
            "selector": {"app.kubernetes.io/name": WEBHOOK},
            "ports": [{"name": "https", "port": 443, "targetPort": "https", "protocol": "TCP"}],
        },
    }
    return [role, binding, service]


def _webhook_deployment(image: str) -> dict[str, Any]:
    command = ["gpuyard", "teams-webhook", "--namespace", NAMESPACE, "--service", WEBHOOK]
    command += ["--listen", f"0.0.0.0:{WEBHOOK_PORT}"]
    dep = _deployment(WEBHOOK, image, command)
    dep["spec"]["replicas"] = 2  # all serve: no leader election
    c = dep["spec"]["template"]["spec"]["containers"][0]
    c["ports"] = [{"name": "https", "containerPort": WEBHOOK_PORT}]
    c["resources"] = {"requests": {"cpu": "250m", "memory": "256Mi"}}
    probe = {"scheme": "HTTPS", "port": "https"}
    c["readinessProbe"] = {"httpGet": {"path": "/readyz", **probe}, "periodSeconds": 5}
    c["livenessProbe"] = {
        "httpGet": {"path": "/healthz", **probe},
        "periodSeconds": 10,
        "failureThreshold": 6,
    }
    return dep


def priority_classes() -> list[dict[str, Any]]:
    """gpuyard's PriorityClasses, as `gpuyard up` installs them."""
    return [
        {
            "apiVersion": "scheduling.k8s.io/v1",
            "kind": "PriorityClass",
            "metadata": {"name": name},
            "value": value,
            "globalDefault": False,
            "preemptionPolicy": "Never"
            if name == names.PRIORITY_BALLOON
            else "PreemptLowerPriority",
            "description": f"gpuyard priority {name}",
        }
        for name, value in names.PRIORITY_CLASSES.items()
    ]


def objects(image: str = IMAGE) -> list[dict[str, Any]]:
    from gpuyard.crds import crd_objects

    out: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        *crd_objects(),
        *priority_classes(),
        *_rbac("gpuyard-scheduler", SCHEDULER_RULES),
        _deployment("gpuyard-scheduler", image, ["gpuyard", "scheduler", "--metrics-port", "9100"]),
        *_rbac("gpuyard-controllers", CONTROLLER_RULES),
        _deployment(
            "gpuyard-controllers", image, ["gpuyard", "controllers", "--metrics-port", "9100"]
        ),
        *_rbac(WEBHOOK, WEBHOOK_RULES),
        *_webhook(),
        _webhook_deployment(image),
        service_webhook_configuration(NAMESPACE, WEBHOOK),
    ]
    for doc in yaml.safe_load_all(HEALTH.read_text()):
        if not doc or doc.get("kind") == "Namespace":
            continue
        for c in doc.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
            c["image"] = image
        out.append(doc)
    return out


def render(image: str = IMAGE) -> str:
    head = (
        "# gpuyard on a real cluster: `gpuyard manifests --image IMAGE | kubectl apply -f -`\n"
        "# (generated by `gpuyard manifests`; do not edit by hand)\n"
    )
    return head + yaml.safe_dump_all(objects(image), sort_keys=False, default_flow_style=False)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image", default=IMAGE, help=f"container image (default {IMAGE})")


def run(args: argparse.Namespace) -> int:
    if not args.image or any(c.isspace() for c in args.image):
        print(f"gpuyard manifests: not an image reference: {args.image!r}", file=sys.stderr)
        return 2
    sys.stdout.write(render(args.image))
    return 0
