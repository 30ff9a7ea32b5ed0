r"""Exact population loss of ONE layer of linear attention, for every P and Q (closed form).

Setting (Ahn, Cheng, Daneshmand, Sra 2023, arXiv 2306.00297, §2–3): tokens
:math:`z_i = (x_i, y_i)` for the ``n`` sources, query :math:`z_q = (x_q, 0)`, labels
:math:`y = w^\top x` (noiseless), :math:`w \sim N(0, \Sigma_w)`, covariates i.i.d. with
:math:`\mathbb E\,x x^\top = c_2\Sigma` and fourth moments

.. math::
    \mathbb E[x x^\top H x x^\top] = c_4\,(\Sigma H\Sigma + \Sigma H^\top\Sigma + \operatorname{tr}(H\Sigma)\,\Sigma)

— Gaussian :math:`x \sim N(0,\Sigma)`: :math:`c_2 = c_4 = 1` (Isserlis); :math:`x = \Sigma^{1/2}\xi` with
:math:`\xi` uniform on the sphere :math:`S^{d-1}`: :math:`c_2 = 1/d`, :math:`c_4 = 1/(d(d+2))`.

Derivation. With several heads :math:`(P_h, Q_h)` the prediction is
:math:`\mathrm{TF} = -[Z_1]_{d+1,n+1} = -\sum_h p_h^\top \hat S Q_h z_q`, where :math:`p_h^\top` is the last row
of :math:`P_h` and :math:`\hat S = \frac1n\sum_{i\le n} z_i z_i^\top`. Write
:math:`p_h = (p^h_x, p^h_y)`, :math:`R^h_x = [Q_h]_{1:d,1:d}`, :math:`(r^h_y)^\top = [Q_h]_{d+1,1:d}`,
:math:`S = \frac1n\sum_i x_i x_i^\top` and

.. math::
    F_h(w) = R^{h\top}_x + r^h_y w^\top, \qquad g_h(w) = p^h_x + p^h_y w ,

so that :math:`z_i = (I; w^\top) x_i` gives :math:`\mathrm{TF} = -m^\top x_q` with
:math:`m = \sum_h F_h S g_h`, and the error is :math:`\mathrm{TF} - y_q = -(m + w)^\top x_q`. Averaging
over the query (:math:`\Sigma_q = c_2\Sigma`) and then over the sources with
:math:`\mathbb E[S H S] = \alpha\,\Sigma H\Sigma + \beta(\Sigma H^\top\Sigma + \operatorname{tr}(H\Sigma)\Sigma)`,
:math:`\alpha = (c_4 + (n-1)c_2^2)/n`, :math:`\beta = c_4/n`:

.. math::
    f = \alpha\,\mathbb E_w\big[v^\top\Sigma_q v\big]
      + \beta \sum_{h,h'} \mathbb E_w\big[v_{h'h}^\top\Sigma_q v_{hh'}
          + \operatorname{tr}(F_h^\top\Sigma_q F_{h'}\Sigma)\, g_h^\top\Sigma g_{h'}\big]
      + 2c_2\sum_h \mathbb E_w\big[g_h^\top\Sigma F_h^\top\Sigma_q w\big] + c_2\operatorname{tr}(\Sigma\Sigma_w),

with :math:`v_{h'h} = F_{h'}\Sigma g_h` and :math:`v = \sum_h v_{hh}`. Every vector here is of the form
:math:`a + \Lambda w + b\,q(w)` with :math:`q(w) = w^\top\Sigma w`, every scalar of the form
:math:`c + \lambda^\top w + \kappa\,q(w)`; the remaining Gaussian moments of ``w`` are
:math:`\mathbb E q = t_1 = \operatorname{tr}(\Sigma\Sigma_w)`,
:math:`\mathbb E q^2 = t_1^2 + 2t_2`, :math:`t_2 = \operatorname{tr}(\Sigma\Sigma_w\Sigma\Sigma_w)`,
:math:`\mathbb E[w^\top A w] = \operatorname{tr}(A\Sigma_w)`, odd moments zero. The data enter up to
degree six (four covariate factors of the sources, two of the query, four of ``w``).

Check (Ahn et al. Theorem 1): :math:`P = \mathrm{diag}(0,1)`, :math:`Q = -\mathrm{diag}(A,0)`,
:math:`\Sigma_w = I`, Gaussian:
:math:`f(A) = \frac{n+1}{n}\operatorname{tr}(\Sigma A\Sigma A^\top\Sigma) + \frac1n\operatorname{tr}(A\Sigma A^\top\Sigma)\operatorname{tr}\Sigma
- 2\operatorname{tr}(\Sigma^2 A) + \operatorname{tr}\Sigma`, minimised at
:math:`A^* = (\frac{n+1}{n}\Sigma + \frac{\operatorname{tr}\Sigma}{n} I)^{-1}`; for :math:`\Sigma = I`,
:math:`A = aI`: :math:`d - 2ad + a^2 d(n+d+1)/n`.

The same code runs on sympy matrices (exact expressions in family symbols, symbolic ``n``,
symbolic eigenvalues of :math:`\Sigma`) and on torch tensors (:func:`exact_loss_fn`, a function of
the full parameter dict that composes with ``torch.func.grad``/``vmap``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import sympy
import torch

from landscape.theory.families import Family, Problem
from landscape.core.model import ModelSpec
from landscape.core.tasks import LinearRegression, Task

__all__ = ["one_layer_loss", "exact_loss_fn", "covariate_moments", "linear_heads", "kernel_head_blocks"]


# ---------------------------------------------------------------------- backends
class _Ops:
    """Matrix operations shared by sympy matrices and (unbatched) torch tensors."""

    @staticmethod
    def T(M: Any) -> Any:
        return M.T if isinstance(M, sympy.MatrixBase) else M.mT

    @staticmethod
    def tr(M: Any) -> Any:
        return M.trace() if isinstance(M, sympy.MatrixBase) else M.diagonal(dim1=-2, dim2=-1).sum(-1)

    @staticmethod
    def s(M: Any) -> Any:
        """The entry of a 1×1 matrix."""
        return M[0, 0]


@dataclass(frozen=True)
class _AQ:
    """A vector polynomial ``a + Λ w + b q(w)`` in the task vector ``w`` (``q = wᵀΣw``)."""

    a: Any  # (d, 1)
    L: Any  # (d, d)
    b: Any  # (d, 1)


def _e_vv(u: _AQ, M: Any, v: _AQ, Sw: Any, t1: Any, Eq2: Any) -> Any:
    r""":math:`\mathbb E_w[u(w)^\top M v(w)]` for ``u, v`` of the form ``a + Λw + b q``."""
    T, tr, s = _Ops.T, _Ops.tr, _Ops.s
    return (s(T(u.a) @ M @ v.a) + tr(T(u.L) @ M @ v.L @ Sw)
            + (s(T(u.a) @ M @ v.b) + s(T(u.b) @ M @ v.a)) * t1 + s(T(u.b) @ M @ v.b) * Eq2)


def _e_ss(c: Any, lam: Any, kap: Any, g: Any, mu: Any, pi: Any, Sw: Any, t1: Any, Eq2: Any) -> Any:
    r""":math:`\mathbb E_w[(c + \lambda^\top w + \kappa q)(\gamma + \mu^\top w + \pi q)]`."""
    return c * g + (c * pi + kap * g) * t1 + _Ops.s(_Ops.T(lam) @ Sw @ mu) + kap * pi * Eq2


def one_layer_loss(
    heads: Sequence[tuple[Any, Any]],
    sigma: Any,
    sigma_w: Any,
    n: Any,
    c2: Any = 1,
    c4: Any = 1,
    noise_var: Any = 0,
    sigma_query: Any = None,
) -> Any:
    r"""Exact one-layer linear-attention loss :math:`\mathbb E(\mathrm{TF}(Z_0) - y_q)^2` (see module docstring).

    Label noise :math:`y_i = w^\top x_i + \varepsilon_i`, :math:`\varepsilon_i \sim N(0, s^2)` i.i.d. for the
    sources and the query (``noise_var`` :math:`= s^2`). With :math:`z_i = z^0_i + \varepsilon_i e`
    (:math:`e` = label coordinate), :math:`\hat S = \hat S^0 + \Delta_1 + \bar\varepsilon^2 ee^\top`,
    :math:`\Delta_1 = \frac1n\sum_i\varepsilon_i(z^0_ie^\top + ez^{0\top}_i)`,
    :math:`\bar\varepsilon^2 = \frac1n\sum_i\varepsilon_i^2`. The error gains
    :math:`T_1 = -\frac1n\sum_i\varepsilon_i\,z_i^{0\top}Kx_q` (:math:`K = \sum_h p_hr^{h\top}_y + p^h_y[Q_h]_{:,1:d}`),
    :math:`T_2 = -\bar\varepsilon^2\rho^\top x_q` (:math:`\rho = \sum_h p^h_yr^h_y`) and :math:`-\varepsilon_q`; odd
    moments of :math:`\varepsilon` vanish, :math:`\mathbb E\bar\varepsilon^2 = s^2`,
    :math:`\mathbb E(\bar\varepsilon^2)^2 = s^4(n+2)/n`, so the noiseless loss gains

    .. math::
        s^2\Big[1 + \frac{c_2^2}{n}\big(\operatorname{tr}(M_{xx}\Sigma) + M_{yy}t_1\big)
        + 2c_2\,\bar m^\top\Sigma\rho\Big] + s^4\,\frac{n+2}{n}\,c_2\,\rho^\top\Sigma\rho,

    :math:`M = K\Sigma K^\top`, :math:`\bar m = \mathbb E m = c_2\sum_h(R^{h\top}_x\Sigma p^h_x + t_1p^h_yr^h_y)`. For
    ``pgd`` (:math:`\Sigma = I`, :math:`A = aI`): :math:`s^2(1 + a^2d/n)`.

    Args:
        heads: ``[(P_h, Q_h), ...]``, each ``(d+1, d+1)`` — sympy matrices or torch tensors (no
            leading batch axes; use ``torch.func.vmap``).
        sigma: covariate covariance :math:`\Sigma` ``(d, d)`` (same backend).
        sigma_w: task covariance :math:`\Sigma_w` ``(d, d)``.
        n: number of context examples (int, sympy expression or tensor).
        c2, c4: covariate moment constants (Gaussian ``1, 1``; sphere ``1/d, 1/(d(d+2))``).
        noise_var: label noise variance :math:`s^2` (number, sympy expression or tensor; default 0).
        sigma_query: covariance of the query covariate when it differs from the sources' (covariate
            shift; default ``sigma``). The query enters only through :math:`\Sigma_q = c_2\Sigma_{\text{query}}`:
            the terms above keep their form with the last one read as :math:`\operatorname{tr}(\Sigma_q\Sigma_w)`,
            and in the noise terms :math:`M = K\Sigma_qK^\top/c_2`, :math:`\bar m^\top\Sigma_q\rho`,
            :math:`\rho^\top\Sigma_q\rho`.

    Returns:
        The loss: a sympy expression or a 0-dim tensor.
    """
    T, tr = _Ops.T, _Ops.tr
    d = sigma.shape[0]
    Sq = (sigma if sigma_query is None else sigma_query) * c2
    t1 = tr(sigma @ sigma_w)
    t2 = tr(sigma @ sigma_w @ sigma @ sigma_w)
    Eq2 = t1 * t1 + 2 * t2
    parts = []
    for P, Q in heads:
        px = T(P[d:d + 1, :d])  # (d, 1)
        py = P[d, d]
        Rx = Q[:d, :d]
        ry = T(Q[d:d + 1, :d])  # (d, 1)
        parts.append((px, py, Rx, ry))

    def v(hp: int, h: int) -> _AQ:  # v_{h'h} = F_{h'} Σ g_h
        px, py, _, _ = parts[h]
        _, _, Rx2, ry2 = parts[hp]
        Spx = sigma @ px
        return _AQ(T(Rx2) @ Spx, T(Rx2) @ sigma * py + ry2 @ T(Spx), ry2 * py)

    diag = [v(h, h) for h in range(len(parts))]
    vsum = diag[0]
    for u in diag[1:]:
        vsum = _AQ(vsum.a + u.a, vsum.L + u.L, vsum.b + u.b)
    t_main = _e_vv(vsum, Sq, vsum, sigma_w, t1, Eq2)
    u1 = 0
    u2 = 0
    cross = 0
    for h, (px, py, Rx, ry) in enumerate(parts):
        cross = cross + _Ops.s(T(px) @ sigma @ sigma_w @ Sq @ ry) + py * tr(sigma @ Rx @ Sq @ sigma_w)
        for hp, (px2, py2, Rx2, ry2) in enumerate(parts):
            u1 = u1 + _e_vv(v(hp, h), Sq, v(h, hp), sigma_w, t1, Eq2)
            c = tr(Rx @ Sq @ T(Rx2) @ sigma)
            lam = sigma @ Rx @ Sq @ ry2 + sigma @ Rx2 @ Sq @ ry
            kap = _Ops.s(T(ry) @ Sq @ ry2)
            gam = _Ops.s(T(px) @ sigma @ px2)
            mu = sigma @ px * py2 + sigma @ px2 * py
            pi = py * py2
            u2 = u2 + _e_ss(c, lam, kap, gam, mu, pi, sigma_w, t1, Eq2)
    alpha = (c4 + (n - 1) * c2 * c2) / n
    beta = c4 / n
    out = alpha * t_main + beta * (u1 + u2) + 2 * c2 * cross + tr(Sq @ sigma_w)
    if isinstance(noise_var, (int, float)) and noise_var == 0:
        return out
    return out + _noise_terms(heads, parts, sigma, Sq, t1, n, c2, noise_var)


def _noise_terms(heads: Sequence[tuple[Any, Any]], parts: list, sigma: Any, Sq: Any, t1: Any, n: Any, c2: Any,
                 s2: Any) -> Any:
    """The label-noise terms of :func:`one_layer_loss` (see its docstring)."""
    T, tr, s = _Ops.T, _Ops.tr, _Ops.s
    d = sigma.shape[0]
    rho = None
    mbar = None
    K = None
    for (P, Q), (px, py, Rx, ry) in zip(heads, parts):
        p_full = T(P[d:d + 1, :])  # (d+1, 1)
        r_h = ry * py
        m_h = (T(Rx) @ sigma @ px + ry * (py * t1)) * c2
        K_h = p_full @ T(ry) + Q[:, :d] * py
        rho = r_h if rho is None else rho + r_h
        mbar = m_h if mbar is None else mbar + m_h
        K = K_h if K is None else K + K_h
    M = K @ Sq @ T(K)
    first = 1 + (c2 / n) * (tr(M[:d, :d] @ sigma) + M[d, d] * t1) + 2 * s(T(mbar) @ Sq @ rho)
    return s2 * first + s2 * s2 * (n + 2) / n * s(T(rho) @ Sq @ rho)


# ---------------------------------------------------------------------- data and heads
def covariate_moments(covariates: str, d: int | sympy.Expr) -> tuple[Any, Any]:
    r"""Moment constants ``(c2, c4)`` of the whitened covariates :math:`\xi` (see module docstring).

    Raises:
        ValueError: unknown covariate law.
    """
    if covariates == "gaussian":
        return sympy.Integer(1), sympy.Integer(1)
    if covariates == "sphere":
        return 1 / sympy.sympify(d), 1 / (sympy.sympify(d) * (sympy.sympify(d) + 2))
    raise ValueError(f"covariates must be 'gaussian' or 'sphere', got {covariates!r}")


def _is_linear_kernel(head: Any) -> bool:
    from landscape.core.kernels import INVARIANTS

    k = head.kernel
    return (not k.normalised) and sympy.simplify(k.expr - INVARIANTS[0]) == 0


def linear_heads(spec: ModelSpec, params: Mapping[str, Any], layer: int = 0) -> list[tuple[Any, Any]] | None:
    r"""``[(P_h, Q_h)]`` of one layer, or ``None`` if some head is not (equivalent to) linear attention.

    A kernel head with the linear activation :math:`\tilde h(u,w) = u^\top w` is the linear head
    :math:`P = V`, :math:`Q = B^\top C` (since :math:`(BZ)^\top CZ = Z^\top B^\top C Z`).
    """
    out = []
    for h, head in enumerate(spec.heads):
        k = lambda name: spec.key(layer, h, name)  # noqa: E731
        if head.kind == "linear":
            out.append((params[k("P")], params[k("Q")]))
        elif _is_linear_kernel(head):
            B, C = params[k("B")], params[k("C")]
            out.append((params[k("V")], _Ops.T(B) @ C))
        else:
            return None
    return out


def one_kernel_head(spec: ModelSpec, blocks: Mapping[str, Any], accepts: Callable[[Any], bool] = lambda head: True,
                    what: str = "kernel") -> tuple[tuple[sympy.Matrix, sympy.Matrix, sympy.Matrix] | None, str]:
    """:func:`kernel_head_blocks` of a model that is one layer with one kernel head ``accepts(head)`` holds for,
    else ``(None, "not one layer with one {what} head")``."""
    if spec.layers != 1 or len(spec.heads) != 1 or spec.heads[0].kind != "kernel" or not accepts(spec.heads[0]):
        return None, f"not one layer with one {what} head"
    return kernel_head_blocks(spec, blocks)


def kernel_head_blocks(spec: ModelSpec, blocks: Mapping[str, Any]
                       ) -> tuple[tuple[sympy.Matrix, sympy.Matrix, sympy.Matrix] | None, str]:
    """``((V, B, C), "")`` of the first layer's first kernel head as sympy matrices (absent blocks
    zero) when its key and query read the covariates only, else ``(None, reason)``; the one-head
    closed-form routes (ReLU, exp) start from it.

    Args:
        spec: the architecture (one layer whose first head is a kernel head).
        blocks: parameter name → sympy matrix (a family's blocks).

    Returns:
        ``((V, B, C), "")`` or ``(None, reason)``.
    """
    from landscape.core.model import param_shapes

    d = spec.d
    full = {k: sympy.Matrix(blocks.get(k, sympy.zeros(*shape))) for k, shape in param_shapes(spec).items()}
    V, B, C = (full[spec.key(0, 0, name)] for name in ("V", "B", "C"))
    if any(sympy.expand(e) != 0 for e in list(B[:, d]) + list(C[:, d])):
        return None, "the key or query reads the label coordinate"
    return (V, B, C), ""


def _spec_of(obj: Family | Problem | ModelSpec) -> ModelSpec:
    if isinstance(obj, Family):
        return obj.spec
    if isinstance(obj, Problem):
        return obj.spec
    if isinstance(obj, ModelSpec):
        return obj
    raise TypeError(f"expected a Family, Problem or ModelSpec, got {type(obj).__name__}")


def exact_loss_fn(
    family_or_spec_problem: Family | Problem | ModelSpec,
    data: Task,
) -> Callable[[Mapping[str, torch.Tensor]], torch.Tensor] | None:
    r"""Exact population loss as a torch function of the FULL parameter dict, when one is known.

    Known: one layer (any number of heads) of linear attention — or kernel attention with the
    linear activation, :math:`P = V`, :math:`Q = B^\top C` — on noiseless
    :class:`~landscape.core.tasks.LinearRegression` prompts with Gaussian or spherical covariates, any
    :math:`\Sigma` and any task covariance :math:`\Sigma_w`. The formula is derived in this module's
    docstring (Isserlis, data moments up to degree six); it is exact, so the gradient over every
    entry of every ``P, Q`` — the object of Ahn et al. (2023)'s stationarity theorems — is exact too.

    Args:
        family_or_spec_problem: a :class:`~landscape.theory.families.Family`, a
            :class:`~landscape.theory.families.Problem` or a :class:`~landscape.core.model.ModelSpec`.
        data: the prompt distribution.

    Returns:
        ``loss(params) -> 0-dim tensor`` (dtype/device of the params; differentiable, vmappable), or
        ``None`` when no exact formula is available (more than one layer, a non-linear kernel,
        label noise, another data distribution, or a ``d`` that does not match).

    Raises:
        TypeError: if the first argument is not a Family, Problem or ModelSpec.
    """
    spec = _spec_of(family_or_spec_problem)
    if not isinstance(data, LinearRegression) or data.noise != 0 or data.d != spec.d:
        return None
    if spec.layers != 1 or spec.token_dim != spec.d + 1:
        return None
    if linear_heads(spec, {k: sympy.zeros(spec.token_dim, spec.token_dim)
                           for k in _all_keys(spec)}) is None:
        return None
    d, n = spec.d, data.n
    c2, c4 = (float(c) for c in covariate_moments(data.covariates, d))
    sigma = data.sigma.to(torch.float64) if data.sigma is not None else torch.eye(d, dtype=torch.float64)
    tc = data.task_covariance()
    sigma_w = tc.to(torch.float64) if tc is not None else torch.eye(d, dtype=torch.float64)

    def loss(params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Exact one-layer in-context loss :math:`\\mathbb E(\\mathrm{TF} - y_q)^2` at ``params``."""
        ref = next(iter(params.values()))
        S = sigma.to(dtype=ref.dtype, device=ref.device)
        Sw = sigma_w.to(dtype=ref.dtype, device=ref.device)
        heads = linear_heads(spec, params)
        return one_layer_loss(heads, S, Sw, n, c2, c4)

    return loss


def _all_keys(spec: ModelSpec) -> list[str]:
    from landscape.core.model import param_shapes

    return list(param_shapes(spec))
