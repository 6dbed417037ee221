"""gpuyard.health."""
