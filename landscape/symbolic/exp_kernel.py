r"""Exact loss of ONE layer of exp-kernel attention on Gaussian covariates with linear labels.

Setting: :math:`x_i, x_q \sim N(0, \Sigma)`, :math:`y = w^\top x + \varepsilon`, :math:`w \sim N(0, \Sigma_w)`,
:math:`\varepsilon \sim N(0, s^2)`; one kernel head :math:`\tilde h(u, v) = e^{\gamma u^\top v}` (``exp`` with
scale :math:`\gamma`, not softmax) whose key and query read the covariates only, so the score is
:math:`e_i = \exp(x_i^\top M x_q)` with :math:`M = \gamma B_{:,1:d}^\top C_{:,1:d}` (any matrix); value label
row :math:`(v_x^\top, v_y)`. The prediction is
:math:`\mathrm{TF} = -\frac1n\sum_i a_i e_i`, :math:`a_i = u^\top x_i + v_y\varepsilon_i`, :math:`u = v_x + v_y w`.

Derivation (exact). Condition on :math:`x_q = z` and :math:`w`; with :math:`m = Mz`, :math:`c = \Sigma m`,
:math:`q = m^\top\Sigma m = z^\top G z`, :math:`G = M^\top\Sigma M`, Gaussian tilting
(:math:`\mathbb E[g(x)e^{x^\top m}] = e^{q/2}\,\mathbb E_{N(\Sigma m,\Sigma)}g`) gives
:math:`\mathbb E[a_ie_i] = e^{q/2}u^\top c`, :math:`\mathbb E[a_i^2e_i^2] = e^{2q}(u^\top\Sigma u + 4(u^\top c)^2 + v_y^2s^2)`,
hence

.. math::
    f = \mathbb E_{z,w}\Big[\tfrac{n-1}{n}e^{q}(u^\top c)^2 + \tfrac1n e^{2q}\big(u^\top\Sigma u + 4(u^\top c)^2 + v_y^2s^2\big)
        + 2e^{q/2}(u^\top c)(w^\top z) + (w^\top z)^2\Big] + s^2 .

Over :math:`w`: :math:`\mathbb E(u^\top c)^2 = (v_x^\top c)^2 + v_y^2c^\top\Sigma_wc`,
:math:`\mathbb E u^\top\Sigma u = v_x^\top\Sigma v_x + v_y^2\operatorname{tr}\Sigma\Sigma_w`,
:math:`\mathbb E(u^\top c)(w^\top z) = v_y c^\top\Sigma_w z`. Over :math:`z \sim N(0,\Sigma)` every term is
:math:`\mathbb E[e^{tz^\top Gz}z^\top Az] = \det(I - 2t\Sigma G)^{-1/2}\operatorname{tr}\big(A(I - 2t\Sigma G)^{-1}\Sigma\big)`
(or the same without the trace), :math:`t \in \{\tfrac12, 1, 2\}` — a closed form in the family symbols.

**Finiteness.** The :math:`t = 2` integral converges iff :math:`\Sigma^{-1} - 4G \succ 0`
(:math:`\lambda_{\max}(\Sigma G) < 1/4`, i.e. :math:`\lVert\Sigma^{1/2}M^\top\Sigma M\Sigma^{1/2}\rVert_{op} < 1/4`), then so
do the others (:math:`G \succeq 0`); beyond it the loss is :math:`+\infty` (except where every coefficient
of the :math:`e^{2q}` term vanishes, e.g. :math:`v_x = 0, v_y = 0`). The expression returned is the loss on
that domain :math:`\Omega`; :func:`exp_one_layer_domain` gives :math:`\Omega` exactly, as the leading principal
minors of :math:`\Sigma^{-1} - 4G` (Sylvester's criterion), and the route puts them in
:attr:`~landscape.symbolic.loss.FamilyLoss.domain` (``inf`` outside). Each determinant is factored and
every factor oriented to be positive at :math:`M = 0`.

Not covered (and why): *GP labels* (:class:`~landscape.core.tasks.KernelGP`) with an exp data kernel
on Gaussian covariates — every expectation is again a Gaussian integral of an exponentiated
quadratic form in :math:`(x_i, x_j, x_q)`, but :math:`\mathbb E K(x_q, x_q) = \mathbb E e^{\beta|x_q|^2}` is
finite only for :math:`\beta < 1/2` (for :math:`\Sigma = I`; the data kernel ``exp`` has :math:`\beta = 1`, the
official data kernel :math:`1/2`: both infinite), so the route would apply only to rescaled data; and
the paper's data are on the sphere, where the integrals are Bessel-type, not closed Gaussian forms.
Those cases use the label-exact Monte-Carlo route.
"""

from __future__ import annotations

from typing import Mapping

import sympy

from landscape.core.model import ModelSpec, param_shapes

__all__ = ["exp_one_layer_structure", "exp_one_layer_loss", "exp_one_layer_domain", "exp_kernel_scale"]


def exp_kernel_scale(kernel: object) -> sympy.Expr | None:
    r"""The scale :math:`\gamma` of an (un-normalised) kernel :math:`e^{\gamma s}`, else ``None``."""
    from landscape.core.kernels import INVARIANTS

    if getattr(kernel, "normalised", True):
        return None
    e = kernel.expr  # type: ignore[attr-defined]
    if e.func != sympy.exp:
        return None
    s = INVARIANTS[0]
    g = sympy.simplify(e.args[0] / s)
    if g.free_symbols or g == 0:
        return None
    return g


def exp_one_layer_structure(blocks: Mapping[str, sympy.Matrix], spec: ModelSpec
                            ) -> tuple[tuple[sympy.Matrix, sympy.Matrix, sympy.Expr] | None, str]:
    """``((M, v_x, v_y), "")`` when the family is one exp-kernel head as in the module docstring, else
    ``(None, reason)``."""
    if spec.layers != 1 or len(spec.heads) != 1 or spec.heads[0].kind != "kernel":
        return None, "not one layer with one kernel head"
    gamma = exp_kernel_scale(spec.heads[0].kernel)
    if gamma is None:
        return None, "the kernel is not exp(γ s) (softmax and other kernels have no Gaussian closed form here)"
    d = spec.d
    full = {k: sympy.Matrix(blocks.get(k, sympy.zeros(*shape))) for k, shape in param_shapes(spec).items()}
    key = lambda name: spec.key(0, 0, name)  # noqa: E731
    V, B, C = full[key("V")], full[key("B")], full[key("C")]
    if any(sympy.expand(e) != 0 for e in list(B[:, d]) + list(C[:, d])):
        return None, "the key or query reads the label coordinate"
    M = (gamma * B[:, :d].T * C[:, :d]).applyfunc(sympy.expand)
    return (M, V[d, :d].T, V[d, d]), ""


def _pos_power(det: sympy.Expr, power: sympy.Rational, symbols: set[sympy.Symbol]) -> sympy.Expr:
    """``det**power`` with det factored and each factor oriented positive at the origin."""
    coeff, factors = sympy.factor_list(sympy.expand(det))
    origin = {s: 0 for s in symbols}
    out = sympy.Integer(1)
    for base, e in factors:
        b0 = base.subs(origin)
        if b0 == 0:
            raise ValueError("a factor of the Gaussian determinant vanishes at M = 0")
        if b0 < 0:
            base, coeff = -base, coeff * (-1) ** e
        out *= base ** (power * e)
    if coeff <= 0:
        raise ValueError("the Gaussian determinant is not positive at M = 0")
    return out * coeff**power


def exp_one_layer_domain(M: sympy.Matrix, sigma: sympy.Matrix) -> tuple[sympy.Expr, ...]:
    r""":math:`\Omega = \{\Sigma^{-1} - 4M^\top\Sigma M \succ 0\}` as the leading principal minors that must be positive
    (the non-constant ones)."""
    S = sympy.Matrix(sigma)
    N = S.inv() - 4 * M.T * S * M
    out = []
    for k in range(1, N.shape[0] + 1):
        m = sympy.expand(N[:k, :k].det(method="berkowitz"))
        if m.free_symbols:
            out.append(m)
        elif not m > 0:
            raise ValueError("Σ^{-1} is not positive definite")
    return tuple(out)


def exp_one_layer_loss(M: sympy.Matrix, vx: sympy.Matrix, vy: sympy.Expr, sigma: sympy.Matrix,
                       sigma_w: sympy.Matrix, n: int | sympy.Expr, noise_var: sympy.Expr = 0) -> sympy.Expr:
    r"""The exact loss of the module docstring on its finiteness domain :math:`\Omega`.

    Args:
        M: the score matrix :math:`\gamma B^\top C` on the covariates (sympy, d×d).
        vx, vy: the value label row (d×1 matrix, scalar).
        sigma, sigma_w: :math:`\Sigma` and :math:`\Sigma_w` (sympy, d×d).
        n: context length.
        noise_var: label noise variance :math:`s^2`.

    Returns:
        A sympy expression in the family symbols.
    """
    d = M.shape[0]
    I = sympy.eye(d)
    S, Sw = sympy.Matrix(sigma), sympy.Matrix(sigma_w)
    vx = sympy.Matrix(vx).reshape(d, 1)
    syms = set(M.free_symbols) | set(vx.free_symbols) | set(sympy.sympify(vy).free_symbols)
    G = M.T * S * M
    A1 = M.T * S * (vx * vx.T + vy**2 * Sw) * S * M         # (v_xᵀc)² + v_y² cᵀΣ_w c = zᵀA1z
    A3 = vy * M.T * S * Sw                                   # v_y cᵀΣ_w z = zᵀA3z
    const2 = (vx.T * S * vx)[0, 0] + vy**2 * (S * Sw).trace() + vy**2 * noise_var

    def gauss(t: sympy.Rational, A: sympy.Matrix | None) -> sympy.Expr:
        At = I - 2 * t * S * G
        det = sympy.expand(At.det(method="berkowitz"))
        if A is None:
            return _pos_power(det, sympy.Rational(-1, 2), syms)
        adj = At.adjugate(method="berkowitz")
        num = sympy.expand((A * adj * S).trace())
        return num * _pos_power(det, sympy.Rational(-3, 2), syms)

    n = sympy.sympify(n)
    f = (n - 1) / n * gauss(sympy.Integer(1), A1)
    f += (const2 * gauss(sympy.Integer(2), None) + 4 * gauss(sympy.Integer(2), A1)) / n
    f += 2 * gauss(sympy.Rational(1, 2), A3)
    f += (Sw * S).trace() + noise_var
    return f
