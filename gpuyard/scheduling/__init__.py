"""gpuyard.scheduling."""
