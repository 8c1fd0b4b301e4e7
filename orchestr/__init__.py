"""orchestr: declarative container orchestration for one host, as a library and a CLI.

    import orchestr
    services = orchestr.load(["specs/demo.yaml"])
    async with orchestr.Client() as oc:
        result = await oc.apply(services)

Names are imported on first use, so `import orchestr` stays cheap for the CLI.
"""

from __future__ import annotations

__version__ = "0.1.0"

_EXPORTS = {
    "Client": "orchestr.api",
    "ApplyResult": "orchestr.api",
    "Controller": "orchestr.controller",
    "ControllerRunning": "orchestr.controller",
    "load": "orchestr.spec",
    "dump": "orchestr.spec",
    "loads": "orchestr.spec",
    "Service": "orchestr.spec",
    "plan": "orchestr.planner",
    "Plan": "orchestr.planner",
    "Action": "orchestr.planner",
    "Kind": "orchestr.planner",
    "Outcome": "orchestr.executor",
    "Container": "orchestr.model",
    "ContainerSpec": "orchestr.model",
    "State": "orchestr.model",
    "Image": "orchestr.model",
    "Event": "orchestr.model",
    "EventAction": "orchestr.model",
    "Stats": "orchestr.model",
    "Health": "orchestr.model",
    "Readiness": "orchestr.health",
    "Runtime": "orchestr.runtime",
    "Capabilities": "orchestr.runtime",
    "supports": "orchestr.runtime",
    "OrchestrError": "orchestr.errors",
    "SpecError": "orchestr.errors",
    "UnknownRuntime": "orchestr.errors",
    "RuntimeFailure": "orchestr.errors",
    "NotFound": "orchestr.errors",
    "Conflict": "orchestr.errors",
    "RuntimeUnavailable": "orchestr.errors",
    "Timeout": "orchestr.errors",
    "TerminalFailure": "orchestr.errors",
    "Interrupted": "orchestr.errors",
}

__all__ = sorted(_EXPORTS)

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing: type checkers see the real names
if TYPE_CHECKING:  # `X as X`: re-exported, as type checkers read it
    from .api import (
        ApplyResult as ApplyResult,
        Client as Client,
    )
    from .errors import (
        Conflict as Conflict,
        Interrupted as Interrupted,
        NotFound as NotFound,
        OrchestrError as OrchestrError,
        RuntimeFailure as RuntimeFailure,
        RuntimeUnavailable as RuntimeUnavailable,
        SpecError as SpecError,
        TerminalFailure as TerminalFailure,
        Timeout as Timeout,
        UnknownRuntime as UnknownRuntime,
    )
    from .executor import (
        Outcome as Outcome,
    )
    from .model import (
        Container as Container,
        ContainerSpec as ContainerSpec,
        Event as Event,
        EventAction as EventAction,
        Health as Health,
        Image as Image,
        State as State,
        Stats as Stats,
    )
    from .health import (
        Readiness as Readiness,
    )
    from .planner import (
        Action as Action,
        Kind as Kind,
        plan as plan,
        Plan as Plan,
    )
    from .runtime import (
        Capabilities as Capabilities,
        Runtime as Runtime,
        supports as supports,
    )
    from .spec import (
        dump as dump,
        load as load,
        loads as loads,
        Service as Service,
    )


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'orchestr' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
