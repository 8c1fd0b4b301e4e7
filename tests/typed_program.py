"""A program using orchestr's library as its users do, for mypy --strict (tests/test_typing.py): never run."""

from __future__ import annotations

import anyio

import orchestr
from orchestr import Client, Container, Outcome, Plan, Service, SpecError


async def main(paths: list[str]) -> int:
    try:
        services: list[Service] = orchestr.load(paths, project="shop", warn=print)
    except SpecError as e:
        print(e.file, e.line, e.path, e.message)
        return 2
    async with Client() as oc:
        plan: Plan = await oc.plan(services)
        for action in plan:
            print(action.kind.value, action.namespace, action.name)

        def event(outcome: Outcome) -> None:
            print(outcome.ok, outcome.error)

        result = await oc.apply(services, on_event=event)
        containers: list[Container] = await oc.get("shop")
        for c in containers:
            print(c.name, c.state, c.ports, c.as_dict()["id"])
        async for replica, line in oc.service_logs("web", "shop"):
            print(replica, line.stream, line.data.decode())
        inspected: Container = await oc.inspect("web-0", "shop")
        print(inspected.labels, orchestr.dump(services))
        return 0 if result.ok else 1


if __name__ == "__main__":
    anyio.run(main, ["docker-compose.yml"])
