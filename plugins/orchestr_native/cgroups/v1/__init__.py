"""cgroup v1: one hierarchy per controller, one module per controller."""
