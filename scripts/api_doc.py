"""Writes docs/api.md from the docstrings and signatures of orchestr's public names: python scripts/api_doc.py"""

from __future__ import annotations

import enum
import inspect
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import orchestr  # noqa: E402

ORDER = ["Client", "ApplyResult", "load", "loads", "dump", "Service", "plan", "Plan", "Action", "Kind", "Outcome",
         "Container", "ContainerSpec", "State", "Image", "Event", "EventAction", "Stats", "Runtime", "Capabilities",
         "supports", "OrchestrError", "SpecError", "UnknownRuntime", "Interrupted", "RuntimeFailure", "NotFound",
         "Conflict", "RuntimeUnavailable", "Timeout", "TerminalFailure"]


def _doc(obj: object) -> str:
    return inspect.cleandoc(obj.__doc__ or "").strip()


def _signature(obj: object) -> str:
    """The signature as written in the source: annotations are strings there (postponed evaluation)."""
    try:
        sig = inspect.signature(obj)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "(...)"
    params, star = [], False
    for p in sig.parameters.values():
        if p.kind == p.KEYWORD_ONLY and not star:
            params.append("*")
            star = True
        text = {p.VAR_POSITIONAL: "*", p.VAR_KEYWORD: "**"}.get(p.kind, "") + p.name
        if p.kind == p.VAR_POSITIONAL:
            star = True
        if p.annotation is not p.empty:
            text += f": {p.annotation if isinstance(p.annotation, str) else inspect.formatannotation(p.annotation)}"
        if p.default is not p.empty:
            text += f" = {p.default!r}"
        params.append(text)
    ret = sig.return_annotation
    shown = "" if ret is sig.empty else f" -> {ret if isinstance(ret, str) else inspect.formatannotation(ret)}"
    return f"({', '.join(params)}){shown}"


def _members(cls: type) -> list[str]:
    out = []
    for name, member in vars(cls).items():
        if name.startswith("_") or not (inspect.isfunction(member) or isinstance(member, property)):
            continue
        if isinstance(member, property):
            doc = _doc(member.fget) if member.fget else ""
            out.append(f"- `{name}` (property){': ' + doc.splitlines()[0] if doc else ''}")
            continue
        doc = _doc(member)
        prefix = "async " if inspect.iscoroutinefunction(member) or inspect.isasyncgenfunction(member) else ""
        line = f"- `{prefix}{name}{_signature(member).replace('self, ', '').replace('(self)', '()')}`"
        out.append(line + (f"\n\n  {doc.replace(chr(10), chr(10) + '  ')}\n" if doc else ""))
    return out


def render() -> str:
    parts = ["# orchestr's library API", "",
             "Generated from the docstrings by `python scripts/api_doc.py`; tests/test_typing.py checks it is current. "
             "Every name below is imported from `orchestr` (`orchestr.__all__`); the package is typed (`py.typed`) and "
             "passes `mypy --strict`.", ""]
    for name in ORDER:
        obj = getattr(orchestr, name)
        if isinstance(obj, type) and issubclass(obj, enum.Enum):
            parts += [f"## {name}", "", _doc(obj), "", "Values: " + ", ".join(f"`{m.value}`" for m in obj), ""]
        elif isinstance(obj, type):
            bases = [b.__name__ for b in obj.__bases__ if b is not object]
            title = f"## {name}" + (f" ({', '.join(bases)})" if issubclass(obj, BaseException) else "")
            parts += [title, "", _doc(obj), ""]
            if not issubclass(obj, BaseException):
                members = _members(obj)
                parts += members + ([""] if members else [])
        else:
            parts += [f"## {name}{_signature(obj)}", "", _doc(obj), ""]
    return "\n".join(p.rstrip() for p in parts).rstrip() + "\n"


if __name__ == "__main__":
    (ROOT / "docs" / "api.md").write_text(render())
