r"""Every real critical point of a polynomial loss, exactly and with a completeness proof.

Method (exact arithmetic over :math:`\mathbb Q`; sympy Gröbner bases, python-flint linear algebra):

1. **Symmetries of the polynomial.** With :math:`E` the exponent matrix of :math:`f` (one row per
   monomial), an integer vector :math:`w` with :math:`E w = 0` is a *scaling*
   :math:`x_i \mapsto t^{w_i}x_i` (:math:`t > 0`) leaving :math:`f` unchanged, a vector
   :math:`s \in \mathbb F_2^k` with :math:`E s \equiv 0 \pmod 2` a *sign flip*, and a permutation of
   the variables mapping the coefficient table of :math:`f` to itself a *permutation symmetry*
   (layers or heads that can be exchanged). These are symmetries of the loss itself — model
   weight symmetries that move inside the family (``P → tP, Q → Q/t``; ``B → tB, C → C/t``) and
   reparametrisations of the family (``k → tk, q → q/t`` for a key/query product) both appear
   here — so they are detected, not declared.
2. **Gauge fixing.** The scaling group is used when it has a basis :math:`w_1..w_r` with disjoint
   supports (per-head, per-layer scalings). Every orbit of :math:`t \mapsto (t^{w_j}x)` meets
   exactly one of three slices: the *balanced* slice :math:`\sum_i w_{ji}x_i^2 = 0` (closed orbits,
   including the fixed points :math:`x_{\mathrm{supp}\,w_j} = 0`), and, for non-closed orbits, the
   slices :math:`x_{N_j} = 0, \sum_{P_j} x_i^2 = 1` or :math:`x_{P_j} = 0, \sum_{N_j} x_i^2 = 1`
   (:math:`P_j, N_j` = coordinates of positive / negative weight; the map
   :math:`t \mapsto \sum_i x_i^2 t^{2w_i}` is strictly monotone or strictly convex in :math:`\log t`,
   so each orbit meets its slice once). The gradient system :math:`\nabla f = 0` is solved on each
   of the :math:`3^r` products of slices; a solution stands for its whole orbit, a critical set of
   dimension = the number of scalings that move it. Scalings with *overlapping* supports (e.g.
   :math:`(r, b, c) \mapsto (t_1r, t_2b, c/(t_1t_2))` when the loss depends on :math:`rbc` only) are
   handled by stratifying by the support :math:`N` of :math:`x` (which coordinates are non-zero;
   :math:`2^k` strata, the Rabinowitsch variable :math:`z\prod_{i\in N}x_i = 1` keeps it exact): on
   :math:`(\mathbb R\setminus 0)^N` the orbit meets the *log-balanced* slice
   :math:`\prod_i x_i^{2u_i} = 1` (one equation per row :math:`u` of a basis of the weights restricted to
   :math:`N`, i.e. :math:`W_N\log|x| = 0`) exactly once, closed orbits and non-closed alike; the
   dimension of the set is :math:`\operatorname{rank} W_N`.
3. **Zero-dimensional solve.** For each gauge-fixed system: a grevlex Gröbner basis (sympy); its
   Hilbert dimension from the leading monomials (the largest set of variables no leading monomial
   lives on). Dimension 0: the standard monomials :math:`B` (:math:`D = |B|` = number of complex
   solutions with multiplicity), the multiplication matrices :math:`M_{x_i}` on
   :math:`\mathbb Q[x]/I`, the trace form (Hermite) matrix
   :math:`H_{ab} = \operatorname{tr} M_{b_a b_b}` whose **rank is the number of distinct complex
   solutions and whose signature is the number of distinct real solutions** (exact, flint
   ``fmpq_mat``; signature by Descartes' rule on its characteristic polynomial, exact because a
   symmetric matrix has real eigenvalues). Then a rational univariate representation: a separating
   form :math:`u = c\cdot x` (its square-free characteristic polynomial :math:`\chi` has degree
   ``rank H``), :math:`x_i = g_{x_i}(u)/g_1(u)` with
   :math:`g_v(T) = \sum_k T^k\sum_{m>k}\chi_m\operatorname{tr}(M_vM_u^{m-k-1})` (Rouillier). The
   representation is **checked exactly**: every equation vanishes on :math:`x = r(T)` modulo
   :math:`\chi` and :math:`c\cdot r(T) \equiv T`. Hence the real roots of :math:`\chi` are in
   bijection with the real solutions; their number must equal the signature of :math:`H`.
4. **Certificates.** Each real solution is :math:`x = r(\rho)` with :math:`\rho` a real root of an
   irreducible factor of :math:`\chi` (a ``sympy.CRootOf`` — rational numbers and radicals where
   sympy has them), and an interval box (rational isolating interval of :math:`\rho`, refined to
   width ``1e-30``, pushed through :math:`r` in ``mpmath.iv`` interval arithmetic) that contains the
   solution; the boxes are checked pairwise disjoint, so — the list being complete — each box
   contains exactly one real solution. The loss there is exact too (:math:`f(r(T)) \bmod \chi`).
5. **Classification.** The Hessian at 50 significant digits, restricted to the complement of the
   scaling directions :math:`w_j\circ x`: Morse index = number of negative eigenvalues;
   ``min`` / ``max`` / ``saddle`` / ``degenerate`` (a further zero eigenvalue with no negative and
   positive pair) as :func:`~landscape.symbolic.solve.classify`. Points related by a sign flip or
   a permutation are merged into one listing (``orbit`` = how many gauge-fixed points it stands for).

Limits (:data:`LIMITS`): at most 8 unknowns, a gradient of total degree at most 7, a Bézout bound
(product of the gradient degrees) at most 729, at most 400 standard monomials per system, at most
81 gauge cases (disjoint scalings) or 64 support strata (overlapping scalings: at most 6 unknowns). The Gröbner basis over :math:`\mathbb Q` (sympy) is the bottleneck: ``pgd`` at
``L = 3`` (3 unknowns, Bézout bound 125) takes ~20 s on one core; ``pgd-relaxed`` at ``L = 2``
(Bézout bound 1331) does not finish in minutes, hence the limits. These size limits are checked from
the degrees and the number of unknowns **before** any Gröbner work. A **wall-clock guard** enforces
``LIMITS["seconds"]`` (120 s; ``time_limit=``) while it runs: a ``SIGALRM`` timer interrupts sympy's
Gröbner computation in the main thread, and the budget is checked between gauge cases everywhere; past
it :class:`EnumerationTimeout` is raised, and :func:`~landscape.symbolic.solve.stationary_points`
(``method="auto"``) falls back to multi-start with a note saying the list is not exhaustive and why
— the method never hangs. A gauge-fixed system of positive dimension (a flat valley that is not a scaling orbit)
makes the enumeration *incomplete*: :func:`enumerate_critical_points` then says so
(``exhaustive = False``) and the caller falls back to multi-start search.

Coefficients that are floats (e.g. a random :math:`\Sigma`) are taken as the exact rationals they
represent in binary; the certificates are then exact for that polynomial.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import mpmath
import sympy

from landscape._checks import check_real

__all__ = ["CriticalSet", "Enumeration", "EnumerationLimit", "EnumerationTimeout", "enumerate_critical_points", "polynomial_symmetries", "LIMITS",
           "PolynomialSymmetries"]

LIMITS = {"variables": 8, "degree": 7, "bezout": 729, "quotient": 400, "cases": 81, "strata": 64, "seconds": 120.0}
"""Largest systems :func:`enumerate_critical_points` accepts (unknowns, total degree of the gradient,
product of the gradient degrees, standard monomials of one gauge-fixed system, gauge cases, support
strata) — checked before any Gröbner work — and the wall-clock budget in seconds (``seconds``; the
default of ``time_limit``) enforced while it runs."""

_DIGITS = 50
"""Working precision (significant digits) of the numerical values and the Hessian."""
_BOX_WIDTH = sympy.Rational(1, 10**30)
"""Width to which the isolating interval of each root is refined."""

try:  # python-flint: exact rational matrices and polynomials
    import flint  # type: ignore
except ImportError:  # pragma: no cover - declared dependency
    flint = None


# ---------------------------------------------------------------------- results
@dataclass(frozen=True)
class CriticalSet:
    r"""One critical point (dimension 0) or one critical scaling orbit, modulo the discrete symmetries.

    Attributes:
        values: variable name → float, the gauge-fixed representative.
        exact: variable name → exact algebraic value (string: rational, radical or ``CRootOf``).
        box: variable name → ``(lo, hi)`` rational-interval enclosure (strings of decimals,
            outward-rounded) of the representative.
        loss: the loss at the set (float) and ``loss_exact`` its exact value.
        dimension: dimension of the critical set (number of independent scalings moving it).
        morse_index: number of negative Hessian eigenvalues transverse to the set.
        nullity: further zero eigenvalues (0 for a Morse–Bott set).
        kind: ``min`` / ``max`` / ``saddle`` / ``degenerate``.
        eigenvalues: Hessian eigenvalues transverse to the set (ascending).
        orbit: number of gauge-fixed solutions merged into this listing (sign flips, permutations).
        members: the other gauge-fixed representatives (floats).
        certificate: how the point is certified (polynomial, root interval, separating form, case).
    """

    values: dict[str, float]
    exact: dict[str, str]
    box: dict[str, tuple[str, str]]
    loss: float
    loss_exact: str
    dimension: int
    morse_index: int
    nullity: int
    kind: str
    eigenvalues: tuple[float, ...]
    orbit: int = 1
    members: tuple[dict[str, float], ...] = ()
    certificate: dict = field(default_factory=dict)


@dataclass(frozen=True)
class PolynomialSymmetries:
    """Symmetries of a polynomial detected from its monomials (see module docstring).

    Attributes:
        scalings: integer weight vectors (one per independent scaling).
        flips: 0/1 vectors (a basis of the sign flips).
        permutations: variable permutations ``p`` with ``f(x_p) = f(x)`` (identity excluded).
        disjoint: whether the scalings have disjoint supports (needed for gauge fixing).
    """

    scalings: tuple[tuple[int, ...], ...]
    flips: tuple[tuple[int, ...], ...]
    permutations: tuple[tuple[int, ...], ...]
    disjoint: bool
    permutations_searched: bool = True

    def describe(self, names: Sequence[str]) -> list[str]:
        out = []
        for w in self.scalings:
            out.append("scaling " + ", ".join(f"{names[i]}→t^{w[i]}·{names[i]}" for i in range(len(w)) if w[i]))
        for s in self.flips:
            out.append("sign flip of " + ", ".join(names[i] for i in range(len(s)) if s[i]))
        for p in self.permutations[:6]:
            out.append("permutation " + ", ".join(f"{names[i]}→{names[p[i]]}" for i in range(len(p)) if p[i] != i))
        if len(self.permutations) > 6:
            out.append(f"... {len(self.permutations)} permutations in all")
        return out


@dataclass(frozen=True)
class Enumeration:
    """Result of :func:`enumerate_critical_points`.

    Attributes:
        sets: the critical sets, sorted by loss.
        exhaustive: True when the list is proven complete (every gauge system zero-dimensional and
            every count checked); False with ``reason`` otherwise.
        certified: True when every listed point carries an exact certificate.
        method: ``"groebner-rur"``.
        reason: why the enumeration is not exhaustive (empty when it is).
        symmetries: the detected :class:`PolynomialSymmetries`.
        counts: per gauge case, ``(complex solutions with multiplicity, distinct complex, distinct real)``.
    """

    sets: tuple[CriticalSet, ...]
    exhaustive: bool
    certified: bool
    method: str
    reason: str
    symmetries: PolynomialSymmetries
    counts: dict[str, tuple[int, int, int]]


class EnumerationLimit(ValueError):
    """The system is outside :data:`LIMITS` (the message says which limit)."""


class EnumerationTimeout(EnumerationLimit):
    """The enumeration ran past its wall-clock budget (``time_limit``) and was stopped."""


@contextlib.contextmanager
def _wall_clock(seconds: float | None):
    """Yield a ``check()`` that raises :class:`EnumerationTimeout` once ``seconds`` have passed.

    In the main thread a ``SIGALRM`` timer (``signal.setitimer``) also interrupts a long sympy Gröbner
    computation in the middle (pure Python: the handler runs between bytecodes); the previous handler
    and timer are restored on exit. Elsewhere only the checks between steps apply.
    """
    if seconds is None:
        yield lambda where="": None
        return
    deadline = time.monotonic() + seconds
    message = (f"the enumeration ran past its time limit of {seconds:g} s (LIMITS['seconds'] / time_limit) "
               "and was stopped")

    def check(where: str = "") -> None:
        if time.monotonic() > deadline:
            raise EnumerationTimeout(message + (f" during {where}" if where else ""))

    use_alarm = (threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer")
                 and signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0))
    if not use_alarm:
        yield check
        return

    def on_alarm(signum: int, frame: object) -> None:
        raise EnumerationTimeout(message + " (interrupted)")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 1e-3))
    try:
        yield check
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# ---------------------------------------------------------------------- helpers
def _rationalize(expr: sympy.Expr, variables: Sequence[sympy.Symbol]) -> sympy.Poly:
    p = sympy.Poly(sympy.expand(expr), *variables)
    terms = []
    for mon, c in p.terms():
        if c.is_Rational:
            terms.append((mon, c))
        elif c.is_Float:
            terms.append((mon, sympy.Rational(c)))
        else:
            cc = sympy.nsimplify(c, rational=False)
            if not cc.is_Rational:
                raise EnumerationLimit(f"coefficient {c} is not a rational number")
            terms.append((mon, cc))
    return sympy.Poly.from_dict(dict(terms), *variables, domain="QQ")


def _nullspace_int(E: list[list[int]], k: int) -> list[tuple[int, ...]]:
    if not E:
        return [tuple(int(i == j) for j in range(k)) for i in range(k)]
    M = sympy.Matrix(E)
    out = []
    for v in M.nullspace():
        den = sympy.ilcm(*[sympy.fraction(x)[1] for x in v]) if len(v) else 1
        iv = [int(x * den) for x in v]
        g = math.gcd(*iv) or 1
        iv = [x // g for x in iv]
        first = next(x for x in iv if x)
        if first < 0:
            iv = [-x for x in iv]
        out.append(tuple(iv))
    return out


def _nullspace_gf2(E: list[list[int]], k: int) -> list[tuple[int, ...]]:
    rows = [[e % 2 for e in r] for r in E]
    piv_cols = []
    r = 0
    rows = [row[:] for row in rows]
    for c in range(k):
        p = next((i for i in range(r, len(rows)) if rows[i][c]), None)
        if p is None:
            continue
        rows[r], rows[p] = rows[p], rows[r]
        for i in range(len(rows)):
            if i != r and rows[i][c]:
                rows[i] = [(a + b) % 2 for a, b in zip(rows[i], rows[r])]
        piv_cols.append(c)
        r += 1
    free = [c for c in range(k) if c not in piv_cols]
    out = []
    for fc in free:
        v = [0] * k
        v[fc] = 1
        for i, pc in enumerate(piv_cols):
            if rows[i][fc]:
                v[pc] = 1
        out.append(tuple(v))
    return out


def polynomial_symmetries(poly: sympy.Poly, max_permutations: int = 5040) -> PolynomialSymmetries:
    """Scalings, sign flips and variable permutations of ``poly`` (see module docstring, step 1).

    Args:
        poly: a sympy Poly.
        max_permutations: permutations are searched only when the candidate count (product of the
            factorials of the classes of variables with equal coefficient profiles) is at most this.
    """
    k = len(poly.gens)
    terms = dict(poly.terms())
    E = [list(m) for m in terms if any(m)]
    scal = _nullspace_int(E, k)
    # RREF basis of the rational nullspace; supports disjoint?
    if scal:
        R = sympy.Matrix(scal).rref()[0]
        scal = []
        for i in range(R.rows):
            row = list(R.row(i))
            if not any(row):
                continue
            den = sympy.ilcm(*[sympy.fraction(x)[1] for x in row])
            iv = [int(x * den) for x in row]
            g = math.gcd(*iv) or 1
            scal.append(tuple(x // g for x in iv))
    supports = [frozenset(i for i, x in enumerate(w) if x) for w in scal]
    disjoint = all(not (a & b) for a, b in itertools.combinations(supports, 2))
    flips = _nullspace_gf2(E, k)
    # permutations: classes of variables with equal (exponent, coefficient) profiles
    def profile(i: int) -> tuple:
        return tuple(sorted((m[i], tuple(sorted(m)), str(c)) for m, c in terms.items()))

    classes: dict[tuple, list[int]] = {}
    for i in range(k):
        classes.setdefault(profile(i), []).append(i)
    count = 1
    for c in classes.values():
        count *= math.factorial(len(c))
    perms: list[tuple[int, ...]] = []
    searched = count <= max_permutations
    if searched and count > 1:
        groups = list(classes.values())
        for choice in itertools.product(*[itertools.permutations(g) for g in groups]):
            p = list(range(k))
            for g, img in zip(groups, choice):
                for a, b in zip(g, img):
                    p[a] = b
            if p == list(range(k)):
                continue
            ok = True
            for m, c in terms.items():
                # f(x_p) : monomial prod x_{p(i)}^{m_i} has exponent m' with m'[p(i)] = m[i]
                m2 = [0] * k
                for i in range(k):
                    m2[p[i]] = m[i]
                if terms.get(tuple(m2)) != c:
                    ok = False
                    break
            if ok:
                perms.append(tuple(p))
    return PolynomialSymmetries(tuple(scal), tuple(flips), tuple(perms), disjoint, searched)


def _lm(p: sympy.Poly) -> tuple[int, ...]:
    from sympy.polys.orderings import grevlex

    return max(p.monoms(), key=grevlex)


def _hilbert_dimension(lms: list[tuple[int, ...]], k: int) -> int:
    """Largest size of a set of variables no leading monomial is supported on."""
    supports = [frozenset(i for i, e in enumerate(m) if e) for m in lms]
    for size in range(k, -1, -1):
        for S in itertools.combinations(range(k), size):
            s = set(S)
            if not any(sup <= s for sup in supports):
                return size
    return 0


def _standard_monomials(lms: list[tuple[int, ...]], k: int, limit: int) -> list[tuple[int, ...]]:
    def divisible(m: tuple[int, ...]) -> bool:
        return any(all(a >= b for a, b in zip(m, l)) for l in lms)

    start = (0,) * k
    if divisible(start):
        return []
    seen = {start}
    frontier = [start]
    while frontier:
        nxt = []
        for m in frontier:
            for i in range(k):
                m2 = m[:i] + (m[i] + 1,) + m[i + 1:]
                if m2 not in seen and not divisible(m2):
                    seen.add(m2)
                    nxt.append(m2)
        if len(seen) > limit:
            raise EnumerationLimit(f"more than {limit} standard monomials in one gauge-fixed system")
        frontier = nxt
    return sorted(seen, key=lambda m: (sum(m), m))


def _fq(x: sympy.Rational) -> "flint.fmpq":
    x = sympy.Rational(x)
    return flint.fmpq(int(x.p), int(x.q))


def _descartes(coeffs: list) -> int:
    signs = [c > 0 for c in coeffs if c != 0]
    return sum(1 for a, b in zip(signs, signs[1:]) if a != b)


def _signature(H: "flint.fmpq_mat") -> int:
    cp = H.charpoly()  # fmpq_poly, real-rooted
    c = [cp[i] for i in range(cp.degree() + 1)]
    pos = _descartes(c)
    neg = _descartes([x * (-1) ** i for i, x in enumerate(c)])
    return pos - neg


def _poly_to_sympy(p: "flint.fmpq_poly", T: sympy.Symbol) -> sympy.Poly:
    return sympy.Poly([sympy.Rational(int(c.p), int(c.q)) for c in reversed(p.coeffs())] or [0], T, domain="QQ")


def _compose_mod(poly: sympy.Poly, r: list, chi: "flint.fmpq_poly") -> "flint.fmpq_poly":
    """``poly(r_1(T), ..., r_k(T)) mod chi`` in flint arithmetic."""
    k = len(r)
    powers: list[dict[int, object]] = [{0: flint.fmpq_poly([1])} for _ in range(k)]

    def pw(i: int, e: int) -> object:
        if e not in powers[i]:
            powers[i][e] = (pw(i, e - 1) * r[i]) % chi
        return powers[i][e]

    acc = flint.fmpq_poly([0])
    for mon, c in poly.terms():
        t = flint.fmpq_poly([_fq(c)])
        for i, e in enumerate(mon):
            if e:
                t = (t * pw(i, e)) % chi
        acc += t
    return acc % chi


# ---------------------------------------------------------------------- one zero-dimensional system
@dataclass
class _RealSolution:
    exact: list[sympy.Expr]
    values: list[mpmath.mpf]
    box: list[tuple[sympy.Rational, sympy.Rational]]
    loss_exact: sympy.Expr
    certificate: dict


def _solve_zero_dim(polys: list[sympy.Poly], variables: list[sympy.Symbol], loss: sympy.Poly,
                    seed: int) -> tuple[list[_RealSolution] | None, tuple[int, int, int], int]:
    """All real solutions of a polynomial system, or None when it is positive-dimensional.

    Returns ``(solutions | None, (D, distinct complex, distinct real), hilbert dimension)``.
    """
    k = len(variables)
    polys = [p for p in polys if not p.is_zero]
    if k == 0:
        ok = all(p.is_zero for p in polys)
        if not ok:
            return [], (0, 0, 0), 0
        val = loss.as_expr()
        return [_RealSolution([], [], [], sympy.nsimplify(val), {"type": "exact", "note": "no unknowns left"})], (1, 1, 1), 0
    G = sympy.groebner([p.as_expr() for p in polys], *variables, order="grevlex", domain="QQ")
    if list(G.exprs) == [1]:
        return [], (0, 0, 0), -1
    gpolys = [sympy.Poly(g, *variables, domain="QQ") for g in G.exprs]
    lms = [_lm(p) for p in gpolys]
    dim = _hilbert_dimension(lms, k)
    if dim > 0:
        return None, (0, 0, 0), dim
    B = _standard_monomials(lms, k, LIMITS["quotient"])
    D = len(B)
    index = {m: i for i, m in enumerate(B)}

    from sympy.polys.domains import QQ
    from sympy.polys.orderings import grevlex
    from sympy.polys.rings import ring

    R = ring(variables, QQ, grevlex)[0]
    Gr = [R.from_dict(dict(p.terms())) for p in gpolys]
    Mx = []
    for i in range(k):
        cols = [[flint.fmpq(0)] * D for _ in range(D)]
        for j, b in enumerate(B):
            m2 = b[:i] + (b[i] + 1,) + b[i + 1:]
            if m2 in index:
                cols[j][index[m2]] = flint.fmpq(1)
                continue
            for mon, c in R.from_dict({m2: QQ(1)}).rem(Gr).terms():
                cols[j][index[mon]] = flint.fmpq(int(c.numerator), int(c.denominator))
        Mx.append(flint.fmpq_mat(D, D, [cols[j][r_] for r_ in range(D) for j in range(D)]))
    # multiplication matrices of the basis monomials, traces
    Mb: dict[tuple[int, ...], object] = {B[0]: flint.fmpq_mat(D, D, [int(i == j) for i in range(D) for j in range(D)])}
    for b in B[1:]:
        i = next(i for i, e in enumerate(b) if e)
        prev = b[:i] + (b[i] - 1,) + b[i + 1:]
        Mb[b] = Mx[i] * Mb[prev]
    tau = [sum((Mb[b][j, j] for j in range(D)), flint.fmpq(0)) for b in B]
    tau_row = flint.fmpq_mat(1, D, tau)
    rows = [(tau_row * Mb[b]).entries() for b in B]
    H = flint.fmpq_mat(D, D, [x for row in rows for x in row])
    n_complex = H.rank()
    n_real = _signature(H)
    # separating form and rational univariate representation
    e1 = flint.fmpq_mat(D, 1, [int(i == 0) for i in range(D)])
    rng = random.Random(seed)
    for attempt in range(12):
        if attempt == 0:
            c = list(range(1, k + 1))
        else:
            c = [1] + [rng.randint(-3 * (attempt + 1), 3 * (attempt + 1)) or 1 for _ in range(k - 1)]
        Mu = flint.fmpq_mat(D, D)
        for ci, M in zip(c, Mx):
            Mu = Mu + M * ci
        chi = Mu.charpoly()
        chi = flint.fmpq_poly(chi.coeffs())
        g = chi.gcd(chi.derivative())
        f = chi / g if g.degree() > 0 else chi
        f = f / f.leading_coefficient()
        if f.degree() == n_complex:
            break
    else:
        raise EnumerationLimit("no separating linear form found in 12 tries")
    e = f.degree()
    fc = f.coeffs()  # ascending
    w = [e1]
    for _ in range(e):
        w.append(Mu * w[-1])

    def g_of(Mv: object | None) -> "flint.fmpq_poly":
        S = []
        for p in range(e):
            vec = w[p] if Mv is None else Mv * w[p]
            S.append((tau_row * vec)[0, 0])
        coeffs = []
        for kk in range(e):
            coeffs.append(sum((fc[m] * S[m - kk - 1] for m in range(kk + 1, e + 1)), flint.fmpq(0)))
        return flint.fmpq_poly(coeffs)

    g1 = g_of(None)
    gcd_, s_, _t = g1.xgcd(f)
    if gcd_.degree() != 0:
        raise EnumerationLimit("the rational univariate representation is degenerate")
    inv = s_ / gcd_
    r = [(g_of(M) * inv) % f for M in Mx]
    # exact checks: every equation vanishes on r(T) mod f, and c·r(T) = T mod f
    for p in polys:
        if not _compose_mod(p, r, f).is_zero():
            raise ArithmeticError("rational univariate representation failed its exact check")
    lin = flint.fmpq_poly([0])
    for ci, ri in zip(c, r):
        lin += ri * ci
    if not ((lin - flint.fmpq_poly([0, 1])) % f).is_zero():
        raise ArithmeticError("the separating form does not invert the representation")
    fl = _compose_mod(loss, r, f)
    # real roots, factor by factor; each coordinate also as a root of an irreducible factor of the
    # characteristic polynomial of its multiplication matrix (its minimal polynomial: radicals when
    # the degree is <= 2, a CRootOf otherwise)
    T = sympy.Symbol("T")
    X = sympy.Symbol("x")
    coord_factors = [[fac for fac, _ in flint.fmpq_poly(M.charpoly().coeffs()).factor()[1]] for M in Mx]
    sols: list[_RealSolution] = []
    _, factors = f.factor()
    for q, _mult in factors:
        qs = _poly_to_sympy(q, T)
        roots = qs.real_roots()
        if not roots:
            continue
        ivals = qs.intervals(eps=_BOX_WIDTH, sqf=True)
        rq = [_poly_to_sympy(ri % q, T) for ri in r]
        lq = _poly_to_sympy(fl % q, T)
        for rho, (a, b) in zip(roots, ivals):
            exact = [_algebraic(ri, rho, T) for ri in rq]
            mpmath.mp.dps = _DIGITS + 10
            rv = mpmath.mpf(sympy.N(rho, _DIGITS + 10))
            vals = [_horner(ri, rv) for ri in rq]
            box = []
            for ri in rq:
                lo, hi = _interval_image(ri, a, b)
                box.append((lo, hi))
            for i in range(k):
                mp_exact = _coordinate_root(coord_factors[i], r[i] % q, q, box[i], X)
                if mp_exact is not None:
                    exact[i] = mp_exact
            sols.append(_RealSolution(exact, vals, box, _algebraic(lq, rho, T), {
                "type": "rational univariate representation",
                "minimal_polynomial": str(qs.as_expr()),
                "root_interval": [str(a), str(b)],
                "separating_form": [int(x) for x in c],
            }))
    if len(sols) != n_real:
        raise ArithmeticError(f"real root count {len(sols)} does not match the Hermite signature {n_real}")
    return sols, (D, n_complex, n_real), 0


def _coordinate_root(candidates: list, r: "flint.fmpq_poly", q: "flint.fmpq_poly", box: tuple,
                     X: sympy.Symbol) -> sympy.Expr | None:
    """The coordinate ``r(ρ)`` (``q(ρ) = 0``) as a root of the candidate minimal polynomial ``p`` with
    ``p(r(T)) ≡ 0 mod q`` (exact), picked by the isolating interval that meets its box."""
    for p in candidates:
        acc = flint.fmpq_poly([0])
        for c in reversed(p.coeffs()):
            acc = (acc * r + flint.fmpq_poly([c])) % q
        if not acc.is_zero():
            continue
        ps = _poly_to_sympy(p, X)
        if ps.degree() == 1:
            return -ps.nth(0) / ps.nth(1)
        ivals = ps.intervals(eps=_BOX_WIDTH, sqf=True)
        lo, hi = box
        hits = [j for j, (a, b) in enumerate(ivals)
                if mpmath.mpf(a.p) / a.q <= hi + abs(hi) * mpmath.mpf(2) ** -150 + mpmath.mpf(2) ** -300
                and lo - abs(lo) * mpmath.mpf(2) ** -150 - mpmath.mpf(2) ** -300 <= mpmath.mpf(b.p) / b.q]
        if len(hits) == 1:
            return ps.real_roots()[hits[0]]
        return None
    return None


def _algebraic(p: sympy.Poly, rho: sympy.Expr, T: sympy.Symbol) -> sympy.Expr:
    if p.degree() <= 0:
        return p.as_expr() if not p.is_zero else sympy.Integer(0)
    val = p.as_expr().subs(T, rho)
    if isinstance(rho, sympy.CRootOf):
        return val
    return sympy.nsimplify(sympy.radsimp(sympy.expand(val)))


def _horner(p: sympy.Poly, x: mpmath.mpf) -> mpmath.mpf:
    acc = mpmath.mpf(0)
    for c in p.all_coeffs():
        acc = acc * x + mpmath.mpf(sympy.Rational(c).p) / mpmath.mpf(sympy.Rational(c).q)
    return acc


def _interval_image(p: sympy.Poly, a: sympy.Rational, b: sympy.Rational) -> tuple[mpmath.mpf, mpmath.mpf]:
    """Outward enclosure of ``p([a, b])``: interval Horner evaluation in ``mpmath.iv`` (200 bits);
    the endpoints are binary floats, i.e. exact rationals."""
    iv = mpmath.iv
    iv.prec = 200
    A = iv.mpf(int(a.p)) / iv.mpf(int(a.q))
    Bq = iv.mpf(int(b.p)) / iv.mpf(int(b.q))
    X = iv.mpf([A.a, Bq.b])
    acc = iv.mpf(0)
    for c in p.all_coeffs():
        c = sympy.Rational(c)
        acc = acc * X + iv.mpf(int(c.p)) / iv.mpf(int(c.q))
    return mpmath.mpf(acc.a), mpmath.mpf(acc.b)


def _to_rat(x: mpmath.mpf) -> sympy.Rational:
    x = mpmath.mpf(x)
    m, e = x.man_exp  # |x| = m·2^e (mpmath keeps the sign apart)
    return (-1 if x < 0 else 1) * sympy.Rational(int(m)) * sympy.Rational(2) ** int(e)


# ---------------------------------------------------------------------- driver
def _check_limits(f: sympy.Poly, grads: list[sympy.Poly], k: int) -> None:
    if k > LIMITS["variables"]:
        raise EnumerationLimit(f"{k} unknowns > {LIMITS['variables']} (limit of the exhaustive method)")
    degs = [max(g.total_degree(), 1) for g in grads if not g.is_zero]
    if degs and max(degs) > LIMITS["degree"]:
        raise EnumerationLimit(f"gradient of total degree {max(degs)} > {LIMITS['degree']}")
    bez = math.prod(degs) if degs else 1
    if bez > LIMITS["bezout"]:
        raise EnumerationLimit(f"Bézout bound {bez} of the gradient system > {LIMITS['bezout']}")


def _hessian_eigenvalues(hess: list[list[sympy.Poly]], x: list[mpmath.mpf], dirs: list[list[mpmath.mpf]]) -> list:
    mpmath.mp.dps = _DIGITS + 10
    k = len(x)
    H = mpmath.matrix(k, k)
    for i in range(k):
        for j in range(k):
            H[i, j] = _eval_poly(hess[i][j], x)
    # orthonormal basis of the complement of the scaling directions (Gram-Schmidt on [dirs, e_i])
    basis: list = []
    n_dirs = 0
    for idx, v in enumerate(dirs + [[mpmath.mpf(int(i == j)) for j in range(k)] for i in range(k)]):
        u = mpmath.matrix(v)
        for b in basis:
            u = u - b * (b.T * u)[0]
        nu = mpmath.norm(u)
        if nu > mpmath.mpf(10) ** (-(_DIGITS // 2)):
            basis.append(u / nu)
            n_dirs += idx < len(dirs)
    N = basis[n_dirs:]
    if not N:
        return []
    Nm = mpmath.matrix(k, len(N))
    for c, b in enumerate(N):
        for i in range(k):
            Nm[i, c] = b[i]
    Hq = Nm.T * H * Nm
    Hq = (Hq + Hq.T) / 2
    ev = mpmath.eigsy(Hq, eigvals_only=True)
    return sorted(ev[i] for i in range(len(N)))


def _eval_poly(p: sympy.Poly, x: list[mpmath.mpf]) -> mpmath.mpf:
    acc = mpmath.mpf(0)
    for mon, c in p.terms():
        t = mpmath.mpf(c.p) / c.q
        for xi, e in zip(x, mon):
            if e:
                t *= xi ** e
        acc += t
    return acc


def enumerate_critical_points(expr: sympy.Expr, variables: Sequence[sympy.Symbol], *, seed: int = 0,
                              time_limit: float | None = LIMITS["seconds"]) -> Enumeration:
    r"""All real critical points of the polynomial ``expr`` in ``variables``, certified (module docstring).

    Args:
        expr: a polynomial in ``variables`` with rational (or float, taken exactly) coefficients.
        variables: the unknowns (at most ``LIMITS["variables"]``).
        seed: seed of the random separating forms tried after the first.
        time_limit: wall-clock budget in seconds (``None``: none). The size limits are checked before
            any Gröbner work; the budget while it runs (see :func:`_wall_clock`): past it the
            enumeration stops with :class:`EnumerationTimeout` — it never hangs.

    Returns:
        :class:`Enumeration` — ``exhaustive`` is True only when every gauge-fixed system was
        zero-dimensional and every count matched.

    Raises:
        EnumerationLimit: outside :data:`LIMITS`, overlapping scaling supports, or coefficients that
            are not rational numbers (the message says which).
        EnumerationTimeout: (a subclass) the time limit was reached.
        RuntimeError: python-flint is not installed.
    """
    if flint is None:  # pragma: no cover
        raise RuntimeError("the exhaustive method needs python-flint (pip install python-flint)")
    if time_limit is not None:
        check_real("time_limit", time_limit, positive=True)
    with _wall_clock(time_limit) as check:
        return _enumerate(expr, variables, seed, check)


def _enumerate(expr: sympy.Expr, variables: Sequence[sympy.Symbol], seed: int, check: "Callable[[str], None]"
               ) -> Enumeration:
    variables = list(variables)
    names = [v.name for v in variables]
    k = len(variables)
    f = _rationalize(expr, variables)
    grads = [f.diff(v) for v in variables]
    _check_limits(f, grads, k)
    sym = polynomial_symmetries(f)
    hess = [[g.diff(v) for v in variables] for g in grads]
    reps: list[tuple[str, list, list, list, sympy.Expr, dict]] = []
    counts: dict[str, tuple[int, int, int]] = {}
    reason = ""
    r = len(sym.scalings)
    cases: list[tuple[str, set[int], list[sympy.Expr], bool]] = []
    if not sym.scalings or sym.disjoint:
        if 3 ** r > LIMITS["cases"]:
            raise EnumerationLimit(f"{r} independent scalings give 3^{r} gauge cases > {LIMITS['cases']}")
        for combo in itertools.product(("balanced", "positive", "negative"), repeat=r):
            zero: set[int] = set()
            extra: list[sympy.Expr] = []
            for w, opt in zip(sym.scalings, combo):
                P = [i for i, x in enumerate(w) if x > 0]
                N = [i for i, x in enumerate(w) if x < 0]
                if opt == "balanced":
                    extra.append(sum(w[i] * variables[i] ** 2 for i in P + N))
                elif opt == "positive":
                    zero |= set(N)
                    extra.append(sum(variables[i] ** 2 for i in P) - 1)
                else:
                    zero |= set(P)
                    extra.append(sum(variables[i] ** 2 for i in N) - 1)
            cases.append((",".join(combo) if combo else "all", zero, extra, False))
    else:
        # overlapping scalings: stratify by the support N of x (the coordinates that are non-zero); on
        # (R\0)^N the orbit of x meets the log-balanced slice W_N log|x| = 0 exactly once (W_N Wᵀ_N is
        # invertible on a row basis), i.e. prod_i x_i^(2u_i) = 1 for each row u of a basis of W_N
        if 2 ** k > LIMITS["strata"]:
            raise EnumerationLimit(f"overlapping scalings need 2^{k} support strata > {LIMITS['strata']}")
        for size in range(k + 1):
            for support in itertools.combinations(range(k), size):
                zero = set(range(k)) - set(support)
                WN = sympy.Matrix([[w[i] for i in support] for w in sym.scalings]) if support else sympy.zeros(1, 0)
                extra = []
                if support:
                    for row in WN.rref()[0].tolist():
                        if not any(row):
                            continue
                        den = sympy.ilcm(1, *[sympy.fraction(sympy.nsimplify(x))[1] for x in row])
                        u = [int(sympy.nsimplify(x) * den) for x in row]
                        pos = sympy.Mul(*(variables[i] ** (2 * e) for i, e in zip(support, u) if e > 0))
                        neg = sympy.Mul(*(variables[i] ** (-2 * e) for i, e in zip(support, u) if e < 0))
                        extra.append(pos - neg)
                label = "support{" + ",".join(names[i] for i in support) + "}"
                cases.append((label, zero, extra, bool(support)))
    for label, zero, extra, nonzero in cases:
        check(f"gauge case [{label}]")
        keep = [i for i in range(k) if i not in zero]
        rem = [variables[i] for i in keep]
        subs = {variables[i]: 0 for i in zero}
        if rem:
            gens = rem
            if nonzero:  # Rabinowitsch: z · prod_{i in N} x_i = 1 keeps the support exactly N
                zvar = sympy.Dummy("z")
                gens = rem + [zvar]
                extra = extra + [zvar * sympy.Mul(*rem) - 1]
            system = [sympy.Poly(g.as_expr().subs(subs), *gens, domain="QQ") for g in grads]
            system += [sympy.Poly(sympy.sympify(e).subs(subs), *gens, domain="QQ") for e in extra]
            loss_r = sympy.Poly(f.as_expr().subs(subs), *gens, domain="QQ")
        else:
            system = [sympy.Poly(g.as_expr().subs(subs), sympy.Dummy(), domain="QQ") for g in grads]
            system += [sympy.Poly(sympy.sympify(e).subs(subs), sympy.Dummy(), domain="QQ") for e in extra]
            loss_r = sympy.Poly(f.as_expr().subs(subs), sympy.Dummy(), domain="QQ")
            if any(not p.is_zero for p in system):
                counts[label] = (0, 0, 0)
                continue
            system = []
        sols, cnt, dim = _solve_zero_dim(system, gens if rem else rem, loss_r, seed)
        check(f"gauge case [{label}]")
        counts[label] = cnt
        if sols is None:
            reason = (f"gauge case [{label}]: the gradient ideal has a component of dimension {dim} that is not "
                      "an orbit of the loss's scaling symmetries; its points are not enumerated")
            continue
        for s in sols:
            exact = [sympy.Integer(0)] * k
            vals = [mpmath.mpf(0)] * k
            box = [(mpmath.mpf(0), mpmath.mpf(0))] * k
            for j, i in enumerate(keep):
                exact[i], vals[i], box[i] = s.exact[j], s.values[j], s.box[j]
            reps.append((label, exact, vals, box, s.loss_exact, dict(s.certificate, case=label)))
    # boxes pairwise disjoint (then each holds exactly one solution of the complete list)
    def overlap(b1: list, b2: list) -> bool:
        return all(lo1 <= hi2 and lo2 <= hi1 for (lo1, hi1), (lo2, hi2) in zip(b1, b2))

    for a, b in itertools.combinations(range(len(reps)), 2):
        if overlap(reps[a][3], reps[b][3]):
            raise ArithmeticError("two certificate boxes overlap; refine the isolating intervals")
    # orbits under sign flips and permutations (union-find on the generators)
    parent = list(range(len(reps)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    gens: list = [("flip", s) for s in sym.flips] + [("perm", p) for p in sym.permutations]
    for a, rep in enumerate(reps):
        for kind, g in gens:
            if kind == "flip":
                img = [(-hi, -lo) if g[i] else (lo, hi) for i, (lo, hi) in enumerate(rep[3])]
            else:
                img = [rep[3][g[i]] for i in range(k)]
            hits = [b for b in range(len(reps)) if overlap(img, reps[b][3])]
            if len(hits) == 1:
                parent[find(a)] = find(hits[0])
    groups: dict[int, list[int]] = {}
    for i in range(len(reps)):
        groups.setdefault(find(i), []).append(i)
    out = []
    for members in groups.values():
        def canon(i: int) -> tuple:
            vals = reps[i][2]
            return (sum(1 for v in vals if v < 0), [-float(v) for v in vals])

        members = sorted(members, key=canon)
        label, exact, vals, box, lex, cert = reps[members[0]]
        dirs = []
        support = [i for i in range(k) if exact[i] != 0]
        for w in sym.scalings:
            if any(w[i] for i in support):
                dirs.append([w[i] * vals[i] for i in range(k)])
        dim = sympy.Matrix([[w[i] for i in support] for w in sym.scalings]).rank() if support and dirs else 0
        ev = _hessian_eigenvalues(hess, vals, dirs)
        scale = max([mpmath.mpf(1)] + [abs(e) for e in ev])
        tol = scale * mpmath.mpf(10) ** (-(_DIGITS - 15))
        neg = sum(1 for e in ev if e < -tol)
        zer = sum(1 for e in ev if abs(e) <= tol)
        pos = len(ev) - neg - zer
        kind = "saddle" if neg and pos else ("degenerate" if zer or not ev else ("min" if pos else "max"))
        loss_val = _eval_poly(f, vals)
        out.append(CriticalSet(
            values={n: float(v) for n, v in zip(names, vals)},
            exact={n: str(e) for n, e in zip(names, exact)},
            box={n: (mpmath.nstr(lo, 20), mpmath.nstr(hi, 20)) for n, (lo, hi) in zip(names, box)},
            loss=float(loss_val), loss_exact=str(lex), dimension=dim, morse_index=neg, nullity=zer, kind=kind,
            eigenvalues=tuple(float(e) for e in ev), orbit=len(members),
            members=tuple({n: float(v) for n, v in zip(names, reps[i][2])} for i in members[1:]),
            certificate=dict(cert, box_exact={n: [str(_to_rat(lo)), str(_to_rat(hi))] for n, (lo, hi) in zip(names, box)}),
        ))
    out.sort(key=lambda c: (c.loss, c.morse_index))
    return Enumeration(tuple(out), exhaustive=not reason, certified=True, method="groebner-rur", reason=reason,
                       symmetries=sym, counts=counts)
