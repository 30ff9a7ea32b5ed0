r"""Population loss of a parameter family: exact (sympy) where possible, label-exact Monte-Carlo otherwise.

:func:`family_loss` picks the route (``method="auto"``):

============== ==========================================================================================
``wishart``      whitening + Wishart moments (:mod:`~landscape.symbolic.whitened`): linear attention whose
                 whitened weights are :math:`P' = \mathrm{diag}(\beta I,\pi)`, :math:`Q' = -\mathrm{diag}(\alpha I, 0)`
                 (``pgd``, ``pgd-relaxed`` for any :math:`\Sigma`; ``pgd-identity`` for :math:`\Sigma = I`), Gaussian
                 covariates, labels noiseless or with Gaussian noise. Any ``L``; symbolic in ``d`` and ``n``
                 (Ahn et al. 2023, Lemma 1, Theorems 3–4).
``one-layer``    closed form for one layer and any ``P, Q`` (:mod:`~landscape.symbolic.one_layer`), any
                 :math:`\Sigma, \Sigma_w`, Gaussian or spherical covariates, label noise allowed; symbolic in ``n`` and, on request,
                 in the eigenvalues of :math:`\Sigma` (``pgd-full``, ``pgd-identity`` for anisotropic
                 :math:`\Sigma`; Ahn et al. Theorem 1).
``wick``         sparse heads (:math:`P = \mathrm{diag}(0,\pi)`, :math:`Q = -\mathrm{diag}(A, 0)`, any :math:`A_l`), any
                 :math:`\Sigma`, Gaussian covariates, ``L <= 3``: Isserlis pairings of the sample covariances
                 (:mod:`~landscape.symbolic.wick`); exact in :math:`\Sigma`, symbolic in ``n`` (e.g. the control
                 ``pgd-identity`` for anisotropic :math:`\Sigma`, where whitening does not help).
``expansion``    expansion in the data entries + Isserlis (:mod:`~landscape.symbolic.expansion`): any
                 polynomial model at small numeric ``d, n, L`` (the independent check of the above).
``relu-one-layer`` one ReLU kernel head, one layer, :math:`B^\top C = \kappa I` on the covariates,
                 :math:`\Sigma = \Sigma_w = I`, Gaussian covariates, noise allowed: half-space moments
                 (:mod:`~landscape.symbolic.relu`; Ahn et al. 2023, Theorem 5's setting).
``label-exact``  kernel attention (Cheng, Chen, Sra 2024) and anything else whose prediction is linear in
                 the labels: labels integrated in closed form, covariates by seeded Monte-Carlo with
                 standard errors (:mod:`~landscape.symbolic.label_exact`).
============== ==========================================================================================
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Literal, Mapping, Sequence

import sympy
import torch

from landscape.theory.families import Family
from landscape.core.tasks import KernelGP, LinearRegression, sqrtm_psd
from landscape.symbolic.codegen import (
    gradient_exprs,
    hessian_exprs,
    to_torch,
    to_torch_matrix,
    to_torch_vector,
)
from landscape.symbolic.expansion import expansion_loss
from landscape.symbolic.label_exact import CoefficientEstimate, LabelExactEstimator
from landscape.symbolic.one_layer import covariate_moments, linear_heads, one_layer_loss
from landscape.symbolic.relu import relu_one_layer_loss, relu_one_layer_structure
from landscape.symbolic.wick import WICK_MAX_LAYERS, sparse_label_structure, wick_loss, wick_matrices
from landscape.symbolic.whitened import (
    D_SYMBOL,
    N_SYMBOL,
    NOISE_SYMBOL,
    clean_floats,
    noise_variance,
    trace_ratio,
    whitened_structure,
    wishart_loss,
    wishart_noise_loss,
)

__all__ = ["FamilyLoss", "family_loss", "default_data", "METHODS"]

METHODS = ("auto", "wishart", "one-layer", "wick", "expansion", "relu-one-layer", "label-exact")
"""Accepted ``method`` values of :func:`family_loss`."""

_EXPANSION_AUTO_MAX = 12
"""``auto`` tries the expansion route only when ``d·(n+1)·L`` is at most this (it is exponential)."""

Values = Mapping[str, float] | torch.Tensor | Sequence[float]


@dataclass(frozen=True)
class FamilyLoss:
    r"""The population loss :math:`f(s) = \mathbb E(\mathrm{TF}_{\theta(s)}(Z_0) - y_q)^2` on a family.

    Attributes:
        family: the :class:`~landscape.theory.families.Family`.
        data: the prompt distribution.
        method: the route that produced it (see module docstring).
        exact: True for the sympy routes; False for the Monte-Carlo route.
        expr: exact routes — the loss in the family symbols (numeric ``d, n``); label-exact route —
            the loss as a polynomial in the label gains with named coefficient symbols ``m__A__B``.
        general_thunk: computes :attr:`general`, the exact loss with symbolic
            :data:`~landscape.symbolic.whitened.D_SYMBOL` and/or
            :data:`~landscape.symbolic.whitened.N_SYMBOL` (and spectrum symbols) where the route gives it.
        description: a sentence on how it was derived.
        estimator: the Monte-Carlo estimator (label-exact route only).
    """

    family: Family
    data: object
    method: str
    exact: bool
    expr: sympy.Expr
    general_thunk: Callable[[], sympy.Expr] | None = field(default=None, repr=False)
    description: str = ""
    estimator: LabelExactEstimator | None = None
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def general(self) -> sympy.Expr | None:
        """The exact loss with symbolic ``d``/``n`` (computed on first access; can be large)."""
        if self.general_thunk is None:
            return None
        if "general" not in self._cache:
            self._cache["general"] = self.general_thunk()
        return self._cache["general"]

    # ------------------------------------------------------------------ views
    @property
    def symbols(self) -> tuple[sympy.Symbol, ...]:
        return self.family.symbols

    @property
    def names(self) -> tuple[str, ...]:
        return self.family.names

    def latex(self, general: bool = False) -> str:
        """LaTeX of :attr:`expr` (or of :attr:`general`)."""
        e = self.general if general and self.general is not None else self.expr
        return sympy.latex(e)

    def free_symbols(self) -> tuple[sympy.Symbol, ...]:
        """Family symbols the loss does not depend on (exact routes): flat directions."""
        if not self.exact:
            return ()
        return tuple(s for s in self.symbols if s not in self.expr.free_symbols)

    def _vector(self, values: Values) -> torch.Tensor:
        if isinstance(values, torch.Tensor):
            return values
        return self.family._vector(values, torch.float64, None)

    # ------------------------------------------------------------------ exact pieces
    def _need_exact(self, what: str) -> None:
        if not self.exact:
            raise ValueError(f"{what} needs an exact loss; the {self.method!r} route is Monte-Carlo "
                             "(use torch_fn with torch.func instead)")

    def gradient(self) -> list[sympy.Expr]:
        """Stationary equations :math:`\\partial f/\\partial s_i` (exact routes)."""
        self._need_exact("gradient")
        if "grad" not in self._cache:
            self._cache["grad"] = gradient_exprs(self.expr, self.symbols)
        return self._cache["grad"]

    def hessian(self) -> list[list[sympy.Expr]]:
        """Family Hessian :math:`\\partial^2 f/\\partial s_i\\partial s_j` (exact routes)."""
        self._need_exact("hessian")
        if "hess" not in self._cache:
            self._cache["hess"] = hessian_exprs(self.expr, self.symbols)
        return self._cache["hess"]

    # ------------------------------------------------------------------ torch
    def torch_fn(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """``f(v) -> Tensor``: the loss at a value vector ``v (..., k)`` in :attr:`names` order.

        Exact routes: the lambdified expression (composes with ``torch.func.grad``/``vmap``).
        Label-exact route: the Monte-Carlo mean over the fixed covariate draws (differentiable).
        """
        if "fn" not in self._cache:
            if self.exact:
                self._cache["fn"] = to_torch(self.expr, self.symbols)
            else:
                est = self.estimator
                self._cache["fn"] = lambda v: est.loss(v)  # type: ignore[union-attr]
        return self._cache["fn"]

    def torch_grad_fn(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """Gradient ``(..., k)``: lambdified sympy gradient (exact) or autograd of :meth:`torch_fn`."""
        if "gfn" not in self._cache:
            if self.exact:
                self._cache["gfn"] = to_torch_vector(self.gradient(), self.symbols)
            else:
                self._cache["gfn"] = torch.func.grad(self.torch_fn())
        return self._cache["gfn"]

    def torch_hessian_fn(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """Hessian ``(..., k, k)`` (lambdified, or ``torch.func.hessian`` of the Monte-Carlo mean)."""
        if "hfn" not in self._cache:
            if self.exact:
                self._cache["hfn"] = to_torch_matrix(self.hessian(), self.symbols)
            else:
                self._cache["hfn"] = torch.func.hessian(self.torch_fn())
        return self._cache["hfn"]

    # ------------------------------------------------------------------ numbers
    def value(self, values: Values) -> float:
        """The loss at ``values`` (dict or vector) as a float."""
        v = self._vector(values).to(torch.float64)
        with torch.no_grad():
            return float(self.torch_fn()(v))

    def standard_error(self, values: Values) -> float:
        """Monte-Carlo standard error of :meth:`value` (0 for exact routes)."""
        if self.exact:
            return 0.0
        return self.estimator.standard_error(self._vector(values).to(torch.float64))  # type: ignore[union-attr]

    def coefficients(self, values: Values) -> CoefficientEstimate:
        """Named coefficient estimates at the non-gain scalars of ``values`` (label-exact route).

        Raises:
            ValueError: for exact routes or when the family has no separable label gains.
        """
        if self.exact or self.estimator is None:
            raise ValueError(f"coefficients exist for the label-exact route only (this loss is {self.method!r})")
        return self.estimator.coefficients(values)

    def describe(self) -> str:
        kind = "exact" if self.exact else f"Monte-Carlo over covariates (T = {self.estimator.samples})"  # type: ignore[union-attr]
        return f"{self.family.name} [{self.method}, {kind}]: {self.description}"


# ---------------------------------------------------------------------- data
def default_data(family: Family) -> LinearRegression | KernelGP:
    r"""The prompt distribution a family's statement is about (:func:`landscape.recipe.family_task`).

    Linear families: regression with the family's declared prior (:attr:`Family.prior`):
    :math:`w^* \sim N(0, \Sigma^{-1})` for ``pgd``, ``pgd-relaxed`` and their control ``pgd-identity``
    (Ahn et al. Theorems 3–4) or a user family declaring ``PRIOR = "inverse"``, :math:`N(0, I)`
    otherwise (Theorem 1); kernel families: GP data with the first head's kernel on whitened
    spherical inputs (Cheng et al.; softmax heads use the ``exp`` data kernel).
    """
    from landscape import recipe

    return recipe.family_task(family)


# ---------------------------------------------------------------------- routes
def _polynomial_heads(family: Family) -> bool:
    spec = family.spec
    zero = {k: sympy.zeros(spec.token_dim, spec.token_dim) for k in family.sympy_params()}
    return linear_heads(spec, zero, 0) is not None


def _sigma_matrices(data: LinearRegression, spectrum: str) -> tuple[sympy.Matrix, sympy.Matrix, dict]:
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


def _one_layer_route(family: Family, data: LinearRegression, spectrum: str,
                     query_sigma: torch.Tensor | None = None) -> tuple[sympy.Expr, sympy.Expr]:
    spec = family.spec
    full = family.sympy_params()
    heads = linear_heads(spec, full, 0)
    S, Sw, subs = _sigma_matrices(data, spectrum)
    c2, c4 = covariate_moments(data.covariates, data.d)
    noise = NOISE_SYMBOL if data.noise else 0
    Sq = None if query_sigma is None else sympy.Matrix(query_sigma.double().tolist())
    general = sympy.expand(one_layer_loss(heads, S, Sw, N_SYMBOL, c2, c4, noise, Sq))
    extra = {NOISE_SYMBOL: noise_variance(data.noise)} if data.noise else {}
    expr = sympy.expand(general.subs({N_SYMBOL: data.n, **subs, **extra}))
    return expr, general


def _check_inputs(family: Family, data: object, method: str) -> None:
    if not isinstance(family, Family):
        raise TypeError(f"family must be a landscape.theory.families.Family (see get_family), got {type(family).__name__}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    d = getattr(data, "d", None)
    if d != family.problem.d:
        raise ValueError(f"data has d = {d} but family {family.name!r} was built for d = {family.problem.d}")
    n = getattr(data, "n", None)
    if n != family.problem.n:
        raise ValueError(f"data has n = {n} but family {family.name!r} was built for n = {family.problem.n}; "
                         "build the Problem with the data's n")


def family_loss(
    family: Family,
    data: object | None = None,
    *,
    method: str = "auto",
    spectrum: Literal["numeric", "symbolic"] = "numeric",
    samples: int = 8192,
    seed: int = 0,
    query_sigma: torch.Tensor | None = None,
) -> FamilyLoss:
    r"""The population loss of ``family`` on ``data`` (exact where a route exists; see module docstring).

    Args:
        family: a :class:`~landscape.theory.families.Family` (``get_family(name, problem)``).
        data: prompt distribution; default :func:`default_data` (the paper's setting).
        method: ``"auto"`` or one route of :data:`METHODS`.
        spectrum: ``"symbolic"`` keeps :math:`\Sigma = U\mathrm{diag}(\lambda_1..\lambda_d)U^\top` with symbols
            :math:`\lambda_i` in :attr:`FamilyLoss.general` (one-layer route).
        samples: covariate draws T of the label-exact route.
        seed: seed of its ``torch.Generator``.
        query_sigma: covariance of the query covariate when it differs from the sources'
            (covariate shift, Zhang, Frei, Bartlett 2023): the loss is then the test loss on queries
            :math:`x_q \sim N(0, \Sigma_{\text{query}})` (or the sphere law) of a model whose context is drawn
            from ``data``. Exact on the one-layer route only.

    Returns:
        :class:`FamilyLoss`.

    Raises:
        TypeError: ``family`` is not a Family.
        ValueError: mismatched ``d``/``n``, unknown method, a requested route that does not apply
            (the message says why), or no route at all.
    """
    if isinstance(family, Family) and data is None:
        data = default_data(family)
    _check_inputs(family, data, method)
    if spectrum not in ("numeric", "symbolic"):
        raise ValueError(f"spectrum must be 'numeric' or 'symbolic', got {spectrum!r}")
    poly = _polynomial_heads(family)
    linreg = isinstance(data, LinearRegression)
    L = family.problem.layers
    reasons: list[str] = []
    if query_sigma is not None:
        from landscape.core.tasks import check_covariance

        query_sigma = check_covariance(query_sigma, data.d).to(torch.float64)  # type: ignore[attr-defined]
        if not (poly and linreg and L == 1) or method not in ("auto", "one-layer"):
            raise ValueError("query_sigma (covariate shift) is exact on the one-layer route only: one layer of "
                             "linear attention on LinearRegression prompts")
        expr, general_expr = _one_layer_route(family, data, spectrum, query_sigma)
        desc = ("one-layer closed form under covariate shift: context x_i ~ Σ, query x_q ~ Σ_query "
                "(E[(m + w)ᵀ Σ_q (m + w)], the query enters through Σ_q only)")
        return FamilyLoss(family, data, "one-layer", True, expr, lambda: general_expr, desc)

    # wishart
    if method in ("auto", "wishart"):
        why = None
        if not poly:
            why = "the attention is not linear"
        elif not linreg:
            why = "the data are not LinearRegression prompts"
        elif data.covariates != "gaussian":
            why = "the covariates are not Gaussian (Wishart moments need Gaussian covariates)"
        layers = None
        if why is None:
            layers = whitened_structure(family.blocks, family.spec, data.sigma, family.symbols)
            if layers is None:
                why = ("the whitened weights are not of the form P' = diag(βI, π), Q' = -diag(αI, 0) "
                       "(e.g. A_l = a_l I with anisotropic Σ)")
        if why is None:
            ratio, iso = trace_ratio(data)
            expr = wishart_loss(layers, data.n, data.d, ratio)
            s2 = noise_variance(data.noise) if data.noise else sympy.Integer(0)
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
            return FamilyLoss(family, data, "wishart", True, expr, general, desc)
        if method == "wishart":
            raise ValueError(f"the wishart route does not apply to family {family.name!r}: {why}")
        reasons.append(f"wishart: {why}")

    # one layer closed form
    if method in ("auto", "one-layer"):
        why = None
        if not poly:
            why = "the attention is not linear"
        elif not linreg:
            why = "the data are not LinearRegression prompts"
        elif L != 1:
            why = f"the model has {L} layers"
        if why is None:
            expr, general_expr = _one_layer_route(family, data, spectrum)
            general = lambda: general_expr  # noqa: E731
            desc = ("one-layer closed form E[(m + w)ᵀ Σ_q (m + w)], m = Σ_h F_h S g_h, by Isserlis "
                    "(data moments up to degree six), exact in Σ" + (" and its eigenvalues" if spectrum == "symbolic" else ""))
            if data.noise:
                desc += (f"; label noise variance {noise_variance(data.noise)} adds its s², s⁴ terms "
                         "(symbol sigma_eps2 in general)")
            return FamilyLoss(family, data, "one-layer", True, expr, general, desc)
        if method == "one-layer":
            raise ValueError(f"the one-layer route does not apply to family {family.name!r}: {why}")
        reasons.append(f"one-layer: {why}")

    # Wick pairings (sparse heads, any Σ)
    if method in ("auto", "wick"):
        why = None
        structure = None
        if not poly:
            why = "the attention is not linear"
        elif not linreg:
            why = "the data are not LinearRegression prompts"
        elif data.covariates != "gaussian":
            why = "the covariates are not Gaussian"
        elif data.noise:
            why = "the labels are noisy"
        elif L > WICK_MAX_LAYERS:
            why = f"L = {L} > {WICK_MAX_LAYERS} (the pairing sum has (4L-1)!! terms)"
        else:
            structure = sparse_label_structure(family.blocks, family.spec, family.symbols)
            if structure is None:
                why = "the heads are not of the sparse form P = diag(0, π), Q = -diag(A, 0) with polynomial A"
        if why is None:
            S, Sw = wick_matrices(data)
            general_expr = wick_loss(structure, S, Sw, N_SYMBOL)
            expr = sympy.expand(general_expr.subs(N_SYMBOL, data.n))
            general = lambda: general_expr  # noqa: E731
            desc = ("sparse heads: loss E tr(Σ_w R Σ Rᵀ), R = Π_l (I - Ŝ A_l), by Isserlis pairings of the sample "
                    "covariances Ŝ (exact in Σ, symbolic in n)")
            return FamilyLoss(family, data, "wick", True, expr, general, desc)
        if method == "wick":
            raise ValueError(f"the wick route does not apply to family {family.name!r}: {why}")
        reasons.append(f"wick: {why}")

    # expansion
    if method in ("auto", "expansion"):
        why = None
        size = family.problem.d * (family.problem.n + 1) * L
        if not poly:
            why = "the attention is not linear"
        elif not linreg:
            why = "the data are not LinearRegression prompts"
        elif method == "auto" and size > _EXPANSION_AUTO_MAX:
            why = f"d·(n+1)·L = {size} is too large for an expansion in the data entries (limit {_EXPANSION_AUTO_MAX})"
        if why is None:
            expr = expansion_loss(family.blocks, family.spec, data, family.symbols)
            expr = clean_floats(expr, family.symbols)
            desc = "expansion of the squared error in the data entries, expectation monomial by monomial (Isserlis)"
            return FamilyLoss(family, data, "expansion", True, expr, None, desc)
        if method == "expansion":
            raise ValueError(f"the expansion route does not apply to family {family.name!r}: {why}")
        reasons.append(f"expansion: {why}")

    # one ReLU layer, isotropic Gaussian covariates (half-space moments)
    if method in ("auto", "relu-one-layer"):
        why = None
        structure = None
        if not linreg:
            why = "the data are not LinearRegression prompts"
        elif data.covariates != "gaussian":
            why = "the covariates are not Gaussian"
        elif data.sigma is not None and bool((data.sigma - torch.eye(data.d, dtype=data.sigma.dtype)).abs().max() > 0):
            why = "Σ is not the identity"
        elif data.task_covariance() is not None and bool(
                (data.task_covariance() - torch.eye(data.d, dtype=torch.float64)).abs().max() > 0):
            why = "the task covariance is not the identity"
        else:
            structure, why = relu_one_layer_structure(family.blocks, family.spec)
            why = why or None
        if why is None:
            kappa, vx, vy = structure
            s2 = noise_variance(data.noise) if data.noise else sympy.Integer(0)
            expr = relu_one_layer_loss(kappa, vx, vy, data.n, data.d, s2)
            general_expr = relu_one_layer_loss(kappa, vx, vy, N_SYMBOL, D_SYMBOL,
                                               NOISE_SYMBOL if data.noise else 0)
            general = lambda: general_expr  # noqa: E731
            desc = ("one ReLU layer on isotropic Gaussian covariates: conditioning on the query and half-space "
                    "moments E[α^k 1(α>0)] give d + dγ + dKγ² + Kκ²|v_x|² (+ noise), γ = v_y κ, K = (n+2d+3)/(4n)")
            return FamilyLoss(family, data, "relu-one-layer", True, expr, general, desc)
        if method == "relu-one-layer":
            raise ValueError(f"the relu-one-layer route does not apply to family {family.name!r}: {why}")
        reasons.append(f"relu-one-layer: {why}")

    # label-exact Monte-Carlo
    est = LabelExactEstimator(family, data, samples=samples, seed=seed)
    if method == "label-exact" and not est.label_exact:
        raise ValueError(f"the label-exact route does not apply to family {family.name!r}: {est.reason}")
    try:
        expr, _ = est.structure()
    except ValueError:
        expr = sympy.Symbol("m__loss")
    if est.label_exact:
        desc = ("prediction linear in the labels, TF = k(X)ᵀy; E over labels in closed form "
                "(kᵀK_nn k - 2kᵀk_q + K_qq), E over covariates by Monte-Carlo")
    else:
        desc = f"plain Monte-Carlo over covariates and labels ({est.reason})"
    if reasons:
        grouped: dict[str, list[str]] = {}
        for r in reasons:
            route, _, why = r.partition(": ")
            grouped.setdefault(why, []).append(route)
        desc += "; no exact route (" + "; ".join(f"{', '.join(rs)}: {why}" for why, rs in grouped.items()) + ")"
    return FamilyLoss(family, data, "label-exact" if est.label_exact else "monte-carlo", False, expr, None, desc, est)
