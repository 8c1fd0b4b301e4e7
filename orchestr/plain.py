"""Bases for orchestr's data classes: the methods @dataclass would compile for each class, written once.

@dataclass writes an __init__, a __repr__, an __eq__ and, for a frozen class, a __hash__, a __setattr__ and a
__delattr__ as source text and compiles them, for every class, at every start of every command: for the 21
classes `orchestr get` loads, parsing and compiling their __init__s alone took 25 M of its 306 M instructions.
A class declared

    @record
    class Port(Frozen):

gets from @dataclass its fields (fields(), replace(), asdict() and match work as ever) and, at its first
instance, its __init__; from Frozen the rest, behaving as @dataclass(frozen=True, slots=True) would; Mutable
stands for @dataclass(slots=True): compared by value, assignable, unhashable. Type checkers see @record as
@dataclass.
"""

from __future__ import annotations

from dataclasses import FrozenInstanceError, dataclass, field, fields, make_dataclass
from typing import Any, ClassVar, TypeVar, dataclass_transform

T = TypeVar("T", bound=type)


@dataclass_transform()
def record(cls: T) -> T:
    """@dataclass(slots=True, repr=False, eq=False) of a Mutable or Frozen class, whose __init__ is compiled when
    the class's first instance is made: a command then compiles those of the few classes it uses, not all."""
    if hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__qualname__}: @record calls no __post_init__; use @dataclass")
    cls = dataclass(slots=True, repr=False, eq=False, init=False)(cls)
    cls.__init__ = _first_init  # type: ignore[misc]  # on each class: a record's subclass has fields of its own
    return cls


def _first_init(self: Any, *args: Any, **kwargs: Any) -> None:
    """The __init__ @dataclass would have compiled for the class, compiled now and put in place of this one."""
    cls = type(self)
    twin = make_dataclass(cls.__name__, [(f.name, f.type, field(default=f.default, default_factory=f.default_factory))
                                         for f in fields(cls) if f.init], repr=False, eq=False, match_args=False)
    twin.__init__.__qualname__ = f"{cls.__qualname__}.__init__"
    cls.__init__ = twin.__init__
    cls.__init__(self, *args, **kwargs)


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
        if hasattr(self, name):  # only an unpickling or a copy sets a field: it is unset until then
            raise FrozenInstanceError(f"cannot assign to field {name!r}")
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")


def _values(item: Mutable) -> tuple[Any, ...]:
    return tuple(getattr(item, name) for name in item.__dataclass_fields__)
