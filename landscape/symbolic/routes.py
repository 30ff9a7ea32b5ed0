r"""The registry of loss routes behind :func:`~landscape.symbolic.loss.family_loss`.

A *route* is one way of computing the population loss :math:`f(s) = \mathbb E(\mathrm{TF}_{\theta(s)} - y_q)^2`
of a family: a closed form that holds under stated conditions, or a Monte-Carlo estimate. Each is a
:class:`Route` with

* :meth:`Route.match` — ``(context, "")`` when the route applies to ``(family, data, options)``, else
  ``(None, reason)`` (one sentence); cheap: structure detection on the sympy blocks, no expectation;
* :meth:`Route.applies` — ``True`` or the reason;
* :meth:`Route.build` — the :class:`~landscape.symbolic.loss.FamilyLoss` (the ``context`` from
  :meth:`Route.match` is passed on, so detection is not repeated).

:data:`ROUTES` lists them in the order ``family_loss(route="auto")`` tries them (exact routes first,
the more general or more expensive later, Monte-Carlo last); the first that applies is used and the
reasons of those before it are kept in :attr:`FamilyLoss.skipped`. :func:`route_report` gives the
verdict of every route at once. Each route is tested on its own against an independent reference
(``tests/test_symbolic_routes.py``).

============================ ============================================================================
``wishart``                   whitening + Wishart moments (:mod:`~landscape.symbolic.whitened`)
``one-layer``                 one layer of linear attention, any P, Q (:mod:`~landscape.symbolic.one_layer`)
``wick``                      sparse heads, any Σ, L <= 3 (:mod:`~landscape.symbolic.wick`)
``expansion``                 expansion in the data entries, small sizes (:mod:`~landscape.symbolic.expansion`)
``relu-one-layer``            one ReLU head, isotropic Gaussian data (:mod:`~landscape.symbolic.relu`)
``relu-anisotropic``          one ReLU head, any Σ, Σ_w, BᵀC, Gaussian covariates (:mod:`~landscape.symbolic.relu`)
``exp-one-layer``             one exp-kernel head, Gaussian covariates, linear labels (:mod:`~landscape.symbolic.exp_kernel`)
``label-exact``               prediction linear in the labels: labels exact, covariates Monte-Carlo
``monte-carlo``               plain Monte-Carlo over covariates and labels (always applies)
============================ ============================================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal

import sympy
import torch

from landscape.core.tasks import LinearRegression, Task
from landscape.theory.families import Family

__all__ = ["Route", "RouteOptions", "ROUTES", "route_report", "register_route"]


@dataclass(frozen=True)
class RouteOptions:
    r"""Options every route sees (from :func:`~landscape.symbolic.loss.family_loss`).

    Attributes:
        spectrum: ``"numeric"`` or ``"symbolic"`` (one-layer route: eigenvalues of :math:`\Sigma` as symbols).
        samples: covariate draws of the Monte-Carlo routes.
        seed: seed of their ``torch.Generator``.
        query_sigma: covariance of the query covariate under covariate shift (float64, checked), or None.
        named: True when the route was named by the caller (not picked by ``auto``): size limits
            meant for ``auto`` (the expansion route's) are then lifted.
    """

    spectrum: Literal["numeric", "symbolic"] = "numeric"
    samples: int = 8192
    seed: int = 0
    query_sigma: torch.Tensor | None = None
    named: bool = False


Match = tuple[Any, str]


@dataclass(frozen=True)
class Route:
    """One loss route.

    Attributes:
        name: the name ``family_loss(route=...)`` and ``landscape solve --route`` accept.
        summary: one line: the setting in which it is exact (or what it estimates).
        exact: whether it gives an exact (sympy) loss.
        covariate_shift: whether it supports ``query_sigma``.
        detect: ``(family, data, options) -> (context, "")`` or ``(None, reason)``.
        make: ``(family, data, options, context) -> FamilyLoss``.
    """

    name: str
    summary: str
    exact: bool
    detect: Callable[[Family, Any, RouteOptions], Match]
    make: Callable[[Family, Any, RouteOptions, Any], Any]
    covariate_shift: bool = False

    def match(self, family: Family, data: Task, options: RouteOptions = RouteOptions()) -> Match:
        """``(context, "")`` when the route applies, else ``(None, reason)``."""
        if options.query_sigma is not None and not self.covariate_shift:
            return None, "covariate shift (query_sigma) is exact on the one-layer route only"
        return self.detect(family, data, options)

    def applies(self, family: Family, data: Task, options: RouteOptions = RouteOptions()) -> Literal[True] | str:
        """``True`` when the route applies, else the reason (a sentence)."""
        ctx, why = self.match(family, data, options)
        return True if not why else why

    def build(self, family: Family, data: Task, options: RouteOptions = RouteOptions(), context: Any = None) -> Any:
        """The :class:`~landscape.symbolic.loss.FamilyLoss` by this route.

        Raises:
            ValueError: the route does not apply (the message says why).
        """
        if context is None:
            context, why = self.match(family, data, options)
            if why:
                raise ValueError(f"the {self.name} route does not apply to family {family.name!r}: {why}")
        return self.make(family, data, options, context)


# ---------------------------------------------------------------------- shared conditions
def _polynomial_heads(family: Family) -> bool:
    from landscape.symbolic.one_layer import linear_heads

    spec = family.spec
    zero = {k: sympy.zeros(spec.token_dim, spec.token_dim) for k in family.sympy_params()}
    return linear_heads(spec, zero, 0) is not None


def _regression(data: Task, *, gaussian: bool = True, isotropic: bool = False, hint: str = "") -> str:
    """'' when ``data`` are :class:`~landscape.core.tasks.LinearRegression` prompts (with Gaussian covariates
    when ``gaussian``; with Σ = Σ_w = I when ``isotropic``), else the first reason why not
    (``hint`` is appended to the reason that the data are not regression prompts)."""
    if not isinstance(data, LinearRegression):
        return "the data are not LinearRegression prompts" + hint
    if gaussian and data.covariates != "gaussian":
        return "the covariates are not Gaussian"
    if isotropic and not _is_identity(data.sigma, data.d):
        return "Σ is not the identity"
    if isotropic and not _is_identity(data.task_covariance(), data.d):
        return "the task covariance is not the identity"
    return ""


def _linear_problem(family: Family, data: Task, *, gaussian: bool = False) -> str:
    """'' when the heads are linear attention and the data LinearRegression prompts (Gaussian if asked)."""
    if not _polynomial_heads(family):
        return "the attention is not linear"
    return _regression(data, gaussian=gaussian)


def _noise_s2(data: Task) -> sympy.Expr:
    """The label-noise variance :math:`s^2` of ``data`` as a sympy number (0 without noise)."""
    from landscape.symbolic.whitened import noise_variance

    return noise_variance(data.noise) if data.noise else sympy.Integer(0)


def _one_head_route(data: Task, structure_of: Any, family: Family, *, isotropic: bool = False,
                    hint: str = "") -> Match:
    """Detection shared by the one-kernel-head routes: Gaussian regression data (:func:`_regression`),
    then the head's structure ``structure_of(blocks, spec) -> (structure | None, reason)``."""
    why = _regression(data, isotropic=isotropic, hint=hint)
    if why:
        return None, why
    structure, why = structure_of(family.blocks, family.spec)
    return (structure, "") if structure is not None else (None, why)


def _one_head_loss(data: LinearRegression, structure: Any, loss_of: Any) -> sympy.Expr:
    """``loss_of(M, v_x, v_y, Σ, Σ_w, n, s²)`` of a one-head structure ``(M, v_x, v_y)`` on ``data``."""
    M, vx, vy = structure
    S, Sw, _ = sigma_matrices(data, "numeric")
    return loss_of(M, vx, vy, S, Sw, data.n, _noise_s2(data))


def _is_identity(M: torch.Tensor | None, d: int) -> bool:
    return M is None or not bool((M.double() - torch.eye(d, dtype=torch.float64)).abs().max() > 0)


def _family_loss_cls() -> type:
    from landscape.symbolic.loss import FamilyLoss

    return FamilyLoss


# ---------------------------------------------------------------------- wishart
def _wishart_detect(family: Family, data: Task, options: RouteOptions) -> Match:
    from landscape.symbolic.whitened import whitened_structure

    why = _linear_problem(family, data, gaussian=True)
    if why:
        return None, why
    layers = whitened_structure(family.blocks, family.spec, data.sigma, family.symbols)
    if layers is None:
        return None, ("the whitened weights are not of the form P' = diag(βI, π), Q' = -diag(αI, 0) "
                      "(e.g. A_l = a_l I with anisotropic Σ)")
    return layers, ""


def _wishart_make(family: Family, data: LinearRegression, options: RouteOptions, layers: Any) -> Any:
    from landscape.symbolic.whitened import (
        D_SYMBOL,
        N_SYMBOL,
        NOISE_SYMBOL,
        trace_ratio,
        wishart_loss,
        wishart_noise_loss,
    )

    ratio, iso = trace_ratio(data)
    expr = wishart_loss(layers, data.n, data.d, ratio)
    s2 = _noise_s2(data)
    if data.noise:
        expr = sympy.expand(expr + wishart_noise_loss(layers, data.n, data.d, s2))
    dd = D_SYMBOL if iso else data.d
    if data.noise:
        general = lambda: sympy.expand(wishart_loss(layers, N_SYMBOL, dd, 1 if iso else ratio)  # noqa: E731
                                       + wishart_noise_loss(layers, N_SYMBOL, dd, NOISE_SYMBOL))
    else:
        general = lambda: wishart_loss(layers, N_SYMBOL, dd, 1 if iso else ratio)  # noqa: E731
    desc = ("whitening x = Σ^{1/2}ξ reduces the family to E tr Π_l (1 - c_l g_l(S)^2 S)^2 "
            "with exact Wishart moments E tr S^k (polynomials in n, d)")
    if data.noise:
        desc += f"; label noise variance {s2} adds s²(1 + E tr(B(S)² S)/n) (symbol sigma_eps2 in general)"
    return _family_loss_cls()(family, data, "wishart", True, expr, general, desc)


# ---------------------------------------------------------------------- one layer (linear attention)
def sigma_matrices(data: LinearRegression, spectrum: str) -> tuple[sympy.Matrix, sympy.Matrix, dict]:
    """Σ and Σ_w as sympy matrices; with ``spectrum="symbolic"`` Σ = U diag(λ) Uᵀ with symbols λ_i."""
    d = data.d
    tc = data.task_covariance()
    if spectrum == "numeric":
        S = sympy.eye(d) if data.sigma is None else sympy.Matrix(data.sigma.double().tolist())
        Sw = sympy.eye(d) if tc is None else sympy.Matrix(tc.double().tolist())
        return S, Sw, {}
    sig = torch.eye(d, dtype=torch.float64) if data.sigma is None else data.sigma.double()
    ev, U = torch.linalg.eigh(sig)
    lam = [sympy.Symbol(f"lambda{i + 1}", positive=True) for i in range(d)]
    is_diag = bool((sig - torch.diag(torch.diagonal(sig))).abs().max() == 0)
    if is_diag:
        Um = sympy.eye(d)
        vals = [float(v) for v in torch.diagonal(sig)]
    else:
        Um = sympy.Matrix(U.tolist())
        vals = [float(v) for v in ev]
    S = Um * sympy.diag(*lam) * Um.T
    if data.task_cov == "inverse":
        Sw = Um * sympy.diag(*[1 / l for l in lam]) * Um.T
    else:
        Sw = sympy.eye(d) if tc is None else sympy.Matrix(tc.double().tolist())
    return S, Sw, {l: sympy.Float(v) for l, v in zip(lam, vals)}


def _one_layer_detect(family: Family, data: Task, options: RouteOptions) -> Match:
    why = _linear_problem(family, data)
    if why:
        return None, why
    if family.problem.layers != 1:
        return None, f"the model has {family.problem.layers} layers"
    return True, ""


def _one_layer_make(family: Family, data: LinearRegression, options: RouteOptions, _ctx: Any) -> Any:
    from landscape.symbolic.one_layer import covariate_moments, linear_heads, one_layer_loss
    from landscape.symbolic.whitened import N_SYMBOL, NOISE_SYMBOL, noise_variance

    heads = linear_heads(family.spec, family.sympy_params(), 0)
    S, Sw, subs = sigma_matrices(data, options.spectrum)
    c2, c4 = covariate_moments(data.covariates, data.d)
    noise = NOISE_SYMBOL if data.noise else 0
    qs = options.query_sigma
    Sq = None if qs is None else sympy.Matrix(qs.double().tolist())
    general_expr = sympy.expand(one_layer_loss(heads, S, Sw, N_SYMBOL, c2, c4, noise, Sq))
    extra = {NOISE_SYMBOL: noise_variance(data.noise)} if data.noise else {}
    expr = sympy.expand(general_expr.subs({N_SYMBOL: data.n, **subs, **extra}))
    if qs is not None:
        desc = ("one-layer closed form under covariate shift: context x_i ~ Σ, query x_q ~ Σ_query "
                "(E[(m + w)ᵀ Σ_q (m + w)], the query enters through Σ_q only)")
    else:
        desc = ("one-layer closed form E[(m + w)ᵀ Σ_q (m + w)], m = Σ_h F_h S g_h, by Isserlis "
                "(data moments up to degree six), exact in Σ"
                + (" and its eigenvalues" if options.spectrum == "symbolic" else ""))
        if data.noise:
            desc += (f"; label noise variance {noise_variance(data.noise)} adds its s², s⁴ terms "
                     "(symbol sigma_eps2 in general)")
    return _family_loss_cls()(family, data, "one-layer", True, expr, lambda: general_expr, desc)


# ---------------------------------------------------------------------- wick
def _wick_detect(family: Family, data: Task, options: RouteOptions) -> Match:
    from landscape.symbolic.wick import WICK_MAX_LAYERS, sparse_label_structure

    why = _linear_problem(family, data, gaussian=True)
    if why:
        return None, why
    L = family.problem.layers
    if data.noise:
        return None, "the labels are noisy"
    if L > WICK_MAX_LAYERS:
        return None, f"L = {L} > {WICK_MAX_LAYERS} (the pairing sum has (4L-1)!! terms)"
    structure = sparse_label_structure(family.blocks, family.spec, family.symbols)
    if structure is None:
        return None, "the heads are not of the sparse form P = diag(0, π), Q = -diag(A, 0) with polynomial A"
    return structure, ""


def _wick_make(family: Family, data: LinearRegression, options: RouteOptions, structure: Any) -> Any:
    from landscape.symbolic.whitened import N_SYMBOL
    from landscape.symbolic.wick import wick_loss, wick_matrices

    S, Sw = wick_matrices(data)
    general_expr = wick_loss(structure, S, Sw, N_SYMBOL)
    expr = sympy.expand(general_expr.subs(N_SYMBOL, data.n))
    desc = ("sparse heads: loss E tr(Σ_w R Σ Rᵀ), R = Π_l (I - Ŝ A_l), by Isserlis pairings of the sample "
            "covariances Ŝ (exact in Σ, symbolic in n)")
    return _family_loss_cls()(family, data, "wick", True, expr, lambda: general_expr, desc)


# ---------------------------------------------------------------------- expansion
EXPANSION_AUTO_MAX = 12
"""``auto`` tries the expansion route only when ``d·(n+1)·L`` is at most this (it is exponential)."""


def _expansion_detect(family: Family, data: Task, options: RouteOptions) -> Match:
    why = _linear_problem(family, data)
    if why:
        return None, why
    p = family.problem
    size = p.d * (p.n + 1) * p.layers
    if not options.named and size > EXPANSION_AUTO_MAX:
        return None, (f"d·(n+1)·L = {size} is too large for an expansion in the data entries "
                      f"(limit {EXPANSION_AUTO_MAX})")
    return True, ""


def _expansion_make(family: Family, data: LinearRegression, options: RouteOptions, _ctx: Any) -> Any:
    from landscape.symbolic.expansion import expansion_loss
    from landscape.symbolic.whitened import clean_floats

    expr = expansion_loss(family.blocks, family.spec, data, family.symbols)
    expr = clean_floats(expr, family.symbols)
    desc = "expansion of the squared error in the data entries, expectation monomial by monomial (Isserlis)"
    return _family_loss_cls()(family, data, "expansion", True, expr, None, desc)


# ---------------------------------------------------------------------- relu one layer
def _relu_detect(family: Family, data: Task, options: RouteOptions) -> Match:
    from landscape.symbolic.relu import relu_one_layer_structure

    return _one_head_route(data, relu_one_layer_structure, family, isotropic=True)


def _relu_make(family: Family, data: LinearRegression, options: RouteOptions, structure: Any) -> Any:
    from landscape.symbolic.relu import relu_one_layer_loss
    from landscape.symbolic.whitened import D_SYMBOL, N_SYMBOL, NOISE_SYMBOL

    kappa, vx, vy = structure
    s2 = _noise_s2(data)
    expr = relu_one_layer_loss(kappa, vx, vy, data.n, data.d, s2)
    general_expr = relu_one_layer_loss(kappa, vx, vy, N_SYMBOL, D_SYMBOL, NOISE_SYMBOL if data.noise else 0)
    desc = ("one ReLU layer on isotropic Gaussian covariates: conditioning on the query and half-space "
            "moments E[α^k 1(α>0)] give d + dγ + dKγ² + Kκ²|v_x|² (+ noise), γ = v_y κ, K = (n+2d+3)/(4n)")
    return _family_loss_cls()(family, data, "relu-one-layer", True, expr, lambda: general_expr, desc)


def _relu_general_detect(family: Family, data: Task, options: RouteOptions) -> Match:
    from landscape.symbolic.relu import relu_one_layer_matrix

    return _one_head_route(data, relu_one_layer_matrix, family)


def _relu_general_make(family: Family, data: LinearRegression, options: RouteOptions, structure: Any) -> Any:
    from landscape.symbolic.relu import relu_one_layer_loss_general

    expr = _one_head_loss(data, structure, relu_one_layer_loss_general)
    desc = ("one ReLU layer on Gaussian covariates, any Σ, Σ_w and score matrix M = BᵀC: E[X relu(Y)] = Cov/2, "
            "E[X² relu(Y)²] = Cov² + Var X Var Y/2 for the Gaussian pair given the query, then quadratic forms in "
            "the query (a polynomial of degree 2 in M)")
    return _family_loss_cls()(family, data, "relu-anisotropic", True, expr, None, desc)


# ---------------------------------------------------------------------- exp one layer
def _exp_detect(family: Family, data: Task, options: RouteOptions) -> Match:
    from landscape.symbolic.exp_kernel import exp_one_layer_structure

    return _one_head_route(data, exp_one_layer_structure, family,
                           hint=" (GP labels: see landscape.symbolic.exp_kernel)")


def _exp_make(family: Family, data: LinearRegression, options: RouteOptions, structure: Any) -> Any:
    from landscape.symbolic.exp_kernel import exp_one_layer_domain, exp_one_layer_loss

    expr = _one_head_loss(data, structure, exp_one_layer_loss)
    desc = ("one exp-kernel layer on Gaussian covariates, linear labels: tilting x_i by e^{x_iᵀMx_q} and the "
            "query integral E[e^{t x_qᵀGx_q} x_qᵀAx_q] = det(I - 2tΣG)^{-1/2} tr(A(I - 2tΣG)^{-1}Σ), "
            "G = MᵀΣM, t ∈ {1/2, 1, 2}; finite iff λ_max(ΣG) < 1/4 (the loss is +∞ beyond)")
    return _family_loss_cls()(family, data, "exp-one-layer", True, expr, None, desc,
                              domain=exp_one_layer_domain(structure[0], sigma_matrices(data, "numeric")[0]))


def _exp_gp_detect(family: Family, data: Task, options: RouteOptions) -> Match:
    from landscape.core.tasks import KernelGP
    from landscape.symbolic.exp_kernel import exp_kernel_scale, exp_one_layer_structure

    if not isinstance(data, KernelGP):
        return None, "the data are not KernelGP prompts"
    if data.covariates != "gaussian":
        return None, "the covariates are not Gaussian (spherical inputs have no Gaussian closed form)"
    beta = exp_kernel_scale(data.kernel)
    if beta is None:
        return None, "the data kernel is not exp(β s)"
    if not 0 < float(beta) < 0.5:
        return None, (f"the data kernel exp(β s) has β = {float(beta):g} >= 1/2: E K(x_q, x_q) = (1 - 2β)^(-d/2) "
                      "is infinite")
    structure, why = exp_one_layer_structure(family.blocks, family.spec)
    return ((structure, beta), "") if structure is not None else (None, why)


def _exp_gp_make(family: Family, data: Task, options: RouteOptions, ctx: Any) -> Any:
    from landscape.core.tasks import sqrtm_psd
    from landscape.symbolic.exp_kernel import exp_gp_one_layer_loss

    (M, vx, vy), beta = ctx
    R = sympy.eye(data.d) if data.sigma is None else sympy.Matrix(sqrtm_psd(data.sigma.double()).tolist())
    tau2 = sympy.nsimplify(data.jitter + data.noise**2)
    expr, domain = exp_gp_one_layer_loss(M, vx, vy, R, data.n, beta, tau2)
    desc = ("one exp-kernel layer, GP labels with data kernel exp(β ξᵀξ') on Gaussian whitened inputs: labels in "
            "closed form given the covariates, then Gaussian integrals E exp(ζᵀAζ/2) = det(I - A)^{-1/2} over "
            "(ξ_i, ξ_j, ξ_q); finite iff every I - A ≻ 0 and β < 1/2 (the loss is +∞ beyond)")
    return _family_loss_cls()(family, data, "exp-gp-one-layer", True, expr, None, desc, domain=domain)


# ---------------------------------------------------------------------- monte-carlo
def _label_exact_detect(family: Family, data: Task, options: RouteOptions) -> Match:
    from landscape.core.tasks import KernelGP
    from landscape.symbolic.label_exact import labels_enter_linearly

    ok, why = labels_enter_linearly(family.blocks, family.spec)
    if ok and not isinstance(data, (KernelGP, LinearRegression)):
        ok, why = False, f"labels of {type(data).__name__} are not Gaussian given the covariates"
    return (True, "") if ok else (None, why)


def _monte_carlo_make(family: Family, data: Task, options: RouteOptions, _ctx: Any) -> Any:
    from landscape.symbolic.label_exact import LabelExactEstimator

    est = LabelExactEstimator(family, data, samples=options.samples, seed=options.seed)
    try:
        expr, _ = est.structure()
    except ValueError:
        expr = sympy.Symbol("m__loss")
    if est.label_exact:
        desc = ("prediction linear in the labels, TF = k(X)ᵀy; E over labels in closed form "
                "(kᵀK_nn k - 2kᵀk_q + K_qq), E over covariates by Monte-Carlo")
    else:
        desc = f"plain Monte-Carlo over covariates and labels ({est.reason})"
    return _family_loss_cls()(family, data, "label-exact" if est.label_exact else "monte-carlo", False, expr,
                              None, desc, est)


ROUTES: dict[str, Route] = {}
"""The routes in the order ``auto`` tries them (name → :class:`Route`)."""


def register_route(route: Route, *, before: str | None = None) -> None:
    """Add ``route`` to :data:`ROUTES` (at the end, or just before the route named ``before``).

    Raises:
        ValueError: the name is taken or ``before`` is not a route.
    """
    if route.name in ROUTES or route.name == "auto":
        raise ValueError(f"a route named {route.name!r} exists already")
    if before is None:
        ROUTES[route.name] = route
        return
    if before not in ROUTES:
        raise ValueError(f"no route named {before!r}; routes: {', '.join(ROUTES)}")
    items = list(ROUTES.items())
    i = [k for k, _ in items].index(before)
    items.insert(i, (route.name, route))
    ROUTES.clear()
    ROUTES.update(items)


for _r in (
    Route("wishart", "linear attention whose whitened weights are P' = diag(βI, π), Q' = -diag(αI, 0); Gaussian "
          "covariates; any L; symbolic in d and n (Ahn et al. 2023, Lemma 1, Theorems 3-4)", True,
          _wishart_detect, _wishart_make),
    Route("one-layer", "one layer of linear attention, any P, Q, any Σ, Σ_w, Gaussian or spherical covariates, "
          "label noise, covariate shift (Ahn et al. Theorem 1)", True, _one_layer_detect, _one_layer_make,
          covariate_shift=True),
    Route("wick", "sparse heads P = diag(0, π), Q = -diag(A, 0), any Σ, Gaussian covariates, noiseless, L <= 3: "
          "Isserlis pairings of the sample covariances", True, _wick_detect, _wick_make),
    Route("expansion", "any polynomial model at small numeric d, n, L: expansion in the data entries + Isserlis",
          True, _expansion_detect, _expansion_make),
    Route("relu-one-layer", "one ReLU kernel head, one layer, BᵀC = κI, Σ = Σ_w = I, Gaussian covariates, noise "
          "allowed: half-space moments (Ahn et al. 2023, Theorem 5's setting)", True, _relu_detect, _relu_make),
    Route("relu-anisotropic", "one ReLU kernel head, one layer, keys/queries on the covariates, any Σ, Σ_w and "
          "BᵀC, Gaussian covariates, noise allowed: Gaussian-pair moments given the query", True,
          _relu_general_detect, _relu_general_make),
    Route("exp-one-layer", "one exp-kernel head, one layer, keys/queries on the covariates, any Σ, Σ_w, Gaussian "
          "covariates, linear labels with noise: Gaussian integrals of exponentiated quadratic forms", True,
          _exp_detect, _exp_make),
    Route("exp-gp-one-layer", "one exp-kernel head, one layer, keys/queries on the covariates, GP labels with an "
          "exp(β s) data kernel, β < 1/2, on Gaussian covariates: labels then covariates in closed form", True,
          _exp_gp_detect, _exp_gp_make),
    Route("label-exact", "prediction linear in the labels (kernel attention, Cheng, Chen, Sra 2024): labels in "
          "closed form, covariates by seeded Monte-Carlo with standard errors", False,
          _label_exact_detect, _monte_carlo_make),
    Route("monte-carlo", "plain Monte-Carlo over covariates and labels", False,
          lambda f, d, o: (True, ""), _monte_carlo_make),
):
    register_route(_r)


def route_report(family: Family, data: Task, options: RouteOptions = RouteOptions()) -> dict[str, Literal[True] | str]:
    """Every route's verdict on ``(family, data)``: route name → ``True`` or the reason it does not apply."""
    return {name: r.applies(family, data, options) for name, r in ROUTES.items()}
