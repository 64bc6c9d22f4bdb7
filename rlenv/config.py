"""The base of every settings model — trainer configs, engine and sampling settings, the sections of
a run spec: a pydantic model that refuses unknown keys and whose errors name the field at fault.

Value checks live in :meth:`Config.check` (not in ``Field`` constraints) so that a subclass may
change a default without losing the check, and so that every message reads the same::

    GRPOConfig(learning_rate=-1)
    # ConfigError: GRPOConfig.learning_rate must be > 0, got -1
    GRPOConfig(betta=0.1)
    # ConfigError: GRPOConfig.betta: unknown key `betta` — did you mean `beta`?

A run spec validates the same models with :meth:`~pydantic.BaseModel.model_validate` and turns the
same errors into field paths (``stages[1].grpo.beta: must be >= 0, got -1.0``) with
:func:`error_lines`.
"""

from __future__ import annotations

import difflib
import typing
from typing import Any, Iterable, Optional, Sequence

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

__all__ = ["Config", "ConfigError", "FieldError", "error_items", "error_lines", "model_at", "unknown_key"]


class FieldError(ValueError):
    """One failed check of one field; ``text`` follows the field's path (``" must be > 0, got -1"``
    or ``": unknown policy loss …"``)."""

    def __init__(self, field: str, text: str):
        self.field = field
        self.text = text
        super().__init__(f"{field}{text}")


class ConfigError(ValueError):
    """Invalid settings: one line per problem, each starting with ``Class.field``."""

    def __init__(self, lines: Sequence[str]):
        self.lines = list(lines)
        super().__init__("\n".join(self.lines))

    @classmethod
    def of(cls, e: ValidationError, model: type) -> "ConfigError":
        """The lines of pydantic's error ``e`` raised while validating ``model``."""
        name = model.__name__
        return cls([f"{name}.{path}{text}" if path else f"{name}{text}" for path, text in error_items(e, model)])


class Config(BaseModel):
    """A settings model: unknown keys refused, assignments re-validated, and :meth:`check` run after
    every validation. Subclasses extend :meth:`check` (calling ``super().check()``)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, arbitrary_types_allowed=True)

    def __init__(self, **data: Any):
        try:
            super().__init__(**data)
        except ValidationError as e:
            raise ConfigError.of(e, type(self)) from None

    def __setattr__(self, name: str, value: Any) -> None:
        missing = object()
        old = self.__dict__.get(name, missing)
        try:
            super().__setattr__(name, value)
        except ValidationError as e:
            if old is not missing:  # pydantic sets the field before the checks run: undo it
                self.__dict__[name] = old
            raise ConfigError.of(e, type(self)) from None

    # a nested model (a config's `lora`, a spec's sections) is validated by pydantic's core, not
    # through this __init__, so its errors keep their field path (`lora.r`) instead of a message
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]

    @model_validator(mode="after")
    def _run_checks(self):
        self.check()
        return self

    def check(self) -> None:
        """Cross-field and value checks; raise :class:`FieldError` through the helpers below."""

    # -- helpers: every failure names the field and the value --------------------------------------
    def _fail(self, field: str, rule: str, value: Any) -> None:
        raise FieldError(field, f" must be {rule}, got {value!r}")

    def _positive(self, *fields: str) -> None:
        for f in fields:
            v = getattr(self, f)
            if v is None or isinstance(v, bool) or not v > 0:
                self._fail(f, "> 0", v)

    def _non_negative(self, *fields: str) -> None:
        for f in fields:
            v = getattr(self, f)
            if v is None or isinstance(v, bool) or not v >= 0:
                self._fail(f, ">= 0", v)

    def _one_of(self, field: str, choices: Iterable) -> None:
        v = getattr(self, field)
        if v not in choices:
            self._fail(field, f"one of {list(choices)}", v)

    def _in_range(self, field: str, lo: float, hi: float, lo_open: bool = False, hi_open: bool = False) -> None:
        v = getattr(self, field)
        ok = v is not None and (lo < v if lo_open else lo <= v) and (v < hi if hi_open else v <= hi)
        if not ok:
            self._fail(field, f"in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}", v)

    def _not_set(self, field: str, why: str) -> None:
        """``field`` (inherited, but meaningless here) must keep its default: set, it would be ignored."""
        if field in self.model_fields_set and getattr(self, field) != type(self).model_fields[field].default:
            raise FieldError(field, f": {why}; leave it unset")

    def _registered(self, field: str, registry: Any) -> None:
        """The field names an entry of ``registry`` (anything with a ``get(name)`` that raises a
        ValueError/LookupError explaining the miss, e.g. :class:`trainers.registry.Registry`)."""
        try:
            registry.get(getattr(self, field))
        except (ValueError, LookupError) as e:
            raise FieldError(field, f": {e}") from None


# -- error formatting, shared with the run spec ---------------------------------------------------------

def model_at(root: type, loc: Sequence[Any]) -> Optional[type]:
    """The pydantic model class holding the field at ``loc`` below ``root`` (None when unknown)."""
    cls: Any = root
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        fields = getattr(cls, "model_fields", None)
        if not fields or part not in fields:
            return None
        cls = _model_in(fields[part].annotation)
        if cls is None:
            return None
    return cls if isinstance(cls, type) and issubclass(cls, BaseModel) else None


def _model_in(annotation: Any) -> Optional[type]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def unknown_key(key: Any, known: Iterable[str], what: str = "unknown key") -> str:
    """``"unknown key `x` — did you mean `y`?"`` (or the list of known keys)."""
    known = sorted(known)
    close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
    hint = f"did you mean `{close[0]}`?" if close else f"known: {', '.join(known)}"
    return f"{what} `{key}` — {hint}"


def _path(loc: Sequence[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def error_items(e: ValidationError, root: type) -> list[tuple[str, str]]:
    """``(field path, text after it)`` per error of ``e`` raised while validating ``root``: the path
    like ``lora.r`` or ``stages[1]``, the text like ``" must be > 0, got 0"`` or ``": unknown key …"``."""
    out = []
    for err in e.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and "[" in p))  # drop union tags
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, FieldError):
            out.append((_path(loc + (cause.field,)), cause.text))
        elif err["type"] == "extra_forbidden":
            model = model_at(root, loc)
            known = list(model.model_fields) if model is not None else []
            out.append((_path(loc), f": {unknown_key(loc[-1], known)}" if known else ": unknown key"))
        elif err["type"] == "missing":
            out.append((_path(loc), ": required field is missing"))
        else:
            msg = err["msg"].removeprefix("Value error, ")
            if "input" in err and loc and err["type"] not in ("model_type", "dict_type", "model_attributes_type"):
                msg += f" (got {err['input']!r})"
            out.append((_path(loc), f": {msg}"))
    return out


def error_lines(e: ValidationError, root: type, prefix: str = "") -> list[str]:
    """One ``"<prefix>.<field path>: <what is wrong>"`` line per error (the run spec's format)."""
    lines = []
    for path, text in error_items(e, root):
        full = ".".join(p for p in (prefix, path) if p).replace(".[", "[")
        lines.append(f"{full or '(top level)'}: {text.lstrip(': ').lstrip()}")
    return lines
