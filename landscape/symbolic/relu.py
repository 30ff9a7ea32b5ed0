r"""Exact loss of ONE layer of ReLU attention on isotropic Gaussian covariates (half-space moments).

Setting (Ahn et al. 2023, Theorem 5): :math:`x_i, x_q \sim N(0, I_d)`, :math:`y = w^\top x (+\varepsilon)`,
:math:`w \sim N(0, I_d)`, one kernel head :math:`\tilde h(u, v) = \max(u^\top v, 0)` whose key and query
read the covariates only and satisfy :math:`B^\top C = \kappa I` on them (``fgd``: :math:`\kappa = bc`), value
label row :math:`(v_x^\top, v_y)`. The prediction is
:math:`\mathrm{TF} = -\frac1n\sum_i(v_x^\top x_i + v_yy_i)\,\mathrm{relu}(\kappa s_i)`, :math:`s_i = x_i^\top x_q`.

Derivation. :math:`\mathrm{relu}(\kappa s) = |\kappa|\,\mathrm{relu}(\sigma s)`, :math:`\sigma = \operatorname{sign}\kappa`.
Condition on :math:`x_q = \rho u` (:math:`|u| = 1`) and split :math:`x_i = \alpha_iu + x_i^\perp`,
:math:`\alpha_i \sim N(0,1)`; the half-space moments :math:`\mathbb E[\alpha^2 1_{\sigma\alpha>0}] = 1/2`,
:math:`\mathbb E[\alpha^4 1_{\sigma\alpha>0}] = 3/2` give, with :math:`\mathbb E\rho^2 = d`,

* :math:`\mathbb E[y_iy_j\,\mathrm{relu}\,\mathrm{relu}] = \kappa^2 d/4` (:math:`i \ne j`),
  :math:`\kappa^2 d(d+2)/2` (:math:`i = j`); :math:`\mathbb E[y_iy_q\,\mathrm{relu}(\kappa s_i)] = \kappa d/2`;
* :math:`\mathbb E[(v_x^\top x_i)(v_x^\top x_j)\,\mathrm{relu}\,\mathrm{relu}] = \kappa^2|v_x|^2/4` (:math:`i \ne j`),
  :math:`\kappa^2|v_x|^2(d+2)/2` (:math:`i = j`); cross terms between :math:`v_x` and :math:`v_y` and with
  :math:`y_q` vanish (odd in :math:`w`);
* label noise :math:`N(0, s^2)`: :math:`s^2 + v_y^2\kappa^2s^2d/(2n)`.

Hence, with :math:`K = (n + 2d + 3)/(4n)` and :math:`\gamma = v_y\kappa`,

.. math::
    f = d + d\gamma + dK\gamma^2 + K\kappa^2|v_x|^2 + s^2\Big(1 + \frac{d}{2n}\gamma^2\Big),

a polynomial in the family symbols; for ``fgd`` (:math:`\gamma = rbc`, :math:`v_x = 0`), noiseless, the
minimum is :math:`d - dn/(n + 2d + 3)` at :math:`rbc = -2n/(n + 2d + 3)` — Theorem 5's closed form in this
parameterisation, to compare with :math:`d - dn/(n + d + 1)` for linear attention.
"""

from __future__ import annotations

from typing import Mapping

import sympy

from landscape.core.model import ModelSpec
from landscape.symbolic.one_layer import one_kernel_head

__all__ = ["relu_one_layer_structure", "relu_one_layer_loss", "relu_one_layer_matrix", "relu_one_layer_loss_general"]


def _is_relu(head: object) -> bool:
    from landscape.core.kernels import INVARIANTS

    k = head.kernel  # type: ignore[attr-defined]
    return (not k.normalised) and sympy.simplify(k.expr - sympy.Max(INVARIANTS[0], 0)) == 0


def relu_one_layer_structure(blocks: Mapping[str, sympy.Matrix], spec: ModelSpec
                             ) -> tuple[tuple[sympy.Expr, sympy.Matrix, sympy.Expr] | None, str]:
    """``((κ, v_x, v_y), "")`` when the family is one ReLU head of the form in the module docstring,
    else ``(None, reason)``."""
    found, why = relu_one_layer_matrix(blocks, spec)
    if found is None:
        return None, why
    M, vx, vy = found
    d = spec.d
    kappa = M[0, 0]
    if any(sympy.expand(M[i, j] - (kappa if i == j else 0)) != 0 for i in range(d) for j in range(d)):
        return None, "BᵀC is not a multiple of the identity on the covariates"
    return (kappa, vx, vy), ""


def relu_one_layer_loss(kappa: sympy.Expr, vx: sympy.Matrix, vy: sympy.Expr, n: int | sympy.Expr,
                        d: int | sympy.Expr, noise_var: sympy.Expr = 0) -> sympy.Expr:
    """The exact loss of the module docstring (expanded)."""
    K = (n + 2 * d + 3) / (4 * sympy.sympify(n))
    gamma = vy * kappa
    vx2 = sum((e**2 for e in vx), sympy.Integer(0))
    f = d + d * gamma + d * K * gamma**2 + K * kappa**2 * vx2
    f += noise_var * (1 + sympy.sympify(d) / (2 * n) * gamma**2)
    return sympy.expand(f)


def relu_one_layer_matrix(blocks: Mapping[str, sympy.Matrix], spec: ModelSpec
                          ) -> tuple[tuple[sympy.Matrix, sympy.Matrix, sympy.Expr] | None, str]:
    """``((M, v_x, v_y), "")`` with :math:`M = B^\\top C` on the covariates (any matrix) for one ReLU head
    whose key and query read the covariates only, else ``(None, reason)``."""
    d = spec.d
    vbc, why = one_kernel_head(spec, blocks, _is_relu, "ReLU kernel")
    if vbc is None:
        return None, why
    V, B, C = vbc
    return ((B.T * C)[:d, :d].applyfunc(sympy.expand), V[d, :d].T, V[d, d]), ""


def relu_one_layer_loss_general(M: sympy.Matrix, vx: sympy.Matrix, vy: sympy.Expr, sigma: sympy.Matrix,
                                sigma_w: sympy.Matrix, n: int | sympy.Expr, noise_var: sympy.Expr = 0) -> sympy.Expr:
    r"""Exact one-layer ReLU loss for any score matrix :math:`M = B^\top C`, :math:`x \sim N(0, \Sigma)`,
    :math:`w \sim N(0, \Sigma_w)`, label noise :math:`s^2`.

    Given the query :math:`z` and :math:`w`, :math:`(u^\top x_i, x_i^\top m)` is a centred Gaussian pair
    (:math:`m = Mz`, :math:`u = v_x + v_yw`), and for such a pair
    :math:`\mathbb E[X\,\mathrm{relu}(Y)] = \operatorname{Cov}(X,Y)/2`,
    :math:`\mathbb E[X^2\mathrm{relu}(Y)^2] = \operatorname{Cov}(X,Y)^2 + \operatorname{Var}X\operatorname{Var}Y/2`
    (write :math:`X = \beta Y + R`). With :math:`c = \Sigma m`, :math:`q = m^\top\Sigma m`:

    .. math::
        f = \mathbb E_{z,w}\Big[\tfrac{n-1}{4n}(u^\top c)^2 + \tfrac1n\big((u^\top c)^2
            + \tfrac q2(u^\top\Sigma u + v_y^2s^2)\big) + (u^\top c)(w^\top z) + (w^\top z)^2\Big] + s^2,

    every term a quadratic form in :math:`z`, so :math:`\mathbb E_z[z^\top Az] = \operatorname{tr}(A\Sigma)`: a
    polynomial of degree 2 in :math:`M` (degree 4 in the entries of ``B, C``). For :math:`\Sigma = \Sigma_w = I`,
    :math:`M = \kappa I` it is :func:`relu_one_layer_loss`.
    """
    d = M.shape[0]
    S, Sw = sympy.Matrix(sigma), sympy.Matrix(sigma_w)
    vx = sympy.Matrix(vx).reshape(d, 1)
    G = M.T * S * M
    A1 = M.T * S * (vx * vx.T + vy**2 * Sw) * S * M
    A3 = vy * M.T * S * Sw
    const = (vx.T * S * vx)[0, 0] + vy**2 * (S * Sw).trace() + vy**2 * noise_var
    n = sympy.sympify(n)
    t1 = (A1 * S).trace()
    f = (n - 1) / (4 * n) * t1 + (t1 + const * (G * S).trace() / 2) / n + (A3 * S).trace() + (Sw * S).trace() + noise_var
    return sympy.expand(f)
