"""The planner: a pure function from desired services and actual containers to an ordered plan.

No I/O, no clock, no randomness: the same inputs always give the same plan.
"""

from __future__ import annotations

import enum
from collections import defaultdict
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .graph import depth_first
from .model import L_ONEOFF, L_REPLICA, L_SERVICE, L_SPEC_HASH, Container, Deployment, RestartPolicy, State

if TYPE_CHECKING:
    from .spec import Service


class Kind(enum.StrEnum):
    CREATE = "create"  # make a new container and bring it to its desired state (running, or paused)
    START = "start"  # start an existing created/exited container
    STOP = "stop"
    DELETE = "delete"  # stop (with the grace period) and remove
    RECREATE = "recreate"  # delete the existing container, then CREATE its replacement
    PAUSE = "pause"
    UNPAUSE = "unpause"
    DEPLOY = "deploy"  # hand a whole service to a runtime that runs services (create, scale or roll it out)
    UNDEPLOY = "undeploy"  # remove a whole service from such a runtime




# Actions that bring a service up; a service's up actions wait for those of the services it depends on.
UP_KINDS = frozenset({Kind.CREATE, Kind.RECREATE, Kind.START, Kind.UNPAUSE, Kind.PAUSE, Kind.DEPLOY})


@dataclass(frozen=True, slots=True)
class Action:
    kind: Kind
    namespace: str
    service: str
    replica: int  # 0 for DEPLOY and UNDEPLOY
    name: str  # the container's orchestr name, <service>-<replica>; the service's for DEPLOY and UNDEPLOY
    runtime: str  # where the action happens; for CREATE/RECREATE, where the new container goes
    container_id: str | None  # the existing container acted on (a service's id for DEPLOY and UNDEPLOY); None for
    # CREATE, and for the DEPLOY of a service the runtime does not run yet
    reason: str  # for people: "missing", "spec changed", "scaled down", "exited (Always)", ...
    after: tuple[int, ...] = ()  # indexes of actions in the same plan that must succeed first
    old_runtime: str | None = None  # RECREATE across runtimes: the runtime holding container_id
    ready: bool = False  # CREATE of a rolling update: succeeds only once the new container is ready


@dataclass(frozen=True, slots=True)
class Plan:
    actions: tuple[Action, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.actions)

    def __len__(self) -> int:
        return len(self.actions)

    def __iter__(self) -> Iterator[Action]:
        return iter(self.actions)


Key = tuple[str, str]  # (namespace, service)
# One up step: the service, kind, replica, the container (or whole service) acted on, reason, the steps of the
# same service it waits for (negative offsets: -1 is the step before it, as a PAUSE right after the START of the
# same container), the new container's name (None: <service>-<replica>), and whether it must become ready.
_Step = tuple[Key, Kind, int, Container | Deployment | None, str, tuple[int, ...], str | None, bool]
_BEFORE = (-1,)


def plan(
    services: Sequence[Service],
    actual: Sequence[Container],
    *,
    default_runtime: str,
    prune: bool = False,
    scope: Iterable[str] | None = None,
    deployed: Sequence[Deployment] = (),
    service_runtimes: Collection[str] = frozenset(),
    balancing: Collection[str] = frozenset(),
) -> Plan:
    """The actions that turn `actual` into `services`.

    Containers are seen only in `scope` (the services' namespaces plus any given) and one-off
    containers are never touched. Containers of undeclared services in scope are deleted only
    with `prune`. A container that should be paused but is created or exited gets START then
    PAUSE; an exited one that its restart policy leaves alone (a finished job) stays exited.

    A service on one of `service_runtimes` (runtimes that run whole services) is compared with its entry in
    `deployed` instead: it gets one DEPLOY when it is missing, its spec changed or its replicas did, and the
    runtime's containers are left to the runtime.

    Replicas whose spec changed are replaced as the service's `update` says (see _rollout). `balancing` names the
    runtimes that balance service ports: elsewhere, and with a port of mode host, a host port is one container's,
    so a rolling update there makes no replica beyond spec.replicas (maxSurge 0).
    """
    # Read the labels directly rather than through Container's properties: at ten thousand
    # containers the property calls alone cost more than the rest of the plan. Replica labels
    # stay strings here; the few containers left over are parsed below. Containers out of scope
    # are indexed too but no service can claim them, and leftovers are filtered by scope.
    found: dict[tuple[str, str, str], Container] = {}
    extra: dict[tuple[str, str, str], list[Container]] = {}  # further containers claiming one replica
    whole = service_runtimes
    for c in actual:
        labels = c.labels
        if whole and c.runtime in whole:
            continue  # its runtime runs it as part of a whole service
        if labels.get(L_ONEOFF) != "true":
            at = (c.namespace, labels.get(L_SERVICE, c.name), labels.get(L_REPLICA, "0"))
            if found.setdefault(at, c) is not c:
                extra.setdefault(at, []).append(c)

    steps: list[_Step] = []
    changed: list[tuple[int, Container]] = []  # replicas of the service at hand whose spec changed
    duplicates: list[Container] = []
    take = found.pop  # bound once: the loop below runs for every replica
    running = State.RUNNING
    services_found = {(d.namespace, d.name): d for d in deployed}
    for service in services:
        spec = service.spec
        key = (service.namespace, service.name)
        runtime = spec.runtime or default_runtime
        if whole and runtime in whole:
            d = services_found.get(key)
            if d is not None and d.runtime == runtime:
                del services_found[key]
                if d.spec_hash != service.spec_hash:
                    steps.append((key, Kind.DEPLOY, 0, d, "spec changed", (), None, False))
                elif d.replicas != spec.replicas:
                    steps.append((key, Kind.DEPLOY, 0, d, f"scaled to {spec.replicas}", (), None, False))
            else:
                steps.append((key, Kind.DEPLOY, 0, None, "missing", (), None, False))
            continue
        paused = spec.paused
        spec_hash = None
        for i in range(spec.replicas):
            at = (*key, str(i))
            c = take(at, None)  # type: ignore[arg-type]  # dict.pop's default
            if c is None:
                steps.append((key, Kind.CREATE, i, None, "missing", (), None, False))
                continue
            if spec_hash is None:
                spec_hash = service.spec_hash
            if extra and at in extra:
                candidates = [c, *extra.pop(at)]
                c = _keeper(candidates, spec_hash, runtime, paused)
                duplicates.extend(d for d in candidates if d is not c)
            if c.runtime != runtime:
                steps.append((key, Kind.RECREATE, i, c, "runtime changed", (), None, False))
            elif c.labels.get(L_SPEC_HASH, "") != spec_hash:
                changed.append((i, c))
            elif c.state is not running or paused:
                _converge(steps, key, i, c, spec.restart_policy, paused)
        if changed:
            _rollout(steps, key, service, changed, runtime in balancing)
            changed = []
    if not (steps or found or extra or duplicates or services_found):
        return Plan()

    # Whatever no replica claimed: surplus of a declared service, or a service no longer declared.
    declared: dict[Key, Service] = {(s.namespace, s.name): s for s in services}
    namespaces = {ns for ns, _ in declared}.union(scope or ())
    surplus: defaultdict[Key, list[tuple[Container, str]]] = defaultdict(list)
    pruned: list[tuple[Container | Deployment, str]] = []
    for c in [*found.values(), *(c for cs in extra.values() for c in cs)]:
        key = (c.namespace, c.service)
        if key in declared:
            if c.runtime != (declared[key].spec.runtime or default_runtime):
                reason = "runtime changed"  # to a runtime that runs whole services
            else:
                reason = "scaled down" if c.replica >= declared[key].spec.replicas else "bad replica label"
            surplus[key].append((c, reason))
        elif prune and c.namespace in namespaces:
            pruned.append((c, "not declared"))
    moved: list[tuple[Container | Deployment, str]] = []
    for key, d in services_found.items():
        if key in declared:
            moved.append((d, "runtime changed"))
        elif prune and d.namespace in namespaces:
            pruned.append((d, "not declared"))
    for c in duplicates:
        surplus[(c.namespace, c.service)].append((c, "duplicate"))
    if not (steps or surplus or pruned or moved):
        return Plan()

    actions: list[Action] = []
    _add_deletes(actions, pruned)
    _add_deletes(actions, moved)
    for key in sorted(surplus):
        actions.extend(_delete(c, reason, ()) for c, reason in sorted(surplus[key], key=_highest_first))
    _add_ups(actions, declared, steps, default_runtime)
    return Plan(tuple(actions))


def check_capacity(
    services: Sequence[Service],
    actual: Sequence[Container],
    capacity: Mapping[tuple[str, str], int],
    *,
    default_runtime: str,
    prune: bool = False,
) -> None:
    """Raises SpecError, at the replicas of the namespace's largest service, when a namespace would have more
    containers on a runtime's bridge network than capacity[(runtime, namespace)] says it has addresses for.

    Services on network host or none take no address. Containers already there that no given service claims
    keep theirs (one-off containers, and services these files leave out unless prune deletes them)."""
    declared = {(s.namespace, s.name) for s in services}
    wanted: dict[tuple[str, str], int] = {}
    largest: dict[tuple[str, str], Service] = {}
    for service in services:
        spec = service.spec
        at = (spec.runtime or default_runtime, service.namespace)
        if spec.network != "bridge" or at not in capacity:
            continue
        wanted[at] = wanted.get(at, 0) + spec.replicas
        if at not in largest or spec.replicas > largest[at].spec.replicas:
            largest[at] = service
    kept: defaultdict[tuple[str, str], int] = defaultdict(int)
    for c in actual:
        at = (c.runtime, c.namespace)
        if at in wanted and c.ip and (c.oneoff or (c.namespace, c.service) not in declared and not prune):
            kept[at] += 1
    for at, count in wanted.items():
        if count + kept[at] > capacity[at]:
            runtime, namespace = at
            also = f", {kept[at]} of them already there and not in these files" if kept[at] else ""
            raise largest[at].error(
                "spec.replicas",
                f"namespace {namespace} would have {count + kept[at]} containers on the {runtime} runtime's bridge "
                f"network{also}, which has addresses for {capacity[at]}; lower replicas, or use network: none or "
                "host for some services")


def plan_delete(
    targets: Iterable[Service | Key], actual: Sequence[Container], *, deployed: Sequence[Deployment] = (),
) -> Plan:
    """Stop and delete every container of the given services (Service objects or (namespace, name)
    keys), dependents before their dependencies; one-off containers stay. A service in deployed is removed
    as a whole, and its runtime's containers are left to it."""
    keys = {t if isinstance(t, tuple) else (t.namespace, t.name) for t in targets}
    whole = {d.runtime for d in deployed}
    doomed: list[tuple[Container | Deployment, str]] = [
        (c, "deleted") for c in actual if (c.namespace, c.service) in keys and not c.oneoff and c.runtime not in whole]
    doomed += [(d, "deleted") for d in deployed if (d.namespace, d.name) in keys]
    actions: list[Action] = []
    _add_deletes(actions, doomed)
    return Plan(tuple(actions))


def plan_delete_namespace(namespace: str, actual: Sequence[Container], *, deployed: Sequence[Deployment] = ()) -> Plan:
    """Stop and delete every container of a namespace, one-off containers included, and every service of it
    that a runtime runs as a whole."""
    whole = {d.runtime for d in deployed}
    doomed: list[tuple[Container | Deployment, str]] = [
        (c, "namespace deleted") for c in actual if c.namespace == namespace and c.runtime not in whole]
    doomed += [(d, "namespace deleted") for d in deployed if d.namespace == namespace]
    actions: list[Action] = []
    _add_deletes(actions, doomed)
    return Plan(tuple(actions))


def _converge(steps: list[_Step], key: Key, i: int, c: Container, policy: RestartPolicy, paused: bool) -> None:
    """Steps that take an up-to-date container from its state to running (or paused)."""
    state = c.state
    started = True
    if state == State.CREATED:
        steps.append((key, Kind.START, i, c, "created", (), None, False))
    elif state == State.EXITED:
        if c.next_restart is not None:
            return  # its restart is scheduled, after a crash-loop back-off: starting it now would undo that
        if policy == RestartPolicy.ALWAYS:
            steps.append((key, Kind.START, i, c, "exited (Always)", (), None, False))
        elif policy == RestartPolicy.ON_FAILURE and c.exit_code != 0:
            steps.append((key, Kind.START, i, c, f"exited with code {c.exit_code} (OnFailure)", (), None, False))
        else:
            return  # a finished job: nothing to pause either
    elif state == State.PAUSED:
        if not paused:
            steps.append((key, Kind.UNPAUSE, i, c, "paused", (), None, False))
        return
    else:
        started = False
    if paused:
        steps.append((key, Kind.PAUSE, i, c, "paused in spec", _BEFORE if started else (), None, False))


def _rollout(steps: list[_Step], key: Key, service: Service, changed: list[tuple[int, Container]],
             balanced: bool) -> None:
    """The steps that replace the changed replicas, as the service's update strategy says.

    Recreate: every old container is deleted, then every new one created. RollingUpdate (Kubernetes' defaults:
    maxSurge and maxUnavailable 25%): the replicas are taken in lanes, as many lanes as there is room for, maxSurge
    lanes that create a new replica and delete an old one once it is ready, maxUnavailable lanes that delete an
    old replica and then create its successor; each lane's next replica waits for the one before it. So at no
    time are there more than spec.replicas + maxSurge containers or fewer than spec.replicas - maxUnavailable
    ready ones (counting those left alone). While both exist, the new container of a replica takes the name its
    old one does not have: <service>-<replica>, or that followed by the first five digits of its spec hash."""
    spec = service.spec
    update = getattr(spec, "update", None)  # a cached service has none: it is only ever used for empty plans
    name, spec_hash = service.name, service.spec_hash

    def new_name(i: int, old: Container) -> str:
        plain = f"{name}-{i}"
        return f"{plain}-{spec_hash[:5]}" if old.name == plain else plain

    if update is None or update.strategy == "Recreate":
        first = len(changed)
        for i, c in changed:
            steps.append((key, Kind.DELETE, i, c, "spec changed (Recreate)", (), None, False))
        for n, (i, c) in enumerate(changed):
            deps = tuple(range(-first - n, -n))  # every delete
            steps.append((key, Kind.CREATE, i, None, "spec changed (Recreate)", deps, f"{name}-{i}", False))
        return
    surge, unavailable = update.room(spec.replicas)
    own_ports = any(p.host_port is not None and (p.mode == "host" or not balanced) for p in spec.ports)
    if own_ports:  # a second container could not bind the port
        surge, unavailable = 0, max(unavailable, 1)
    surge = min(surge, len(changed))
    lanes = surge + min(unavailable, len(changed) - surge)
    last: dict[int, int] = {}  # lane -> position of its last step, counted from the first step of the rollout
    at = 0
    reason = "spec changed (RollingUpdate)"
    for n, (i, c) in enumerate(changed):
        lane = n % lanes
        wait = (last[lane] - at,) if lane in last else ()
        if lane < surge:  # create, then delete the old one once the new one is ready
            steps.append((key, Kind.CREATE, i, None, reason, wait, new_name(i, c), True))
            steps.append((key, Kind.DELETE, i, c, reason, _BEFORE, None, False))
        else:  # delete, then create its successor
            steps.append((key, Kind.DELETE, i, c, reason, wait, None, False))
            steps.append((key, Kind.CREATE, i, None, reason, _BEFORE, new_name(i, c), True))
        at += 2
        last[lane] = at - 1


def _keeper(candidates: list[Container], spec_hash: str, runtime: str, paused: bool) -> Container:
    """Of several containers for one replica, the one to keep: up to date first, then already in
    the desired state, then running."""
    desired = State.PAUSED if paused else State.RUNNING

    def rank(c: Container) -> tuple[bool, bool, bool, str]:
        return c.spec_hash != spec_hash or c.runtime != runtime, c.state != desired, c.state != State.RUNNING, c.id

    return min(candidates, key=rank)


def _highest_first(item: tuple[Container | Deployment, str]) -> tuple[int, str]:
    c = item[0]
    return (0 if isinstance(c, Deployment) else -c.replica), c.id


def _delete(c: Container | Deployment, reason: str, after: tuple[int, ...]) -> Action:
    if isinstance(c, Deployment):
        return Action(Kind.UNDEPLOY, c.namespace, c.name, 0, c.name, c.runtime, c.id, reason, after)
    return Action(Kind.DELETE, c.namespace, c.service, c.replica, c.name, c.runtime, c.id, reason, after)


def _add_ups(actions: list[Action], declared: dict[Key, Service], steps: list[_Step], default_runtime: str) -> None:
    """Append up steps service by service, dependencies first. A service's actions wait for the
    nearest up actions along its dependencies: those of a dependency, or, when that dependency has
    none, whatever it would have waited for itself."""
    by_service: defaultdict[Key, list[_Step]] = defaultdict(list)
    for step in steps:
        by_service[step[0]].append(step)

    def deps(key: Key) -> list[Key]:
        ns = key[0]
        return [(ns, d) for d in declared[key].spec.depends_on if (ns, d) in declared]

    frontier: dict[Key, tuple[int, ...]] = {}
    order, _ = depth_first(sorted(declared), deps)
    for key in order:
        waits = tuple(sorted({i for d in deps(key) for i in frontier.get(d, ())}))
        if key not in by_service:
            frontier[key] = waits
            continue
        runtime = declared[key].spec.runtime or default_runtime
        own: list[int] = []
        for (ns, name), kind, i, c, reason, needs, new_name, ready in by_service[key]:
            after = (*waits, *(own[len(own) + d] for d in needs)) if needs else waits
            if kind is Kind.DELETE:  # an old replica a rolling update replaces: its own runtime and name
                assert isinstance(c, Container)
                own.append(len(actions))
                actions.append(Action(kind, ns, name, i, c.name, c.runtime, c.id, reason, after))
                continue
            cid, old = (c.id, c.runtime if c.runtime != runtime else None) if c is not None else (None, None)
            own.append(len(actions))
            shown = name if kind is Kind.DEPLOY else new_name or f"{name}-{i}"
            actions.append(Action(kind, ns, name, i, shown, runtime, cid, reason, after, old, ready))
        frontier[key] = tuple(own)


def _add_deletes(actions: list[Action], doomed: Sequence[tuple[Container | Deployment, str]]) -> None:
    """Append deletes service by service, each service's after those of the doomed services that
    depend on it (read from the containers' own labels, so no spec is needed)."""
    by_service: defaultdict[Key, list[tuple[Container | Deployment, str]]] = defaultdict(list)
    for c, reason in doomed:
        by_service[(c.namespace, c.service)].append((c, reason))
    dependents: defaultdict[Key, set[Key]] = defaultdict(set)
    for key, items in by_service.items():
        ns = key[0]
        for c, _ in items:
            for d in c.depends_on:
                if (ns, d) in by_service and (ns, d) != key:
                    dependents[(ns, d)].add(key)

    done: dict[Key, list[int]] = {}
    order, _ = depth_first(sorted(by_service), lambda k: sorted(dependents.get(k, ())))
    for key in order:
        after = tuple(sorted(i for d in dependents.get(key, ()) for i in done.get(d, ())))
        done[key] = []
        for c, reason in sorted(by_service[key], key=_highest_first):
            done[key].append(len(actions))
            actions.append(_delete(c, reason, after))
