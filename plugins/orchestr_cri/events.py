"""Events from what a CRI runtime shows: each pod's state compared with the last look at it; pure functions.

Whether the runtime streams its changes (GetContainerEvents, where it has it) or orchestr polls, what happened
is decided the same way: by comparing the pod's view before and after. A streamed event only says when to
look again, so both ways report the same events in the same order.
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestr.containers import rfc3339
from orchestr.model import L_NAMESPACE, Event, EventAction, State

from .mapping import RUNTIME, latest
from .proto import cri_pb2 as pb

_STATES = {pb.CONTAINER_CREATED: State.CREATED, pb.CONTAINER_RUNNING: State.RUNNING}


@dataclass(frozen=True, slots=True)
class View:
    """One look at a pod: its state and which container is its current one."""

    id: str
    name: str
    namespace: str
    state: State
    container: str  # the current container's id ("" before it has one)
    exit_code: int | None = None


def views(pods: list[pb.PodSandbox], containers: list[pb.Container]) -> dict[str, View]:
    """The views of orchestr's pods from one listing of sandboxes and containers (exit codes not yet known)."""
    by_pod: dict[str, list[pb.Container]] = {}
    for c in containers:
        by_pod.setdefault(c.pod_sandbox_id, []).append(c)
    found = {}
    for pod in pods:
        if L_NAMESPACE not in pod.labels:
            continue
        current = latest(by_pod.get(pod.id, []))
        if current is None:
            state = State.CREATED if pod.state == pb.SANDBOX_READY else State.EXITED
        else:
            state = _STATES.get(current.state, State.EXITED) if pod.state == pb.SANDBOX_READY else State.EXITED
        found[pod.id] = View(pod.id, pod.metadata.name, pod.labels[L_NAMESPACE], state, current.id if current else "")
    return found


def needs_exit_code(before: View | None, now: View) -> bool:
    """Whether now has ended since before, so that its die event needs the exit code."""
    return now.state is State.EXITED and now.container != "" and (
        before is None or before.state is not State.EXITED or before.container != now.container)


def _actions(before: View | None, now: View) -> list[EventAction]:
    if before is None:
        steps, was = [EventAction.CREATE], State.CREATED
    else:
        steps, was = [], before.state
        if before.container and before.container != now.container:  # a new container took the old one's place
            if was is State.RUNNING:
                steps.append(EventAction.DIE)  # the old one ended between two looks
            was = State.CREATED
    if now.state is was:
        return steps
    if was is State.CREATED and now.state in (State.RUNNING, State.EXITED):
        steps.append(EventAction.START)
    if now.state is State.EXITED:
        steps.append(EventAction.DIE)
    return steps


def diff(before: dict[str, View], now: dict[str, View]) -> list[Event]:
    """The events that lead from one look to the next, in order within each pod."""
    stamp = rfc3339()
    found = []
    for id, view in now.items():
        for action in _actions(before.get(id), view):
            died = action is EventAction.DIE and view.state is State.EXITED
            found.append(Event(RUNTIME, id, view.name, view.namespace, action,
                               view.state if action is not EventAction.DIE else State.EXITED,
                               view.exit_code if died else None, stamp))
    for id in before.keys() - now.keys():
        gone = before[id]
        found.append(Event(RUNTIME, id, gone.name, gone.namespace, EventAction.DESTROY, None, None, stamp))
    return found


def pod_of(event: pb.ContainerEventResponse) -> str:
    """The pod a streamed event concerns: its sandbox's id (a sandbox's own events name it as the container)."""
    return event.pod_sandbox_status.id or event.container_id
