"""Judge a program against tests, deciding pass/fail here, in the trusted process, on plain data.

Two test formats:

* **stdin/stdout pairs** (APPS, CodeContests): each input runs in its own fresh sandbox; the run
  must exit 0 and its stdout must equal the expected output (trailing whitespace ignored).
* **function-call tests** (MBPP ``test_list``, HumanEval ``check(candidate)``, APPS ``fn_name``):
  each ``assert`` is split with :mod:`ast` into the parts that call the solution — evaluated in the
  sandbox by a trusted harness and sent back as plain JSON values — and the rest (the comparison,
  the expected value, ``abs``/``math.isclose``/``set``/``sorted`` around it), evaluated here on the
  decoded values. The expected values never enter the sandbox, so ``exit(0)`` before the asserts,
  an ``__eq__`` that always says True, a patched ``unittest``/``assert`` or a printed "PASSED"
  cannot turn a wrong answer into a pass.
"""

from __future__ import annotations

import ast
import builtins
import dataclasses
import json
import math
import secrets
from typing import Any, Optional

from .pool import SandboxPool, default_pool
from .sandbox import OK, ExecResult, Limits

_HARNESS: Optional[str] = None
_SAFE_FUNCS = ("abs all any bool dict divmod enumerate filter float frozenset int isinstance len list map max "
               "min range repr reversed round set sorted str sum tuple type zip chr ord complex bytes").split()
_SAFE_BUILTINS = {n: getattr(builtins, n) for n in _SAFE_FUNCS} | {"True": True, "False": False, "None": None}
_SAFE_NAMES = set(_SAFE_BUILTINS) | {"math"}
_COMBINERS = (ast.Compare, ast.BoolOp, ast.UnaryOp, ast.BinOp, ast.Subscript, ast.Tuple, ast.List, ast.Set,
              ast.Dict, ast.IfExp, ast.Slice)


@dataclasses.dataclass
class StdioTest:
    """Run the program with ``input`` on stdin; pass when it exits 0 printing ``output``."""

    input: str
    output: str


@dataclasses.dataclass
class CallTest:
    """One assert: ``child`` expressions run in the sandbox, ``check`` runs here over ``__v0…``."""

    text: str
    child: list
    check: Any  # a code object
    unsupported: str = ""


@dataclasses.dataclass
class TestReport:
    """How a program fared: per-test outcomes, the count passed, and feedback text for the model."""

    passed: int
    total: int
    outcomes: list  # one dict per test: {"passed": bool, "test": str, "message": str}
    feedback: str
    runs: list  # the ExecResults
    skipped: int = 0

    def reward(self, mode: str = "all") -> float:
        """``all``: 1.0 when every test passed, else 0.0. ``fraction``: the share passed."""
        if self.total == 0:
            return 0.0
        if mode == "all":
            return 1.0 if self.passed == self.total else 0.0
        if mode == "fraction":
            return self.passed / self.total
        raise ValueError(f"reward mode must be 'all' or 'fraction', got {mode!r}")


# ---------------------------------------------------------------------------------------------
# parsing tests


def _untrusted(node: ast.AST) -> bool:
    """True when the expression names something the parent must not evaluate (the solution)."""
    return any(isinstance(n, ast.Name) and n.id not in _SAFE_NAMES and not n.id.startswith("__v")
               for n in ast.walk(node))


class _Split(ast.NodeTransformer):
    """Replace each maximal solution-dependent sub-expression by a placeholder ``__vN``, keeping the
    comparisons and safe built-ins around it on this side."""

    def __init__(self, rename: dict):
        self.rename, self.child, self.unsupported = rename, [], ""

    def visit(self, node):
        if not isinstance(node, ast.expr) or not _untrusted(node):
            return node
        safe_call = isinstance(node, ast.Call) and (
            (isinstance(node.func, ast.Name) and node.func.id in _SAFE_BUILTINS)
            or (isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name) and node.func.value.id == "math"))
        if isinstance(node, _COMBINERS) or safe_call:
            return self.generic_visit(node)
        if isinstance(node, (ast.GeneratorExp, ast.ListComp, ast.SetComp, ast.DictComp, ast.Lambda, ast.NamedExpr)):
            self.unsupported = "a comprehension or lambda over the solution's results"
        renamed = _Rename(self.rename).visit(ast.parse(ast.unparse(node), mode="eval")).body
        self.child.append(ast.unparse(renamed))
        return ast.copy_location(ast.Name(id=f"__v{len(self.child) - 1}", ctx=ast.Load()), node)


class _Rename(ast.NodeTransformer):
    def __init__(self, rename: dict):
        self.rename = rename

    def visit_Name(self, node):
        return ast.copy_location(ast.Name(id=self.rename.get(node.id, node.id), ctx=node.ctx), node)


def _assert_nodes(tree: ast.Module) -> tuple[list, int]:
    """Top-level asserts, plus those in ``def check(candidate)``; asserts nested deeper are counted
    as skipped (loops over random inputs cannot be split safely)."""
    asserts, skipped = [], 0
    bodies = [tree.body] + [n.body for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "check"]
    for body in bodies:
        for stmt in body:
            if isinstance(stmt, ast.Assert):
                asserts.append(stmt)
            elif not isinstance(stmt, ast.FunctionDef):
                skipped += sum(isinstance(n, ast.Assert) for n in ast.walk(stmt))
    return asserts, skipped


def parse_call_tests(tests, entry_point: Optional[str] = None) -> tuple[list, int]:
    """Turn assert-style tests (a code string or a list of them) into :class:`CallTest` objects.

    ``candidate`` (HumanEval) is renamed to ``entry_point``. Returns ``(tests, skipped)``.
    """
    code = tests if isinstance(tests, str) else "\n".join(str(t) for t in tests)
    try:
        tree = ast.parse(code)
    except SyntaxError as e:
        raise ValueError(f"function tests do not parse as Python ({e.msg}, line {e.lineno}); "
                         "pass assert statements such as `assert f(1) == 2`") from None
    if not entry_point and any(isinstance(n, ast.Name) and n.id == "candidate" for n in ast.walk(tree)):
        raise ValueError("the tests call `candidate` (HumanEval style) but no entry point is given; "
                         "set task.info['entry_point'] to the function's name")
    rename = {"candidate": entry_point} if entry_point else {}
    # names the test code defines itself (helpers, local variables): an expression using them
    # cannot be evaluated in the sandbox without trusting code the solution could patch
    own = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name != "check"}
    own |= {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    own |= {(a.asname or a.name).split(".")[0] for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
            for a in n.names} - {"math"}
    out, skipped = [], 0
    asserts, skipped = _assert_nodes(tree)
    for node in asserts:
        split = _Split(rename)
        check = split.visit(ast.parse(ast.unparse(node.test), mode="eval").body)
        uses_own = any(isinstance(n, ast.Name) and n.id in own for c in split.child for n in ast.walk(ast.parse(c)))
        if split.unsupported or not split.child or uses_own:
            skipped += 1
            continue
        expr = ast.fix_missing_locations(ast.Expression(body=check))
        out.append(CallTest(ast.unparse(node.test), split.child, compile(expr, "<test>", "eval")))
    return out, skipped


def parse_tests(answer: Any, entry_point: Optional[str] = None) -> tuple[list, int]:
    """Normalise a task's ``answer`` into tests. Accepted shapes:

    * ``[{"input": "1 2\\n", "output": "3\\n"}, …]`` or ``{"inputs": [...], "outputs": [...]}`` — stdio;
    * ``{"fn_name": "f", "inputs": [[args…], …], "outputs": [...]}`` — APPS call-based;
    * ``["assert f(1) == 2", …]`` or a code string of asserts / ``def check(candidate)`` — calls,
      optionally as ``{"tests": …, "entry_point": "f"}`` (also ``test_list`` / ``test``).
    """
    if isinstance(answer, dict):
        entry_point = answer.get("entry_point", entry_point)
        if "fn_name" in answer and "inputs" in answer:
            fn = answer["fn_name"]
            lines = [f"assert {fn}(*{json.dumps(i)}) == {json.dumps(o)}" for i, o in zip(answer["inputs"], answer["outputs"])]
            return parse_call_tests(lines)
        if "inputs" in answer and "outputs" in answer:
            return [StdioTest(str(i), str(o)) for i, o in zip(answer["inputs"], answer["outputs"])], 0
        for key in ("tests", "test_list", "test"):
            if key in answer:
                return parse_tests(answer[key], entry_point)
        raise ValueError(f"code tests: unknown answer keys {sorted(answer)}; expected 'inputs'/'outputs', "
                         "'fn_name', 'tests', 'test_list' or 'test'")
    if isinstance(answer, (list, tuple)) and answer and all(isinstance(t, dict) for t in answer):
        try:
            return [StdioTest(str(t["input"]), str(t["output"])) for t in answer], 0
        except KeyError as e:
            raise ValueError(f"stdio test is missing the field {e}; each needs 'input' and 'output'") from None
    if isinstance(answer, (str, list, tuple)) and answer:
        return parse_call_tests(answer, entry_point)
    raise ValueError(f"code tests: cannot read tests from a {type(answer).__name__}; see verifiers.code.parse_tests")


# ---------------------------------------------------------------------------------------------
# running and judging


class _Opaque(Exception):
    pass


def _decode(v):
    if isinstance(v, list):
        return [_decode(x) for x in v]
    if isinstance(v, dict):
        (tag, x), = v.items() if len(v) == 1 else ((None, None),)
        if tag == "$t":
            return tuple(_decode(y) for y in x)
        if tag == "$d":
            return {_decode(k): _decode(y) for k, y in x}
        if tag in ("$s", "$fs"):
            return (set if tag == "$s" else frozenset)(_decode(y) for y in x)
        if tag == "$f":
            return float(x)
        if tag == "$b":
            return bytes.fromhex(x)
        if tag == "$c":
            return complex(*x)
        if tag == "$error":
            raise _Opaque(f"raised {x}")
        raise _Opaque(f"returned a {x if tag == '$opaque' else 'malformed value'} (only built-in values are compared)")
    return v


def _harness() -> str:
    global _HARNESS
    if _HARNESS is None:
        import os

        with open(os.path.join(os.path.dirname(__file__), "_harness.py")) as f:
            _HARNESS = f.read()
    return _HARNESS


def _normalise(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.replace("\r\n", "\n").strip("\n").split("\n")).rstrip()


def _tail(text: str, n: int = 15) -> str:
    return "\n".join(text.rstrip().split("\n")[-n:])


def _judge_calls(source: str, tests: list, limits: Limits, pool: SandboxPool) -> tuple[list, list]:
    nonce = secrets.token_hex(16)
    payload = json.dumps({"source": source, "calls": [t.child for t in tests]})
    res = pool.submit_argv(["-I", "-S", "-B", "-c", _harness(), "{fd}", nonce], payload, limits, channel=True).result()
    got: dict = {}
    load_error = None
    for line in res.channel.decode("utf-8", "replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if not isinstance(rec, dict) or rec.get("n") != nonce:
            continue
        if "load_error" in rec:
            load_error = str(rec["load_error"])
        elif isinstance(rec.get("i"), int) and isinstance(rec.get("v"), list):
            got.setdefault(rec["i"], rec["v"])
    outcomes = []
    for i, t in enumerate(tests):
        ok, msg = False, ""
        if i not in got:
            msg = (f"the solution failed to load: {load_error}" if load_error else
                   f"no result (the program ended: {res.status}{', ' + res.reason if res.reason else ''})")
        else:
            try:
                vals = [_decode(v) for v in got[i]]
                if len(vals) != len(t.child):
                    raise _Opaque("returned no value")
                env = {"__builtins__": _SAFE_BUILTINS, "math": math}
                env.update({f"__v{j}": v for j, v in enumerate(vals)})
                ok = bool(eval(t.check, env))  # trusted test code over plain decoded data
                msg = "" if ok else "; ".join(f"{c} returned {_short(v)}" for c, v in zip(t.child, vals))
            except _Opaque as e:
                msg = f"{t.child[min(len(got[i]), len(t.child)) - 1]} {e}"
            except Exception as e:  # noqa: BLE001 - the check itself failed on the returned value
                msg = f"checking the result raised {type(e).__name__}: {e}"
        outcomes.append({"passed": ok, "test": t.text, "message": msg})
    return outcomes, [res]


def _short(v, n: int = 200) -> str:
    r = repr(v)
    return r if len(r) <= n else r[:n] + "…"


def _judge_stdio(source: str, tests: list, limits: Limits, pool: SandboxPool, stop_early: bool) -> tuple[list, list]:
    futs = [pool.submit(source, t.input, limits) for t in tests]
    outcomes, runs, failed = [], [], False
    for t, f in zip(tests, futs):
        if failed and stop_early and f.cancel():
            outcomes.append({"passed": False, "test": _short(t.input, 80), "message": "not run (an earlier test failed)"})
            continue
        res: ExecResult = f.result()
        runs.append(res)
        ok = res.status == OK and _normalise(res.stdout) == _normalise(t.output)
        if res.status != OK:
            msg = f"{res.status}: {res.reason}\n{_tail(res.stderr)}".strip()
        else:
            msg = "" if ok else f"expected output {_short(t.output)}, got {_short(res.stdout)}"
        failed |= not ok
        outcomes.append({"passed": ok, "test": _short(t.input, 80), "message": msg})
    return outcomes, runs


def run_tests(source: str, tests: Any, entry_point: Optional[str] = None, limits: Optional[Limits] = None,
              pool: Optional[SandboxPool] = None, stop_early: bool = False) -> TestReport:
    """Run ``source`` against ``tests`` (any shape :func:`parse_tests` reads) and judge it here.

    ``stop_early`` skips the remaining stdio tests after the first failure (for all-pass rewards).
    Raises ``ValueError`` only for tests it cannot read; a misbehaving program just fails tests.
    """
    cases, skipped = (tests, 0) if isinstance(tests, list) and tests and isinstance(tests[0], (StdioTest, CallTest)) \
        else parse_tests(tests, entry_point)
    limits = limits or Limits()
    pool = pool or default_pool()
    if not cases:
        return TestReport(0, 0, [], "no runnable tests", [], skipped)
    if isinstance(cases[0], StdioTest):
        outcomes, runs = _judge_stdio(source, cases, limits, pool, stop_early)
    else:
        outcomes, runs = _judge_calls(source, cases, limits, pool)
    passed = sum(o["passed"] for o in outcomes)
    return TestReport(passed, len(cases), outcomes, feedback_text(outcomes, runs), runs, skipped)


def feedback_text(outcomes: list, runs: list, max_failures: int = 3) -> str:
    """Execution feedback for multi-turn envs: the count passed and the first failures."""
    passed = sum(o["passed"] for o in outcomes)
    lines = [f"Passed {passed}/{len(outcomes)} tests."]
    for o in [o for o in outcomes if not o["passed"]][:max_failures]:
        lines.append(f"Failed: {o['test']}\n  {o['message']}".rstrip())
    if passed < len(outcomes) and runs and runs[-1].stderr.strip() and not any(o["message"] for o in outcomes):
        lines.append(_tail(runs[-1].stderr))
    return "\n".join(lines)
