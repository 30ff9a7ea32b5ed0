r"""Stationary points of a family loss: exhaustive and certified where the loss is polynomial, multi-start otherwise.

For an exact :class:`~landscape.symbolic.loss.FamilyLoss` the stationary equations
:math:`\partial f/\partial s_i = 0` are polynomial. ``method="auto"`` solves them

* by an exact **linear solve** when they are linear and of full rank (e.g. ``pgd-full``, Ahn et al.
  Theorem 1, whose optimum is :math:`A^* = (\frac{n+1}{n}\Sigma + \frac{\operatorname{tr}\Sigma}{n}I)^{-1}`):
  the unique stationary point, so the list is complete;
* by **exhaustive enumeration** (:mod:`~landscape.symbolic.enumerate`: Gröbner basis, trace-form
  root counts, rational univariate representation) when the system is within
  :data:`~landscape.symbolic.enumerate.LIMITS`: every real critical point or critical scaling orbit,
  listed once modulo the loss's sign flips and permutations, each with an exact algebraic value,
  an interval box and a Morse index — the list is proven complete;
* otherwise by the older exact routes (univariate real roots, bivariate elimination) or
  numerically: Newton / trust-region from many seeded starts, polished, de-duplicated — a
  **multi-start search, not exhaustive**: it can miss stationary points (e.g. saddles no start
  converges to) and lists a positive-dimensional set once per start that lands on it.

Every result says which (:class:`StationaryPoints` ``.method``, ``.exhaustive``, ``.certified``;
per point :attr:`StationaryPoint.method`, :attr:`StationaryPoint.certified`).

Label-exact Monte-Carlo losses are handled numerically through their torch function (the
stationary points of the common-random-numbers sample mean), with the standard error of the loss.

Every point is classified by the family Hessian on the quotient by flat directions — family
symbols the loss does not depend on, and the weight symmetries of the model
(:attr:`~landscape.theory.families.Family.symmetries`, :mod:`landscape.theory.symmetries`) that move
inside the family (e.g.
:math:`B \mapsto e^tB, C \mapsto e^{-t}C` for dot-product kernels): ``min`` (all eigenvalues > 0),
``max`` (all < 0), ``saddle`` (both signs), ``degenerate`` (a further zero eigenvalue, no negative
and positive pair).
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import sympy
import torch
from scipy import optimize

from landscape.tolerances import ZERO_EIG
from landscape.symbolic.codegen import to_numpy
from landscape.symbolic.loss import FamilyLoss
from landscape._checks import check_int, check_real

__all__ = ["StationaryPoint", "StationaryPoints", "stationary_points", "classify", "symmetry_directions",
           "SEARCH_METHODS", "optimal_gd"]

KINDS = ("min", "saddle", "max", "degenerate")
SEARCH_METHODS = ("auto", "exhaustive", "multistart")
"""Accepted ``method`` values of :func:`stationary_points`."""

_GRAD_TOL = 1e-9
"""A candidate is stationary if ``|∇f| <= _GRAD_TOL · (1 + |f|)`` (exact routes, float64)."""
_MC_GRAD_TOL = 1e-7
"""The same for the Monte-Carlo route (gradients of a sample mean over many draws)."""
_DEDUP_RTOL = 1e-6
"""Two points closer than this (relative) are the same."""
_GROEBNER_MAX_DEGREE = 8
_BOX = 1e3
r"""Numerical candidates with a coordinate beyond ``_BOX · scale`` are dropped: they are points where
the gradient only *tends* to zero (valleys to infinity, e.g. :math:`a_0 \to 0, b_0 \to \infty` with
:math:`a_0 b_0` fixed in ``pgd-relaxed``), not stationary points."""
"""Largest degree of a bivariate stationary system handed to the Gröbner route."""


@dataclass(frozen=True)
class StationaryPoint:
    """A stationary point of a family loss.

    Attributes:
        values: symbol name → value (flat symbols set to 0).
        exact: symbol name → exact sympy value as a string, where the solver found one.
        loss: the loss there.
        loss_se: its Monte-Carlo standard error (0 for exact losses).
        kind: ``"min"``, ``"saddle"``, ``"max"`` or ``"degenerate"``.
        eigenvalues: eigenvalues of the family Hessian on the quotient (ascending).
        grad_norm: norm of the gradient over the family symbols there.
        free: symbols the loss does not depend on (flat directions, not solved for).
        symmetry_dims: number of symmetry directions quotiented out (exhaustive method: the
            dimension of the critical set).
        method: how the point was found: ``"exhaustive"``, ``"linear"``, ``"univariate"``,
            ``"bivariate"`` or ``"multistart"``.
        exhaustive: whether it belongs to a list proven complete.
        certified: whether it carries an exact certificate (exact algebraic value / interval box).
        dimension: dimension of the critical set it stands for (0: an isolated point).
        morse_index: negative eigenvalues of the Hessian transverse to the set (None if not computed).
        orbit: number of gauge-fixed points related by sign flips / permutations merged into this listing.
        members: the other points of that orbit (values).
        loss_exact: the exact loss (string), where known.
        box: symbol → ``(lo, hi)`` interval that contains the point (exhaustive method).
        certificate: the certificate (see :class:`~landscape.symbolic.enumerate.CriticalSet`).
    """

    values: dict[str, float]
    exact: dict[str, str]
    loss: float
    loss_se: float
    kind: str
    eigenvalues: tuple[float, ...]
    grad_norm: float
    free: tuple[str, ...] = ()
    symmetry_dims: int = 0
    method: str = "multistart"
    exhaustive: bool = False
    certified: bool = False
    dimension: int = 0
    morse_index: int | None = None
    orbit: int = 1
    members: tuple[dict[str, float], ...] = ()
    loss_exact: str = ""
    box: dict[str, tuple[str, str]] = field(default_factory=dict)
    certificate: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        """JSON-ready dict (``values``, ``exact``, ``loss``, ``kind``, how it was found, and diagnostics)."""
        return {"values": dict(self.values), "exact": dict(self.exact), "loss": self.loss, "loss_se": self.loss_se,
                "loss_exact": self.loss_exact, "kind": self.kind, "morse_index": self.morse_index,
                "dimension": self.dimension, "orbit": self.orbit, "members": [dict(m) for m in self.members],
                "hessian_eigenvalues": list(self.eigenvalues), "grad_norm": self.grad_norm,
                "free": list(self.free), "symmetry_dims": self.symmetry_dims,
                "method": self.method, "exhaustive": self.exhaustive, "certified": self.certified,
                "box": {k: list(v) for k, v in self.box.items()}, "certificate": dict(self.certificate)}


class StationaryPoints(tuple):
    """The stationary points found (a tuple of :class:`StationaryPoint`) and how they were searched.

    Attributes:
        method: ``"exhaustive"``, ``"linear"``, ``"univariate"``, ``"bivariate"`` or ``"multistart"``.
        exhaustive: True when the list is proven complete.
        certified: True when every point carries an exact certificate.
        note: one sentence on the method, its guarantee, and (when not exhaustive) why not.
        symmetries: the symmetries of the loss quotiented out (descriptions).
        counts: exhaustive method — per gauge case, (complex solutions with multiplicity, distinct
            complex, distinct real).
    """

    method: str
    exhaustive: bool
    certified: bool
    note: str
    symmetries: tuple[str, ...]
    counts: dict

    def __new__(cls, points: Sequence[StationaryPoint], *, method: str, exhaustive: bool, certified: bool,
                note: str, symmetries: Sequence[str] = (), counts: dict | None = None) -> "StationaryPoints":
        obj = super().__new__(cls, tuple(points))
        obj.method, obj.exhaustive, obj.certified, obj.note = method, exhaustive, certified, note
        obj.symmetries, obj.counts = tuple(symmetries), dict(counts or {})
        return obj

    def summary(self) -> dict:
        """JSON-ready description of the search (method, exhaustive, certified, note, symmetries, counts)."""
        return {"method": self.method, "exhaustive": self.exhaustive, "certified": self.certified, "note": self.note,
                "symmetries": list(self.symmetries), "counts": {k: list(v) for k, v in self.counts.items()}}


# ---------------------------------------------------------------------- classification
def classify(eigenvalues: Sequence[float], rtol: float = ZERO_EIG[torch.float64]) -> str:
    """``min`` / ``max`` / ``saddle`` / ``degenerate`` from Hessian eigenvalues.

    An eigenvalue counts as zero when ``|λ| <= rtol · max(1, max|λ|)``.
    """
    ev = np.asarray(list(eigenvalues), dtype=np.float64)
    if ev.size == 0:
        return "degenerate"
    tol = rtol * max(1.0, float(np.abs(ev).max()))
    pos, neg, zero = bool((ev > tol).any()), bool((ev < -tol).any()), bool((np.abs(ev) <= tol).any())
    if pos and neg:
        return "saddle"
    if zero:
        return "degenerate"
    return "min" if pos else "max"


def symmetry_directions(loss: FamilyLoss, v: torch.Tensor) -> list[torch.Tensor]:
    r"""Directions in symbol space along which a model weight symmetry moves inside the family.

    With the generators :math:`\Gamma = [\delta_1 \dots \delta_m]` of the family's symmetries at
    :math:`\theta(v)` (:func:`landscape.theory.symmetries.symmetry_generators`, derived from the declarations
    :attr:`~landscape.theory.families.Family.symmetries`) and the family Jacobian
    :math:`J = \partial\theta/\partial s`, the directions are an orthonormal basis of
    :math:`\{u : Ju \in \operatorname{span}\Gamma\}` — the null space of :math:`[J, -\Gamma]`
    projected on its ``u`` part (for a group such as :math:`B \mapsto GB, C \mapsto G^{-\top}C`
    only combinations of its generators, here :math:`G = e^tI`, are tangent to the family).

    Returns:
        Orthonormal ``(k,)`` float64 directions (possibly none).
    """
    from landscape.theory.symmetries import symmetry_generators

    fam = loss.family
    v = v.detach().to(torch.float64)
    J = fam.tangent_basis(v)
    G = symmetry_generators(fam.spec, fam.flat(v).detach(), fam.symmetries)
    if G.shape[1] == 0 or J.shape[1] == 0:
        return []
    scale = max(float(J.abs().max()), float(G.abs().max()), 1e-300)
    A = torch.cat([J, -G], dim=1) / scale
    _, sv, Vh = torch.linalg.svd(A, full_matrices=True)
    rank = int((sv > 1e-8).sum())
    null_u = Vh[rank:, : J.shape[1]].T  # (k, nullity): the u parts of the null vectors
    if null_u.shape[1] == 0:
        return []
    U, su, _ = torch.linalg.svd(null_u, full_matrices=False)
    r = int((su > 1e-8).sum())
    return [U[:, i] for i in range(r)]


def _quotient_eigenvalues(H: np.ndarray, directions: list[np.ndarray]) -> tuple[np.ndarray, int]:
    k = H.shape[0]
    if not directions or k == 0:
        return np.linalg.eigvalsh((H + H.T) / 2), 0
    U = np.stack(directions, axis=1)
    rank = np.linalg.matrix_rank(U, tol=1e-10)
    Q, _ = np.linalg.qr(np.concatenate([U, np.eye(k)], axis=1))
    N = Q[:, rank:k]
    Hq = N.T @ H @ N
    return np.linalg.eigvalsh((Hq + Hq.T) / 2), int(rank)


# ---------------------------------------------------------------------- exact solving
def _is_rational_poly(p: sympy.Poly) -> bool:
    return all(c.is_Rational for c in p.coeffs())


def _exact_solutions(grads: list[sympy.Expr], active: list[sympy.Symbol]) -> tuple[list[dict], bool] | None:
    """Exact stationary points: (list of {symbol: sympy value}, complete?) or None if not attempted."""
    k = len(active)
    polys = [sympy.Poly(g, *active) for g in grads]
    if all(p.total_degree() <= 1 for p in polys):
        A, b = sympy.linear_eq_to_matrix([p.as_expr() for p in polys], active)
        if A.rank() == k:
            x = A.LUsolve(b)
            return [{s: sympy.nsimplify(x[i]) if x[i].is_Rational else x[i] for i, s in enumerate(active)}], True
        return None
    if k == 1:
        p = polys[0]
        if _is_rational_poly(p):
            roots = sympy.Poly(p.as_expr(), active[0]).real_roots()
            sols = []
            for r in roots:
                if not any(sympy.simplify(r - s[active[0]]) == 0 for s in sols):
                    sols.append({active[0]: r})
            return sols, True
        return None
    if k == 2 and all(_is_rational_poly(p) for p in polys) and max(p.total_degree() for p in polys) <= _GROEBNER_MAX_DEGREE:
        # eliminate each variable in turn (lex Gröbner bases): the real roots of the two univariate
        # elimination polynomials contain every coordinate of every real solution; pair them up
        # by checking the stationary equations at 50 digits.
        x, y = active
        roots = {}
        for first, last in ((x, y), (y, x)):
            G = sympy.groebner([p.as_expr() for p in polys], first, last, order="lex")
            if not G.is_zero_dimensional:
                return None
            elim = [e for e in G.exprs if first not in e.free_symbols]
            if len(elim) != 1:
                return None
            roots[last] = sympy.Poly(elim[0], last).real_roots()
        sols = []
        for rx in roots[x]:
            for ry in roots[y]:
                vals50 = {x: rx.evalf(50), y: ry.evalf(50)}
                scale = 1 + abs(float(vals50[x])) + abs(float(vals50[y]))
                if all(abs(complex(sympy.N(g.subs(vals50), 40))) <= 1e-25 * scale**8 for g in grads):
                    sols.append({x: rx, y: ry})
        return sols, True
    return None


# ---------------------------------------------------------------------- numerical solving
def _starts(k: int, count: int, scale: float, rng: np.random.Generator) -> np.ndarray:
    half = count // 2
    a = rng.normal(0.0, scale, size=(half, k))
    b = rng.uniform(-2 * scale, 2 * scale, size=(count - half, k))
    return np.concatenate([np.zeros((1, k)), a, b], axis=0)


def _polish(x: np.ndarray, grad: Callable, hess: Callable, steps: int = 8) -> np.ndarray:
    for _ in range(steps):
        g = grad(x)
        if not np.all(np.isfinite(g)):
            return x
        H = hess(x)
        try:
            dx = np.linalg.lstsq(H, g, rcond=1e-14)[0]
        except np.linalg.LinAlgError:
            return x
        x_new = x - dx
        if not np.all(np.isfinite(x_new)) or np.linalg.norm(grad(x_new)) > np.linalg.norm(g):
            return x
        x = x_new
    return x


def _numeric_solutions(f: Callable, grad: Callable, hess: Callable, k: int, starts: int, seed: int,
                       scale: float, tol: Callable[[np.ndarray], float],
                       fg: Callable | None = None, roots: bool = True) -> list[np.ndarray]:
    """Stationary points from seeded starts: Powell-hybrid root finding on the gradient (``roots``)
    and a minimisation (trust-region with the Hessian, or L-BFGS on ``fg`` = (f, ∇f) when given),
    each polished by Newton steps and kept when the gradient vanishes."""
    rng = np.random.default_rng(seed)
    found: list[np.ndarray] = []
    for x0 in _starts(k, starts, scale, rng):
        cands = []
        if roots:
            try:
                r = optimize.root(grad, x0, jac=hess, method="hybr", tol=1e-14)
                cands.append(r.x)
            except (ValueError, np.linalg.LinAlgError, FloatingPointError):
                pass
        try:
            if fg is None:
                m = optimize.minimize(f, x0, jac=grad, hess=hess, method="trust-exact",
                                      options={"gtol": 1e-12, "maxiter": 500})
            else:
                m = optimize.minimize(fg, x0, jac=True, method="L-BFGS-B",
                                      options={"gtol": 1e-10, "ftol": 1e-15, "maxiter": 300})
            cands.append(m.x)
        except (ValueError, np.linalg.LinAlgError, FloatingPointError):
            pass
        for x in cands:
            if not np.all(np.isfinite(x)) or np.abs(x).max() > _BOX * max(1.0, scale):
                continue
            x = _polish(np.asarray(x, dtype=np.float64), grad, hess)
            g = grad(x)
            if not np.all(np.isfinite(g)) or np.linalg.norm(g) > tol(x):
                continue
            if any(np.linalg.norm(x - y) <= _DEDUP_RTOL * (1 + np.linalg.norm(y)) for y in found):
                continue
            found.append(x)
    return found


def _exact_string(v: sympy.Expr) -> str:
    v = sympy.sympify(v)
    if v.is_Float:
        return str(sympy.Float(v, 17))
    return str(v)


def stationary_points(
    loss: FamilyLoss,
    *,
    starts: int = 24,
    seed: int = 0,
    exact: bool | str = "auto",
    scale: float = 1.0,
    method: str = "auto",
    time_limit: float | None = None,
) -> StationaryPoints:
    r"""Find and classify the stationary points of a family loss.

    Args:
        loss: a :class:`~landscape.symbolic.loss.FamilyLoss` (exact or label-exact Monte-Carlo).
        starts: number of seeded random starts of the numerical search.
        seed: seed of the starts (``numpy.random.default_rng``).
        exact: ``"auto"`` (exact solvers where they apply), ``True`` (require one), ``False``
            (numerical only; the same as ``method="multistart"``).
        scale: spread of the random starts.
        method: ``"auto"`` (exhaustive enumeration when the loss is polynomial and within
            :data:`~landscape.symbolic.enumerate.LIMITS`, multi-start otherwise), ``"exhaustive"``
            (require it) or ``"multistart"`` (random starts only; not exhaustive).
        time_limit: wall-clock budget of the exhaustive enumeration in seconds (default
            ``LIMITS["seconds"]``). Past it the enumeration is stopped; ``"auto"`` then falls back to
            multi-start and says in ``.note`` that the list is not exhaustive and why.

    Returns:
        :class:`StationaryPoints` sorted by loss, with ``.method``, ``.exhaustive``, ``.certified``
        and ``.note``.

    Raises:
        TypeError: ``loss`` is not a FamilyLoss.
        ValueError: bad ``starts``/``scale``/``exact``/``method``; ``exact=True`` on a system no exact
            solver handles; ``method="exhaustive"`` on a Monte-Carlo loss or a system outside the
            limits or past its time limit (the message says which limit).
    """
    if not isinstance(loss, FamilyLoss):
        raise TypeError(f"loss must be a FamilyLoss (see family_loss), got {type(loss).__name__}")
    check_int("starts", starts, minimum=1)
    check_real("scale", scale, positive=True)
    if exact not in ("auto", True, False):
        raise ValueError(f"exact must be 'auto', True or False, got {exact!r}")
    if method not in SEARCH_METHODS:
        raise ValueError(f"method must be one of {', '.join(SEARCH_METHODS)}; got {method!r}")
    if method == "exhaustive" and exact is False:
        raise ValueError("method='exhaustive' is an exact method; it cannot be combined with exact=False")
    if method == "multistart" and exact is True:
        raise ValueError("method='multistart' is numerical; it cannot be combined with exact=True")
    if loss.exact:
        return _solve_exact(loss, starts, seed, False if method == "multistart" else exact, scale, method, time_limit)
    if exact is True or method == "exhaustive":
        raise ValueError(f"exact solving and exhaustive enumeration need an exact polynomial loss; the "
                         f"{loss.method!r} route is Monte-Carlo (use method='multistart')")
    return _solve_mc(loss, starts, seed, scale)


_MULTISTART_NOTE = ("multi-start search ({starts} seeded starts, Powell root finding and trust-region minimisation, "
                    "Newton-polished): NOT exhaustive — stationary points no start converges to are missed, and a "
                    "positive-dimensional set is listed once per start that lands on it")


def _finish(loss: FamilyLoss, full: np.ndarray, exact_vals: dict[str, str], free: Sequence[str],
            active_idx: list[int], H_active: np.ndarray, grad_full: np.ndarray) -> StationaryPoint:
    v = torch.as_tensor(full, dtype=torch.float64)
    dirs = [u.numpy()[active_idx] for u in symmetry_directions(loss, v)]
    dirs = [u for u in dirs if np.linalg.norm(u) > 1e-12]
    ev, rank = _quotient_eigenvalues(H_active, dirs)
    tol = ZERO_EIG[torch.float64] * max(1.0, float(np.abs(ev).max()) if ev.size else 1.0)
    return StationaryPoint(
        values={n: float(x) for n, x in zip(loss.names, full)},
        exact=exact_vals,
        loss=loss.value(v),
        loss_se=loss.standard_error(v),
        kind=classify(ev),
        eigenvalues=tuple(float(e) for e in ev),
        grad_norm=float(np.linalg.norm(grad_full)),
        free=tuple(free),
        symmetry_dims=rank,
        dimension=rank,
        morse_index=int((ev < -tol).sum()),
    )


def _linear_solution(grads: list[sympy.Expr], active: list[sympy.Symbol]) -> dict | None:
    """The unique solution of a full-rank linear stationary system (exact when its coefficients are rational)."""
    polys = [sympy.Poly(g, *active) for g in grads]
    if not all(p.total_degree() <= 1 for p in polys):
        return None
    A, b = sympy.linear_eq_to_matrix([p.as_expr() for p in polys], active)
    if A.rank() != len(active):
        return None
    x = A.LUsolve(b)
    return {s: x[i] for i, s in enumerate(active)}


def _from_enumeration(loss: FamilyLoss, E: object, syms: list, active_idx: list[int], free: list[str],
                      g_np: Callable, exhaustive: bool) -> list[StationaryPoint]:
    out = []
    for c in E.sets:  # type: ignore[attr-defined]
        full = np.zeros(len(syms))
        for j, i in enumerate(active_idx):
            full[i] = c.values[syms[i].name]
        out.append(StationaryPoint(
            values={n: float(x) for n, x in zip(loss.names, full)},
            exact=dict(c.exact), loss=float(c.loss), loss_se=0.0, kind=c.kind, eigenvalues=c.eigenvalues,
            grad_norm=float(np.linalg.norm(g_np(full[active_idx]))), free=tuple(free), symmetry_dims=c.dimension,
            method="exhaustive", exhaustive=exhaustive, certified=True, dimension=c.dimension,
            morse_index=c.morse_index, orbit=c.orbit,
            members=tuple({**{n: 0.0 for n in loss.names}, **m} for m in c.members),
            loss_exact=c.loss_exact, box=dict(c.box), certificate=dict(c.certificate)))
    return out


def _solve_exact(loss: FamilyLoss, starts: int, seed: int, exact: bool | str, scale: float,
                 method: str, time_limit: float | None = None) -> StationaryPoints:
    from landscape.symbolic.enumerate import LIMITS, EnumerationLimit, enumerate_critical_points

    syms = list(loss.symbols)
    active = [s for s in syms if s in loss.expr.free_symbols]
    free = [s.name for s in syms if s not in active]
    active_idx = [syms.index(s) for s in active]
    if not active:
        full = np.zeros(len(syms))
        pt = _finish(loss, full, {}, free, [], np.zeros((0, 0)), np.zeros(0))
        return StationaryPoints([pt], method="constant", exhaustive=True, certified=True,
                                note="the loss does not depend on the family symbols")
    grads = [sympy.diff(loss.expr, s) for s in active]
    hess = [[sympy.diff(g, s) for s in active] for g in grads]
    f_np = to_numpy(loss.expr, active)
    g_np = to_numpy(grads, active)
    h_np = to_numpy(hess, active)
    polynomial = loss.expr.is_polynomial(*active)
    rational = polynomial and all(c.is_Rational for c in sympy.Poly(loss.expr, *active).coeffs())

    def finish_all(points: list[tuple[np.ndarray, dict[str, str]]], **kw: object) -> list[StationaryPoint]:
        out = []
        for x, ex in points:
            full = np.zeros(len(syms))
            full[active_idx] = x
            p = _finish(loss, full, ex, free, active_idx, h_np(x), g_np(x))
            out.append(dataclasses.replace(p, **kw))
        return out

    reason = "" if polynomial else f"the loss is not polynomial in the family symbols ({loss.method} route)"
    certified_sets: list[StationaryPoint] = []
    if exact in ("auto", True) and not polynomial:
        if exact is True or method == "exhaustive":
            raise ValueError(f"exact solving and exhaustive enumeration need a polynomial loss; {reason}")
    elif exact in ("auto", True):
        lin = _linear_solution(grads, active)
        if lin is not None:
            x = np.array([float(sympy.N(lin[s], 30)) for s in active])
            ex = {s.name: _exact_string(lin[s]) for s in active}
            lex = str(sympy.expand(loss.expr.subs(lin))) if rational else ""
            pts = finish_all([(x, ex)], method="linear", exhaustive=True, certified=rational, dimension=0,
                             loss_exact=lex)
            note = ("exact linear solve: the stationary equations are linear of full rank, so this is the only "
                    "stationary point" + ("" if rational else " (float coefficients: solved in floating point)"))
            return StationaryPoints(pts, method="linear", exhaustive=True, certified=rational, note=note)
        if method in ("auto", "exhaustive"):
            try:
                E = enumerate_critical_points(loss.expr, active, seed=seed,
                                              time_limit=LIMITS["seconds"] if time_limit is None else time_limit)
            except EnumerationLimit as e:
                reason = str(e)
            else:
                sets = _from_enumeration(loss, E, syms, active_idx, free, g_np, E.exhaustive)
                if E.exhaustive:
                    note = ("exhaustive: Gröbner basis of the gauge-fixed gradient ideal, root counts from the trace "
                            "form, rational univariate representation; every real critical point and critical "
                            "scaling orbit, once modulo sign flips and permutations, each with an exact algebraic "
                            "value and an interval box"
                            + ("" if rational else "; float coefficients taken as the exact binary rationals"))
                    return StationaryPoints(sorted(sets, key=lambda p: (p.loss, p.morse_index or 0)),
                                            method="exhaustive", exhaustive=True, certified=True, note=note,
                                            symmetries=E.symmetries.describe([s.name for s in active]),
                                            counts=E.counts)
                reason = E.reason
                certified_sets = sets
        if method == "exhaustive":
            raise ValueError(f"exhaustive enumeration is not possible for {loss.family.name!r}: {reason}")
    exact_sols = None
    if exact in ("auto", True) and polynomial:
        exact_sols = _exact_solutions(grads, active)
        if exact is True and exact_sols is None and not certified_sets:
            raise ValueError(f"no exact solver for the stationary system of {loss.family.name!r} "
                             f"({len(active)} unknowns, degree {max(sympy.Poly(g, *active).total_degree() for g in grads)})"
                             + (f": {reason}" if reason else ""))
    points: list[tuple[np.ndarray, dict[str, str]]] = []
    kind_of_solver = "univariate" if len(active) == 1 else "bivariate"
    if exact_sols is not None:
        for sol in exact_sols[0]:
            x = np.array([float(sympy.N(sol[s], 30)) for s in active])
            points.append((x, {s.name: _exact_string(sol[s]) for s in active}))
        if exact_sols[1]:
            pts = finish_all(points, method=kind_of_solver, exhaustive=True, certified=rational)
            note = (f"exact {kind_of_solver} solve (real roots of the elimination polynomials, all of them)"
                    + (f"; the exhaustive method did not apply: {reason}" if reason else ""))
            return StationaryPoints(sorted(pts, key=lambda p: p.loss), method=kind_of_solver, exhaustive=True,
                                    certified=rational, note=note)
    tol = lambda x: _GRAD_TOL * (1 + abs(float(f_np(x))))  # noqa: E731
    numeric = []
    known = [np.array([p.values[n] for n in (syms[i].name for i in active_idx)]) for p in certified_sets]
    inside = loss.in_domain_fn()
    with np.errstate(all="ignore") if loss.domain else contextlib.nullcontext():
        # a loss with a finiteness domain (exp-one-layer) is evaluated beyond it by the searches: inf/nan
        # there are expected and rejected below
        candidates = _numeric_solutions(f_np, g_np, h_np, len(active), starts, seed, scale, tol)
    for x in candidates:
        full_x = torch.zeros(len(syms), dtype=torch.float64)
        full_x[active_idx] = torch.as_tensor(x, dtype=torch.float64)
        if not bool(inside(full_x)):  # the expression is not the loss there (it is +inf)
            continue
        if any(np.linalg.norm(x - y) <= _DEDUP_RTOL * (1 + np.linalg.norm(y)) for y in known):
            continue
        numeric.append((x, {}))
    pts = certified_sets + finish_all(numeric, method="multistart")
    if not polynomial:  # no gauge fixing here: merge points that are the same model (symmetry copies)
        pts = _dedup_functional(loss, pts)
    note = _MULTISTART_NOTE.format(starts=starts)
    if reason:
        note += f"; the exhaustive method did not apply: {reason}"
    if certified_sets:
        note += f" ({len(certified_sets)} certified points from the zero-dimensional gauge cases are included)"
    return StationaryPoints(sorted(pts, key=lambda p: p.loss), method="multistart", exhaustive=False,
                            certified=False, note=note)


def _solve_mc(loss: FamilyLoss, starts: int, seed: int, scale: float) -> tuple[StationaryPoint, ...]:
    syms = list(loss.symbols)
    k = len(syms)
    fn = loss.torch_fn()

    def full_fg(v: torch.Tensor) -> tuple[float, np.ndarray]:
        w = v.detach().clone().requires_grad_(True)
        out = fn(w)
        (g,) = torch.autograd.grad(out, w)
        return float(out.detach()), g.detach().numpy()

    # structurally flat symbols: gradient exactly zero at two random points
    rng = np.random.default_rng(seed + 1)
    zero = np.ones(k, dtype=bool)
    for _ in range(2):
        zero &= full_fg(torch.as_tensor(rng.normal(0, scale, k), dtype=torch.float64))[1] == 0.0
    active_idx = [i for i in range(k) if not zero[i]]
    free = [syms[i].name for i in range(k) if zero[i]]

    def embed(x: np.ndarray) -> torch.Tensor:
        full = torch.zeros(k, dtype=torch.float64)
        full[active_idx] = torch.as_tensor(x, dtype=torch.float64)
        return full

    def fg_np(x: np.ndarray) -> tuple[float, np.ndarray]:
        f, g = full_fg(embed(x))
        return f, g[active_idx]

    def f_np(x: np.ndarray) -> float:
        with torch.no_grad():
            return float(fn(embed(x)))

    def g_np(x: np.ndarray) -> np.ndarray:
        return fg_np(x)[1]

    def h_np(x: np.ndarray) -> np.ndarray:
        H = torch.autograd.functional.hessian(fn, embed(x))
        return H.detach().numpy()[np.ix_(active_idx, active_idx)]

    tol = lambda x: _MC_GRAD_TOL * (1 + abs(f_np(x)))  # noqa: E731
    xs = (_numeric_solutions(f_np, g_np, h_np, len(active_idx), starts, seed, scale, tol, fg=fg_np, roots=False)
          if active_idx else [np.zeros(0)])
    out = []
    for x in xs:
        full = embed(x).numpy()
        out.append(_finish(loss, full, {}, free, active_idx, h_np(x), g_np(x)))
    out = _dedup_functional(loss, out)
    note = _MULTISTART_NOTE.format(starts=starts) + (f"; the loss is Monte-Carlo ({loss.method} route), so no "
                                                      "exact or exhaustive method applies")
    return StationaryPoints(sorted(out, key=lambda p: p.loss), method="multistart", exhaustive=False,
                            certified=False, note=note)


def optimal_gd(loss: FamilyLoss) -> dict | None:
    r"""The exact optimal loss of L-step preconditioned GD when ``loss`` is a ``pgd``-type Wishart loss.

    Applies when the loss came from the Wishart route and every layer is pure preconditioned GD in
    whitened coordinates (no covariate update, one step-size symbol per layer): then the family minimum
    is :func:`~landscape.symbolic.whitened.optimal_gd_loss` — a quadratic minimisation over the
    coefficients of :math:`p(s) = \prod_l(1 - a_ls)`, exact and rational at any ``L``.

    Returns:
        ``{"loss_exact", "loss", "lower_bound", "polynomial", "steps", "step_values", "realisable",
        "layers"}`` or ``None`` when it does not apply.
    """
    from landscape.symbolic.whitened import (
        noise_variance,
        optimal_gd_loss,
        pgd_structure,
        trace_ratio,
        whitened_structure,
    )

    if not loss.exact or loss.method != "wishart":
        return None
    fam, data = loss.family, loss.data
    layers = whitened_structure(fam.blocks, fam.spec, data.sigma, fam.symbols)  # type: ignore[attr-defined]
    if layers is None or pgd_structure(layers) is None:
        return None
    ratio, _ = trace_ratio(data)  # type: ignore[arg-type]
    s2 = noise_variance(data.noise) if data.noise else 0  # type: ignore[attr-defined]
    opt = optimal_gd_loss(len(layers), data.n, data.d, ratio, s2)  # type: ignore[attr-defined]
    return {"loss_exact": None if opt.loss is None else str(opt.loss),
            "loss": None if opt.loss is None else float(opt.loss),
            "lower_bound": str(opt.lower_bound), "polynomial": str(opt.polynomial),
            "steps": [str(x) for x in opt.steps], "step_values": [float(sympy.N(x, 20)) for x in opt.steps],
            "realisable": opt.realisable, "layers": len(layers)}


def _dedup_functional(loss: FamilyLoss, points: list[StationaryPoint]) -> list[StationaryPoint]:
    """Merge points that define the same model (equal predictions on probe prompts): symmetry orbits."""
    if len(points) < 2:
        return points
    from landscape.core.model import predict

    g = torch.Generator().manual_seed(12345)
    batch = loss.data.sample(16, g)  # type: ignore[attr-defined]
    preds = []
    for p in points:
        v = torch.tensor([p.values[n] for n in loss.names], dtype=torch.float64)
        with torch.no_grad():
            preds.append(predict(loss.family.params(v), loss.family.spec, batch.Z.to(torch.float64)))
    keep: list[int] = []
    for i, pi in enumerate(preds):
        same = False
        for j in keep:
            if float((pi - preds[j]).abs().max()) <= 1e-6 * (1 + float(preds[j].abs().max())):
                same = True
                if np.linalg.norm(list(points[i].values.values())) < np.linalg.norm(list(points[j].values.values())):
                    keep[keep.index(j)] = i
                break
        if not same:
            keep.append(i)
    return [points[i] for i in keep]
