"""gpuyard.apiserver."""
