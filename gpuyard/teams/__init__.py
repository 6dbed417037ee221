"""gpuyard.teams."""
