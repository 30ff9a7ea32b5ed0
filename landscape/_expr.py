r"""The one parser that turns text (a user's kernel, a stored family) into a sympy expression.

Text from users and from stored files is never executed: :func:`parse_expression` reads it with
:func:`ast.parse` (``mode="eval"``), walks the syntax tree and builds the sympy expression node by
node. Nothing is passed to ``eval``, ``exec`` or ``sympy.sympify``. The accepted language:

* number literals (integers, decimals, ``1e-3``); an integer literal becomes an exact
  ``sympy.Integer`` and a decimal a ``sympy.Float``, so ``1/3`` is the exact rational;
* the symbol names the caller allows (e.g. ``s, r2, uu, ww`` for kernels);
* the constants ``pi`` and ``E``;
* calls of the whitelisted functions :data:`FUNCTIONS`: ``exp, log, sqrt, Abs/abs, Max/max,
  Min/min, sin, cos, tanh, erf`` (``log`` takes one argument: the natural logarithm;
  ``Max``/``Min`` take two or more). Step and piecewise functions are not offered: their
  derivative is zero almost everywhere, so a trained model learns nothing through them;
  ``Max``/``Min``/``Abs`` cover the ReLU-like kernels;
* the operators ``+ - * / **``, unary ``-`` and ``+``, and parentheses.

Anything else — attribute access, subscripts, strings, lambdas, comprehensions, keyword
arguments, comparisons, unknown names or functions, dunder names — raises a one-line
:class:`ValueError` naming the offending token and listing what is accepted. The text is capped at
:data:`MAX_LENGTH` characters and its syntax tree at :data:`MAX_DEPTH` levels; a power of two
numbers is refused when its result would have more than :data:`MAX_POWER_DIGITS` digits (so
``9**9**9`` cannot stall the process), and a result that is not finite (``1/0`` is sympy's
``zoo``) is refused.

sympy's own printer ``sympy.sstr`` writes expressions in this language: parsing ``sstr(e)`` of a
kernel expression ``e`` returns ``e`` again (tested as a property over random expressions; floats
print with 15 significant digits, so they come back equal when 15 digits represent them).
"""

from __future__ import annotations

import ast
import math
from typing import Callable, Collection, Mapping

import sympy

__all__ = [
    "FUNCTIONS",
    "CONSTANTS",
    "MAX_LENGTH",
    "MAX_DEPTH",
    "MAX_POWER_DIGITS",
    "parse_expression",
]

MAX_LENGTH = 4000
"""Longest text :func:`parse_expression` reads (characters)."""

MAX_DEPTH = 60
"""Deepest nesting :func:`parse_expression` accepts: brackets, calls, powers and signs (a chain
``a + b - c * d ...`` of any length counts as one level)."""

MAX_POWER_DIGITS = 1000
"""A power ``a**b`` of two numbers whose value would have more decimal digits than this is refused."""

# name -> (sympy constructor, min args, max args or None for no limit)
FUNCTIONS: Mapping[str, tuple[Callable[..., sympy.Expr], int, int | None]] = {
    "exp": (sympy.exp, 1, 1),
    "log": (sympy.log, 1, 1),
    "sqrt": (sympy.sqrt, 1, 1),
    "Abs": (sympy.Abs, 1, 1),
    "abs": (sympy.Abs, 1, 1),
    "Max": (sympy.Max, 2, None),
    "max": (sympy.Max, 2, None),
    "Min": (sympy.Min, 2, None),
    "min": (sympy.Min, 2, None),
    "sin": (sympy.sin, 1, 1),
    "cos": (sympy.cos, 1, 1),
    "tanh": (sympy.tanh, 1, 1),
    "erf": (sympy.erf, 1, 1),
}
"""Functions a text expression may call: name → (sympy function, min args, max args)."""

CONSTANTS: Mapping[str, sympy.Expr] = {"pi": sympy.pi, "E": sympy.E}
"""Named constants a text expression may use."""

_BINOPS: dict[type, tuple[str, Callable[[sympy.Expr, sympy.Expr], sympy.Expr]]] = {
    ast.Add: ("+", lambda a, b: a + b),
    ast.Sub: ("-", lambda a, b: a - b),
    ast.Mult: ("*", lambda a, b: a * b),
    ast.Div: ("/", lambda a, b: a / b),
    ast.Pow: ("**", lambda a, b: a**b),
}

_NODE_WORDS: dict[type, str] = {
    ast.Attribute: "attribute access", ast.Subscript: "subscript", ast.Lambda: "lambda",
    ast.ListComp: "comprehension", ast.SetComp: "comprehension", ast.DictComp: "comprehension",
    ast.GeneratorExp: "comprehension", ast.Compare: "comparison", ast.BoolOp: "boolean operator",
    ast.IfExp: "conditional expression", ast.Tuple: "tuple", ast.List: "list", ast.Dict: "dict",
    ast.Set: "set", ast.Starred: "starred argument", ast.NamedExpr: "assignment expression",
    ast.JoinedStr: "string", ast.Await: "await", ast.Yield: "yield", ast.YieldFrom: "yield",
    ast.Slice: "slice",
}


class _Reject(Exception):
    """Internal: the offending token, turned into the one-line ValueError by the caller."""


def _accepted(symbols: Collection[str], functions: Collection[str]) -> str:
    syms = ", ".join(sorted(symbols)) or "none"
    return (f"accepted: numbers, the symbols [{syms}], the constants [{', '.join(CONSTANTS)}], "
            f"the functions [{', '.join(functions)}], the operators + - * / ** and unary minus")


def _segment(text: str, node: ast.AST) -> str:
    seg = ast.get_source_segment(text, node)
    if seg is None:
        return type(node).__name__
    return seg if len(seg) <= 40 else seg[:37] + "..."


def _shown(text: str) -> str:
    return repr(text) if len(text) <= 80 else repr(text[:77] + "...")


def _power(base: sympy.Expr, exp: sympy.Expr) -> sympy.Expr:
    """``base**exp``, refusing a power of two numbers with more than MAX_POWER_DIGITS digits."""
    if base.is_number and exp.is_number and base != 0 and base != 1:
        try:
            digits = abs(float(exp)) * abs(float(sympy.log(sympy.Abs(base), 10).evalf()))
        except (OverflowError, TypeError, ValueError):
            digits = math.inf
        if not digits <= MAX_POWER_DIGITS:
            raise _Reject(f"the power {_short(sympy.sstr(base))}**{_short(sympy.sstr(exp))} is too large "
                          f"(more than {MAX_POWER_DIGITS} digits)")
    return base**exp


def _short(text: str) -> str:
    return text if len(text) <= 40 else text[:37] + "..."


def parse_expression(
    text: str,
    symbols: Mapping[str, sympy.Symbol],
    functions: Collection[str] | None = None,
    *,
    what: str = "expression",
) -> sympy.Expr:
    r"""Parse ``text`` into a sympy expression without executing it.

    Args:
        text: e.g. ``"exp(-r2/2) + 0.5*s"``.
        symbols: the names the text may use → the sympy symbols they stand for (their
            assumptions are kept: ``s`` of a kernel is real).
        functions: names from :data:`FUNCTIONS` the text may call (default: all of them).
        what: what the text is, for error messages (``"kernel expression"``).

    Returns:
        The sympy expression (evaluated the usual sympy way, e.g. ``2*s/2`` is ``s``).

    Raises:
        TypeError: ``text`` is not a string.
        ValueError: one line naming the offending token (unknown name or function, attribute
            access, string, keyword argument, ...) and what is accepted; also for text longer
            than :data:`MAX_LENGTH`, nesting deeper than :data:`MAX_DEPTH`, a syntax error, an
            oversized power, or a result that is not finite (``1/0``).
    """
    if not isinstance(text, str):
        raise TypeError(f"{what} must be a string, got {type(text).__name__}")
    funcs = tuple(FUNCTIONS) if functions is None else tuple(functions)
    unknown = [f for f in funcs if f not in FUNCTIONS]
    if unknown:
        raise ValueError(f"functions {unknown} are not parser functions; known: {list(FUNCTIONS)}")
    for name in symbols:
        if not name.isidentifier() or name.startswith("__") or name in CONSTANTS or name in FUNCTIONS:
            raise ValueError(f"{name!r} cannot be a symbol of a text expression: symbol names are identifiers "
                             f"that are not dunder names, constants {list(CONSTANTS)} or functions {list(FUNCTIONS)}")
    accepted = _accepted(symbols, funcs)
    if len(text) > MAX_LENGTH:
        raise ValueError(f"{what} is {len(text)} characters long, more than the limit {MAX_LENGTH}")
    if not text.strip():
        raise ValueError(f"{what} is empty; {accepted}")
    # the depth of bracket nesting bounds the tree before Python's own parser sees it
    depth = 0
    for ch in text:
        depth += ch in "([{"
        depth -= ch in ")]}"
        if depth > MAX_DEPTH:
            raise ValueError(f"{what} {_shown(text)} nests brackets deeper than the limit {MAX_DEPTH}")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"cannot parse {what} {_shown(text)}: invalid syntax ({exc.msg}); {accepted}") from None
    except (RecursionError, MemoryError, ValueError):
        raise ValueError(f"cannot parse {what} {_shown(text)}: too deeply nested or malformed") from None
    src = text.strip()

    def build(node: ast.AST, level: int) -> sympy.Expr:
        if level > MAX_DEPTH:
            raise _Reject(f"nesting deeper than the limit {MAX_DEPTH}")
        if isinstance(node, ast.Constant):
            v = node.value
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                kind = "string" if isinstance(v, (str, bytes)) else type(v).__name__
                raise _Reject(f"{kind} literal {_segment(src, node)} is not allowed")
            if isinstance(v, float):
                if not math.isfinite(v):
                    raise _Reject(f"the number {_segment(src, node)} is not finite")
                return sympy.Float(v)
            return sympy.Integer(v)
        if isinstance(node, ast.Name):
            if node.id in symbols:
                return symbols[node.id]
            if node.id in CONSTANTS:
                return CONSTANTS[node.id]
            if node.id in FUNCTIONS:
                raise _Reject(f"the function {node.id!r} must be called with arguments")
            raise _Reject(f"unknown name {node.id!r}")
        if isinstance(node, ast.UnaryOp):
            if isinstance(node.op, ast.USub):
                return -build(node.operand, level + 1)
            if isinstance(node.op, ast.UAdd):
                return build(node.operand, level + 1)
            raise _Reject(f"the operator in {_segment(src, node)} is not allowed")
        if isinstance(node, ast.BinOp):
            # a chain a + b - c * d ... is nested on the left: walk it without recursion, so a
            # long sum counts as one level (powers nest on the right and count each)
            chain: list[ast.BinOp] = []
            while isinstance(node, ast.BinOp):
                if type(node.op) not in _BINOPS:
                    hint = " (write powers as **)" if isinstance(node.op, ast.BitXor) else ""
                    raise _Reject(f"the operator in {_segment(src, node)} is not allowed{hint}")
                if isinstance(node.op, ast.Pow) and chain:
                    break
                chain.append(node)
                if isinstance(node.op, ast.Pow):
                    break
                node = node.left
            head = chain[-1]
            if isinstance(head.op, ast.Pow):
                out = _power(build(head.left, level + 1), build(head.right, level + 1))
                chain.pop()
            else:
                out = build(node, level + 1)
            for link in reversed(chain):
                out = _BINOPS[type(link.op)][1](out, build(link.right, level + 1))
            return out
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name):
                if isinstance(node.func, ast.Attribute):
                    raise _Reject(f"attribute access '.{node.func.attr}' is not allowed")
                raise _Reject(f"the call {_segment(src, node)} is not a call of a named function")
            name = node.func.id
            if name not in funcs:
                raise _Reject(f"unknown function {name!r}")
            if node.keywords:
                kw = node.keywords[0].arg
                raise _Reject(f"keyword argument {kw + '=' if kw else '**'} in {name}() is not allowed")
            fn, lo, hi = FUNCTIONS[name]
            nargs = len(node.args)
            if nargs < lo or (hi is not None and nargs > hi):
                want = f"{lo}" if hi == lo else f"at least {lo}"
                raise _Reject(f"{name}() takes {want} argument(s), got {nargs}")
            return fn(*(build(a, level + 1) for a in node.args))
        word = _NODE_WORDS.get(type(node), type(node).__name__)
        raise _Reject(f"{word} {_segment(src, node)} is not allowed")

    try:
        expr = build(tree.body, 0)
    except _Reject as exc:
        raise ValueError(f"cannot parse {what} {_shown(text)}: {exc}; {accepted}") from None
    except RecursionError:
        raise ValueError(f"cannot parse {what} {_shown(text)}: too deeply nested") from None
    if expr.has(sympy.zoo, sympy.oo, -sympy.oo, sympy.nan):
        raise ValueError(f"{what} {_shown(text)} is not finite: it evaluates to {sympy.sstr(expr)}")
    return expr
