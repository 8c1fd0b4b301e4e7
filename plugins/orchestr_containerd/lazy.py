"""Modules loaded at their first use: grpc and anyio, which the one-off run (oneoff.py, over wire.py) never
uses, but the runtime's modules it needs name at their top."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType


def module(name: str) -> ModuleType:
    """name's module as it is when already loaded, else one that loads itself when an attribute is first read.
    (Python 3.11's lazy loading is not thread-safe: the first use must not race another thread's.)"""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    lazy = importlib.util.module_from_spec(spec)
    sys.modules[name] = lazy
    loader.exec_module(lazy)
    return lazy
