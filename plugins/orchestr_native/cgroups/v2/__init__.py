"""cgroup v2: the unified hierarchy, one module per controller."""
