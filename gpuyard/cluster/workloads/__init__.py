"""Kubernetes' standard workload controllers, for the embedded cluster (`gpuyard up`)
only: on a real cluster kube-controller-manager does this."""
