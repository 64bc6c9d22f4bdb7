"""APPS-style call tests — ``{"fn_name": f, "inputs": [[args…], …], "outputs": [value, …]}`` — judged
in the parent on plain data.

The expected values are JSON data and never leave this process: the sandbox gets only the function
name and the arguments, runs the calls next to the solution (``_serve.py``) and sends back each
return value as tagged plain data; the comparison happens here. So no name in an expected value is
ever evaluated anywhere (JSON ``true``/``false``/``null`` are Python's ``True``/``False``/``None``
from the start), and a solution that defines ``true = 0`` or returns an object with a lying
``__eq__`` changes nothing but its own return values.

Comparison (documented in docs/sandbox.md): by default *as JSON values* — ``true`` is not ``1`` and
``null`` only ``None``, but ``2 == 2.0`` and a returned tuple matches an array, as JSON has one
number and one sequence type; ``strict`` compares exact Python types. Either way a one-element
array also accepts its element (APPS stores each output wrapped in a list: ``"outputs": [[8]]``).
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

from ._asserts import harness
from ._codec import NotData, decode, encode, json_equal, loads, strict_equal
from .sandbox import ExecResult, Limits

_JSON_TYPES = (type(None), bool, int, float, str, list, tuple, dict)


@dataclasses.dataclass(frozen=True)
class CallTest:
    """``fn_name(*args)`` must return ``expected`` (judged in the parent; see the module docstring)."""

    fn_name: str
    args: tuple
    expected: Any
    strict: bool = False

    @property
    def text(self) -> str:
        return f"{self.fn_name}({', '.join(_short(a, 60) for a in self.args)}) == {_short(self.expected, 80)}"

    def matches(self, got: Any) -> bool:
        """Does ``got`` (already decoded plain data) count as the expected value?"""
        eq = strict_equal if self.strict else json_equal
        exp = self.expected
        return eq(got, exp) or (type(exp) is list and len(exp) == 1 and eq(got, exp[0]))


def _check_json(value: Any, where: str) -> None:
    """Refuse anything that is not JSON data (plus tuples), naming the field at fault."""
    stack = [(value, where)]
    while stack:
        v, at = stack.pop()
        if type(v) not in _JSON_TYPES:
            raise ValueError(f"code tests: {at} is a {type(v).__name__} ({_short(v, 60)}), not JSON data; "
                             "call tests compare JSON values (null, true/false, numbers, strings, arrays, objects) "
                             "in the parent — write it as one (e.g. Fraction(1, 2) as 0.5)")
        if type(v) is float and not math.isfinite(v):
            raise ValueError(f"code tests: {at} is {v!r}, which JSON cannot write (Infinity/NaN are not JSON); "
                             "give a finite number, or test this case with an assert")
        if type(v) in (list, tuple):
            stack.extend((x, f"{at}[{i}]") for i, x in enumerate(v))
        elif type(v) is dict:
            for k, x in v.items():
                if type(k) is not str:
                    raise ValueError(f"code tests: {at} has the key {k!r}; JSON object keys are strings")
                stack.append((x, f"{at}[{k!r}]"))


def parse_call_tests(answer: dict, strict: bool = False) -> list:
    """:class:`CallTest` s from an APPS ``fn_name``/``inputs``/``outputs`` dict (validated here, so a
    bad expected value is refused when the tests are built, never sent anywhere)."""
    fn, inputs, outputs = answer.get("fn_name"), answer.get("inputs"), answer.get("outputs")
    if not isinstance(fn, str) or not fn.isidentifier():
        raise ValueError(f"code tests: fn_name must be a function name, got {fn!r}")
    if not isinstance(inputs, list) or not isinstance(outputs, list) or len(inputs) != len(outputs):
        raise ValueError(f"code tests: 'inputs' and 'outputs' must be lists of the same length, got "
                         f"{type(inputs).__name__} of {len(inputs) if isinstance(inputs, list) else '?'} and "
                         f"{type(outputs).__name__} of {len(outputs) if isinstance(outputs, list) else '?'}")
    tests = []
    for i, (args, expected) in enumerate(zip(inputs, outputs)):
        if not isinstance(args, (list, tuple)):
            raise ValueError(f"code tests: inputs[{i}] must be the list of the call's arguments, got {_short(args, 60)}")
        _check_json(args, f"inputs[{i}]")
        _check_json(expected, f"outputs[{i}]")
        tests.append(CallTest(fn, tuple(args), expected, bool(strict)))
    return tests


def judge_calls(source: str, tests: list, limits: Limits, pool) -> tuple[list, list]:
    """Run every call in one sandbox next to the solution and judge the returned data here."""
    calls = [{"q": i, "op": "call", "t": {"g": t.fn_name}, "a": [encode(a) for a in t.args]}
             for i, t in enumerate(tests)]
    payload = json.dumps({"source": source, "calls": calls})
    res: ExecResult = pool.submit_argv(["-I", "-S", "-B", "-c", harness("_serve"), "0", "{fd}"], payload, limits,
                                       channel=True).result()
    replies: dict = {}
    for line in res.channel.decode("utf-8", "replace").splitlines():
        rec = loads(line)
        if isinstance(rec, dict) and isinstance(rec.get("q"), int):
            replies.setdefault(rec["q"], rec)
    outcomes = []
    for i, t in enumerate(tests):
        call = t.text.split(" == ")[0]
        rep, ok = replies.get(i), False
        if rep is None:
            msg = f"no result (the program ended: {res.status}{', ' + res.reason if res.reason else ''})"
        elif "e" in rep:
            kind, text = (list(rep["e"]) + ["?", ""])[:2] if isinstance(rep["e"], list) else ("?", "")
            msg = str(text) if kind == "LoadError" else f"{call} raised {kind}: {text}"
        else:
            try:
                got = decode(rep.get("v"))
                ok = t.matches(got)
                msg = "" if ok else f"{call} returned {_short(got)}"
            except NotData as e:
                msg = f"{call} {e}"
        outcomes.append({"passed": ok, "test": t.text, "message": msg})
    return outcomes, [res]


def _short(v: Any, n: int = 200) -> str:
    r = repr(v)
    return r if len(r) <= n else r[:n] + "…"
