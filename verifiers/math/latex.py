"""A small LaTeX / plain-text → sympy translator for final answers.

Why our own instead of ``sympy.parsing.latex`` or ``latex2sympy2``: answers are short and come
from an untrusted model, so the translator must (1) never ``eval`` text (sympy's ``parse_expr``
does), (2) never evaluate a huge number eagerly (``9^{9^{9^9}}`` stays an unevaluated power), and
(3) accept both ``\\frac{1}{2}x`` and ``x^2/4 + 1``. It is a tokenizer plus a Pratt-style
recursive-descent parser; anything it does not know raises :class:`ParseError` and the caller
falls back to comparing text.
"""

from __future__ import annotations

import math
import re

import sympy as sp

PM = sp.Symbol("pm__sign")  # a ± b is parsed as a + PM*b and expanded to two answers later
MAX_DEPTH = 200  # deeper nesting is an attack, not an answer


class ParseError(ValueError):
    """The text is not an expression this translator understands."""


_TOKEN = re.compile(
    # numbers: decimals, scientific notation (1.5e3, 1e-3, 3e5; 2e-1 stays 2e - 1), integers
    r"\s*(?:(?P<num>(?:\d+\.\d*|\.\d+)(?:[eE][-+]?\d+(?![\w.]))?"
    r"|1[eE][-+]?\d+(?![\w.])|\d+[eE]\+?\d+(?![\w.])|\d+)"
    r"|(?P<cmd>\\[a-zA-Z]+)|(?P<id>[a-zA-Z])|(?P<op>\*\*|[-+*/^_()\[\]{},!|=<>:;'&]))"
)
_FUNCS = {
    "sin": sp.sin, "cos": sp.cos, "tan": sp.tan, "sec": sp.sec, "csc": sp.csc, "cot": sp.cot,
    "arcsin": sp.asin, "arccos": sp.acos, "arctan": sp.atan, "sinh": sp.sinh, "cosh": sp.cosh,
    "tanh": sp.tanh, "ln": sp.log, "exp": sp.exp, "log": sp.log,
}
_GREEK = {
    "alpha", "beta", "gamma", "delta", "epsilon", "varepsilon", "zeta", "eta", "theta", "vartheta",
    "iota", "kappa", "lambda", "mu", "nu", "xi", "rho", "sigma", "tau", "phi", "varphi", "chi",
    "psi", "omega", "Gamma", "Delta", "Theta", "Lambda", "Xi", "Sigma", "Phi", "Psi", "Omega",
}
_PLAIN_WORDS = ("sqrt", "pi", "infty", "inf") + tuple(_FUNCS)
_FUNC_LETTERS = set("fghFGPQW")  # f(x) is an application, not f·x
_ATOM_START_OPS = {"(", "[", "{", "|"}


def tokenize(s: str) -> list[tuple[str, str]]:
    """Split an answer into (kind, text) tokens; plain-text function names become commands."""
    toks: list[tuple[str, str]] = []
    pos, n = 0, len(s)
    while pos < n:
        m = _TOKEN.match(s, pos)
        if not m or m.end() == pos:
            if s[pos:].strip() == "":
                break
            raise ParseError(f"unexpected character {s[pos]!r}")
        pos = m.end()
        kind = m.lastgroup
        text = m.group(kind)
        if kind == "id":  # plain-text words: "sqrt(2)", "pi", "sin x"
            for w in _PLAIN_WORDS:
                if s.startswith(w[1:], pos) and text == w[0]:
                    end = pos + len(w) - 1
                    if end >= n or not s[end].isalpha():
                        kind, text, pos = "cmd", "\\" + w, end
                        break
        toks.append((kind, text))
    return toks


class _Parser:
    def __init__(self, toks):
        self.toks = toks
        self.i = 0
        self.depth = 0

    # -- token helpers -------------------------------------------------------------------------
    def peek(self, k=0):
        j = self.i + k
        return self.toks[j] if j < len(self.toks) else ("eof", "")

    def next(self):
        t = self.peek()
        self.i += 1
        return t

    def expect(self, text):
        t = self.next()
        if t[1] != text:
            raise ParseError(f"expected {text!r}, got {t[1]!r}")

    def group_text(self) -> str:
        """The raw text of a braced group or single token (for subscripts and names)."""
        t = self.next()
        if t[1] != "{":
            return t[1]
        out, depth = [], 1
        while True:
            t = self.next()
            if t[0] == "eof":
                raise ParseError("unbalanced braces")
            depth += t[1] == "{"
            depth -= t[1] == "}"
            if depth == 0:
                return "".join(out)
            out.append(t[1])

    # -- grammar -------------------------------------------------------------------------------
    def expr(self):
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ParseError("expression nested too deeply")
        left = self.term()
        while True:
            t = self.peek()
            if t[1] == "+":
                self.next(); left = left + self.term()
            elif t[1] == "-":
                self.next(); left = left - self.term()
            elif t[1] in ("\\pm", "\\mp"):
                self.next(); left = left + (PM if t[1] == "\\pm" else -PM) * self.term()
            else:
                break
        self.depth -= 1
        return left

    def term(self):
        left = self.unary()
        while True:
            t = self.peek()
            if t[1] in ("*", "\\cdot", "\\times", "\\ast"):
                self.next(); left = left * self.unary()
            elif t[1] in ("/", "\\div"):
                self.next(); left = left / self.unary()
            elif self.starts_atom(t):
                left = left * self.unary(implicit=True)
            else:
                return left

    def starts_atom(self, t):
        kind, text = t
        if kind in ("num", "id"):
            return True
        if kind == "cmd":
            return text not in ("\\pm", "\\mp", "\\cdot", "\\times", "\\div", "\\rset", "\\row", "\\end",
                                "\\rfloor", "\\rceil", "\\cup", "\\cap", "\\in", "\\leq", "\\geq", "\\neq",
                                "\\approx", "\\to", "\\ast", "\\setminus", "\\equiv", "\\pmod", "\\mid", "\\implies")
        return text in ("(", "{", "\\lset")

    def unary(self, implicit=False):
        t = self.peek()
        if t[1] == "-" and not implicit:
            self.next(); return -self.unary()
        if t[1] == "+" and not implicit:
            self.next(); return self.unary()
        if t[1] in ("\\pm", "\\mp") and not implicit:
            self.next(); return (PM if t[1] == "\\pm" else -PM) * self.unary()
        return self.power()

    def power(self):
        base = self.postfix()
        if self.peek()[1] in ("^", "**"):
            self.next()
            exp = self.exponent()
            return safe_pow(base, exp)
        return base

    def exponent(self):
        t = self.peek()
        if t[1] == "{":
            self.next(); e = self.expr(); self.expect("}"); return e
        if t[1] == "-":
            self.next(); return -self.exponent()
        return self.power()

    def postfix(self):
        a = self.atom()
        while self.peek()[1] == "!":
            self.next()
            if a.is_Integer and a > 1000:
                a = opaque(sp.factorial(a, evaluate=False))
            else:
                a = sp.factorial(a)
        return a

    def atom(self):
        kind, text = self.next()
        if kind == "num":
            if len(text) > 4000:  # int() refuses longer literals anyway; no answer is this long
                raise ParseError("number literal too long")
            # decimals stay Floats so they compare with a tolerance; integers and fractions are exact
            if "e" in text.lower():  # scientific notation: exact when it is an integer (1e3)
                mantissa, _, power = text.lower().partition("e")
                if abs(int(power)) > 400:
                    raise ParseError("exponent too large")
                val = sp.Rational(mantissa) * sp.Integer(10) ** int(power)
                val = sp.Float(val, 30) if "." in mantissa or int(power) < 0 else val
            else:
                val = sp.Float(text, max(30, len(text) + 2)) if "." in text else sp.Integer(text)
            if self.peek()[1] == "_":  # a number in another base: 204_5
                self.next()
                return sp.Symbol(f"{text}_{self.group_text()}")
            return val
        if kind == "id":
            return self.identifier(text)
        if text == "(":
            e = self.expr(); self.expect(")"); return e
        if text == "{":
            e = self.expr(); self.expect("}"); return e
        if text == "[":
            e = self.expr(); self.expect("]"); return e
        if text == "|":
            e = self.expr(); self.expect("|"); return sp.Abs(e)
        if kind == "cmd":
            return self.command(text)
        raise ParseError(f"unexpected {text!r}")

    def identifier(self, name):
        if self.peek()[1] == "_":
            self.next()
            name = f"{name}_{{{self.group_text()}}}" if self.peek(-1)[1] == "}" else f"{name}_{self.group_text()}"
            return sp.Symbol(name.replace("{", "").replace("}", ""))
        if name in _FUNC_LETTERS and self.peek()[1] == "(":
            self.next(); args = [self.expr()]
            while self.peek()[1] == ",":
                self.next(); args.append(self.expr())
            self.expect(")")
            return sp.Function(name)(*args)
        if name == "e":
            return sp.E
        if name == "i":
            return sp.I
        return sp.Symbol(name)

    def command(self, c):
        name = c[1:]
        if name == "frac":
            num = self.braced(); den = self.braced()
            return num / den
        if name == "sqrt":
            if self.peek()[1] == "[":
                self.next(); idx = self.expr(); self.expect("]")
                return safe_pow(self.braced(), 1 / idx)
            return sp.sqrt(self.braced())
        if name == "binom":
            n, k = self.braced(), self.braced()
            return sp.binomial(n, k)
        if name in ("pi",):
            return sp.pi
        if name in ("infty", "inf"):
            return sp.oo
        if name in _GREEK:
            return sp.Symbol(name)
        if name in ("lfloor", "lceil"):
            e = self.expr(); self.expect("\\r" + name[1:])
            return sp.floor(e) if name == "lfloor" else sp.ceiling(e)
        if name == "text":  # \text{12} is 12; \text{word} is a symbol named by the word
            raw = self.group_text().strip()
            if raw.isalpha() and len(raw) > 1:
                return sp.Symbol(raw.lower())
            try:
                return parse_expr(raw) if raw else sp.Integer(1)
            except ParseError:
                return sp.Symbol(raw.replace(" ", ""))
        if name in ("overline", "vec", "hat", "bar", "widehat", "overrightarrow", "angle", "triangle"):
            return sp.Symbol(name + "_" + (self.group_text() if self.peek()[1] == "{" else self.next()[1]))
        if name in _FUNCS:
            return self.function(name)
        if name in ("sum", "prod"):
            return self.big_operator(name)
        if name == "lset":
            raise ParseError("set inside an expression")
        if name == "begin":
            return self.matrix()
        raise ParseError(f"unknown command {c}")

    def big_operator(self, name):
        """``\\sum_{k=a}^{b} body`` → ``Sum(body, (k, a, b))``; the body is one product term."""
        self.expect("_")
        lower = self.group_text()
        var, sep, start = lower.partition("=")
        self.expect("^")
        end = self.braced()
        if not sep or not var.isalpha():
            raise ParseError("\\sum needs a lower bound like k=1")
        body = self.term()
        k = sp.Symbol(var)
        op = sp.Sum if name == "sum" else sp.Product
        return op(body, (k, parse_expr(start), end))

    def braced(self):
        if self.peek()[1] == "{":
            self.next(); e = self.expr(); self.expect("}"); return e
        return self.atom()

    def function(self, name):
        base = None
        if name == "log" and self.peek()[1] == "_":
            self.next(); base = self.braced()
        power = None
        if self.peek()[1] in ("^", "**"):  # \sin^2 x
            self.next(); power = self.exponent()
        if self.peek()[1] in ("(", "{"):
            arg = self.atom()
        else:
            arg = self.power()
        val = sp.log(arg, base) if base is not None else _FUNCS[name](arg)
        return safe_pow(val, power) if power is not None else val

    def matrix(self):
        env = self.group_text()
        if env == "array" and self.peek()[1] == "{":
            self.group_text()  # column spec
        rows, row, cell = [], [], []
        while True:
            t = self.peek()
            if t[0] == "eof":
                raise ParseError("unterminated matrix")
            if t[1] == "\\end":
                self.next(); self.group_text()
                break
            if t[1] in ("&", "\\row"):
                self.next()
                row.append(cell); cell = []
                if t[1] == "\\row":
                    rows.append(row); row = []
                continue
            cell.append(self.next())
        if cell or row:
            row.append(cell); rows.append(row)
        vals = [[parse_tokens(c) for c in r] for r in rows if any(r_ for r_ in r)]
        if not vals or len({len(r) for r in vals}) != 1:
            raise ParseError("ragged matrix")
        return sp.ImmutableMatrix(vals)


def opaque(e):
    """A stand-in symbol for a number too large to compute (``10^{10^{10}}``), named by its structure.

    Equal structures get the same symbol, so ``X/X + 1`` still simplifies to 2 and ``X`` equals ``X``,
    while ``X`` and ``X + 1`` differ — without ever computing ``X``.
    """
    return sp.Symbol("big[" + sp.srepr(e) + "]")


def safe_pow(base, exp):
    """``base**exp``, or an opaque symbol when the result would have more than ~10,000 digits."""
    try:
        if base.is_Number and exp.is_Number and abs(base) > 1:
            if abs(float(exp)) * math.log10(float(abs(base))) > 1e4:
                return opaque(sp.Pow(base, exp, evaluate=False))
        if base.is_Pow and base.base.is_Number and exp.is_Number and abs(exp) > 1e4:
            return opaque(sp.Pow(base, exp, evaluate=False))
    except (TypeError, ValueError, OverflowError):
        return opaque(sp.Pow(base, exp, evaluate=False))
    return base ** exp


def parse_tokens(toks):
    """Parse a token list into one sympy expression (all tokens must be used)."""
    if not toks:
        raise ParseError("empty expression")
    p = _Parser(toks)
    e = p.expr()
    if p.i != len(toks):
        raise ParseError(f"unexpected {p.peek()[1]!r}")
    return e


def parse_expr(s: str):
    """Parse one LaTeX or plain-text expression (no top-level commas or relations) into sympy."""
    return parse_tokens(tokenize(s))
