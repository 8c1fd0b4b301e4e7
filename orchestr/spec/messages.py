"""How spec errors read: values shown in the user's YAML notation, and pydantic's errors in orchestr's words."""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn, get_args

from pydantic import BaseModel
from pydantic_core import PydanticCustomError


def show(value: Any) -> str:
    """A value in the user's YAML notation, for the 'got ...' part of messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    return str(value)


def show_bytes(n: int) -> str:
    """n bytes in the largest binary unit that keeps one decimal, as specs write them."""
    for unit, factor in (("Ti", 1 << 40), ("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)):
        if n >= factor:
            return f"{n / factor:.1f}".removesuffix(".0") + unit
    return str(n)


def fail(message: str, *at: str | int) -> NoReturn:
    """Reject a value with message shown as it is, at sub-path `at` of what is being validated."""
    raise PydanticCustomError("orchestr", "{message}", {"message": message, "at": at})


def field_path(loc: Sequence[str | int]) -> str:
    """A pydantic location as specs name fields: spec.ports[0].hostPort."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _model_at(loc: Sequence[str | int], root: type[BaseModel]) -> type[BaseModel] | None:
    """The model whose fields are at loc, following aliases, tuples and optionals from root."""
    model = root
    for part in loc:
        if isinstance(part, int):
            continue
        fields = {f.alias or n: f for n, f in model.model_fields.items()}
        if part not in fields:
            return None
        ann = fields[part].annotation
        found = [a for a in (get_args(ann) or (ann,)) if isinstance(a, type) and issubclass(a, BaseModel)]
        if not found:
            return None
        model = found[0]
    return model


_KINDS = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "finite_number": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "list_type": "a list",
    "tuple_type": "a list",
}
_BOUNDS = {"greater_than_equal": ("ge", ">="), "greater_than": ("gt", ">"),
           "less_than_equal": ("le", "<="), "less_than": ("lt", "<")}


def explain(error: Mapping[str, Any], root: type[BaseModel]) -> tuple[tuple[str | int, ...], str]:
    """Field path and message of one pydantic error met validating root, in orchestr's words."""
    kind, loc, ctx = error["type"], tuple(error["loc"]), error.get("ctx") or {}
    got = show(error.get("input"))
    if kind == "orchestr":
        return loc + tuple(ctx["at"]), ctx["message"]
    if kind == "missing":
        return loc, "required field is missing"
    if kind == "extra_forbidden":
        model = _model_at(loc[:-1], root)
        names = [f.alias or n for n, f in model.model_fields.items()] if model else []
        close = difflib.get_close_matches(str(loc[-1]), names, n=1)
        if close:
            return loc, f"unknown field, did you mean '{close[0]}'?"
        return loc, f"unknown field, expected one of: {', '.join(names)}"
    if kind in ("literal_error", "enum"):
        expected = ctx.get("expected", "")
        return loc, f"expected {'one of ' if ' or ' in expected else ''}{expected}, got {got}"
    if kind in _BOUNDS:
        key, op = _BOUNDS[kind]
        what = "an integer" if isinstance(ctx.get(key), int) else "a number"
        return loc, f"expected {what} {op} {ctx.get(key)}, got {got}"
    if kind in _KINDS:
        return loc, f"expected {_KINDS[kind]}, got {got}"
    return loc, f"invalid value {got}"
