"""Assert-style tests (MBPP ``test_list``, HumanEval ``check(candidate)``, any Python asserts).

The test code runs whole, as written — loops over random inputs, property checks, helper functions
— but in a *judge* sandbox of its own; the solution runs in another sandbox and the two talk only
in plain data over two pipes (``_judge.py``, ``_serve.py``). Here, in the parent, the tests are
parsed once, each ``assert`` is rewritten into a recorded outcome, and the judge's records are
turned into one outcome per assert. Nothing the solution does can reach the judge, the parent or an
expected value: see docs/sandbox.md.
"""

from __future__ import annotations

import ast
import builtins
import dataclasses
import functools
import json
import math
import os
import secrets
import sys
import threading
from typing import Optional

from ._codec import loads
from .sandbox import ExecResult, Limits, run_argv

_BUILTINS = frozenset(dir(builtins))
_STDLIB = frozenset(getattr(sys, "stdlib_module_names", ())) - {"__future__", "this", "antigravity"}
_INF = math.inf


@dataclasses.dataclass(frozen=True)
class AssertTests:
    """A task's assert-style tests, parsed and ready for the judge (one test per counted assert).

    Attributes:
        asserts: the text of each counted assert, in source order.
        where: for each assert, the index of the top-level statement that holds it (module body, then
            the body of ``check``); ``inf`` inside a helper function. When the tests stop early at
            statement ``k``, the asserts at ``k`` or later that have not failed yet fail too.
        code: the rewritten test code the judge runs.
        setup: trusted task code the judge runs first (helpers the tests call, a reference solution).
        names: ``(name in the tests, name in the solution)`` for each global the tests take from the
            solution (the same name, except ``candidate`` in plain asserts: the entry point).
        modules: standard-library modules the tests use without importing them (``code`` imports them).
        check: the entry point handed to ``check(candidate)``; None when there is no ``check``.
        strict: ``==`` / ``!=`` inside asserts compare types too (``True`` is not ``1``).
        skipped: asserts of a constant (``assert True``), which test nothing and are not counted.
    """

    asserts: tuple
    where: tuple
    code: str
    setup: str = ""
    names: tuple = ()
    modules: tuple = ()
    check: Optional[str] = None
    strict: bool = False
    skipped: int = 0


def parse_asserts(tests, entry_point=None, setup: str = "", strict: bool = False) -> AssertTests:
    """Parse assert-style tests (a code string or a list of assert strings).

    Args:
        tests: the test code.
        entry_point: the name, or list of names, the solution must define. ``check(candidate)`` gets
            the first. Without it, the one name the tests call but do not define is taken.
        setup: trusted code of the task run before the tests in the judge (HumanEval: the prompt's
            helpers and the canonical solution, so ``poly`` or ``encode_cyclic`` are the task's own).
        strict: compare types in ``==`` / ``!=`` of the asserts.

    Raises ``ValueError`` (naming the problem) for tests that do not parse, that use a name nobody
    defines (JSON's ``true``/``false``/``null``, a missing import), or that never reach the solution.
    """
    code = tests if isinstance(tests, str) else "\n".join(str(t) for t in tests)
    if entry_point is None or entry_point == "":
        entry: tuple = ()
    elif isinstance(entry_point, str):
        entry = (entry_point,)
    elif isinstance(entry_point, (list, tuple)) and all(isinstance(e, str) and e for e in entry_point):
        entry = tuple(entry_point)
    else:
        raise ValueError(f"entry_point must be a function name or a list of names, got {entry_point!r}")
    return _parse(code, str(setup or ""), entry, bool(strict))


@functools.lru_cache(maxsize=1024)
def _parse(code: str, setup: str, entry: tuple, strict: bool) -> AssertTests:
    try:
        tree = ast.parse(code)
    except SyntaxError as e:
        raise ValueError(f"the tests do not parse as Python ({e.msg}, line {e.lineno}); pass assert "
                         "statements such as `assert f(1) == 2` or a `def check(candidate)`") from None
    try:
        setup_tree = ast.parse(setup)
    except SyntaxError as e:
        raise ValueError(f"the tests' setup code does not parse as Python ({e.msg}, line {e.lineno})") from None
    check = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "check"
                  and (n.args.args or n.args.posonlyargs)), None)
    if check is not None and not entry:
        raise ValueError("the tests define check(candidate) (HumanEval style) but no entry point is given; "
                         "set task.info['entry_point'] (or answer['entry_point']) to the function's name")
    names, modules = _solution_names(tree, setup_tree, entry)
    if not names and check is None:
        raise ValueError("the tests never use the solution: they call no function it must define"
                         + (f" (entry point {list(entry)})" if entry else ""))
    rewrite = _Rewrite(strict, check)
    body = rewrite.sequence(tree.body, 0)
    if check is not None:
        check.body = rewrite.sequence(check.body, len(tree.body))
    # standard modules the tests use without importing them (MBPP's `math.isclose`), imported first
    future = next((k for k, s in enumerate(body) if not (isinstance(s, ast.ImportFrom) and s.module == "__future__")),
                  len(body))
    imports = ast.parse("".join(f"try:\n    import {m}\nexcept ImportError:\n    pass\n" for m in modules)).body
    tree.body = body[:future] + imports + body[future:]
    return AssertTests(tuple(rewrite.asserts), tuple(rewrite.where), ast.unparse(ast.fix_missing_locations(tree)),
                       setup, tuple(names), tuple(modules), entry[0] if check is not None else None, strict,
                       rewrite.skipped)


def _bound(tree: ast.AST) -> tuple[set, bool]:
    """Every name the code binds anywhere, and whether it has a ``from … import *``."""
    out, star = set(), False
    for n in ast.walk(tree):
        if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Load):
            out.add(n.id)
        elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.add(n.name)
        elif isinstance(n, ast.arg):
            out.add(n.arg)
        elif isinstance(n, (ast.Import, ast.ImportFrom)):
            for a in n.names:
                star |= a.name == "*"
                out.add((a.asname or a.name).split(".")[0])
        elif isinstance(n, (ast.Global, ast.Nonlocal)):
            out.update(n.names)
        elif isinstance(n, ast.ExceptHandler) and n.name:
            out.add(n.name)
        elif isinstance(n, (ast.MatchAs, ast.MatchStar)) and n.name:
            out.add(n.name)
        elif isinstance(n, ast.MatchMapping) and n.rest:
            out.add(n.rest)
    return out, star


def _solution_names(tree: ast.Module, setup_tree: ast.Module, entry: tuple) -> tuple[list, list]:
    """Which free names of the tests come from the solution, and which are standard modules."""
    bound, star = _bound(tree)
    setup_bound, setup_star = _bound(setup_tree)
    bound |= setup_bound
    star |= setup_star
    loads = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    free = loads - bound - (_BUILTINS - set(entry))
    names = [(n, n) for n in sorted(free & set(entry))]
    if entry and "candidate" in free - set(entry):  # HumanEval-style asserts outside a check function
        names.append(("candidate", entry[0]))
    rest = free - set(entry) - {"candidate" if entry else ""}
    modules = sorted(n for n in rest if n in _STDLIB)
    rest -= set(modules)
    if not rest or star:  # names a star import may define are left to the judge (never to the solution)
        return names, modules
    hint = (" (JSON's true/false/null are Python's True/False/None)" if rest & {"true", "false", "null"} else "")
    if entry:
        raise ValueError(f"the tests use {sorted(rest)}, which neither the tests nor their setup define{hint}; "
                         f"only the entry point {list(entry)} comes from the solution — define or import "
                         "the rest in the tests (or answer['setup']), or list them in entry_point")
    used_as_object = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name):
            used_as_object.add(n.func.id)
        elif isinstance(n, (ast.Attribute, ast.Subscript)) and isinstance(n.value, ast.Name):
            used_as_object.add(n.value.id)
    values = rest - used_as_object
    if values:
        raise ValueError(f"the tests use {sorted(values)} as values, but nothing defines them{hint}; an expected "
                         "value must be written out or computed by the tests themselves")
    if len(rest) > 1:
        raise ValueError(f"the tests call {sorted(rest)}, which they do not define; say which ones the solution must "
                         f"define with entry_point={sorted(rest)!r} (the rest must be imported by the tests)")
    return [(n, n) for n in sorted(rest)], modules


class _Rewrite(ast.NodeTransformer):
    """Turn each ``assert`` into a recorded outcome and mark the start of each top-level statement."""

    def __init__(self, strict: bool, check: Optional[ast.FunctionDef]):
        self.strict, self.check = strict, check
        self.asserts: list = []
        self.where: list = []
        self.skipped = 0
        self.loc: float = _INF

    def sequence(self, body: list, first: int) -> list:
        out = []
        for k, stmt in enumerate(body):
            if not (isinstance(stmt, ast.ImportFrom) and stmt.module == "__future__"):
                out.append(_call_stmt("_rlenv_at", ast.Constant(first + k)))
            if stmt is self.check:
                out.append(stmt)  # its body is a sequence of its own
                continue
            self.loc = first + k
            out.append(self.visit(stmt))
        self.loc = _INF
        return out

    def _nested(self, node):
        saved, self.loc = self.loc, _INF  # a helper's asserts run whenever it is called
        node = self.generic_visit(node)
        self.loc = saved
        return node

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = visit_Lambda = _nested

    def visit_Assert(self, node: ast.Assert):
        if isinstance(node.test, ast.Constant):
            self.skipped += 1
            return node
        i = len(self.asserts)
        self.asserts.append(ast.unparse(node.test))
        self.where.append(self.loc)
        test = _StrictEq().visit(node.test) if self.strict else node.test
        name = lambda ctx: ast.Name("_rlenv_v", ctx)  # noqa: E731
        return ast.copy_location(ast.Try(
            body=[ast.Assign([name(ast.Store())], test)],
            handlers=[ast.ExceptHandler(ast.Name("Exception", ast.Load()), "_rlenv_e",
                                        [_call_stmt("_rlenv_fail", ast.Constant(i), ast.Name("_rlenv_e", ast.Load()))])],
            orelse=[_call_stmt("_rlenv_ok", ast.Constant(i), name(ast.Load()))], finalbody=[]), node)


class _StrictEq(ast.NodeTransformer):
    """``a == b`` → ``_rlenv_eq(a, b)`` (type-strict), ``a != b`` → ``not _rlenv_eq(a, b)``."""

    def visit_Compare(self, node: ast.Compare):
        self.generic_visit(node)
        if len(node.ops) != 1 or not isinstance(node.ops[0], (ast.Eq, ast.NotEq)):
            return node
        call = ast.Call(ast.Name("_rlenv_eq", ast.Load()), [node.left, node.comparators[0]], [])
        return ast.copy_location(call if isinstance(node.ops[0], ast.Eq) else ast.UnaryOp(ast.Not(), call), node)


def _call_stmt(fn: str, *args) -> ast.Expr:
    return ast.Expr(ast.Call(ast.Name(fn, ast.Load()), list(args), []))


# ---------------------------------------------------------------------------------------------
# running


@functools.lru_cache(maxsize=None)
def harness(name: str) -> str:
    """The source of a harness (``_serve`` or ``_judge``) with the codec in front of it."""
    here = os.path.dirname(__file__)
    with open(os.path.join(here, "_codec.py")) as f, open(os.path.join(here, f"{name}.py")) as g:
        return f.read() + "\n" + g.read()


def run_pair(source: str, suite: AssertTests, limits: Limits) -> tuple[ExecResult, ExecResult, str]:
    """Run the solution and the judge at once, joined by two pipes; returns (judge, solution, nonce).

    The judge gets more time than the solution, so it outlives a solution that hangs and records
    the failure instead of being killed with it.
    """
    nonce = secrets.token_hex(16)
    cap = 8 * int(limits.max_output_bytes)
    req_r, req_w = os.pipe()
    try:
        rep_r, rep_w = os.pipe()
    except OSError:
        os.close(req_r)
        os.close(req_w)
        raise
    judge_limits = dataclasses.replace(limits, timeout=1.5 * float(limits.timeout) + 2.0, cpu_seconds=None)
    payload = json.dumps({"nonce": nonce, "setup": suite.setup, "code": suite.code,
                          "names": [list(n) for n in suite.names],
                          "check": suite.check, "cap": cap})
    box: dict = {}

    def judge():
        try:
            box["res"] = run_argv(["-I", "-S", "-B", "-c", harness("_judge"), "{fd}", str(req_w), str(rep_r)],
                                  payload, judge_limits, channel=True, pass_fds=(req_w, rep_r))
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            box["exc"] = e

    t = threading.Thread(target=judge, name="sandbox-judge", daemon=True)
    try:
        t.start()
    except RuntimeError:  # no thread to be had: close everything, the caller sees the error
        for fd in (req_r, req_w, rep_r, rep_w):
            os.close(fd)
        raise
    try:
        sol = run_argv(["-I", "-S", "-B", "-c", harness("_serve"), str(req_r), str(rep_w)],
                       json.dumps({"source": source}), limits, pass_fds=(req_r, rep_w))
    finally:
        t.join()
    if "exc" in box:
        raise box["exc"]
    return box["res"], sol, nonce


def outcomes_of(suite: AssertTests, judge: ExecResult, sol: ExecResult, nonce: str) -> tuple[list, str]:
    """One outcome per assert from the judge's records; and an infrastructure error ('' if none):
    the task's own setup failed, which is not a judgement of the solution."""
    state: dict = {}
    at, done, abort = -1, False, ""
    for line in judge.channel.decode("utf-8", "replace").splitlines():
        rec = loads(line)
        if not isinstance(rec, dict) or rec.get("n") != nonce:
            continue
        if "setup_error" in rec:
            return [], f"the tests' setup code failed: {rec['setup_error']}"
        i = rec.get("a")
        if isinstance(i, int) and 0 <= i < len(suite.asserts):
            if rec.get("ok") is False:
                state[i] = (False, str(rec.get("m", "")))
            elif rec.get("ok") is True:
                state.setdefault(i, (True, ""))
        elif isinstance(rec.get("at"), int):
            at = max(at, rec["at"])
        elif rec.get("done") is True:
            done = True
        elif "abort" in rec:
            abort = str(rec["abort"])
    why = ""
    if not done:
        why = abort or f"the tests did not finish ({judge.status}{': ' + judge.reason if judge.reason else ''})"
        if sol.status != "ok":
            why += f"; the solution's run: {sol.status}{': ' + sol.reason if sol.reason else ''}"
        for i, where in enumerate(suite.where):
            if state.get(i, (None,))[0] is not False and (where >= at or i not in state):
                state[i] = (False, f"the tests stopped before this assert finished: {why}")
    ended = f"{sol.status}{': ' + sol.reason if sol.reason else ''}" if sol.status != "ok" else ""
    out = []
    for i, text in enumerate(suite.asserts):
        ok, msg = state.get(i, (False, "this assert never ran"))
        if ended and "(its process ended)" in msg:
            msg = msg.replace("(its process ended)", f"(its process ended: {ended})")
        out.append({"passed": ok, "test": text, "message": msg})
    return out, ""


def judge_asserts(source: str, suite: AssertTests, limits: Limits, pool) -> tuple[list, list, list, str]:
    """Run ``source`` against ``suite``: (outcomes, solution runs, judge runs, infrastructure error)."""
    judge, sol, nonce = pool.submit_call(run_pair, source, suite, limits).result()
    if judge.sandbox_error or sol.sandbox_error:
        return [], [sol], [judge], (judge if judge.sandbox_error else sol).reason
    outcomes, infra = outcomes_of(suite, judge, sol, nonce)
    return outcomes, [sol], [judge], infra

