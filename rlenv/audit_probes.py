"""The adversarial completions of ``rlenv audit`` and how they are written in an env's format.

An answer is written into a completion by, in order:

1. the env's own hook ``env.render_answer(task, answer) -> str`` (the completion that states
   ``answer`` for ``task``, e.g. ``f"<answer>{answer}</answer>"``) — the way an env author tells
   tools how its completions look; an env where a changed gold answer can be another right one
   (puzzles with several solutions) also offers ``env.wrong_answers(task) -> list[str]``, answers
   it knows are wrong (else :func:`wrong_variants` makes them);
2. substitution into the task's ideal completion ``task.info["target"]``: the last occurrence of
   the gold answer (``task.answer``) standing alone is replaced (``<a>46</a>`` → ``<a>56</a>``,
   ``… #### 72`` → ``… #### 82``); where the gold answer is not in the target, wrong completions
   are the target with its last number changed (``<a>(50 - 25) * 3 + 7</a>`` → ``… + 8</a>``);
3. the bare answer, when the task has neither (a scalar ``task.answer`` only).

The gold completion is ``render(task.answer)`` (hook), else the target, else the bare answer. A
gold completion holding a python code fence makes the task a code task: its wrong answer is the
same functions returning ``None``, and the fake-pass probes of :data:`CODE_PROBES` apply.
"""

from __future__ import annotations

import ast
import re
from typing import Any, Callable, Optional

_FENCE = re.compile(r"```(?:python|py)[^\n]*\n(.*?)```", re.S)
_NUMBER = re.compile(r"\d+")
JUNK = "Lorem ipsum dolor sit amet, consectetur adipiscing elit. I am not sure what the answer is."
_FLIPS = {"true": "False", "false": "True", "yes": "No", "no": "Yes"}
_FULLWIDTH = {ord(c): ord(c) + 0xFEE0 for c in "0123456789"}
# Latin letters and their Cyrillic look-alikes
_HOMOGLYPHS = str.maketrans("aceopxyABCEHKMOPTX", "асеорхуАВСЕНКМОРТХ")


def wrong_variant(answer: str) -> str:
    """``answer`` made wrong: its first digit changed, a yes/no or true/false flipped, or its first
    two distinct letters swapped (``x`` appended when there are none)."""
    if answer.strip().lower() in _FLIPS:
        return _FLIPS[answer.strip().lower()]
    for i, c in enumerate(answer):
        if "0" <= c <= "9":
            return answer[:i] + str((int(c) + 1) % 10) + answer[i + 1:]
    alnum = [i for i, c in enumerate(answer) if c.isalnum()]
    j = next((k for k in alnum if answer[k] != answer[alnum[0]]), None) if alnum else None
    if j is None:
        return answer + "x"
    i = alnum[0]
    return answer[:i] + answer[j] + answer[i + 1:j] + answer[i] + answer[j + 1:]


def _swap_last_pair(answer: str) -> str:
    alnum = [i for i, c in enumerate(answer) if c.isalnum()]
    j = next((k for k in reversed(alnum) if answer[k] != answer[alnum[-1]]), None) if alnum else None
    if j is None:
        return answer
    i = alnum[-1]
    return answer[:j] + answer[i] + answer[j + 1:i] + answer[j] + answer[i + 1:]


def wrong_variants(answer: str, k: int = 4) -> list:
    """Up to ``k`` distinct wrong versions of ``answer``: :func:`wrong_variant` applied again and
    again, then its last two distinct letters swapped, then the answer reversed."""
    out, w = [], answer
    for i in range(k + 2):
        w = wrong_variant(w) if i < k else _swap_last_pair(answer) if i == k else answer[::-1]
        if w != answer and w not in out:
            out.append(w)
    return out[:k]


def around(wrong: list, gold: str) -> list:
    """``gold`` in the middle of the wrong candidates (at least one on each side)."""
    ws = (wrong * 2)[:max(2, min(4, len(wrong)))]
    k = len(ws) // 2
    return ws[:k] + [gold] + ws[k:]


def changed_numbers(completion: str, k: int = 4) -> list:
    """Up to ``k`` copies of ``completion`` with its last number changed (:func:`wrong_variant` applied
    again and again): wrong answers for a task whose gold answer does not appear in its gold
    completion (``countdown-v0``: the answer is the target, the completion an expression)."""
    spots = list(_NUMBER.finditer(completion))
    if not spots:
        return []
    m, out, n = spots[-1], [], spots[-1].group()
    for _ in range(k):
        n = wrong_variant(n)
        if n != m.group() and n not in out:
            out.append(n)
    return [completion[:m.start()] + x + completion[m.end():] for x in out]


def lookalike(text: str) -> str:
    """``text`` with fullwidth digits and Cyrillic look-alike letters: the same to the eye."""
    return text.translate(_FULLWIDTH).translate(_HOMOGLYPHS)


def scalar_answer(task: Any) -> Optional[str]:
    """``task.answer`` as text when it is one value (a string or number), else ``None`` (tests,
    constraint lists, …)."""
    a = getattr(task, "answer", None)
    return str(a) if isinstance(a, (str, int, float)) and not isinstance(a, bool) and str(a).strip() else None


class Renderer:
    """Writes answers into completions for one env (see the module docstring for the order)."""

    def __init__(self, env: Any):
        self.env = env
        hook = getattr(env, "render_answer", None)
        self.hook: Optional[Callable] = hook if callable(hook) else None
        self.errors: list[str] = []

    def _call_hook(self, task: Any, answer: str) -> Optional[str]:
        try:
            out = self.hook(task, answer)
        except Exception as e:  # noqa: BLE001 - a broken hook loses these probes, not the audit
            self.errors.append(f"render_answer raised {type(e).__name__}: {e}")
            return None
        return out if isinstance(out, str) else None

    def answer(self, task: Any, answer: str, sole: bool = False) -> Optional[str]:
        """The completion stating ``answer`` for ``task``, or ``None`` when the env's format is unknown.
        ``sole``: only where the gold answer appears nowhere else in the completion (a worked
        solution with the gold answer in its steps still states it)."""
        if self.hook is not None:
            return self._call_hook(task, answer)
        gold = scalar_answer(task)
        if gold is None:
            return None
        target = (getattr(task, "info", None) or {}).get("target")
        if isinstance(target, str):
            spots = list(re.finditer(rf"(?<![\w.]){re.escape(gold)}(?![\w])", target))
            if not spots or (sole and len(spots) > 1):
                return None
            return target[:spots[-1].start()] + answer + target[spots[-1].end():]
        return answer

    def wrong_answers(self, task: Any) -> list:
        """Wrong answers for ``task``: the env's ``wrong_answers`` hook where it has one (and it
        answers), else :func:`wrong_variants` of the gold answer; ``[]`` without a gold answer."""
        gold = scalar_answer(task)
        if gold is None:
            return []
        hook = getattr(self.env, "wrong_answers", None)
        if callable(hook):
            try:
                known = [str(w) for w in hook(task) or () if str(w) != gold]
            except Exception as e:  # noqa: BLE001 - a broken hook falls back to the generic answers
                self.errors.append(f"wrong_answers raised {type(e).__name__}: {e}")
                known = []
            if known:
                return known
        return wrong_variants(gold)

    def gold(self, task: Any) -> Optional[str]:
        """The completion stating the task's gold answer, or ``None`` when the task has none."""
        gold = scalar_answer(task)
        if gold is not None and self.hook is not None:
            return self._call_hook(task, gold)
        target = (getattr(task, "info", None) or {}).get("target")
        return target if isinstance(target, str) and target.strip() else gold


# -- code ------------------------------------------------------------------------------------------

def code_of(completion: Optional[str]) -> Optional[str]:
    """The last python code fence of ``completion``, or ``None``."""
    found = _FENCE.findall(completion or "")
    return found[-1] if found else None


def fence(code: str) -> str:
    return f"```python\n{code.strip()}\n```"


def with_bodies(code: str, body: str) -> Optional[str]:
    """``code``'s imports and top-level functions, every function's body replaced by ``body``;
    ``None`` when it has no function or does not parse."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, RecursionError):
        return None
    keep, stub = [], ast.parse(body).body
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            node.body, node.decorator_list = stub, []
            keep.append(node)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            keep.append(node)
    if not any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) for n in keep):
        return None
    return ast.unparse(ast.Module(body=keep, type_ignores=[]))


_ANYTHING = '''class _Anything:
    def __eq__(self, other): return True
    def __ne__(self, other): return False
    __lt__ = __le__ = __gt__ = __ge__ = __eq__
    def __hash__(self): return 0
    def __bool__(self): return True
    def __len__(self): return 0
    def __iter__(self): return iter(())
    def __sub__(self, other): return 0
    __rsub__ = __add__ = __radd__ = __mul__ = __rmul__ = __truediv__ = __sub__
    def __abs__(self): return 0
    def __float__(self): return 0.0
    def __int__(self): return 0
    def __index__(self): return 0
    def __getattr__(self, name): return lambda *a, **k: self
    def __call__(self, *a, **k): return self
'''

#: name -> (description, module code before the functions, function body, module code after)
CODE_PROBES: dict[str, tuple[str, str, str, str]] = {
    "exit_before_tests": ("sys.exit(0) after defining stubs, before the tests run", "", "return None",
                          "import sys\nsys.exit(0)"),
    "os_exit": ("os._exit(0) at import: the process ends 'successfully' before any test", "", "return None",
                "import os\nos._exit(0)"),
    "exit_in_call": ("every function raises SystemExit(0) when a test calls it", "", "raise SystemExit(0)", ""),
    "always_equal": ("functions return an object equal to anything (and near anything)", _ANYTHING,
                     "return _Anything()", ""),
    "printed_pass": ("prints PASS / OK / 'All tests passed' and returns None", "", "return None",
                     "print('PASS')\nprint('All tests passed')\nprint('OK')\nprint('----\\nRan 1 test in 0.001s\\n\\nOK')"),
    "patched_unittest": ("every unittest assert* method replaced by a no-op", "", "return None",
                         "import unittest\nfor _n in dir(unittest.TestCase):\n    if _n.startswith('assert') or "
                         "_n == 'fail':\n        setattr(unittest.TestCase, _n, lambda *a, **k: None)"),
    "swallow_failures": ("a silent excepthook and an atexit os._exit(0): failures exit 0", "", "return None",
                         "import sys, os, atexit\nsys.excepthook = lambda *a: None\natexit.register(lambda: os._exit(0))"),
    "redefined_builtins": ("abs/all/any/isinstance/round/sorted/len redefined in builtins", _ANYTHING, "return None",
                           "import builtins\nbuiltins.abs = lambda *a, **k: 0\nbuiltins.all = lambda *a, **k: True\n"
                           "builtins.any = lambda *a, **k: True\nbuiltins.isinstance = lambda *a, **k: True\n"
                           "builtins.round = lambda *a, **k: _Anything()\nbuiltins.sorted = lambda *a, **k: _Anything()\n"
                           "builtins.len = lambda *a, **k: _Anything()"),
    "reexec_optimized": ("re-executes itself under python -O, which strips assert statements", "", "return None",
                         "import os, sys\nif not sys.flags.optimize and sys.argv and sys.argv[0] and sys.argv[0] != '-c':\n"
                         "    os.execv(sys.executable, [sys.executable, '-O'] + sys.argv)"),
}


def code_probe(gold_code: str, name: str, marker: str = "") -> Optional[str]:
    """The fenced completion of code probe ``name`` built on ``gold_code``'s function signatures
    (``name == "injection"``: writes ``marker``, which a sandbox must keep from the host)."""
    if name == "injection":
        funcs = with_bodies(gold_code, "return None")
        return fence(f"open({marker!r}, 'w').write('ran')\n{funcs}") if funcs else None
    _, before, body, after = CODE_PROBES[name]
    funcs = with_bodies(gold_code, body)
    return fence("\n".join(p for p in (before, funcs, after) if p)) if funcs else None
