r"""Code generation: sympy expressions in family symbols → torch / numpy functions.

The generated torch functions take a value vector ``v`` of shape ``(..., k)`` (symbols in the
family's order) and return tensors of shape ``(...)`` (scalar expressions), ``(..., k)``
(gradients) or ``(..., k, k)`` (Hessians). They are built with ``sympy.lambdify(modules="torch")``
and contain only elementwise torch arithmetic, so they compose with ``torch.func.grad``,
``jacfwd`` and ``vmap``; constants are broadcast to the shape of ``v[..., 0]``.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import sympy
import torch

__all__ = ["to_torch", "gradient_exprs", "hessian_exprs", "to_torch_vector", "to_torch_matrix", "to_numpy"]


def _as_tensor(out: object, ref: torch.Tensor) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out.to(ref.dtype) if out.shape == ref.shape else (out + torch.zeros_like(ref)).to(ref.dtype)
    return torch.full_like(ref, float(out))


def to_torch(expr: sympy.Expr, symbols: Sequence[sympy.Symbol]) -> Callable[[torch.Tensor], torch.Tensor]:
    """Compile a scalar expression into ``f(v) -> Tensor`` with ``v[..., i]`` the value of ``symbols[i]``.

    Raises:
        ValueError: if ``expr`` has free symbols outside ``symbols``.
    """
    expr = sympy.sympify(expr)
    extra = expr.free_symbols - set(symbols)
    if extra:
        raise ValueError(f"expression has symbols {sorted(map(str, extra))} outside {[str(s) for s in symbols]}")
    fn = sympy.lambdify(list(symbols), expr, modules="torch")

    def f(v: torch.Tensor) -> torch.Tensor:
        comps = [v[..., i] for i in range(len(symbols))]
        return _as_tensor(fn(*comps), v[..., 0])

    f.__doc__ = f"torch function of {', '.join(map(str, symbols))}: {expr}"
    return f


def gradient_exprs(expr: sympy.Expr, symbols: Sequence[sympy.Symbol]) -> list[sympy.Expr]:
    """:math:`\\partial f/\\partial s_i` for every symbol."""
    return [sympy.diff(expr, s) for s in symbols]


def hessian_exprs(expr: sympy.Expr, symbols: Sequence[sympy.Symbol]) -> list[list[sympy.Expr]]:
    """:math:`\\partial^2 f/\\partial s_i\\partial s_j` (symmetric)."""
    grad = gradient_exprs(expr, symbols)
    k = len(symbols)
    H = [[sympy.Integer(0)] * k for _ in range(k)]
    for i in range(k):
        for j in range(i, k):
            H[i][j] = H[j][i] = sympy.diff(grad[i], symbols[j])
    return H


def to_torch_vector(exprs: Sequence[sympy.Expr], symbols: Sequence[sympy.Symbol]) -> Callable[[torch.Tensor], torch.Tensor]:
    """Compile a list of expressions into ``f(v) -> (..., len(exprs))``."""
    fns = [to_torch(e, symbols) for e in exprs]

    def f(v: torch.Tensor) -> torch.Tensor:
        return torch.stack([g(v) for g in fns], dim=-1)

    return f


def to_torch_matrix(exprs: Sequence[Sequence[sympy.Expr]], symbols: Sequence[sympy.Symbol]) -> Callable[[torch.Tensor], torch.Tensor]:
    """Compile a matrix of expressions into ``f(v) -> (..., rows, cols)``."""
    rows = [to_torch_vector(r, symbols) for r in exprs]

    def f(v: torch.Tensor) -> torch.Tensor:
        return torch.stack([r(v) for r in rows], dim=-2)

    return f


def to_numpy(exprs: object, symbols: Sequence[sympy.Symbol]) -> Callable[[np.ndarray], np.ndarray]:
    """Compile an expression (or nested list of them) into ``f(v: (k,)) -> ndarray`` (float64)."""
    fn = sympy.lambdify(list(symbols), exprs, modules="numpy")

    def f(v: np.ndarray) -> np.ndarray:
        return np.asarray(fn(*np.asarray(v, dtype=np.float64)), dtype=np.float64)

    return f
