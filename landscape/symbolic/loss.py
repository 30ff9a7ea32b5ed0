r"""Population loss of a parameter family: exact (sympy) where possible, label-exact Monte-Carlo otherwise.

:func:`family_loss` takes the first route of the registry :data:`~landscape.symbolic.routes.ROUTES`
that applies (``route="auto"``) or the one it is given, and reports the others' reasons
(:attr:`FamilyLoss.skipped`; every verdict at once: :func:`~landscape.symbolic.routes.route_report`):

================== ==========================================================================================
``wishart``          whitening + Wishart moments (:mod:`~landscape.symbolic.whitened`): linear attention whose
                     whitened weights are :math:`P' = \mathrm{diag}(\beta I,\pi)`, :math:`Q' = -\mathrm{diag}(\alpha I, 0)`
                     (``pgd``, ``pgd-relaxed``, ``pgd-tied`` for any :math:`\Sigma`; ``pgd-identity`` for :math:`\Sigma = I`), Gaussian
                     covariates, labels noiseless or with Gaussian noise. Any ``L``; symbolic in ``d`` and ``n``
                     (Ahn et al. 2023, Lemma 1, Theorems 3–4).
``one-layer``        closed form for one layer and any ``P, Q`` (:mod:`~landscape.symbolic.one_layer`), any
                     :math:`\Sigma, \Sigma_w`, Gaussian or spherical covariates, label noise allowed, covariate shift; symbolic in ``n`` and, on request,
                     in the eigenvalues of :math:`\Sigma` (``pgd-full``, ``pgd-identity`` for anisotropic
                     :math:`\Sigma`; Ahn et al. Theorem 1).
``wick``             sparse heads (:math:`P = \mathrm{diag}(0,\pi)`, :math:`Q = -\mathrm{diag}(A, 0)`, any :math:`A_l`), any
                     :math:`\Sigma`, Gaussian covariates, ``L <= 3``: Isserlis pairings of the sample covariances
                     (:mod:`~landscape.symbolic.wick`); exact in :math:`\Sigma`, symbolic in ``n`` (e.g. the control
                     ``pgd-identity`` for anisotropic :math:`\Sigma`, where whitening does not help).
``expansion``        expansion in the data entries + Isserlis (:mod:`~landscape.symbolic.expansion`): any
                     polynomial model at small numeric ``d, n, L`` (the independent check of the above).
``relu-one-layer``   one ReLU kernel head, one layer, :math:`B^\top C = \kappa I` on the covariates,
                     :math:`\Sigma = \Sigma_w = I`, Gaussian covariates, noise allowed: half-space moments
                     (:mod:`~landscape.symbolic.relu`; Ahn et al. 2023, Theorem 5's setting).
``exp-one-layer``    one exp-kernel head :math:`e^{\gamma s}`, one layer, keys/queries on the covariates, any
                     :math:`\Sigma, \Sigma_w`, Gaussian covariates, linear labels (noise allowed): Gaussian integrals of
                     exponentiated quadratic forms (:mod:`~landscape.symbolic.exp_kernel`); not polynomial.
``label-exact``      kernel attention (Cheng, Chen, Sra 2024) and anything else whose prediction is linear in
                     the labels: labels integrated in closed form, covariates by seeded Monte-Carlo with
                     standard errors (:mod:`~landscape.symbolic.label_exact`).
``monte-carlo``      plain Monte-Carlo over covariates and labels (always applies).
================== ==========================================================================================
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable, Literal, Mapping, Sequence

import sympy
import torch

from landscape.theory.families import Family
from landscape.core.tasks import KernelGP, LinearRegression, Task
from landscape.symbolic.codegen import (
    gradient_exprs,
    hessian_exprs,
    to_torch,
    to_torch_matrix,
    to_torch_vector,
)
from landscape.symbolic.label_exact import CoefficientEstimate, LabelExactEstimator

__all__ = ["FamilyLoss", "family_loss", "default_data", "METHODS"]

METHODS = ("auto", "wishart", "one-layer", "wick", "expansion", "relu-one-layer", "relu-anisotropic", "exp-one-layer", "exp-gp-one-layer", "label-exact",
           "monte-carlo")
"""Accepted ``route`` (``method``) values of :func:`family_loss`: ``auto`` and the names of
:data:`~landscape.symbolic.routes.ROUTES`, in the order ``auto`` tries them."""

Values = Mapping[str, float] | torch.Tensor | Sequence[float]


@dataclass(frozen=True)
class FamilyLoss:
    r"""The population loss :math:`f(s) = \mathbb E(\mathrm{TF}_{\theta(s)}(Z_0) - y_q)^2` on a family.

    Attributes:
        family: the :class:`~landscape.theory.families.Family`.
        data: the prompt distribution.
        method: the route that produced it (see module docstring; also :attr:`route`).
        exact: True for the sympy routes; False for the Monte-Carlo route.
        expr: exact routes — the loss in the family symbols (numeric ``d, n``); label-exact route —
            the loss as a polynomial in the label gains with named coefficient symbols ``m__A__B``.
        general_thunk: computes :attr:`general`, the exact loss with symbolic
            :data:`~landscape.symbolic.whitened.D_SYMBOL` and/or
            :data:`~landscape.symbolic.whitened.N_SYMBOL` (and spectrum symbols) where the route gives it.
        description: a sentence on how it was derived.
        estimator: the Monte-Carlo estimator (label-exact route only).
        skipped: ``(route, reason)`` for each route ``auto`` tried before this one and why it did not
            apply (empty when the route was named).
        domain: expressions in the family symbols that must all be positive: :attr:`expr` is the loss
            there and the loss is :math:`+\\infty` elsewhere (empty: everywhere; the ``exp-one-layer``
            route's Gaussian integrals converge only on a domain). :meth:`torch_fn` and :meth:`value`
            return ``inf`` outside it.
    """

    family: Family
    data: Task
    method: str
    exact: bool
    expr: sympy.Expr
    general_thunk: Callable[[], sympy.Expr] | None = field(default=None, repr=False)
    description: str = ""
    estimator: LabelExactEstimator | None = None
    skipped: tuple[tuple[str, str], ...] = ()
    domain: tuple[sympy.Expr, ...] = ()
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def route(self) -> str:
        """The route that produced the loss (the same as :attr:`method`)."""
        return self.method

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
            if self.exact and self.domain:
                f, inside = to_torch(self.expr, self.symbols), self.in_domain_fn()
                self._cache["fn"] = lambda v: torch.where(inside(v), f(v), torch.full_like(v[..., 0], float("inf")))
            elif self.exact:
                self._cache["fn"] = to_torch(self.expr, self.symbols)
            else:
                est = self.estimator
                self._cache["fn"] = lambda v: est.loss(v)  # type: ignore[union-attr]
        return self._cache["fn"]

    def in_domain_fn(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """``v -> bool Tensor``: whether every :attr:`domain` expression is positive at ``v``."""
        if "dom" not in self._cache:
            fns = [to_torch(e, self.symbols) for e in self.domain]
            self._cache["dom"] = lambda v: (torch.stack([fn(v) > 0 for fn in fns], -1).all(-1) if fns
                                            else torch.ones(v.shape[:-1], dtype=torch.bool))
        return self._cache["dom"]

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


# ---------------------------------------------------------------------- route selection
def _check_inputs(family: Family, data: Task, method: str) -> None:
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


def _no_exact_route(skipped: Sequence[tuple[str, str]]) -> str:
    grouped: dict[str, list[str]] = {}
    for route, why in skipped:
        grouped.setdefault(why, []).append(route)
    return "no exact route (" + "; ".join(f"{', '.join(rs)}: {why}" for why, rs in grouped.items()) + ")"


def family_loss(
    family: Family,
    data: Task | None = None,
    *,
    route: str | None = None,
    method: str = "auto",
    spectrum: Literal["numeric", "symbolic"] = "numeric",
    samples: int = 8192,
    seed: int = 0,
    query_sigma: torch.Tensor | None = None,
) -> FamilyLoss:
    r"""The population loss of ``family`` on ``data`` by the first route of :data:`~landscape.symbolic.routes.ROUTES` that applies.

    Args:
        family: a :class:`~landscape.theory.families.Family` (``get_family(name, problem)``).
        data: prompt distribution; default :func:`default_data` (the paper's setting).
        route: ``"auto"`` (the first route that applies, in registry order) or one route name
            (:data:`METHODS`); the older keyword ``method`` means the same.
        method: the same as ``route`` (kept for existing callers; give one of the two).
        spectrum: ``"symbolic"`` keeps :math:`\Sigma = U\mathrm{diag}(\lambda_1..\lambda_d)U^\top` with symbols
            :math:`\lambda_i` in :attr:`FamilyLoss.general` (one-layer route).
        samples: covariate draws T of the Monte-Carlo routes.
        seed: seed of their ``torch.Generator``.
        query_sigma: covariance of the query covariate when it differs from the sources'
            (covariate shift, Zhang, Frei, Bartlett 2023): the loss is then the test loss on queries
            :math:`x_q \sim N(0, \Sigma_{\text{query}})` (or the sphere law) of a model whose context is drawn
            from ``data``. Exact on the one-layer route only.

    Returns:
        :class:`FamilyLoss`; :attr:`FamilyLoss.method` names the route, :attr:`FamilyLoss.skipped` the
        routes tried before it and why each did not apply.

    Raises:
        TypeError: ``family`` is not a Family.
        ValueError: mismatched ``d``/``n``, unknown route, ``route`` and ``method`` both given and
            different, a requested route that does not apply (the message says why), or no route at all.
    """
    from landscape.symbolic.routes import ROUTES, RouteOptions

    if route is not None and method != "auto" and route != method:
        raise ValueError(f"route={route!r} and method={method!r} disagree; give one of them")
    name = route if route is not None else method
    if isinstance(family, Family) and data is None:
        data = default_data(family)
    _check_inputs(family, data, name)
    if spectrum not in ("numeric", "symbolic"):
        raise ValueError(f"spectrum must be 'numeric' or 'symbolic', got {spectrum!r}")
    if query_sigma is not None:
        from landscape.core.tasks import check_covariance

        query_sigma = check_covariance(query_sigma, data.d).to(torch.float64)  # type: ignore[attr-defined]
    opts = RouteOptions(spectrum=spectrum, samples=samples, seed=seed, query_sigma=query_sigma,
                        named=name != "auto")
    if name != "auto":
        r = ROUTES[name]
        ctx, why = r.match(family, data, opts)
        if why:
            raise ValueError(f"the {name} route does not apply to family {family.name!r}: {why}")
        return r.build(family, data, opts, ctx)
    skipped: list[tuple[str, str]] = []
    for r in ROUTES.values():
        ctx, why = r.match(family, data, opts)
        if why:
            skipped.append((r.name, why))
            continue
        fl = r.build(family, data, opts, ctx)
        desc = fl.description
        if not fl.exact and any(ROUTES[s].exact for s, _ in skipped):
            desc += "; " + _no_exact_route([(s, w) for s, w in skipped if ROUTES[s].exact])
        return dataclasses.replace(fl, description=desc, skipped=tuple(skipped))
    raise ValueError(f"no route gives the loss of family {family.name!r} on {type(data).__name__}: "
                     + "; ".join(f"{s}: {w}" for s, w in skipped))
