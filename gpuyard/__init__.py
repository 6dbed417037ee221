"""gpuyard: a control plane for GPU training clusters on Kubernetes."""

__version__ = "0.1.0"
