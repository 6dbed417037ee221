"""`gpuyard manifests`: everything gpuyard needs on a real cluster, as YAML for
`kubectl apply -f -`: the namespace, the CustomResourceDefinitions (the same objects
`gpuyard up` installs), the PriorityClasses, and for the scheduler and the controllers
a ServiceAccount, a ClusterRole with what each one calls, its binding and a Deployment
of two leader-elected replicas; the team admission webhook (`gpuyard teams-webhook`:
its RBAC, a Role for its certificate Secret, a Service 443 -> 8443, a Deployment of two
replicas that all serve, and the MutatingWebhookConfiguration in service form, whose
caBundle the webhook fills in at start); then the node-health manifests
(gpuyard/health/deploy.yaml); headless Services for every metrics port and a ConfigMap
with a Prometheus scrape job for them (deploy/grafana-dashboard.json charts the series).

Two images: the control plane (`--image`, deploy/images/Dockerfile: Python slim + gpuyard) for
the Deployments, and the GPU image (`--gpu-image`, deploy/images/gpu.Dockerfile: CUDA PyTorch
with NCCL + gpuyard) for the health agent DaemonSet and the preflight and periodic test
pods (`gpuyard gpu-test` needs PyTorch and a GPU).

deploy/gpuyard.yaml is this command's output for the default images and
deploy/kustomization.yaml the kustomize base over it (`kubectl apply -k deploy/`;
`--kustomization` prints it); a test keeps them the same.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from gpuyard import names
from gpuyard.health.testpods import DEFAULT_IMAGE as DEFAULT_GPU_IMAGE
from gpuyard.teams.webhook import service_webhook_configuration

NAMESPACE = names.NAMESPACE
IMAGE = "ghcr.io/gpuyard/gpuyard:0.1.0"
GPU_IMAGE = DEFAULT_GPU_IMAGE
HEALTH = Path(__file__).resolve().parent / "health" / "deploy.yaml"

# (apiGroup, resources, verbs), or with the resourceNames the rule is limited to
Rule = tuple[str, list[str], list[str]] | tuple[str, list[str], list[str], list[str]]

WATCH = ["get", "list", "watch"]

SCHEDULER_RULES: list[Rule] = [
    ("", ["pods", "nodes", "namespaces"], WATCH),
    ("", ["pods/status"], ["patch", "update"]),
    ("", ["pods/binding", "pods/eviction"], ["create"]),
    ("", ["events"], ["create", "patch"]),
    ("scheduling.x-k8s.io", ["podgroups"], WATCH),
    ("scheduling.x-k8s.io", ["podgroups/status"], ["patch", "update"]),
    ("scheduling.k8s.io", ["priorityclasses", "podgroups", "workloads"], WATCH),
    ("scheduling.k8s.io", ["podgroups/status"], ["patch", "update"]),
    # CompositePodGroups (scheduling.k8s.io/v1alpha3), where served
    ("scheduling.k8s.io", ["compositepodgroups"], WATCH),
    ("scheduling.k8s.io", ["compositepodgroups/status"], ["patch", "update"]),
    # Volcano's PodGroups, where its CRD is installed
    ("scheduling.volcano.sh", ["podgroups"], WATCH),
    ("scheduling.volcano.sh", ["podgroups/status"], ["patch", "update"]),
    # Teams' weights and namespaces divide the shared pool and borrowed nodes
    (names.GROUP, ["teams"], WATCH),
    # device claims: the devices nodes publish, the classes, and the claims it
    # allocates (status.allocation, status.reservedFor) before binding their pods
    ("resource.k8s.io", ["resourceslices", "deviceclasses", "resourceclaims"], WATCH),
    ("resource.k8s.io", ["resourceclaims/status"], ["patch", "update"]),
    ("coordination.k8s.io", ["leases"], ["get", "create", "update"]),
]

CONTROLLER_RULES: list[Rule] = [
    ("", ["pods", "services", "configmaps"], [*WATCH, "create", "update", "patch", "delete"]),
    ("", ["nodes"], [*WATCH, "patch"]),
    # The team manager watches namespaces and labels those of its teams.
    ("", ["namespaces"], [*WATCH, "create", "patch"]),
    ("", ["events"], ["create", "patch"]),
    ("scheduling.x-k8s.io", ["podgroups"], [*WATCH, "create", "update", "patch", "delete"]),
    # TrainingJobs' upstream PodGroups, where the cluster serves them
    ("scheduling.k8s.io", ["podgroups"], [*WATCH, "create", "update", "patch", "delete"]),
    (names.GROUP, ["trainingjobs", "teams", "balloonpools"], WATCH),
    (names.GROUP, ["trainingjobs/status", "teams/status", "balloonpools/status"], ["patch"]),
    ("coordination.k8s.io", ["leases"], ["get", "create", "update"]),
]


# The node network agent: its own node's pods and its own Node (it asks with field
# selectors: RBAC cannot name a node not known here, so the rule is on all nodes) and the
# Teams; it writes nothing to the API. The other nodes' pod ranges by zone it reads from the
# one ConfigMap `gpuyard controllers` publishes (rights on that name only, in gpuyard's
# namespace: its informer lists and watches with metadata.name=, which RBAC authorizes
# against resourceNames); the controllers' configmaps rights cover writing it.
NETD = "gpuyard-netd"
NETD_PORT = 9105
NETD_RULES: list[Rule] = [
    ("", ["pods", "nodes"], WATCH),
    (names.GROUP, ["teams"], WATCH),
]
NETD_NAMESPACE_RULES: list[Rule] = [
    ("", ["configmaps"], WATCH, [names.NETWORK_RANGES_CONFIGMAP]),
]

# The web dashboard (`gpuyard dashboard`): reads what it shows and asks the API server
# who a browser is (TokenReview) and whether it may look (SubjectAccessReview).
DASHBOARD = "gpuyard-dashboard"
DASHBOARD_PORT = 8080
DASHBOARD_RULES: list[Rule] = [
    ("", ["nodes", "pods", "namespaces", "events"], WATCH),
    (names.GROUP, ["trainingjobs", "teams"], WATCH),
    ("scheduling.x-k8s.io", ["podgroups"], WATCH),
    ("authentication.k8s.io", ["tokenreviews"], ["create"]),
    ("authorization.k8s.io", ["subjectaccessreviews"], ["create"]),
]
# ... and in its namespace only, the health brake's ConfigMap.
DASHBOARD_NAMESPACE_RULES: list[Rule] = [("", ["configmaps"], WATCH)]
# Who may look at the dashboard: bind people (or a token's ServiceAccount, as
# `gpuyard up` does for the banner's link) to this read-only role.
VIEWER = "gpuyard-viewer"
VIEWER_RULES: list[Rule] = [
    ("", ["nodes", "pods", "namespaces", "events"], WATCH),
    (names.GROUP, ["trainingjobs", "teams", "balloonpools"], WATCH),
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
# The Secret that holds its CA and serving certificate (`gpuyard teams-webhook` keeps
# them in SERVICE-tls, here --service gpuyard-teams-webhook): in its own namespace only,
# and by name, so it reads and writes no other Secret. Its informer of that one Secret
# lists and watches with the field selector metadata.name=, which RBAC authorizes
# against resourceNames; a create names no object yet, so it cannot be limited by name
# (Kubernetes refuses nothing there: the webhook only ever creates the one Secret).
WEBHOOK_SECRET = f"{WEBHOOK}-tls"
WEBHOOK_NAMESPACE_RULES: list[Rule] = [
    ("", ["secrets"], ["create"]),
    ("", ["secrets"], [*WATCH, "update"], [WEBHOOK_SECRET]),
]


def _meta(name: str, namespaced: bool = True) -> dict[str, Any]:
    md: dict[str, Any] = {"name": name, "labels": {"app.kubernetes.io/part-of": "gpuyard"}}
    if namespaced:
        md["namespace"] = NAMESPACE
    return md


def _rules(rules: list[Rule]) -> list[dict[str, Any]]:
    out = []
    for g, res, verbs, *names_ in rules:
        r: dict[str, Any] = {"apiGroups": [g], "resources": list(res)}
        if names_:
            r["resourceNames"] = list(names_[0])
        out.append({**r, "verbs": list(verbs)})
    return out


def _rbac(name: str, rules: list[Rule]) -> list[dict[str, Any]]:
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(name)},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": _meta(name, namespaced=False),
            "rules": _rules(rules),
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


def _namespace_role(name: str, rules: list[Rule]) -> list[dict[str, Any]]:
    """A Role in gpuyard's namespace for the ServiceAccount of that name, and its binding."""
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": _meta(name),
            "rules": _rules(rules),
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": _meta(name),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": NAMESPACE}],
        },
    ]


def _service(name: str, port_name: str, port: int) -> dict[str, Any]:
    """A ClusterIP Service for the Deployment of that name, on its named port."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(name),
        "spec": {
            "selector": {"app.kubernetes.io/name": name},
            "ports": [
                {"name": port_name, "port": port, "targetPort": port_name, "protocol": "TCP"}
            ],
        },
    }


def _webhook() -> list[dict[str, Any]]:
    """Role and binding for the Secret, the Service and the webhook configuration."""
    return [*_namespace_role(WEBHOOK, WEBHOOK_NAMESPACE_RULES), _service(WEBHOOK, "https", 443)]


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


def _netd_daemonset(image: str) -> dict[str, Any]:
    """`gpuyard netd` on every node, in the host's network namespace (its rules and
    shaping live there), with NET_ADMIN and nothing else."""
    labels = {"app.kubernetes.io/name": NETD, "app.kubernetes.io/part-of": "gpuyard"}
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": _meta(NETD),
        "spec": {
            "selector": {"matchLabels": {"app.kubernetes.io/name": NETD}},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "10%"}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "serviceAccountName": NETD,
                    "priorityClassName": "system-node-critical",
                    "hostNetwork": True,
                    "dnsPolicy": "ClusterFirstWithHostNet",
                    # every node, tainted ones included: its pods' traffic is counted
                    "tolerations": [{"operator": "Exists"}],
                    "containers": [
                        {
                            "name": "netd",
                            "image": image,
                            # add --uplink DEVICE to shape pods' internet egress there
                            "command": ["gpuyard", "netd", "--metrics-port", str(NETD_PORT)],
                            "env": [
                                {
                                    "name": "NODE_NAME",
                                    "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}},
                                }
                            ],
                            "ports": [{"name": "metrics", "containerPort": NETD_PORT}],
                            "resources": {
                                "requests": {"cpu": "50m", "memory": "96Mi"},
                                "limits": {"memory": "256Mi"},
                            },
                            # uid 0 with every capability dropped but NET_ADMIN: a
                            # capability added to a non-root container is not in its
                            # effective set (runtimes set no ambient capabilities), so
                            # netd as the image's uid 65532 could change no rule
                            "securityContext": {
                                "runAsUser": 0,
                                "runAsNonRoot": False,
                                "readOnlyRootFilesystem": True,
                                "allowPrivilegeEscalation": False,
                                "capabilities": {"drop": ["ALL"], "add": ["NET_ADMIN"]},
                            },
                        }
                    ],
                },
            },
        },
    }


def _dashboard(image: str) -> list[dict[str, Any]]:
    """The dashboard's Deployment and a ClusterIP Service: reach it with
    `kubectl -n gpuyard-system port-forward svc/gpuyard-dashboard 8080:80` and sign in
    with a token of someone bound to gpuyard-viewer
    (`kubectl -n gpuyard-system create token gpuyard-viewer`)."""
    command = ["gpuyard", "dashboard", "--host", "0.0.0.0", "--port", str(DASHBOARD_PORT)]
    dep = _deployment(DASHBOARD, image, command)
    dep["spec"]["replicas"] = 1  # read-only; a second replica would only double the watches
    dep["spec"]["template"]["spec"].pop("priorityClassName")  # not critical to the cluster
    c = dep["spec"]["template"]["spec"]["containers"][0]
    c["ports"] = [{"name": "http", "containerPort": DASHBOARD_PORT}]
    c["resources"] = {"requests": {"cpu": "100m", "memory": "256Mi"}}
    return [dep, _service(DASHBOARD, "http", 80)]


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


# The metrics Services: name -> (the pods' selector, [(port name, port)]).
METRICS_SERVICES: dict[str, tuple[dict[str, str], list[tuple[str, int]]]] = {
    "gpuyard-scheduler-metrics": (
        {"app.kubernetes.io/name": "gpuyard-scheduler"},
        [("metrics", 9100)],
    ),
    "gpuyard-controllers-metrics": (
        {"app.kubernetes.io/name": "gpuyard-controllers"},
        [("metrics", 9100)],
    ),
    "gpuyard-health-controllers-metrics": (
        {"app": "gpuyard-health-controllers"},
        [("metrics-ctl", 9101), ("metrics-pre", 9102), ("metrics-per", 9103)],
    ),
    "gpuyard-health-agent-metrics": ({"app": "gpuyard-health-agent"}, [("metrics", 9100)]),
    "gpuyard-netd-metrics": ({"app.kubernetes.io/name": NETD}, [("metrics", NETD_PORT)]),
}
SCRAPE_CONFIGMAP = "gpuyard-prometheus-scrape"
# Components answer /metrics only to a caller allowed to `get` it (--metrics-auth on):
# bind this ClusterRole to Prometheus's ServiceAccount.
METRICS_READER = "gpuyard-metrics-reader"
SA_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"


def metrics_services() -> list[dict[str, Any]]:
    """A headless Service per component for its metrics ports (Prometheus finds every
    replica's endpoints through it; a non-leader's series say it is idle)."""
    out = []
    for name, (selector, ports) in METRICS_SERVICES.items():
        meta = _meta(name)
        meta["labels"] = {"app.kubernetes.io/part-of": "gpuyard", "gpuyard.io/metrics": "true"}
        out.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": meta,
                "spec": {
                    "clusterIP": "None",
                    "selector": selector,
                    "ports": [{"name": n, "port": p, "targetPort": n} for n, p in ports],
                },
            }
        )
    return out


def metrics_rbac(service_accounts: list[str]) -> list[dict[str, Any]]:
    """The ClusterRole a scraper needs (get on /metrics: `kubectl create
    clusterrolebinding prometheus-gpuyard --clusterrole=gpuyard-metrics-reader
    --serviceaccount=monitoring:prometheus`), and system:auth-delegator for every
    component, which asks the API server about each scraper's token."""
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": _meta(METRICS_READER, namespaced=False),
            "rules": [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": _meta("gpuyard-metrics-auth", namespaced=False),
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "system:auth-delegator",
            },
            "subjects": [
                {"kind": "ServiceAccount", "name": n, "namespace": NAMESPACE}
                for n in service_accounts
            ],
        },
    ]


def scrape_config() -> dict[str, Any]:
    """A ConfigMap with a plain Prometheus scrape job (prometheus.yml's scrape_configs)
    that finds the endpoints of the metrics Services: add it to a Prometheus's
    configuration, or point a ServiceMonitor at the label gpuyard.io/metrics=true."""
    job = {
        "job_name": "gpuyard",
        # Prometheus's own ServiceAccount token: the components check it (METRICS_READER)
        "authorization": {"type": "Bearer", "credentials_file": SA_TOKEN},
        "kubernetes_sd_configs": [{"role": "endpoints", "namespaces": {"names": [NAMESPACE]}}],
        "relabel_configs": [
            {
                "source_labels": ["__meta_kubernetes_service_label_gpuyard_io_metrics"],
                "regex": "true",
                "action": "keep",
            },
            {
                "source_labels": ["__meta_kubernetes_endpoint_port_name"],
                "regex": "metrics.*",
                "action": "keep",
            },
            {"source_labels": ["__meta_kubernetes_service_name"], "target_label": "service"},
            {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
            {"source_labels": ["__meta_kubernetes_pod_node_name"], "target_label": "node"},
        ],
    }
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(SCRAPE_CONFIGMAP),
        "data": {
            "scrape-configs.yaml": yaml.safe_dump([job], sort_keys=False, default_flow_style=False)
        },
    }


def objects(image: str = IMAGE, gpu_image: str = GPU_IMAGE) -> list[dict[str, Any]]:
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
        *_rbac(NETD, NETD_RULES),
        *_namespace_role(NETD, NETD_NAMESPACE_RULES),
        _netd_daemonset(image),
        *_rbac(DASHBOARD, DASHBOARD_RULES),
        *_namespace_role(DASHBOARD, DASHBOARD_NAMESPACE_RULES),
        *_dashboard(image),
        *_rbac(VIEWER, VIEWER_RULES),
    ]
    for doc in yaml.safe_load_all(HEALTH.read_text()):
        if not doc or doc.get("kind") == "Namespace":
            continue
        for c in doc.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
            c["image"] = gpu_image if doc["kind"] == "DaemonSet" else image
            cmd = c.get("command") or []
            if "--image" in cmd:  # the test pods' image
                cmd[cmd.index("--image") + 1] = gpu_image
        out.append(doc)
    # The components that serve /metrics ask about scrapers' tokens; the viewer (people
    # signing in to the dashboard) serves nothing and asks nothing.
    accounts = [
        o["metadata"]["name"]
        for o in out
        if o["kind"] == "ServiceAccount"
        and o["metadata"].get("namespace") == NAMESPACE
        and o["metadata"]["name"] != VIEWER
    ]
    out += [*metrics_services(), *metrics_rbac(accounts), scrape_config()]
    return out


def render(image: str = IMAGE, gpu_image: str = GPU_IMAGE) -> str:
    head = (
        "# gpuyard on a real cluster: `gpuyard manifests --image IMAGE | kubectl apply -f -`\n"
        "# (generated by `gpuyard manifests`; do not edit by hand)\n"
    )
    body = yaml.safe_dump_all(objects(image, gpu_image), sort_keys=False, default_flow_style=False)
    return head + body


def _image_name(ref: str) -> tuple[str, str]:
    """(name, tag) of an image reference: the name kustomize's `images` match on."""
    slash = ref.rfind("/")
    colon = ref.rfind(":")
    if colon > slash:
        return ref[:colon], ref[colon + 1 :]
    return ref, ""


def kustomization() -> str:
    """deploy/kustomization.yaml: the base over deploy/gpuyard.yaml. Its `images` name
    both images, so `kustomize edit set image ghcr.io/gpuyard/gpuyard=REG/NAME:TAG` (and
    the same for ghcr.io/gpuyard/gpuyard-gpu) or an overlay's `images` retarget them."""
    images = []
    for ref in (IMAGE, GPU_IMAGE):
        name, tag = _image_name(ref)
        images.append({"name": name, "newTag": tag})
    doc = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": ["gpuyard.yaml"],
        "images": images,
    }
    head = (
        "# gpuyard's kustomize base: `kubectl apply -k deploy/` (generated by\n"
        "# `gpuyard manifests --kustomization`; do not edit by hand). The test pods' image\n"
        "# is also an argument (--image) of the health preflight and periodic containers:\n"
        "# retarget it with `gpuyard manifests --gpu-image` or a patch in your overlay.\n"
    )
    return head + yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)


def _bad_ref(ref: str) -> bool:
    return not ref or any(c.isspace() for c in ref)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image", default=IMAGE, help=f"control-plane image (default {IMAGE})")
    parser.add_argument(
        "--gpu-image",
        default=GPU_IMAGE,
        help=f"GPU image of the health agent and test pods (default {GPU_IMAGE})",
    )
    parser.add_argument(
        "--kustomization",
        action="store_true",
        help="print deploy/kustomization.yaml (the kustomize base) instead",
    )


def run(args: argparse.Namespace) -> int:
    for flag, ref in (("--image", args.image), ("--gpu-image", args.gpu_image)):
        if _bad_ref(ref):
            print(f"gpuyard manifests: {flag}: not an image reference: {ref!r}", file=sys.stderr)
            return 2
    if args.kustomization:
        sys.stdout.write(kustomization())
        return 0
    sys.stdout.write(render(args.image, args.gpu_image))
    return 0
