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

**GP labels** (:func:`exp_gp_one_layer_loss`, route ``exp-gp-one-layer``): Gaussian whitened inputs
:math:`\xi \sim N(0, I)`, :math:`x = \Sigma^{1/2}\xi`, labels :math:`y \sim N(0, K(\Xi) + \tau^2 I)` with the data
kernel :math:`K(\xi, \xi') = e^{\beta\xi^\top\xi'}` (:math:`\tau^2` = jitter + noise²). Given the covariates the
labels are Gaussian, so with :math:`\tilde M = \Sigma^{1/2}M\Sigma^{1/2}` every term is
:math:`\mathbb E\exp(\tfrac12\zeta^\top A\zeta) = \det(I - A)^{-1/2}` over :math:`\zeta = (\xi_i, \xi_j, \xi_q)`:

.. math::
    f = F_x + \frac{v_y^2}{n}\Big((n-1)\,I_3 + I_2 + \tau^2 I_0\Big) + 2v_y I_1 + (1 - 2\beta)^{-d/2} + \tau^2,

:math:`I_3 = \mathbb E\,e^{\beta\xi_i^\top\xi_j + \xi_i^\top\tilde M\xi_q + \xi_j^\top\tilde M\xi_q}`,
:math:`I_2 = \mathbb E\,e^{\beta|\xi_i|^2 + 2\xi_i^\top\tilde M\xi_q}`, :math:`I_0 = \mathbb E\,e^{2\xi_i^\top\tilde M\xi_q}`,
:math:`I_1 = \mathbb E\,e^{\xi_i^\top(\beta I + \tilde M)\xi_q}`, and :math:`F_x` the :math:`v_x` part (the linear-label
formula above with :math:`v_y = 0`, :math:`\Sigma_w = 0`, in :math:`\xi` coordinates). Finite iff every
:math:`I - A \succ 0` and :math:`\beta < 1/2`: the default data kernel ``exp`` (:math:`\beta = 1`) and the official
one (:math:`\beta = 1/2`) give :math:`\mathbb E K(\xi_q, \xi_q) = \infty` — the labels themselves have infinite
mean square — so the route applies to data kernels ``exp`` with scale :math:`\beta < 1/2` only. The
paper's covariates are spherical, where these integrals are Bessel-type, not Gaussian closed forms:
those stay on the label-exact Monte-Carlo route.
"""

from __future__ import annotations

from typing import Mapping

import sympy

from landscape.core.model import ModelSpec
from landscape.symbolic.one_layer import one_kernel_head

__all__ = ["exp_one_layer_structure", "exp_one_layer_loss", "exp_one_layer_domain", "exp_kernel_scale",
           "exp_gp_one_layer_loss"]


def exp_kernel_scale(kernel: object) -> sympy.Expr | None:
    r"""The scale :math:`\gamma` of an (un-normalised) kernel :math:`e^{\gamma s}`, else ``None``."""
    from landscape.core.kernels import INVARIANTS

    if getattr(kernel, "normalised", True):
        return None
    e = getattr(kernel, "expr", None)
    if e is None or e.func != sympy.exp:
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
    vbc, why = one_kernel_head(spec, blocks)
    if vbc is None:
        return None, why
    gamma = exp_kernel_scale(spec.heads[0].kernel)
    if gamma is None:
        return None, "the kernel is not exp(γ s) (softmax and other kernels have no Gaussian closed form here)"
    d = spec.d
    V, B, C = vbc
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
    return tuple(_pd_minors(S.inv() - 4 * M.T * S * M, "Σ^{-1} is not positive definite"))


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


def _pd_minors(N: sympy.Matrix, never: str = "a Gaussian integral of the exp route diverges for every value "
                                             "of the symbols") -> list[sympy.Expr]:
    """The non-constant leading principal minors of ``N`` (all must be > 0 for ``N`` ≻ 0).

    Raises:
        ValueError: a constant minor that is not positive (``N`` is never positive definite; message ``never``).
    """
    out = []
    for k in range(1, N.shape[0] + 1):
        m = sympy.expand(N[:k, :k].det(method="berkowitz"))
        if m.free_symbols:
            out.append(m)
        elif not m > 0:
            raise ValueError(never)
    return out


def exp_gp_one_layer_loss(M: sympy.Matrix, vx: sympy.Matrix, vy: sympy.Expr, sigma_half: sympy.Matrix,
                          n: int | sympy.Expr, beta: sympy.Expr, tau2: sympy.Expr
                          ) -> tuple[sympy.Expr, tuple[sympy.Expr, ...]]:
    r"""The exact GP-label loss of the module docstring and its finiteness domain.

    Args:
        M: score matrix :math:`\gamma B^\top C` on the covariates.
        vx, vy: value label row.
        sigma_half: :math:`\Sigma^{1/2}` (the sampler's symmetric square root).
        n: context length.
        beta: data-kernel scale (:math:`K = e^{\beta\xi^\top\xi'}`), :math:`0 < \beta < 1/2`.
        tau2: jitter + noise² on the label diagonal.

    Returns:
        ``(expr, domain)``: the loss, and expressions that must all be positive (leading principal
        minors of every :math:`I - A`).

    Raises:
        ValueError: :math:`\beta \ge 1/2` (the labels' mean square is infinite).
    """
    beta = sympy.nsimplify(beta)
    if not (0 < beta < sympy.Rational(1, 2)):
        raise ValueError(f"the GP-label exp route needs a data-kernel scale 0 < β < 1/2 (E K(x_q, x_q) = "
                         f"(1 - 2β)^(-d/2)); got β = {beta}")
    d = M.shape[0]
    R = sympy.Matrix(sigma_half)
    Mt = (R * M * R).applyfunc(sympy.expand)
    vx = sympy.Matrix(vx).reshape(d, 1)
    syms = set(M.free_symbols) | set(vx.free_symbols) | set(sympy.sympify(vy).free_symbols)
    I, Z = sympy.eye(d), sympy.zeros(d, d)
    blocks = {
        "I3": sympy.BlockMatrix([[Z, beta * I, Mt], [beta * I, Z, Mt], [Mt.T, Mt.T, Z]]).as_explicit(),
        "I2": sympy.BlockMatrix([[2 * beta * I, 2 * Mt], [2 * Mt.T, Z]]).as_explicit(),
        "I0": sympy.BlockMatrix([[Z, 2 * Mt], [2 * Mt.T, Z]]).as_explicit(),
        "I1": sympy.BlockMatrix([[Z, beta * I + Mt], [(beta * I + Mt).T, Z]]).as_explicit(),
    }
    val, domain = {}, []
    for name, A in blocks.items():
        N = sympy.eye(A.shape[0]) - A
        val[name] = _pos_power(sympy.expand(N.det(method="berkowitz")), sympy.Rational(-1, 2), syms)
        domain += _pd_minors(N)
    n = sympy.sympify(n)
    Fx = exp_one_layer_loss(Mt, R * vx, 0, I, sympy.zeros(d, d), n, 0)
    f = (Fx + vy**2 / n * ((n - 1) * val["I3"] + val["I2"] + tau2 * val["I0"]) + 2 * vy * val["I1"]
         + (1 - 2 * beta) ** sympy.Rational(-d, 2) + tau2)
    uniq = []
    for e in domain:
        if not any(sympy.expand(e - u) == 0 for u in uniq):
            uniq.append(e)
    return f, tuple(uniq)
