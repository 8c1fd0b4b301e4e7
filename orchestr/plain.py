"""Bases for orchestr's data classes: the methods @dataclass would compile for each class, written once.

@dataclass writes a __repr__, an __eq__ and, for a frozen class, a __hash__, a __setattr__ and a __delattr__ as
source text and compiles them, for every class, at every start of every command: for the classes `orchestr get`
loads, more time than it takes to list hundreds of containers. A class declared

    @dataclass(slots=True, repr=False, eq=False)
    class Port(Frozen):

gets from @dataclass only its fields and __init__ (fields(), replace(), asdict() and match work as ever), and
from Frozen the rest, behaving as @dataclass(frozen=True, slots=True) would; Mutable stands for
@dataclass(slots=True): compared by value, assignable, unhashable.
"""

from __future__ import annotations

from dataclasses import FrozenInstanceError
from typing import Any, ClassVar


class Mutable:
    __slots__ = ()
    __dataclass_fields__: ClassVar[dict[str, Any]]

    def __repr__(self) -> str:
        values = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__dataclass_fields__)
        return f"{type(self).__qualname__}({values})"

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return _values(self) == _values(other)


class Frozen(Mutable):
    __slots__ = ()

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(_values(self))

    def __setattr__(self, name: str, value: object) -> None:
        if hasattr(self, name):  # only __init__ sets a field: it is unset until then
            raise FrozenInstanceError(f"cannot assign to field {name!r}")
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")


def _values(record: Mutable) -> tuple[Any, ...]:
    return tuple(getattr(record, name) for name in record.__dataclass_fields__)
