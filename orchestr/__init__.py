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


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'orchestr' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
