"""gpuyard.balloons."""
