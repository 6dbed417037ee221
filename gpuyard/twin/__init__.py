"""gpuyard.twin."""
