"""The harness next to the solution, INSIDE its sandbox (``_codec.py`` is put in front of it).

argv: ``REQ_FD REP_FD``. stdin: one JSON object ``{"source": …, "calls": [request, …]?}``.
It runs the solution, then answers requests — from ``calls`` (all known up front: APPS call tests,
judged by the parent) or, without ``calls``, read one JSON line at a time from ``REQ_FD`` (sent by
the judge's sandbox while it runs the test code). One reply line per request on ``REP_FD``:

    request  {"q": seq, "op": "call"|"getattr"|"list"|"next"|"len"|"getitem"|"str"|"repr",
              "t": {"g": global name} | {"h": handle}, "a": [args], "k": {kwargs}, "name": attr}
    reply    {"q": seq, "v": value}  or  {"q": seq, "e": [exception type, message]}

A solution that fails to load still gets every request answered (with the load error), then the
run exits 1 (its stderr's last line names the exception, so a MemoryError reads as ``memory``).

It never sees an expected value or a comparison: whatever the solution does in here (exit, patch
``json`` or ``builtins``, start threads, write to the pipes, return objects whose ``__eq__`` lies)
decides only what its own replies say; values that are not plain data go back as handles.
"""
import os
import sys

_req_fd, _rep_fd = int(sys.argv[1]), int(sys.argv[2])
_payload = _json.loads(sys.stdin.read())
_dn = os.open(os.devnull, os.O_RDONLY)
os.dup2(_dn, 0)  # the solution sees an empty stdin
sys.stdin = open(0, closefd=False)
_write, _exit, _str, _type, _getattr, _isinstance = os.write, os._exit, str, type, getattr, isinstance
_encode, _dumps, _decode, _BaseException = encode, dumps, decode, BaseException
_objects, _instance = [], []


def _handle(obj):
    _objects.append(obj)
    return len(_objects) - 1


def _obj(h):
    if _type(h) is not int or not 0 <= h < len(_objects):
        raise LookupError(f"unknown handle {h!r}")
    return _objects[h]


def _target(t):
    if "h" in t:
        return _obj(t["h"])
    name = t["g"]
    if name in _g:
        return _g[name]
    cls = _g.get("Solution")  # LeetCode/APPS style: the function is a method of class Solution
    if _isinstance(cls, type):
        if not _instance:
            _instance.append(cls())
        return _getattr(_instance[0], name)
    raise NameError(f"name {name!r} is not defined")


def _text(v):
    return _str.__str__(v) if _isinstance(v, _str) else "?"


def _answer(req):
    op, target = req["op"], _target(req["t"])
    args = [_decode(a, lambda h, _t: _obj(h)) for a in req.get("a", ())]
    kwargs = {k: _decode(v, lambda h, _t: _obj(h)) for k, v in req.get("k", {}).items()}
    if op == "call":
        return target(*args, **kwargs)
    if op == "getattr":
        return _getattr(target, req["name"])
    if op == "list":
        return list(target)
    if op == "next":
        return next(target)
    if op == "len":
        return len(target)
    if op == "getitem":
        return target[args[0]]
    if op == "str":
        return _text(str(target))
    if op == "repr":
        return _text(repr(target))
    raise ValueError(f"unknown operation {op!r}")


def _reply(q, **rec):
    rec["q"] = q
    try:
        _write(_rep_fd, _dumps(rec))
    except OSError:  # the other side is gone: nothing left to answer
        _exit(0)


def _requests():
    if "calls" in _payload:
        yield from _payload["calls"]
        return
    f = os.fdopen(_req_fd, "rb", closefd=False)
    while True:
        line = f.readline()
        if not line:
            return
        yield _json.loads(line)


_g = {"__name__": "__solution__", "__builtins__": __builtins__}
_load_error = None
try:
    exec(compile(_payload["source"], "solution.py", "exec"), _g)
except _BaseException as e:  # noqa: BLE001 - SystemExit and KeyboardInterrupt are failures too
    _load_error = f"the solution failed to load: {_type(e).__name__}: {e}"[:2000]
    os.write(2, f"\n{_type(e).__name__}: {e}\n"[:2000].encode("utf-8", "replace"))  # the run's status says how it ended
for _req in _requests():
    _q = _req.get("q") if _isinstance(_req, dict) else None
    if _load_error is not None:
        _reply(_q, e=["LoadError", _load_error])
        continue
    try:
        _v = _encode(_answer(_req), _handle)
    except _BaseException as e:  # noqa: BLE001 - whatever the call raised is its answer
        try:
            _reply(_q, e=[_type(e).__name__, _str(e)[:2000]])
        except _BaseException:  # noqa: BLE001 - an exception whose str() raises
            _reply(_q, e=[_type(e).__name__, ""])
        continue
    _reply(_q, v=_v)
sys.stdout.flush()
_exit(0 if _load_error is None else 1)
