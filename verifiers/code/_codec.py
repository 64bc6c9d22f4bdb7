"""Values across the sandbox boundary: plain data as tagged JSON, and the two comparisons on it.

One format on every side: the parent imports this module, and its text is put in front of the two
harnesses that run inside sandboxes (``_serve.py`` next to the solution, ``_judge.py`` next to the
test code), so they cannot drift apart. Standard library only, no ``__future__`` import (the text is
concatenated), no eval, no pickle.

Data is the exact built-in types (subclasses are not data: their methods are the solution's code):
``None``, ``bool``, ``int``, ``float``, ``str``, ``list``, ``tuple``, ``dict``, ``set``,
``frozenset``, ``bytes``, ``complex``, and ``fractions.Fraction`` / ``decimal.Decimal``. JSON carries
``None/bool/int/float/str/list`` as themselves; the rest is tagged (``{"$t": [...]}`` for a tuple …)
so the receiver rebuilds the exact type. Anything else crosses only as a handle (``{"$h": id}``): an
opaque reference that the solution's side can act on and the judging side can never compare.
"""
import json as _json
import math as _math
import sys as _sys

_MAX_DEPTH = 100
_MAX_NODES = 1_000_000
_BIG = 1 << 13000  # past ~4000 decimal digits an int is sent in hex (json's int parser refuses >4300)


class NotData(Exception):
    """A value that is not plain data (on the sending side), or a malformed record (on receipt)."""


def _ratio_types():
    """``Fraction``/``Decimal`` only when already imported (importing them costs every run ~10 ms)."""
    out = {}
    fr, dec = _sys.modules.get("fractions"), _sys.modules.get("decimal")
    if fr is not None and isinstance(getattr(fr, "Fraction", None), type):
        out[fr.Fraction] = "$q"
    if dec is not None and isinstance(getattr(dec, "Decimal", None), type):
        out[dec.Decimal] = "$D"
    return out


def encode(value, handle=None):
    """``value`` as JSON-ready data. ``handle(obj)`` names a non-data value (returns an id); without
    it a non-data value raises :class:`NotData`."""
    budget = [_MAX_NODES]
    ratios = _ratio_types()

    def enc(v, depth):
        budget[0] -= 1
        if depth > _MAX_DEPTH or budget[0] < 0:
            raise NotData("the value is too large or too deeply nested")
        t = type(v)
        if v is None or t is bool or t is str:
            return v
        if t is int:
            return v if -_BIG < v < _BIG else {"$x": hex(v)}
        if t is float:
            return v if _math.isfinite(v) else {"$f": repr(v)}
        if t is list:
            return [enc(x, depth + 1) for x in v]
        if t is tuple:
            return {"$t": [enc(x, depth + 1) for x in v]}
        if t is dict:
            return {"$d": [[enc(k, depth + 1), enc(x, depth + 1)] for k, x in v.items()]}
        if t is set or t is frozenset:
            return {"$s" if t is set else "$fs": [enc(x, depth + 1) for x in v]}
        if t is bytes:
            return {"$b": v.hex()}
        if t is complex:
            return {"$c": [enc(v.real, depth + 1), enc(v.imag, depth + 1)]}
        tag = ratios.get(t)
        if tag == "$q":
            return {"$q": [enc(int(v.numerator), depth + 1), enc(int(v.denominator), depth + 1)]}
        if tag == "$D":
            return {"$D": str(v)}
        if handle is None:
            raise NotData(f"a {_type_name(v)} is not plain data")
        return {"$h": handle(v), "type": _type_name(v)}

    return enc(value, 0)


def _type_name(v):
    name = getattr(type(v), "__name__", "?")
    return name if type(name) is str else "?"


def decode(data, handle=None):
    """Rebuild the value :func:`encode` described. ``handle(id, type_name)`` turns a handle into the
    receiver's stand-in; without it a handle raises :class:`NotData`. Malformed input raises
    :class:`NotData` too — never anything the sender could choose."""
    def dec(x, depth):
        if depth > _MAX_DEPTH + 2:
            raise NotData("the value is too deeply nested")
        t = type(x)
        if x is None or t is bool or t is int or t is float or t is str:
            return x
        if t is list:
            return [dec(y, depth + 1) for y in x]
        if t is not dict or not x:
            raise NotData("malformed value")
        if "$h" in x:
            if handle is None or type(x["$h"]) is not int:
                raise NotData(f"returned a {x.get('type', '?')} object, which is not plain data "
                              "(only built-in values are compared)")
            return handle(x["$h"], str(x.get("type", "?")))
        if len(x) != 1:
            raise NotData("malformed value")
        (tag, y), = x.items()
        try:
            if tag == "$t":
                return tuple(dec(z, depth + 1) for z in y)
            if tag == "$d":
                return {dec(k, depth + 1): dec(z, depth + 1) for k, z in y}
            if tag in ("$s", "$fs"):
                return (set if tag == "$s" else frozenset)(dec(z, depth + 1) for z in y)
            if tag == "$x" and type(y) is str:
                return int(y, 16)
            if tag == "$f" and y in ("inf", "-inf", "nan"):
                return float(y)
            if tag == "$b" and type(y) is str:
                return bytes.fromhex(y)
            if tag == "$c":
                re_, im = (dec(z, depth + 1) for z in y)
                if type(re_) is float and type(im) is float:
                    return complex(re_, im)
            if tag == "$q":
                from fractions import Fraction
                n, d = (dec(z, depth + 1) for z in y)
                if type(n) is int and type(d) is int and d > 0:
                    return Fraction(n, d)
            if tag == "$D" and type(y) is str:
                from decimal import Decimal
                return Decimal(y)
        except NotData:
            raise
        except Exception as e:  # wrong shapes, unhashable keys, bad literals
            raise NotData(f"malformed value ({type(e).__name__})") from None
        raise NotData("malformed value")

    return dec(data, 0)


def loads(line):
    """One received record, or None when it is not JSON — whatever the sender wrote (a line of
    200 000 ``[`` makes json raise RecursionError: a hostile program must not crash its judge)."""
    try:
        return _json.loads(line)
    except (ValueError, RecursionError):
        return None


def dumps(obj):
    """One record as a JSON line (bytes); ``allow_nan=False``: non-finite floats are always tagged."""
    return (_json.dumps(obj, allow_nan=False, separators=(",", ":")) + "\n").encode()


def strict_equal(a, b):
    """Equal with the same exact type at every level: ``True`` is not ``1``, ``2.0`` is not ``2``,
    a tuple is not a list; dict keys and set members match by type too."""
    t = type(a)
    if t is not type(b):
        return False
    if t is list or t is tuple:
        return len(a) == len(b) and all(strict_equal(x, y) for x, y in zip(a, b))
    if t is dict or t is set or t is frozenset:
        if len(a) != len(b):
            return False
        mine = {k: k for k in b}
        for k in a:
            if k not in mine or not strict_equal(k, mine[k]):
                return False
            if t is dict and not strict_equal(a[k], b[k]):
                return False
        return True
    if t is complex or t is float or t is int or t is bool or t is str or t is bytes or a is None:
        return a == b
    return type(a).__module__ in ("fractions", "decimal") and a == b


def json_equal(a, b):
    """Equal as JSON values, the default for call tests whose expected values are JSON: ``true``
    is not ``1`` and ``null`` is only ``None`` (JSON has a boolean and a null), but ``2 == 2.0``
    (JSON has one number type) and a tuple matches an array (JSON has one sequence type)."""
    if a is None or b is None:
        return a is b
    ta, tb = type(a), type(b)
    if ta is bool or tb is bool:
        return ta is tb and a == b
    if ta in (list, tuple) and tb in (list, tuple):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b))
    if ta is dict and tb is dict:
        return len(a) == len(b) and all(k in b and json_equal(v, b[k]) for k, v in a.items())
    if ta in (int, float) and tb in (int, float):
        return a == b
    return strict_equal(a, b)
