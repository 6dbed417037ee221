"""gpuyard.jobs."""
