"""The judge: runs a task's test code in ITS OWN sandbox, apart from the solution (``_codec.py`` is put
in front of it). argv: ``OUT_FD REQ_FD REP_FD``; stdin: ``{"nonce", "setup", "code", "names",
"check", "cap"}``.

The test code (asserts, ``def check(candidate)``, helpers, loops over random inputs) runs here as
written, with each assert rewritten by the parent into a recorded outcome. The solution lives in
another process (``_serve.py``): every name the tests take from it is a :class:`_Remote` stand-in
whose calls travel as plain data over two pipes and come back as plain data (or as another
stand-in, which compares equal to nothing and has no truth value). So the solution never runs a
line in this process and never sees an expected value: it cannot patch the asserts, the builtins
or this harness, cannot exit in our place, and an object with a lying ``__eq__`` never gets here.

Records on ``OUT_FD`` (one JSON line each, with the nonce, which only the parent and we know):
``{"a": i, "ok": true}`` the first time assert ``i`` holds, ``{"a": i, "ok": false, "m": …}`` the
first time it fails, ``{"at": k}`` as top-level statement ``k`` starts, then ``{"done": true}`` or
``{"abort": message}``; ``{"setup_error": …}`` when the task's own code fails (not the solution's).
"""
import builtins
import os
import sys

_out_fd, _req_fd, _rep_fd = (int(a) for a in sys.argv[1:4])
_p = _json.loads(sys.stdin.read())
_null = os.open(os.devnull, os.O_RDWR)
os.dup2(_null, 0)
os.dup2(_null, 1)  # the tests' own prints must not fill the output cap
_nonce, _cap = _p["nonce"], int(_p["cap"])
_replies = os.fdopen(_rep_fd, "rb")
_state, _log, _gone, _seq = {}, [], [], [0]


def _send(**rec):
    rec["n"] = _nonce
    os.write(_out_fd, dumps(rec))


class SolutionError(Exception):
    """The solution raised an exception that is not one of Python's built-in ones."""


class _Gone(Exception):
    """The solution's process ended or stopped answering in step."""


def _show(v, depth=0):
    if isinstance(v, _Remote):
        return object.__getattribute__(v, "_label")
    if depth > 3:
        return "…"
    if type(v) in (list, tuple, set, frozenset):  # never repr() a container: a stand-in inside would go remote
        inner = ", ".join(_show(x, depth + 1) for x in list(v)[:8]) + (", …" if len(v) > 8 else "")
        return {list: "[%s]", tuple: "(%s)"}.get(type(v), "{%s}") % inner
    if type(v) is dict:
        inner = ", ".join(f"{_show(k, depth + 1)}: {_show(x, depth + 1)}" for k, x in list(v.items())[:8])
        return "{%s}" % (inner + (", …" if len(v) > 8 else ""))
    r = repr(v)
    return r if len(r) <= 120 else r[:120] + "…"


def _remember(text):
    _log.append(text if len(text) <= 300 else text[:300] + "…")
    del _log[:-3]


def _raise_for(kind, msg):
    """Raise what the solution raised, as the built-in exception of that name where there is one (so
    tests that expect a ValueError see one); the call log already says it, so mark it logged."""
    exc = None
    cls = getattr(builtins, kind, None)
    if isinstance(cls, type) and issubclass(cls, Exception) and kind != "LoadError":
        try:
            exc = cls(msg)
        except Exception:  # noqa: BLE001 - built-ins whose constructor wants more arguments
            exc = None
    exc = exc or SolutionError(f"{kind}: {msg}" if kind != "LoadError" else msg)
    exc._rlenv_logged = True
    raise exc


def _rpc(op, target, args=(), kwargs=None, **extra):
    label = object.__getattribute__(target, "_label")
    shown = {"call": lambda: f"{label}({', '.join([_show(a) for a in args] + [f'{k}={_show(v)}' for k, v in (kwargs or {}).items()])})",
             "getattr": lambda: f"{label}.{extra.get('name')}"}.get(op, lambda: f"{op}({label})")()
    if _gone:
        _remember(f"{shown}: {_gone[0]}")
        exc = _Gone(_gone[0])
        exc._rlenv_logged = True
        raise exc
    _seq[0] += 1
    try:
        req = {"q": _seq[0], "op": op, "t": object.__getattribute__(target, "_ref"),
               "a": [encode(a, _ref_of) for a in args], "k": {k: encode(v, _ref_of) for k, v in (kwargs or {}).items()}}
    except NotData as e:
        raise TypeError(f"{shown}: an argument cannot be sent to the solution ({e})") from None
    req.update(extra)
    data = dumps(req)
    try:
        while data:
            data = data[os.write(_req_fd, data):]
        line = _replies.readline(_cap + 1)
    except OSError:
        line = b""
    rep = loads(line) if line.endswith(b"\n") else None
    if not isinstance(rep, dict) or rep.get("q") != _seq[0]:
        why = ("the solution's reply was larger than the limit" if len(line) > _cap else
               "the solution stopped answering (its process ended)" if not line else
               "the solution's process answered out of step")
        _gone.append(why)
        _remember(f"{shown}: {why}")
        exc = _Gone(why)
        exc._rlenv_logged = True
        raise exc
    if "e" in rep:
        kind, msg = (list(rep["e"]) + ["?", ""])[:2] if isinstance(rep["e"], list) else ("?", "")
        _remember(str(msg) if kind == "LoadError" else f"{shown} raised {kind}: {msg}")
        _raise_for(str(kind), str(msg))
    try:
        value = decode(rep.get("v"), lambda h, t: _Remote({"h": h}, f"<{t} object>"))
    except NotData as e:
        _remember(f"{shown}: {e}")
        e._rlenv_logged = True
        raise
    if op in ("call", "next", "getitem", "list"):
        _remember(f"{shown} returned {_show(value)}")
    return value


class _Remote:
    """A stand-in for something that lives in the solution's process: calls and attribute reads go
    there; it is equal only to itself and has no truth value, so it can never pass a comparison."""

    __slots__ = ("_ref", "_label")

    def __init__(self, ref, label):
        object.__setattr__(self, "_ref", ref)
        object.__setattr__(self, "_label", label)

    def __call__(self, *args, **kwargs):
        return _rpc("call", self, args, kwargs)

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _rpc("getattr", self, name=name)

    def __setattr__(self, name, value):
        raise TypeError("the tests cannot change the solution's objects")

    def __iter__(self):
        return iter(_rpc("list", self))

    def __next__(self):
        return _rpc("next", self)

    def __len__(self):
        return _rpc("len", self)

    def __getitem__(self, key):
        return _rpc("getitem", self, (key,))

    def __str__(self):
        return _rpc("str", self)

    def __repr__(self):
        return _rpc("repr", self)

    def __bool__(self):
        raise TypeError(f"{object.__getattribute__(self, '_label')} returned an object that is not plain data; "
                        "it has no truth value here")

    def __eq__(self, other):
        return self is other

    def __ne__(self, other):
        return self is not other

    __hash__ = object.__hash__


def _ref_of(v):
    """A stand-in passed back as an argument travels as its handle; nothing else that is not data can."""
    if isinstance(v, _Remote):
        ref = object.__getattribute__(v, "_ref")
        if "h" in ref:
            return ref["h"]
    raise NotData(f"a {type(v).__name__} cannot be sent to the solution")


def _message(exc):
    if getattr(exc, "_rlenv_logged", False) and _log:
        return "; ".join(_log)
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return "; ".join(_log + [text]) if _log else text


def _rlenv_at(k):
    _send(at=k)


def _rlenv_ok(i, value):
    try:
        ok = bool(value)
    except Exception as e:  # noqa: BLE001 - a stand-in has no truth value
        return _rlenv_fail(i, e)
    if not ok:
        _rlenv_fail(i, None)
    elif i not in _state:
        _state[i] = True
        _send(a=i, ok=True)
    del _log[:]


def _rlenv_fail(i, exc):
    if _state.get(i) is not False:
        _state[i] = False
        _send(a=i, ok=False, m=_message(exc) if exc is not None else ("; ".join(_log) or "the assertion is false"))
    del _log[:]


def _rlenv_eq(a, b):
    return strict_equal(a, b)


_g = {"__name__": "__rlenv_test__", "__builtins__": builtins}
try:
    exec(compile(_p["setup"], "<task setup>", "exec"), _g)
except BaseException as e:  # noqa: BLE001 - the task's own code is broken: not the solution's fault
    _send(setup_error=f"{type(e).__name__}: {e}"[:2000])
    os._exit(0)
for _name, _theirs in _p["names"]:
    _g.setdefault(_name, _Remote({"g": _theirs}, _theirs))
_g.update(_rlenv_at=_rlenv_at, _rlenv_ok=_rlenv_ok, _rlenv_fail=_rlenv_fail, _rlenv_eq=_rlenv_eq)
try:
    exec(compile(_p["code"], "<tests>", "exec"), _g)
    if _p["check"] is not None:
        _g["check"](_Remote({"g": _p["check"]}, _p["check"]))
except BaseException as e:  # noqa: BLE001 - the tests stopped; the parent fails what did not finish
    _send(abort=_message(e)[:2000])
else:
    _send(done=True)
os._exit(0)
