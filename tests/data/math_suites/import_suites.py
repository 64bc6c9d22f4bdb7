"""Rebuild the outside math-grader suites in this folder from their authors' test files.

    # math-verify 0.9.0 (the version the benchmark compares against): its PyPI sdist carries tests/
    pip download math-verify==0.9.0 --no-binary :all: --no-deps && tar xzf math_verify-0.9.0.tar.gz
    python import_suites.py math-verify math_verify-0.9.0/tests > math_verify.jsonl
    python import_suites.py math-verify-strings math_verify-0.9.0/tests > math_verify_string_extraction.jsonl
    # hendrycks/math and NVIDIA/NeMo-Skills: one test file each (a checkout, or `git show COMMIT:PATH > FILE`)
    python import_suites.py hendrycks modeling/math_equivalence_test.py > hendrycks_math.jsonl
    python import_suites.py nemo-skills tests/test_math_equal.py > nemo_skills.jsonl

Every labelled case is written, unedited: the strings are the Python values of the literals in the
test source (evaluated with ``ast``, so escapes are exactly what the test passes; numbers stay
numbers, ``None`` becomes ``null``). math-verify rows also record the grader options the test calls
with (extraction targets, ``float_rounding``, ``strict``, ``allow_set_relation_comp``) so they can be
mapped to ours (see README.md). Nothing here imports the graders.
"""

from __future__ import annotations

import ast
import json
import math
import os
import sys

# compare_strings' own defaults in tests/test_all.py
DEFAULTS = {"match_types": ["latex", "expr"], "precision": 6, "strict": True, "allow_set_relation_comp": False}


def _value(node, env=None):
    """The Python value of a literal (f-strings such as f"{math.sqrt(17):.15f}" included)."""
    code = compile(ast.Expression(node), "<case>", "eval")
    return eval(code, {"math": math}, env or {})  # noqa: S307 - the suite's own literals (f-strings with math.*)


def _calls(fn: ast.FunctionDef, name: str):
    for node in ast.walk(fn):
        if isinstance(node, ast.Call):
            f = node.func
            if (isinstance(f, ast.Name) and f.id == name) or (isinstance(f, ast.Attribute) and f.attr == name):
                yield node


def _options(call: ast.Call, params: dict) -> dict:
    """Options of one compare_strings call; a keyword bound to a parameter takes the case's value."""
    opts = dict(DEFAULTS)
    for kw in call.keywords:
        if isinstance(kw.value, ast.Name) and kw.value.id in params:
            opts[kw.arg] = params[kw.value.id]
        else:
            opts[kw.arg] = _value(kw.value)
    return opts


def cases_of(path: str, source: str):
    """Yield one row per labelled pair in one test file."""
    tree = ast.parse(source)
    for fn in [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")]:
        test = f"{path}::{fn.name}"
        compare = list(_calls(fn, "compare_strings"))
        verify = [c for c in _calls(fn, "verify") if c.args and isinstance(c.args[0], ast.Call)]
        params = None
        for dec in fn.decorator_list:
            if isinstance(dec, ast.Call) and getattr(dec.func, "attr", "") == "parametrize":
                names = [s.strip() for s in _value(dec.args[0]).split(",")]
                params = [dict(zip(names, row)) for row in _value(dec.args[1])]
        if params is not None and (compare or verify):
            for k, p in enumerate(params):
                label = p.get("expected", p.get("result"))
                if compare:
                    opts = _options(compare[0], p)
                else:  # verify(parse(gold), parse(pred)): parse's and verify's own defaults
                    opts = {"match_types": ["latex(default)", "expr"], "precision": 6, "strict": True,
                            "allow_set_relation_comp": False, "call": "verify(parse(gold), parse(pred))"}
                yield {"gold": p["gold"], "pred": p["pred"], "expected": int(label), "test": test, "case": k, **opts}
        elif params is None:  # literal compare_strings(...) == 1 written in the body
            for k, call in enumerate(compare):
                gold, pred = (_value(a) for a in call.args[:2])
                parent = next((n for n in ast.walk(fn) if isinstance(n, ast.Compare) and n.left is call), None)
                if parent is None or not isinstance(parent.comparators[0], ast.Constant):
                    continue
                yield {"gold": gold, "pred": pred, "expected": int(parent.comparators[0].value),
                       "test": test, "case": k, **_options(call, {})}


def string_cases_of(path: str, source: str):
    """StringExtractionConfig cases: (pred, expected extraction, config source text)."""
    tree = ast.parse(source)
    for fn in [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")]:
        for dec in fn.decorator_list:
            if isinstance(dec, ast.Call) and getattr(dec.func, "attr", "") == "parametrize":
                for k, row in enumerate(dec.args[1].elts):
                    pred, expected = _value(row.elts[0]), _value(row.elts[1])
                    yield {"pred": pred, "expected": expected, "config": ast.unparse(row.elts[2]),
                           "test": f"{path}::{fn.name}", "case": k}


def hendrycks_cases(path: str, source: str):
    """unittest methods that set ``test_in``/``test_out`` and assert ``is_equiv`` True or False."""
    for cls in [n for n in ast.parse(source).body if isinstance(n, ast.ClassDef)]:
        for fn in [n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test")]:
            env = {}
            for node in fn.body:
                if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
                    env[node.targets[0].id] = _value(node.value)
                elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
                    name = getattr(node.value.func, "attr", "")
                    if name in ("assertTrue", "assertFalse"):
                        gold, pred = (_value(a, env) for a in node.value.args[0].args[:2])
                        yield {"gold": gold, "pred": pred, "expected": int(name == "assertTrue"),
                               "test": f"{path}::{cls.name}::{fn.name}"}


def nemo_skills_cases(path: str, source: str):
    """``output_pair`` parametrisations; each pair is asserted in both argument orders."""
    for fn in [n for n in ast.parse(source).body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")]:
        expected = 1 if "correct" in fn.name and "incorrect" not in fn.name else 0
        for dec in fn.decorator_list:
            if isinstance(dec, ast.Call) and getattr(dec.func, "attr", "") == "parametrize":
                for k, (gold, pred) in enumerate(_value(dec.args[1])):
                    yield {"gold": gold, "pred": pred, "expected": expected, "both_directions": True,
                           "test": f"{path}::{fn.name}", "case": k}


def main() -> None:
    kind, where = sys.argv[1], sys.argv[2]
    if kind in ("math-verify", "math-verify-strings"):
        files = [(f"tests/{n}", os.path.join(where, n)) for n in sorted(os.listdir(where))
                 if n.startswith("test_") and n.endswith(".py")]
    else:
        path = {"hendrycks": "modeling/math_equivalence_test.py", "nemo-skills": "tests/test_math_equal.py"}[kind]
        files = [(path, where)]
    for path, file in files:
        with open(file, encoding="utf-8") as f:
            src = f.read()
        if kind == "math-verify":
            rows = cases_of(path, src) if "StringExtractionConfig" not in src else ()
        elif kind == "math-verify-strings":
            rows = string_cases_of(path, src) if "StringExtractionConfig" in src else ()
        else:
            rows = {"hendrycks": hendrycks_cases, "nemo-skills": nemo_skills_cases}[kind](path, src)
        for row in rows:
            print(json.dumps(row, ensure_ascii=False))


if __name__ == "__main__":
    main()
