"""Names shared by every component (see DESIGN.md): API groups, labels, taints,
priority classes, the scheduler's name."""

GROUP = "gpuyard.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

PODGROUP_API_VERSION = "scheduling.x-k8s.io/v1alpha1"
POD_GROUP_LABEL = "scheduling.x-k8s.io/pod-group"

SCHEDULER_NAME = "gpuyard-scheduler"

# gpuyard's namespace on a real cluster (`gpuyard manifests`)
NAMESPACE = "gpuyard-system"
# the ConfigMap there in which `gpuyard controllers` publishes the pod ranges by zone
# that every node's netd classes traffic by (gpuyard.network.rangesmap)
NETWORK_RANGES_CONFIGMAP = "gpuyard-network-ranges"

TAINT_PREFLIGHT = "gpuyard.io/preflight"
TAINT_UNHEALTHY = "gpuyard.io/unhealthy"
TAINT_TEAM = "gpuyard.io/team"
TAINT_TESTING = "gpuyard.io/testing"
TAINT_UNREACHABLE = "node.kubernetes.io/unreachable"
TAINT_NOT_READY = "node.kubernetes.io/not-ready"

LABEL_TEAM = "gpuyard.io/team"
LABEL_POOL = "gpuyard.io/pool"
LABEL_RACK = "gpuyard.io/rack"
# a block of racks under one network spine, inside a zone
LABEL_BLOCK = "gpuyard.io/block"
LABEL_PREFLIGHT = "gpuyard.io/preflight"
LABEL_ZONE = "topology.kubernetes.io/zone"
LABEL_HOSTNAME = "kubernetes.io/hostname"
LABEL_GPU_PRODUCT = "nvidia.com/gpu.product"
# what NVIDIA GPU Feature Discovery puts on a node with GPUs; the health agent
# DaemonSet of the install manifests selects it
LABEL_GPU_PRESENT = "nvidia.com/gpu.present"
# the NVLink domain of multi-node NVLink systems (GB200 NVL72), as NVIDIA's GPU feature
# discovery writes it: <cluster UUID>.<clique id>
LABEL_CLIQUE = "nvidia.com/gpu.clique"

RESOURCE_GPU = "nvidia.com/gpu"

PRIORITY_BALLOON = "gpuyard-balloon"
PRIORITY_LOW = "gpuyard-low"
PRIORITY_NORMAL = "gpuyard-normal"
PRIORITY_HIGH = "gpuyard-high"

# name -> value, as installed by `gpuyard up` and the Helm chart. gpuyard-balloon sits
# just above the cluster-autoscaler's default expendable-pods cutoff (-10): pods below
# the cutoff neither hold a node nor call for one, and balloons must do both.
PRIORITY_CLASSES = {
    PRIORITY_BALLOON: -5,
    PRIORITY_LOW: 0,
    PRIORITY_NORMAL: 1000,
    PRIORITY_HIGH: 10000,
}

ANN_SIM_DURATION = "gpuyard.io/sim-duration"
ANN_SIM_EXIT_CODE = "gpuyard.io/sim-exit-code"
# how long a simulated container takes to stop after SIGTERM when its pod is deleted:
# seconds ("20"), or by container ("main=20,sidecar=0"), "never" to ignore SIGTERM
ANN_SIM_STOP_SECONDS = "gpuyard.io/sim-stop-seconds"
# the exit code a simulated container reports when it stops on SIGTERM (143, 128+15, by
# default, as a program without a handler): "0" for one that handles it and exits
# cleanly, or by container ("main=0"); one killed when the grace period ends exits 137
ANN_SIM_SIGTERM_EXIT_CODE = "gpuyard.io/sim-sigterm-exit-code"
# a simulated container's resource usage, as kubectl top reports it: "cpu=250m,memory=1Gi"
ANN_SIM_USAGE = "gpuyard.io/sim-usage"
# How long a pod runs at most once started, as a duration (`2h`, `90m`, `1d`, `2h30m`):
# the user's promise, read by the scheduler's reservations (a gang waiting for nodes
# lets work it knows will end in time run on them first). A pod's
# spec.activeDeadlineSeconds says the same, enforced by the kubelet; the TrainingJob
# controller writes its job's activeDeadlineSeconds here on every worker.
ANN_EXPECTED_RUNTIME = "gpuyard.io/expected-runtime"
# When the pod's trainer last wrote a checkpoint it can resume from, as an RFC 3339
# time (`2026-12-03T10:15:00Z`), set by the trainer on its own pod (kubectl annotate
# --overwrite, or a PATCH) after each checkpoint. Preemption reads it: among victims of
# one priority it takes those that lose the least work (GPU-seconds since it) first.
ANN_LAST_CHECKPOINT = "gpuyard.io/last-checkpoint"
