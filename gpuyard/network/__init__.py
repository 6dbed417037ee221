"""The node network agent: per-pod accounting rules, internet egress shaping, metrics."""
