"""Every hook a plugin can implement. A plugin is a module with @hookimpl functions, found by entry point."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from .config import Config
    from .runtime import Runtime

hookspec = pluggy.HookspecMarker("orchestr")
hookimpl = pluggy.HookimplMarker("orchestr")

RuntimeFactory = Callable[["Config"], "Runtime"]


@hookspec
def orchestr_runtimes() -> dict[str, RuntimeFactory]:
    """Return {runtime name: factory}. Keep the module light: import heavy clients inside the factory."""

