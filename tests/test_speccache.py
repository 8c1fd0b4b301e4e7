"""The spec cache: keyed by exact file contents, and holding exactly what the planner reads."""

from __future__ import annotations

from orchestr import planner, speccache
from orchestr.model import L_NAMESPACE, L_REPLICA, L_SERVICE, L_SPEC_HASH, Container, State
from orchestr.spec import load

SPEC = """apiVersion: orchestr/v1
kind: Service
metadata: {name: db, namespace: shop}
spec: {image: busybox, replicas: 2, restartPolicy: OnFailure, stopGracePeriod: 3s, paused: true}
---
apiVersion: orchestr/v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {image: busybox, dependsOn: [db], runtime: docker}
"""


def test_key_follows_contents_and_names(tmp_path):
    a = tmp_path / "a.yaml"
    a.write_text(SPEC)
    first = speccache.key([str(a)])
    assert first == speccache.key([str(a)])
    a.write_text(SPEC.replace("replicas: 2", "replicas: 3"))
    assert speccache.key([str(a)]) != first
    b = tmp_path / "b.yaml"
    b.write_text(SPEC.replace("replicas: 2", "replicas: 3"))
    assert speccache.key([str(b)]) != speccache.key([str(a)])
    assert speccache.key(["-"]) is None
    assert speccache.key([str(tmp_path / "missing.yaml")]) is None


def test_cached_services_plan_like_the_real_ones(tmp_path):
    path = tmp_path / "shop.yaml"
    path.write_text(SPEC)
    services = load([str(path)])
    digest = speccache.key([str(path)])
    assert speccache.lookup(tmp_path, digest) is None
    speccache.remember(tmp_path, digest, services)
    cached = speccache.lookup(tmp_path, digest)
    view = lambda s: (s.namespace, s.name, s.spec_hash, s.spec.replicas, s.spec.runtime, s.spec.depends_on,  # noqa: E731
                      s.spec.restart_policy, s.spec.paused, s.spec.stop_grace_period)
    assert [view(s) for s in cached] == [view(s) for s in services]

    actual = [
        Container(id=f"id{i}", name=f"db-{i}", namespace="shop", runtime="native", image="busybox",
                  state=State.EXITED, exit_code=1,
                  labels={L_NAMESPACE: "shop", L_SERVICE: "db", L_REPLICA: str(i), L_SPEC_HASH: services[0].spec_hash})
        for i in range(2)
    ]
    real = planner.plan(services, actual, default_runtime="native")
    assert planner.plan(cached, actual, default_runtime="native") == real
    assert real  # exited OnFailure containers are started, and web is missing
