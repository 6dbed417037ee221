"""The one way to talk to a Kubernetes API: client, informers, leader election,
and helpers over plain objects (see `gpuyard.kube.objects`)."""
