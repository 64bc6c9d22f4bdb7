"""The trusted harness that runs INSIDE the sandbox for function-call tests (passed with ``-c``).

It reads ``{"source": …, "calls": [[expr, …], …]}`` from stdin, executes the solution, evaluates
each call expression and writes one JSON line per test to the result pipe, tagged with the run's
nonce: ``{"n": nonce, "i": test_index, "v": [encoded values]}``.

It never sees an expected value: the parent keeps them and compares the decoded plain data itself.
So whatever the solution does in here (exit early, patch ``json``, return an object whose
``__eq__`` always says True, print "PASSED") can at worst lose its own results — it cannot turn a
wrong answer into a pass. Only exact built-in types are encoded; anything else (subclasses
included) is sent as opaque and counts as a failure.
"""
import json
import math
import os
import sys

_fd, _nonce = int(sys.argv[1]), sys.argv[2]
_write, _dumps, _type, _repr = os.write, json.dumps, type, repr
_payload = json.loads(sys.stdin.read())
_dn = os.open(os.devnull, os.O_RDONLY)
os.dup2(_dn, 0)  # the solution sees an empty stdin
sys.stdin = open(0, closefd=False)


def _enc(v, depth=0, budget=[200_000]):
    budget[0] -= 1
    t = _type(v)
    if depth > 100 or budget[0] < 0:
        return {"$opaque": "too large or too deep"}
    if v is None or t is bool or t is int or t is str:
        if t is int and (v > 10**4000 or v < -10**4000):
            return {"$opaque": "int too large"}
        return v
    if t is float:
        return v if math.isfinite(v) else {"$f": _repr(v)}
    if t is list:
        return [_enc(x, depth + 1) for x in v]
    if t is tuple:
        return {"$t": [_enc(x, depth + 1) for x in v]}
    if t is dict:
        return {"$d": [[_enc(k, depth + 1), _enc(x, depth + 1)] for k, x in v.items()]}
    if t is set or t is frozenset:
        return {"$s" if t is set else "$fs": [_enc(x, depth + 1) for x in v]}
    if t is bytes:
        return {"$b": v.hex()}
    if t is complex:
        return {"$c": [v.real, v.imag]}
    return {"$opaque": t.__name__ if isinstance(t.__name__, str) else "?"}


def _send(obj):
    obj["n"] = _nonce
    _write(_fd, (_dumps(obj) + "\n").encode())


_g = {"__name__": "__solution__", "__builtins__": __builtins__}
try:
    exec(compile(_payload["source"], "solution.py", "exec"), _g)
except BaseException as e:  # noqa: BLE001 - SystemExit and KeyboardInterrupt are failures too
    _send({"load_error": f"{_type(e).__name__}: {e}"[:2000]})
    sys.stdout.flush()
    os._exit(1)
for _i, _exprs in enumerate(_payload["calls"]):
    _vals = []
    for _e in _exprs:
        try:
            _vals.append(_enc(eval(compile(_e, f"<test {_i}>", "eval"), _g)))
        except BaseException as e:  # noqa: BLE001
            _vals.append({"$error": f"{_type(e).__name__}: {e}"[:2000]})
            break
    _send({"i": _i, "v": _vals})
sys.stdout.flush()
os._exit(0)
