"""gpuyard.cluster."""
