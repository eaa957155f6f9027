"""One record (an attrs class or a NamedTuple), one sqlite row: a column per field, named
as the field.

Each field's type says how its value is stored: a Decimal as decimal text (exact, and
several times cheaper than a JSON document), an enum as its value, a frozenset as a sorted
JSON list, a bool as 0 or 1, None as NULL; text and numbers as they are. The conversions
are chosen once per class, when the module that stores it is imported, and compiled into
one function that writes a row out field by field, never looked up per row: the writer
turns every ledger movement into a row.
"""

from __future__ import annotations

import enum
import json
import types
from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal
from typing import Any, Generic, TypeVar, Union, get_args, get_origin, get_type_hints

import attrs

T = TypeVar("T")
Convert = Callable[[Any], Any]


class Columns(Generic[T]):
    """The columns of ``cls`` (every field, in field order) and its rows each way."""

    def __init__(self, cls: type[T]) -> None:
        # get_type_hints: with `from __future__ import annotations` a field's .type is a string.
        hints = get_type_hints(cls)
        self.cls = cls
        self.names: tuple[str, ...] = _field_names(cls)
        defaults = _field_defaults(cls)
        #: ``a, b, c`` for a SELECT or an INSERT.
        self.sql = ", ".join(self.names)
        #: ``?, ?, ?``, as many as there are columns.
        self.placeholders = ", ".join("?" * len(self.names))
        conversions = [_conversions(hints[name], defaults.get(name, attrs.NOTHING)) for name in self.names]
        self._from_column = tuple(back for _, back in conversions)
        to_column = [to for to, _ in conversions]
        #: ``row(record)``: ``record``'s values, in the order of :attr:`sql`.
        self.row: Callable[[T], tuple[Any, ...]] = _compile(self.names, to_column, many=False)
        #: ``values(records)``: the rows of ``records`` one after the other, in one flat
        #: list: the parameters of one ``INSERT ... VALUES (...), (...)``.
        self.values: Callable[[Iterable[T]], list[Any]] = _compile(self.names, to_column, many=True)

    def record(self, row: Sequence[Any]) -> T:
        """The record a row read by ``SELECT {sql}`` holds."""
        values = {name: v if back is None else back(v) for name, back, v in zip(self.names, self._from_column, row)}
        return self.cls(**values)


def _field_names(cls: type) -> tuple[str, ...]:
    if attrs.has(cls):
        return tuple(f.name for f in attrs.fields(cls))
    names = getattr(cls, "_fields", None)  # a NamedTuple
    if issubclass(cls, tuple) and names is not None:
        return tuple(names)
    raise TypeError(f"{cls.__name__} is neither an attrs class nor a NamedTuple: no columns")


def _field_defaults(cls: type) -> dict[str, Any]:
    if attrs.has(cls):
        return {f.name: f.default for f in attrs.fields(cls)}
    return dict(cls._field_defaults)  # type: ignore[attr-defined]


def _compile(names: Sequence[str], to_column: Sequence[str], *, many: bool) -> Callable[[Any], Any]:
    """The row function of these fields, compiled from source written out field by field
    (``(r.kind, _str(r.price), ...)``), as attrs writes its ``__init__``.

    The writer converts every ledger movement: a tuple written out costs a third of a
    loop over the fields (0.6 against 1.9 µs a journal row), and it runs on the writer's
    thread, holding the GIL the event loop needs."""
    for name in names:
        if not name.isidentifier():
            raise TypeError(f"field {name!r} cannot be a column")
    row = "(" + "".join(to.format(f"r.{name}") + ", " for name, to in zip(names, to_column)) + ")"
    source = f"lambda rs: [v for r in rs for v in {row}]" if many else f"lambda r: {row}"
    # The only names the source uses besides the record's fields.
    namespace = {"_str": str, "_int": int, "_sorted_json": _sorted_json}
    return eval(compile(source, f"<row of {', '.join(names[:3])}, ...>", "eval"), namespace)


def _conversions(type_: Any, default: Any) -> tuple[str, Convert | None]:
    """(to the column, from the column) for a field of ``type_``: the expression of the
    column's value, ``{}`` standing for the field's (compiled into the row function), and
    the conversion back, None where the value is stored as it is. An optional field is NULL
    for None; any other field reads a NULL (a nullable column never written) as its default."""
    optional = get_origin(type_) in (Union, types.UnionType) and type(None) in get_args(type_)
    if optional:
        [type_] = [arg for arg in get_args(type_) if arg is not type(None)]
    to: str
    back: Convert | None
    if type_ is Decimal:
        to, back = "_str({0})", Decimal
    elif isinstance(type_, type) and issubclass(type_, enum.Enum):
        to, back = "{0}.value", type_
    elif get_origin(type_) is frozenset:
        to, back = "_sorted_json({0})", _frozenset
    elif type_ is bool:
        to, back = "_int({0})", bool
    elif type_ in (str, int, float):
        to, back = "{0}", None
    else:
        raise TypeError(f"no column type for a field of type {type_!r}")
    if optional:
        if to != "{0}":
            to = f"(None if {{0}} is None else {to})"
        return to, _or_null(back)
    if default is attrs.NOTHING or isinstance(default, attrs.Factory):  # type: ignore[arg-type]
        return to, back
    return to, _or_default(back, default)


def _sorted_json(values: frozenset[Any]) -> str:
    return json.dumps(sorted(values))


def _frozenset(text: str) -> frozenset[Any]:
    return frozenset(json.loads(text))


def _or_null(convert: Convert | None) -> Convert | None:
    if convert is None:
        return None
    return lambda value: None if value is None else convert(value)


def _or_default(convert: Convert | None, default: Any) -> Convert:
    if convert is None:
        return lambda value: default if value is None else value
    return lambda value: default if value is None else convert(value)
