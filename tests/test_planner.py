"""The planner's rules, one test each, and properties over random desired and actual states."""

from __future__ import annotations

import itertools
import random
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestr.model import (
    L_DEPENDS_ON,
    L_NAMESPACE,
    L_ONEOFF,
    L_REPLICA,
    L_SERVICE,
    L_SPEC_HASH,
    Container,
    RestartPolicy,
    State,
)
from orchestr.planner import UP_KINDS, Kind, Plan, check_capacity, plan, plan_delete, plan_delete_namespace
from orchestr.spec import Service

DEFAULT = "docker"
ALWAYS, ON_FAILURE, NEVER = RestartPolicy.ALWAYS, RestartPolicy.ON_FAILURE, RestartPolicy.NEVER


def service(name, replicas=1, *, ns="default", runtime=None, deps=(), policy=ALWAYS, paused=False, image="busybox:1"):
    return Service.build(
        name, namespace=ns, image=image, replicas=replicas, runtime=runtime, depends_on=list(deps),
        restart_policy=policy.value, paused=paused,
    )


_ids = itertools.count()


def container(
    name, replica=0, *, ns="default", state=State.RUNNING, spec_hash="h-old", runtime=DEFAULT,
    exit_code=None, deps=(), oneoff=False, id=None,
) -> Container:
    labels = {L_NAMESPACE: ns, L_SERVICE: name, L_REPLICA: str(replica), L_SPEC_HASH: spec_hash}
    if deps:
        labels[L_DEPENDS_ON] = ",".join(deps)
    if oneoff:
        labels[L_ONEOFF] = "true"
    return Container(
        id=id or f"c{next(_ids)}", name=f"{name}-{replica}", namespace=ns, runtime=runtime, image="busybox:1",
        state=state, labels=labels, exit_code=exit_code,
    )


def running(svc, replica=0, **kw) -> Container:
    """A container that is exactly what svc asks for."""
    kw.setdefault("state", State.PAUSED if svc.spec.paused else State.RUNNING)
    return container(
        svc.name, replica, ns=svc.namespace, spec_hash=svc.spec_hash, runtime=svc.spec.runtime or DEFAULT,
        deps=svc.spec.depends_on, **kw,
    )


def kinds(p: Plan) -> list[tuple[str, str]]:
    return [(a.kind.value, a.name) for a in p]


def index_of(p: Plan, kind: Kind, name: str) -> int:
    return next(i for i, a in enumerate(p.actions) if a.kind == kind and a.name == name)


# -- creating, converging, recreating -------------------------------------------------------


def test_missing_replicas_are_created_on_the_default_runtime():
    p = plan([service("web", 3)], [], default_runtime=DEFAULT)
    assert kinds(p) == [("create", "web-0"), ("create", "web-1"), ("create", "web-2")]
    assert {(a.runtime, a.reason, a.container_id, a.after) for a in p} == {(DEFAULT, "missing", None, ())}


def test_a_converged_state_plans_nothing():
    web, db = service("web", 2, deps=["db"]), service("db", runtime="native")
    actual = [running(web, 0), running(web, 1), running(db)]
    assert plan([web, db], actual, default_runtime=DEFAULT) == Plan()
    assert not plan([web, db], actual, default_runtime=DEFAULT, prune=True)


def test_a_changed_spec_rolls_out_only_that_service_one_surge_replica_at_a_time():
    old_web, db = service("web", 2), service("db")
    actual = [running(old_web, 0), running(old_web, 1), running(db)]
    new_web = service("web", 2, image="busybox:2")
    p = plan([new_web, db], actual, default_runtime=DEFAULT)
    h = new_web.spec_hash[:5]
    # Kubernetes' defaults for 2 replicas: maxSurge 25% rounds up to 1, maxUnavailable 25% down to 0
    assert kinds(p) == [("create", f"web-0-{h}"), ("delete", "web-0"), ("create", f"web-1-{h}"), ("delete", "web-1")]
    assert [a.after for a in p] == [(), (0,), (1,), (2,)]
    assert [a.container_id for a in p] == [None, actual[0].id, None, actual[1].id]
    assert [a.ready for a in p] == [True, False, True, False]
    assert {a.reason for a in p} == {"spec changed (RollingUpdate)"}
    # the next update gives the plain names back
    rolled = [running(new_web, 0), running(new_web, 1)]
    rolled = [replace(c, name=f"web-{c.replica}-{h}") for c in rolled]
    p = plan([service("web", 2, image="busybox:3")], rolled, default_runtime=DEFAULT)
    assert [a.name for a in p if a.kind is Kind.CREATE] == ["web-0", "web-1"]


def test_lanes_keep_within_max_surge_and_max_unavailable():
    old = service("web", 5)
    new = Service.build("web", image="busybox:2", replicas=5, update={"maxSurge": 1, "maxUnavailable": 1})
    p = plan([new], [running(old, i) for i in range(5)], default_runtime=DEFAULT)
    lanes = [(a.kind.value, a.replica, a.after) for a in p]
    assert lanes == [
        ("create", 0, ()), ("delete", 0, (0,)),  # the surge lane: new first
        ("delete", 1, ()), ("create", 1, (2,)),  # the unavailable lane: old first
        ("create", 2, (1,)), ("delete", 2, (4,)),
        ("delete", 3, (3,)), ("create", 3, (6,)),
        ("create", 4, (5,)), ("delete", 4, (8,)),
    ]


def test_a_port_of_a_container_of_its_own_rolls_out_without_surge():
    old = Service.build("web", ports=[{"containerPort": 80, "hostPort": 8080, "mode": "host"}])
    new = Service.build("web", image="busybox:2", ports=[{"containerPort": 80, "hostPort": 8080, "mode": "host"}])
    p = plan([new], [running(old)], default_runtime=DEFAULT, balancing={DEFAULT})
    assert kinds(p) == [("delete", "web-0"), ("create", f"web-0-{new.spec_hash[:5]}")]
    balanced = Service.build("web", image="busybox:2", ports=[{"containerPort": 80, "hostPort": 8080}])
    p = plan([balanced], [running(old)], default_runtime=DEFAULT, balancing={DEFAULT})
    assert [a.kind for a in p] == [Kind.CREATE, Kind.DELETE]
    p = plan([balanced], [running(old)], default_runtime=DEFAULT)  # a runtime that balances nothing
    assert [a.kind for a in p] == [Kind.DELETE, Kind.CREATE]


def test_recreate_deletes_every_old_replica_before_the_first_new_one():
    old = service("web", 2)
    new = Service.build("web", image="busybox:2", replicas=2, update={"strategy": "Recreate"})
    p = plan([new], [running(old, 0), running(old, 1)], default_runtime=DEFAULT)
    assert kinds(p) == [("delete", "web-0"), ("delete", "web-1"), ("create", "web-0"), ("create", "web-1")]
    assert [a.after for a in p] == [(), (), (0, 1), (0, 1)]
    assert not any(a.ready for a in p)


@pytest.mark.parametrize("declared, had", [(None, "native"), ("native", DEFAULT), ("native", "crun")])
def test_a_changed_runtime_recreates_on_the_new_runtime(declared, had):
    web = service("web", runtime=declared)
    old = container("web", spec_hash=web.spec_hash, runtime=had)
    (action,) = plan([web], [old], default_runtime=DEFAULT)
    assert (action.kind, action.reason, action.container_id) == (Kind.RECREATE, "runtime changed", old.id)
    assert (action.runtime, action.old_runtime) == (declared or DEFAULT, had)


def test_a_spec_change_on_the_same_runtime_names_no_old_runtime():
    create, delete = plan([service("web", image="busybox:2")], [container("web")], default_runtime=DEFAULT)
    assert create.kind == Kind.CREATE and create.old_runtime is None
    assert (delete.kind, delete.runtime) == (Kind.DELETE, DEFAULT)


@pytest.mark.parametrize(
    "state, policy, exit_code, expected",
    [
        (State.CREATED, NEVER, None, ["start"]),
        (State.EXITED, ALWAYS, 0, ["start"]),
        (State.EXITED, ALWAYS, 1, ["start"]),
        (State.EXITED, ON_FAILURE, 3, ["start"]),
        (State.EXITED, ON_FAILURE, 0, []),
        (State.EXITED, NEVER, 1, []),
        (State.EXITED, NEVER, 0, []),
        (State.RUNNING, NEVER, None, []),
        (State.PAUSED, ALWAYS, None, ["unpause"]),
    ],
)
def test_restart_policy_decides_what_an_up_to_date_container_needs(state, policy, exit_code, expected):
    web = service("web", policy=policy)
    p = plan([web], [running(web, state=state, exit_code=exit_code)], default_runtime=DEFAULT)
    assert [a.kind.value for a in p] == expected


def test_the_start_reason_says_why():
    web = service("web", policy=ON_FAILURE)
    (action,) = plan([web], [running(web, state=State.EXITED, exit_code=137)], default_runtime=DEFAULT)
    assert action.reason == "exited with code 137 (OnFailure)"


@pytest.mark.parametrize(
    "state, policy, exit_code, expected",
    [
        (State.RUNNING, ALWAYS, None, ["pause"]),
        (State.PAUSED, ALWAYS, None, []),
        (State.CREATED, ALWAYS, None, ["start", "pause"]),
        (State.EXITED, ALWAYS, 0, ["start", "pause"]),
        (State.EXITED, NEVER, 0, []),  # a finished job stays finished, paused or not
    ],
)
def test_a_paused_service_is_brought_to_paused(state, policy, exit_code, expected):
    web = service("web", paused=True, policy=policy)
    p = plan([web], [running(web, state=state, exit_code=exit_code)], default_runtime=DEFAULT)
    assert [a.kind.value for a in p] == expected
    if expected == ["start", "pause"]:
        assert p.actions[1].after == (0,)


def test_a_paused_service_is_created_in_one_action():
    p = plan([service("web", paused=True)], [], default_runtime=DEFAULT)
    assert kinds(p) == [("create", "web-0")]


# -- deleting ------------------------------------------------------------------------------


def test_scaling_down_deletes_the_highest_replicas_first_without_ordering():
    web = service("web", 1)
    actual = [running(web, i) for i in (2, 0, 3, 1)]
    p = plan([web], actual, default_runtime=DEFAULT)
    assert kinds(p) == [("delete", "web-3"), ("delete", "web-2"), ("delete", "web-1")]
    assert {(a.reason, a.after) for a in p} == {("scaled down", ())}


def test_scaling_to_zero_deletes_every_replica():
    web = service("web", 2)
    p = plan([service("web", 0)], [running(web, 0), running(web, 1)], default_runtime=DEFAULT)
    assert kinds(p) == [("delete", "web-1"), ("delete", "web-0")]


def test_a_container_with_a_bad_replica_label_is_deleted_and_the_replica_made():
    web = service("web")
    bad = running(web)
    bad.labels[L_REPLICA] = "zero"
    p = plan([web], [bad], default_runtime=DEFAULT)
    assert sorted((a.kind.value, a.reason) for a in p) == [("create", "missing"), ("delete", "bad replica label")]


@pytest.mark.parametrize(
    "keep, drop",
    [
        ({"state": State.EXITED}, {"spec_hash": "h-old"}),  # up to date beats running
        ({}, {"state": State.EXITED}),  # running beats exited
        ({}, {"runtime": "native"}),  # the right runtime beats the wrong one
        ({"id": "a"}, {"id": "b"}),  # otherwise the lowest id, so the plan is deterministic
    ],
)
def test_duplicates_keep_the_best_container_and_delete_the_rest(keep, drop):
    web = service("web")
    kept = running(web, **keep)
    extra = container("web", **{"spec_hash": web.spec_hash, **drop})
    for actual in ([kept, extra], [extra, kept]):
        p = plan([web], actual, default_runtime=DEFAULT)
        deletes = [a for a in p if a.kind == Kind.DELETE]
        assert [(a.container_id, a.reason) for a in deletes] == [(extra.id, "duplicate")]
        assert all(a.container_id == kept.id for a in p if a.kind != Kind.DELETE)


def test_undeclared_services_are_deleted_only_with_prune():
    web, gone = service("web"), service("gone", 2)
    actual = [running(web), running(gone, 0), running(gone, 1)]
    assert not plan([web], actual, default_runtime=DEFAULT)
    p = plan([web], actual, default_runtime=DEFAULT, prune=True)
    assert kinds(p) == [("delete", "gone-1"), ("delete", "gone-0")]
    assert {a.reason for a in p} == {"not declared"}


def test_one_offs_and_other_namespaces_are_never_touched():
    web = service("web")
    actual = [
        running(web),
        container("web", 1, oneoff=True),  # would be "scaled down" if it counted
        container("web", 0, oneoff=True, spec_hash="h-old"),  # would be a duplicate if it counted
        container("gone", oneoff=True),
        container("gone", ns="other"),
        container("web", 5, ns="other"),
    ]
    assert not plan([web], actual, default_runtime=DEFAULT, prune=True)


def test_scope_widens_prune_to_namespaces_without_services():
    actual = [container("a", ns="old"), container("b", ns="older")]
    p = plan([], actual, default_runtime=DEFAULT, prune=True, scope=["old"])
    assert [(a.namespace, a.name) for a in p] == [("old", "a-0")]


def test_a_service_of_the_same_name_in_another_namespace_is_a_different_service():
    a, b = service("web", ns="a"), service("web", ns="b", image="busybox:2")
    p = plan([a, b], [running(a), running(service("web", ns="b"))], default_runtime=DEFAULT)
    assert [(a.kind.value, a.namespace) for a in p] == [("create", "b"), ("delete", "b")]


# -- ordering ------------------------------------------------------------------------------


def test_dependencies_come_up_first():
    web = service("web", 2, deps=["api"])
    api = service("api", deps=["db", "cache"])
    db, cache = service("db"), service("cache")
    p = plan([web, api, db, cache], [], default_runtime=DEFAULT)
    at = {a.name: i for i, a in enumerate(p.actions)}
    assert p.actions[at["api-0"]].after == tuple(sorted((at["db-0"], at["cache-0"])))
    assert p.actions[at["web-0"]].after == p.actions[at["web-1"]].after == (at["api-0"],)
    assert at["db-0"] < at["api-0"] < at["web-0"]
    assert p.actions[at["db-0"]].after == p.actions[at["cache-0"]].after == ()


def test_a_dependent_waits_for_a_recreated_dependency_through_an_unchanged_one():
    db, api = service("db", image="busybox:2"), service("api", deps=["db"])
    web = service("web", deps=["api"])
    actual = [container("db"), running(api)]
    p = plan([web, api, db], actual, default_runtime=DEFAULT)
    assert kinds(p) == [("create", f"db-0-{db.spec_hash[:5]}"), ("delete", "db-0"), ("create", "web-0")]
    assert p.actions[2].after == (0, 1)


def test_every_up_action_of_a_dependent_waits_including_pause_and_start():
    db = service("db", 2)
    web = service("web", deps=["db"], paused=True)
    actual = [running(web, state=State.CREATED)]
    p = plan([web, db], actual, default_runtime=DEFAULT)
    assert kinds(p) == [("create", "db-0"), ("create", "db-1"), ("start", "web-0"), ("pause", "web-0")]
    assert [a.after for a in p] == [(), (), (0, 1), (0, 1, 2)]


def test_pruned_services_are_deleted_dependents_first():
    db = container("db")
    api = [container("api", i, deps=["db"]) for i in range(2)]
    web = container("web", deps=["api", "db"])
    lone = container("lone")
    p = plan([], [db, *api, web, lone], default_runtime=DEFAULT, prune=True, scope=["default"])
    at = {a.name: i for i, a in enumerate(p.actions)}
    assert p.actions[at["api-0"]].after == p.actions[at["api-1"]].after == (at["web-0"],)
    assert p.actions[at["db-0"]].after == tuple(sorted((at["api-0"], at["api-1"], at["web-0"])))
    assert p.actions[at["lone-0"]].after == ()
    assert at["web-0"] < at["api-1"] < at["api-0"] < at["db-0"]


def test_the_plan_is_the_same_whatever_the_input_order():
    services = [service(f"s{i}", 2, deps=[f"s{i - 1}"] if i else []) for i in range(6)]
    actual = [running(services[1], 0), container("s2", 0, state=State.EXITED), container("x", 1)]
    expected = plan(services, actual, default_runtime=DEFAULT, prune=True)
    rng = random.Random(4)
    for _ in range(10):
        rng.shuffle(services)
        rng.shuffle(actual)
        assert plan(services, actual, default_runtime=DEFAULT, prune=True) == expected


def test_a_long_dependency_chain_plans_without_recursion():
    services = [service(f"s{i}", deps=[f"s{i - 1}"] if i else []) for i in range(2000)]
    p = plan(services, [], default_runtime=DEFAULT)
    assert [a.after for a in p][:3] == [(), (0,), (1,)]


# -- delete commands -----------------------------------------------------------------------


def test_plan_delete_removes_the_given_services_dependents_first():
    db, web = container("db"), container("web", deps=["db"])
    others = [container("other"), container("db", ns="elsewhere"), container("db", 1, oneoff=True)]
    for targets in ([("default", "db"), ("default", "web")], [service("db"), service("web")]):
        p = plan_delete(targets, [db, web, *others])
        assert [(a.kind.value, a.container_id, a.after) for a in p] == [("delete", web.id, ()), ("delete", db.id, (0,))]


def test_plan_delete_namespace_removes_everything_there_one_offs_included():
    actual = [container("a", oneoff=True), container("b", ns="other"), container("c", 1), container("c", 0)]
    p = plan_delete_namespace("default", actual)
    assert kinds(p) == [("delete", "a-0"), ("delete", "c-1"), ("delete", "c-0")]
    assert {a.reason for a in p} == {"namespace deleted"}


# -- properties over random states ---------------------------------------------------------

NAMES = ("s0", "s1", "s2", "s3", "s4")
RUNTIMES = (DEFAULT, "native")


@st.composite
def desired(draw):
    services = []
    for ns in draw(st.sets(st.sampled_from(("a", "b")), min_size=1)):
        names = draw(st.lists(st.sampled_from(NAMES), unique=True, max_size=5))
        for i, name in enumerate(names):
            services.append(
                service(
                    name, draw(st.integers(0, 3)), ns=ns,
                    runtime=draw(st.sampled_from((None, *RUNTIMES))),
                    deps=draw(st.one_of(st.just(names[i - 1 : i]), st.lists(st.sampled_from(names[:i]), unique=True)))
                    if i
                    else (),
                    policy=draw(st.sampled_from(list(RestartPolicy))),
                    paused=draw(st.booleans()),
                    image=draw(st.sampled_from(("busybox:1", "busybox:2"))),
                )
            )
    return services


@st.composite
def scenario(draw):
    """Desired services and an actual state near them: replicas missing, matching, stale, on the
    wrong runtime, in any state or duplicated, plus containers of other services and namespaces."""
    services = draw(desired())
    states, n = st.sampled_from(list(State)), itertools.count()
    containers = []
    for svc in services:
        if draw(st.booleans()):  # already converged, so dependents must look past it
            containers.extend(running(svc, replica, id=f"old{next(n)}") for replica in range(svc.spec.replicas))
            continue
        for replica in range(svc.spec.replicas + draw(st.integers(0, 2))):
            for _ in range(draw(st.sampled_from((0, 1, 1, 1, 2)))):
                c = running(svc, replica, id=f"old{next(n)}")
                if draw(st.booleans()):
                    c.state = draw(states)
                    c.exit_code = draw(st.sampled_from((None, 0, 1)))
                if draw(st.integers(0, 5)) == 0:
                    c.labels[L_SPEC_HASH] = "h-old"
                if draw(st.integers(0, 5)) == 0:
                    c.runtime = "crun"
                containers.append(c)
    for _ in range(draw(st.integers(0, 6))):
        name = draw(st.sampled_from(NAMES))
        earlier = NAMES[: NAMES.index(name)]  # label dependencies form a DAG, as specs do
        containers.append(
            container(
                name, draw(st.integers(0, 4)), ns=draw(st.sampled_from(("a", "b", "c"))),
                state=draw(states),
                runtime=draw(st.sampled_from(RUNTIMES)),
                exit_code=draw(st.sampled_from((None, 0, 1))),
                deps=draw(st.lists(st.sampled_from(earlier), unique=True)) if earlier else (),
                oneoff=draw(st.integers(0, 3)) == 0,
                id=f"old{next(n)}",
            )
        )
    return services, draw(st.permutations(containers))


def finished(c: Container, svc) -> bool:
    """An exited container its restart policy leaves alone."""
    policy = svc.spec.restart_policy
    return c.state == State.EXITED and (policy == NEVER or policy == ON_FAILURE and c.exit_code == 0)


def simulate(p: Plan, services, actual: list[Container]) -> list[Container]:
    """Apply p as a runtime would, checking that every action is valid where it runs."""
    by_key = {(s.namespace, s.name): s for s in services}
    live = {c.id: replace(c, labels=dict(c.labels)) for c in actual}
    for i, a in enumerate(p.actions):
        assert all(0 <= j < i for j in a.after), f"action {i} waits for a later action"
        if a.kind in (Kind.CREATE, Kind.RECREATE):
            if a.kind == Kind.RECREATE:
                assert live.pop(a.container_id).runtime == (a.old_runtime or a.runtime)
            svc = by_key[(a.namespace, a.service)]
            new = running(svc, a.replica, id=f"new{i}")
            assert new.runtime == a.runtime
            live[new.id] = new
            continue
        c = live[a.container_id]
        assert c.runtime == a.runtime
        if a.kind == Kind.DELETE:
            del live[a.container_id]
        elif a.kind == Kind.START:
            svc = by_key[(a.namespace, a.service)]
            assert c.state == State.CREATED or c.state == State.EXITED and not finished(c, svc)
            c.state = State.RUNNING
        elif a.kind == Kind.PAUSE:
            assert c.state == State.RUNNING
            c.state = State.PAUSED
        elif a.kind == Kind.UNPAUSE:
            assert c.state == State.PAUSED
            c.state = State.RUNNING
        else:
            pytest.fail(f"the planner made a {a.kind} action")
    return list(live.values())


def ancestors(p: Plan) -> list[set[int]]:
    seen: list[set[int]] = []
    for a in p.actions:
        seen.append(set(a.after).union(*(seen[j] for j in a.after)))
    return seen


def dependencies(services) -> dict[tuple[str, str], set[str]]:
    """Each service's transitive dependencies."""
    direct = {(s.namespace, s.name): set(s.spec.depends_on) for s in services}
    closure = {}
    for key in direct:
        todo, found = list(direct[key]), set()
        while todo:
            d = todo.pop()
            if d not in found:
                found.add(d)
                todo.extend(direct.get((key[0], d), ()))
        closure[key] = found
    return closure


@settings(max_examples=200, deadline=None)
@given(scenario(), st.booleans())
def test_a_plan_converges_in_dependency_order_and_replanning_is_empty(world, prune):
    services, actual = world
    p = plan(services, actual, default_runtime=DEFAULT, prune=prune)
    after = simulate(p, services, actual)
    before = ancestors(p)

    # Actions on one container happen one after the other.
    last: dict[str, int] = {}
    for i, a in enumerate(p.actions):
        if a.container_id in last:
            assert last[a.container_id] in before[i], f"{a.kind} {a.name} does not wait for its container"
        last[a.container_id or f"new{i}"] = i

    # Every up action waits, directly or not, for every up action of every service it depends on.
    closure = dependencies(services)
    up = [(i, a) for i, a in enumerate(p.actions) if a.kind in UP_KINDS]
    for i, a in up:
        for j, b in up:
            if b.namespace == a.namespace and b.service in closure[(a.namespace, a.service)]:
                assert j in before[i], f"{a.kind} {a.name} does not wait for {b.kind} {b.name}"

    # A pruned service's deletes wait for those of pruned services whose labels depend on it.
    pruned = [(i, a) for i, a in enumerate(p.actions) if a.reason == "not declared"]
    labels = {c.id: c.depends_on for c in actual}
    for i, a in pruned:
        for j, b in pruned:
            if b.namespace == a.namespace and a.service in labels[b.container_id]:
                assert j in before[i], f"delete {a.name} does not wait for delete {b.name}"

    # The result is exactly the desired state; what the plan must not touch is untouched.
    namespaces = {s.namespace for s in services}
    declared = {(s.namespace, s.name): s for s in services}
    ignored = [c for c in actual if c.namespace not in namespaces or c.oneoff]
    untouched = ignored if prune else [*ignored, *(
        c for c in actual if c not in ignored and (c.namespace, c.service) not in declared
    )]
    assert sorted(c.id for c in after if c.id.startswith("old") and c in untouched) == sorted(c.id for c in untouched)
    managed = [c for c in after if c not in untouched]
    by_replica = {(c.namespace, c.service, c.replica): c for c in managed}
    assert len(by_replica) == len(managed), "two containers for one replica"
    expected = {(s.namespace, s.name, i) for s in services for i in range(s.spec.replicas)}
    assert set(by_replica) == expected
    for (ns, name, _), c in by_replica.items():
        svc = declared[(ns, name)]
        assert (c.spec_hash, c.runtime) == (svc.spec_hash, svc.spec.runtime or DEFAULT)
        assert finished(c, svc) or c.state == (State.PAUSED if svc.spec.paused else State.RUNNING)

    assert plan(services, after, default_runtime=DEFAULT, prune=prune) == Plan()


# -- room on a namespace's bridge network -----------------------------------------------------------


def _on_bridge(c: Container, ip: str = "10.88.0.9") -> Container:
    return replace(c, ip=ip)


def test_replicas_beyond_the_bridge_networks_addresses_are_refused_at_their_line():
    from orchestr.errors import SpecError
    from orchestr.spec import loads

    services = loads("apiVersion: orchestr/v1\nkind: Service\nmetadata: {name: web, namespace: shop}\nspec:\n"
                     "  image: busybox:1\n  replicas: 100000\n", "shop.yaml")
    with pytest.raises(SpecError) as info:
        check_capacity(services, [], {(DEFAULT, "shop"): 253}, default_runtime=DEFAULT)
    assert str(info.value) == ("shop.yaml:6: spec.replicas: namespace shop would have 100000 containers on the "
                               "docker runtime's bridge network, which has addresses for 253; lower replicas, or use "
                               "network: none or host for some services")
    check_capacity(services, [], {(DEFAULT, "other"): 253}, default_runtime=DEFAULT)  # no limit known for shop
    check_capacity(services, [], {("native", "shop"): 253}, default_runtime=DEFAULT)  # nor for its runtime


def test_capacity_counts_every_bridge_container_the_namespace_would_have():
    web, db = service("web", 200), service("db", 53)
    check_capacity([web, db], [], {(DEFAULT, "default"): 253}, default_runtime=DEFAULT)
    with pytest.raises(Exception, match="would have 254 containers"):
        check_capacity([web, service("db", 54)], [], {(DEFAULT, "default"): 253}, default_runtime=DEFAULT)

    # off the bridge, a service takes no address
    host = Service.build("cache", replicas=500, network="host")
    none = Service.build("batch", replicas=500, network="none")
    check_capacity([web, db, host, none], [], {(DEFAULT, "default"): 253}, default_runtime=DEFAULT)

    # containers already there that these services do not claim keep their addresses, one-offs too
    undeclared = _on_bridge(container("old"))
    oneoff = _on_bridge(container("run-1", oneoff=True))
    own = [_on_bridge(running(web, i)) for i in range(200)]  # already counted as web's replicas
    elsewhere = [_on_bridge(container("old", ns="other")), _on_bridge(container("x", runtime="native")),
                 container("nonet")]  # other namespace, other runtime, no address
    actual = [*own, *elsewhere]
    check_capacity([web, db], actual, {(DEFAULT, "default"): 253}, default_runtime=DEFAULT)
    with pytest.raises(Exception, match=r"would have 254 containers .*, 1 of them already there and not in these"):
        check_capacity([web, db], [*actual, undeclared], {(DEFAULT, "default"): 253}, default_runtime=DEFAULT)
    # pruned, the undeclared one makes room; a one-off is never pruned
    check_capacity([web, db], [*actual, undeclared], {(DEFAULT, "default"): 253}, default_runtime=DEFAULT,
                   prune=True)
    with pytest.raises(Exception, match="would have 254 containers"):
        check_capacity([web, db], [*actual, oneoff], {(DEFAULT, "default"): 253}, default_runtime=DEFAULT,
                       prune=True)


def test_the_refusal_names_the_largest_service_of_the_namespace():
    from orchestr.errors import SpecError
    from orchestr.spec import loads

    text = "".join(f"---\napiVersion: orchestr/v1\nkind: Service\nmetadata: {{name: s{n}}}\nspec:\n"
                   f"  image: busybox:1\n  replicas: {n}\n" for n in (3, 9, 5))
    with pytest.raises(SpecError) as info:
        check_capacity(loads(text, "f.yaml"), [], {(DEFAULT, "default"): 16}, default_runtime=DEFAULT)
    assert (info.value.line, info.value.path) == (14, "spec.replicas")


def test_a_container_waiting_out_its_back_off_is_left_to_its_restart():
    web = service("web")
    waiting = replace(running(web, state=State.EXITED, exit_code=1), next_restart="2026-12-02T10:00:00Z")
    assert plan([web], [waiting], default_runtime=DEFAULT) == Plan()
    assert kinds(plan([web], [replace(waiting, next_restart=None)], default_runtime=DEFAULT)) == [("start", "web-0")]
