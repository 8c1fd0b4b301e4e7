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
    """Return {runtime name: factory}. Keep the module light: import heavy clients inside the factory.

    A factory takes the Config and returns an orchestr.runtime.Runtime: the required verbs, its
    ``capabilities``, and each optional verb those declare.

    Every implementation is called, in pluggy's order: those marked ``tryfirst`` first, those marked
    ``trylast`` last, and within each group the plugin registered last first. When two plugins offer the
    same name, the first in that order wins and ``orchestr plugins`` shows the other as shadowed; so a
    plugin that means to replace a built-in runtime marks its implementation ``@hookimpl(tryfirst=True)``.
    """

