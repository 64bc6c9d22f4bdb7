"""reasoning-gym config fields from plain YAML/JSON data, typed as each config dataclass declares.

A run spec can only carry mappings, lists, strings and numbers, while reasoning-gym configs hold
nested dataclasses (``composite``'s ``datasets: list[DatasetSpec]``, ARC's
``board_format_opts: BoardFormattingOptions``), enums (``word_sorting``'s ``transformation``),
tuples, dates and times. :func:`coerce` turns the plain value into the declared type, recursively,
and names the field at fault when it cannot.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import datetime
import enum
import types
import typing
from typing import Any


def _fields(cls: type) -> dict:
    hints = typing.get_type_hints(cls)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls) if f.init}


def dataclass_from_dict(cls: type, data: dict, where: str) -> Any:
    """``cls(**data)`` with every field coerced to its declared type; unknown keys are an error."""
    fields = _fields(cls)
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"{where}: unknown fields {unknown}; {cls.__name__} has {sorted(fields)}")
    try:
        return cls(**{k: coerce(v, fields[k], f"{where}.{k}") for k, v in data.items()})
    except TypeError as e:  # a required field is missing
        raise ValueError(f"{where}: {cls.__name__}: {e}") from None


def coerce(value: Any, tp: Any, where: str) -> Any:
    """``value`` (plain data) as type ``tp``: dicts become dataclasses, lists become tuples where a
    tuple is declared, strings become enums, dates and times; anything else passes unchanged."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return coerce(value, arg, where)
            except ValueError as e:
                errors.append(str(e))
        raise ValueError(errors[0] if len(errors) == 1 else f"{where}: {value!r} fits none of {tp}")
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a mapping of {tp.__name__}'s fields, got {value!r}")
        return dataclass_from_dict(tp, value, where)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        if isinstance(value, tp):
            return value
        for member in tp:
            if value in (member.value, member.name):
                return member
        raise ValueError(f"{where}: {value!r} is not one of {[m.value for m in tp]}")
    if tp in (datetime.date, datetime.time) and isinstance(value, str):
        try:
            return tp.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{where}: {value!r} is not an ISO {tp.__name__} (e.g. "
                             f"{'2024-01-31' if tp is datetime.date else '09:30:00'})") from None
    if isinstance(value, (list, tuple)):
        if origin is tuple or tp is tuple:
            if len(args) == 2 and args[1] is Ellipsis:
                return tuple(coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
            if args and len(args) == len(value):
                return tuple(coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
            return tuple(value)
        if origin in (list, collections.abc.Sequence) and args:
            return [coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    return value
