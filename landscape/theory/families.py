r"""Parameter families: named sympy symbols ↦ full transformer weights.

A :class:`Family` is a map :math:`\theta(s_1, \dots, s_k)` from a few scalars (per-layer step sizes
``a0, a1, ...``, scales ``b0, c0, ...``) into the full parameter space of a :class:`~landscape.core.model.ModelSpec`.
It is written once, in sympy (each parameter a ``sympy.Matrix`` whose entries are expressions in
the symbols; parameters it does not name are zero), and compiled to torch with ``lambdify`` so the
same object serves the symbolic layer (exact losses), the numerical layer (gradients normal to the
family) and the distance layer (projection of trained weights). The claims it encodes have the form
*"the family holds stationary points of the in-context loss"*: :math:`\inf_{\theta \in S}\lVert\nabla f(\theta)\rVert = 0`
with the gradient over the entries of the paper's parameterisation (Ahn et al. Thm 3: the blocks
:math:`A_l`; Thm 4: :math:`A_l, B_l`; Cheng et al.: the blocks the family uses) — ``landscape verify
--mask blocks``; over **all** entries is a stronger question (``--mask all``).

Built-ins (:func:`get_family`, context :class:`Problem`):

============== =======================================================================================
``pgd``          Ahn et al. 2023, Thm 3: :math:`P_l = \mathrm{diag}(0, 1)`, :math:`Q_l = -\mathrm{diag}(a_l\Sigma^{-1}, 0)`
``pgd-relaxed``  Ahn et al. 2023, Thm 4: :math:`P_l = \mathrm{diag}(b_l I, 1)`, :math:`Q_l = -\mathrm{diag}(a_l\Sigma^{-1}, 0)`
``pgd-full``     Ahn et al. 2023, Thm 1: one layer, :math:`Q = -\mathrm{diag}(A, 0)` with a full symmetric ``A``
``pgd-identity`` control: :math:`Q_l = -\mathrm{diag}(a_l I, 0)` — *not* stationary when :math:`\Sigma \ne I`
``fgd``          Cheng et al. 2024, sparse value: :math:`V_l = \mathrm{diag}(0, r_l)`, :math:`B_l = b_l\Sigma^{-1/2}`, :math:`C_l = c_l\Sigma^{-1/2}`
``fgd-full``     Cheng et al. 2024, full value: additionally :math:`V_l = \mathrm{diag}(a_l I, r_l)`
``fgd-identity`` control: as ``fgd`` with :math:`B_l = b_l I`, :math:`C_l = c_l I`
============== =======================================================================================

Multi-head kernel problems get one set of symbols per head (``r0h1`` = layer 0, head 1). A user
family is a Python function ``f(problem) -> dict[str, sympy.Matrix]`` (see :func:`load_family`).
"""

from __future__ import annotations

import importlib.util
import keyword
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import sympy
import torch

from landscape._checks import check_int
from landscape.core.kernels import INVARIANTS, Kernel, get_kernel
from landscape.core.model import HeadSpec, ModelSpec, flatten_params, param_shapes
from landscape.core.tasks import check_covariance, sqrtm_psd

__all__ = [
    "Problem",
    "Symmetry",
    "Family",
    "get_family",
    "known_families",
    "load_family",
    "family_from_function",
    "is_family_file",
    "check_stored_family",
    "family_file_declaration",
    "FAMILY_ATTENTION",
    "FAMILY_PRIOR",
    "PRIORS",
    "RESERVED_SYMBOL_NAMES",
    "RESERVED_SYMBOL_PATTERN",
]


@dataclass(frozen=True)
class Problem:
    r"""The setting a family lives in.

    Attributes:
        d: covariate dimension.
        layers: number of layers ``L``.
        n: context length (used by losses, not by the weights).
        sigma: covariate covariance :math:`\Sigma` (``None`` = identity).
        attention: ``"linear"`` (P, Q heads) or ``"kernel"`` (V, B, C heads).
        activations: one activation per head of a kernel model.
        heads: number of heads of a linear-attention model.
    """

    d: int
    layers: int
    n: int = 10
    sigma: torch.Tensor | None = None
    attention: str = "kernel"
    activations: tuple[Kernel | str, ...] = ("exp",)
    heads: int = 1

    def __post_init__(self) -> None:
        for name in ("d", "layers", "n", "heads"):
            check_int(f"Problem.{name}", getattr(self, name), minimum=1)
        if self.attention not in ("linear", "kernel"):
            raise ValueError(f"Problem.attention must be 'linear' or 'kernel', got {self.attention!r}")
        if isinstance(self.activations, (str, Kernel)):
            object.__setattr__(self, "activations", (self.activations,))
        object.__setattr__(self, "activations", tuple(get_kernel(a) for a in self.activations))
        if not self.activations:
            raise ValueError("Problem.activations needs at least one activation")
        if self.sigma is not None:
            object.__setattr__(self, "sigma", check_covariance(self.sigma, self.d).to(torch.float64))

    @property
    def spec(self) -> ModelSpec:
        """The architecture the family's weights belong to."""
        if self.attention == "linear":
            return ModelSpec.linear(self.d, self.layers, self.heads)
        return ModelSpec.kernel(self.d, self.layers, list(self.activations))

    @property
    def num_heads(self) -> int:
        return self.heads if self.attention == "linear" else len(self.activations)

    def sigma_power(self, power: float) -> sympy.Matrix:
        r""":math:`\Sigma^{p}` as a sympy matrix (exact identity when :math:`\Sigma = I`)."""
        if self.sigma is None:
            return sympy.eye(self.d)
        M = sqrtm_psd(self.sigma, power) if power not in (1, 1.0) else self.sigma
        return sympy.Matrix(M.tolist())

    def describe(self) -> str:
        acts = ",".join(a.name for a in self.activations)
        body = "linear attention" if self.attention == "linear" else f"kernel attention [{acts}]"
        sig = "Σ = I" if self.sigma is None else "anisotropic Σ"
        return f"L={self.layers} {body}, d={self.d}, n={self.n}, {sig}"


@dataclass(frozen=True)
class Symmetry:
    r"""A one-parameter group of weight transformations that leaves the model's function unchanged.

    Attributes:
        name: e.g. ``"PQ-scale@layer0"``.
        act: ``act(params, t) -> params`` for a scalar tensor ``t`` (``t = 0`` is the identity).
    """

    name: str
    act: Callable[[Mapping[str, torch.Tensor], torch.Tensor], dict[str, torch.Tensor]]


def _scale_pair(first: str, second: str, power: float = 1.0
                ) -> Callable[[Mapping[str, torch.Tensor], torch.Tensor], dict[str, torch.Tensor]]:
    def act(params: Mapping[str, torch.Tensor], t: torch.Tensor) -> dict[str, torch.Tensor]:
        out = dict(params)
        out[first] = params[first] * torch.exp(power * t)
        out[second] = params[second] * torch.exp(-t)
        return out

    return act


_HOMOGENEITY_POINTS = ((0.7, 0.3, 1.1), (-1.3, 0.8, 0.5), (2.1, 1.7, 2.9), (0.4, 2.2, 0.6))
"""Fixed probe values (s, |u|², |w|²) of the homogeneity test (deterministic: a property of the kernel)."""


def _homogeneity_degree(kern: Kernel, side: str) -> float | None:
    r"""Degree ``k`` with :math:`\tilde h(tu, w) = t^k\tilde h(u, w)` for all ``t > 0`` (``side="u"``; ``"w"`` for
    the second argument), or ``None``. Kernels that read :math:`|u - w|^2` are never homogeneous.

    Checked on fixed probe points for ``t ∈ {1/2, 2, 3.7}`` to relative accuracy 1e-10; ``k`` is
    estimated from the first probe with :math:`\tilde h \ne 0`.
    """
    import math

    s_, r2_, uu_, ww_ = INVARIANTS
    if kern.normalised or r2_ in kern.expr.free_symbols:
        return None
    fn = sympy.lambdify((s_, uu_, ww_), kern.expr, modules="math")

    def h(s: float, uu: float, ww: float, t: float) -> float:
        return float(fn(t * s, t * t * uu, ww) if side == "u" else fn(t * s, uu, t * t * ww))

    try:
        base = [(p, h(*p, 1.0)) for p in _HOMOGENEITY_POINTS]
        ref = next(((p, v) for p, v in base if abs(v) > 1e-12), None)
        if ref is None:
            return None
        k = math.log(abs(h(*ref[0], 2.0) / ref[1])) / math.log(2.0)
        for p, v in base:
            for t in (0.5, 2.0, 3.7):
                if abs(h(*p, t) - t**k * v) > 1e-10 * max(1.0, abs(v) * t**k):
                    return None
    except (ValueError, ZeroDivisionError, OverflowError, TypeError):
        return None
    return round(k, 12)


def default_symmetries(spec: ModelSpec) -> tuple[Symmetry, ...]:
    r"""Scalings every model of ``spec`` is invariant under.

    * linear heads: :math:`P \mapsto e^tP,\ Q \mapsto e^{-t}Q` (Ahn et al.);
    * kernel heads with a dot-product activation (a function of :math:`s = u^\top w` only):
      :math:`B \mapsto e^tB,\ C \mapsto e^{-t}C`;
    * kernel heads whose activation is positively homogeneous of degree ``k`` in its second argument,
      :math:`\tilde h(u, tw) = t^k\tilde h(u, w)` for ``t > 0`` (linear and ReLU: ``k = 1``; :math:`s^k`):
      :math:`V \mapsto e^{kt}V,\ C \mapsto e^{-t}C`; when the activation is not a function of ``s`` alone
      but homogeneous in its first argument, likewise :math:`V \mapsto e^{kt}V,\ B \mapsto e^{-t}B`.
      (For ReLU this is :math:`(V, C) \to (V/t, tC)` — with the first rule equivalently
      :math:`(V, B) \to (V/t, tB)`.) Homogeneity is tested numerically on fixed probe points
      (:func:`_homogeneity_degree`).
    """
    out = []
    for l in range(spec.layers):
        for h, head in enumerate(spec.heads):
            k = lambda name: spec.key(l, h, name)  # noqa: E731
            if head.kind == "linear":
                out.append(Symmetry(f"PQ-scale@layer{l}.head{h}", _scale_pair(k("P"), k("Q"))))
                continue
            kern = head.kernel
            dot = kern.normalised or kern.expr.free_symbols <= {INVARIANTS[0]}
            if dot:
                out.append(Symmetry(f"BC-scale@layer{l}.head{h}", _scale_pair(k("B"), k("C"))))
            kw = _homogeneity_degree(kern, "w")
            if kw is not None and kw != 0:
                out.append(Symmetry(f"VC-scale@layer{l}.head{h}", _scale_pair(k("V"), k("C"), kw)))
            ku = _homogeneity_degree(kern, "u")
            if not dot and ku is not None and ku != 0:
                out.append(Symmetry(f"VB-scale@layer{l}.head{h}", _scale_pair(k("V"), k("B"), ku)))
    return tuple(out)


RESERVED_SYMBOL_NAMES: tuple[str, ...] = ("d", "n")
"""Names a family symbol may not take: the problem's dimension ``d`` and context length ``n``, which
the symbolic layer keeps as the symbols :data:`~landscape.symbolic.whitened.D_SYMBOL` and
:data:`~landscape.symbolic.whitened.N_SYMBOL` (a family symbol of that name would be merged with them)."""

PRIORS: tuple[str, ...] = ("identity", "inverse")
r"""Priors a family may declare: :math:`w^* \sim N(0, I)` or :math:`N(0, \Sigma^{-1})`."""

RESERVED_SYMBOL_PATTERN = re.compile(r"lambda\d+|m__.*|_.*|sigma_eps2")
"""Further names the symbolic layer uses internally: the label-noise variance ``sigma_eps2``
(:data:`~landscape.symbolic.whitened.NOISE_SYMBOL`), the eigenvalues ``lambda1, lambda2, ...`` of a
symbolic spectrum (:func:`~landscape.symbolic.loss.family_loss` with ``spectrum="symbolic"``), the
label-exact coefficients ``m__A__B`` and the data variables ``_xi.., _eta.., _eps..`` of the
expansion route (every name starting with ``_`` is reserved)."""


def _check_symbol_names(family: str, symbols: set[sympy.Symbol]) -> None:
    """Family symbols have distinct identifier names that do not clash with the problem's.

    Raises:
        ValueError: a name that is not an identifier, is reserved, or is shared by two symbols.
    """
    by_name: dict[str, list[sympy.Symbol]] = {}
    for sym in symbols:
        if not isinstance(sym, sympy.Symbol):
            raise ValueError(f"family {family!r}: {sym!r} is not a sympy Symbol")
        by_name.setdefault(sym.name, []).append(sym)
    for name, syms in sorted(by_name.items()):
        if len(syms) > 1:
            shown = " and ".join(sympy.srepr(s) for s in sorted(syms, key=sympy.srepr))
            raise ValueError(f"family {family!r}: two different symbols are both named {name!r} ({shown}, which "
                             "differ in their assumptions); give every symbol its own name")
        if not name.isidentifier() or keyword.iskeyword(name):
            raise ValueError(f"family {family!r}: symbol name {name!r} is not an identifier or is a "
                             "Python keyword; use names like a0, b1h0")
        if name in RESERVED_SYMBOL_NAMES:
            what = "dimension" if name == "d" else "context length"
            raise ValueError(f"family {family!r}: symbol name {name!r} is reserved: it is the problem's {what} in "
                             f"the symbolic layer and would be merged with it; rename it, e.g. {name}0")
        if RESERVED_SYMBOL_PATTERN.fullmatch(name):
            raise ValueError(f"family {family!r}: symbol name {name!r} is reserved: the symbolic layer uses "
                             "d, n, sigma_eps2, lambda<k>, m__* and names starting with '_' for the problem's own symbols; "
                             "rename it, e.g. a0")


def _natural_key(sym: sympy.Symbol) -> tuple:
    parts = re.split(r"(\d+)", sym.name)
    return tuple(int(p) if p.isdigit() else p for p in parts)


@dataclass(frozen=True)
class Family:
    r"""A parameter family :math:`S = \{\theta(s) : s \in \mathbb R^k\}` in a model's weight space.

    Attributes:
        name: registry name (``"pgd"``) or the user's.
        statement: the paper statement the family encodes.
        problem: the :class:`Problem` (d, L, Σ, activations) it is built for.
        blocks: parameter name → ``sympy.Matrix`` in the symbols; unnamed parameters are zero.
        symbols: the family's free symbols, in a fixed (natural) order.
        symmetries: weight transformations under which the *model* is invariant (used when
            projecting trained weights onto the family).
        prior: the prior of :math:`w^*` the family's statement is about: ``"identity"``
            (:math:`N(0, I)`), ``"inverse"`` (:math:`N(0, \Sigma^{-1})`, Ahn et al. Theorems 3–4) or
            ``None`` (not stated: GP data, or a user family that declares none; read as
            :math:`N(0, I)` on regression data). A user file declares it with ``PRIOR = ...``.
    """

    name: str
    statement: str
    problem: Problem
    blocks: Mapping[str, sympy.Matrix]
    symbols: tuple[sympy.Symbol, ...] = ()
    symmetries: tuple[Symmetry, ...] = ()
    prior: str | None = None
    _compiled: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.prior is not None and self.prior not in PRIORS:
            raise ValueError(f"family {self.name!r}: prior must be one of {', '.join(map(repr, PRIORS))} or None; "
                             f"got {self.prior!r}")
        spec = self.problem.spec
        shapes = param_shapes(spec)
        blocks = {}
        for key, M in self.blocks.items():
            if key not in shapes:
                raise ValueError(
                    f"family {self.name!r}: unknown parameter {key!r} for {spec.describe()}; "
                    f"known: {list(shapes)[:6]}..."
                )
            M = sympy.Matrix(M)
            if M.shape != shapes[key]:
                raise ValueError(f"family {self.name!r}: {key} has shape {M.shape}, expected {shapes[key]}")
            blocks[key] = M
        object.__setattr__(self, "blocks", blocks)
        free = set()
        for M in blocks.values():
            free |= M.free_symbols
        _check_symbol_names(self.name, free | set(self.symbols))
        syms = tuple(self.symbols) if self.symbols else tuple(sorted(free, key=_natural_key))
        missing = free - set(syms)
        if missing:
            raise ValueError(f"family {self.name!r}: blocks use symbols {sorted(map(str, missing))} not declared")
        if not syms:
            raise ValueError(f"family {self.name!r} has no free symbols: it is a single point, not a family")
        object.__setattr__(self, "symbols", syms)
        if not self.symmetries:
            object.__setattr__(self, "symmetries", default_symmetries(spec))
        fns = {}
        for key, M in blocks.items():
            fns[key] = sympy.lambdify(syms, list(M), modules="torch")
        self._compiled.update(fns)

    # ------------------------------------------------------------------ views
    @property
    def spec(self) -> ModelSpec:
        return self.problem.spec

    @property
    def names(self) -> tuple[str, ...]:
        """Symbol names, in order."""
        return tuple(s.name for s in self.symbols)

    @property
    def dim(self) -> int:
        return len(self.symbols)

    def _vector(self, values: Mapping[str, float | torch.Tensor] | torch.Tensor | Sequence[float],
                dtype: torch.dtype, device: torch.device | str | None) -> torch.Tensor:
        if isinstance(values, Mapping):
            unknown = set(values) - set(self.names)
            missing = [n for n in self.names if n not in values]
            if unknown or missing:
                raise ValueError(
                    f"family {self.name!r} takes values for {list(self.names)}; "
                    f"missing {missing}, unknown {sorted(unknown)}"
                )
            vals = [torch.as_tensor(values[n], dtype=dtype, device=device) for n in self.names]
            return torch.stack(vals)
        v = torch.as_tensor(values, dtype=dtype, device=device)
        if v.shape[-1:] != (self.dim,):
            raise ValueError(f"family {self.name!r} needs {self.dim} values {list(self.names)}, got shape {tuple(v.shape)}")
        return v

    def params(
        self,
        values: Mapping[str, float | torch.Tensor] | torch.Tensor | Sequence[float],
        *,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
    ) -> dict[str, torch.Tensor]:
        r"""Full weights :math:`\theta(s)` (differentiable in ``values``; vmappable).

        Args:
            values: symbol name → value, or a vector in :attr:`names` order.
            dtype: dtype of the result when ``values`` are Python numbers.
            device: device likewise.

        Returns:
            A parameter dict with every parameter of :attr:`spec` (zeros where the family says so).

        Raises:
            ValueError: wrong or missing symbol values.
        """
        if isinstance(values, torch.Tensor):
            dtype, device = values.dtype, values.device
        v = self._vector(values, dtype, device)
        comps = [v[..., i] for i in range(self.dim)]
        out = {}
        for key, shape in param_shapes(self.spec).items():
            fn = self._compiled.get(key)
            if fn is None:
                out[key] = torch.zeros(v.shape[:-1] + shape, dtype=v.dtype, device=v.device)
                continue
            entries = fn(*comps)
            ref = comps[0]
            entries = [e if isinstance(e, torch.Tensor) else torch.full_like(ref, float(e)) for e in entries]
            entries = [e.to(ref.dtype) if e.shape == ref.shape else e.expand_as(ref).to(ref.dtype) for e in entries]
            out[key] = torch.stack(entries, dim=-1).reshape(v.shape[:-1] + shape)
        return out

    def flat(self, values: torch.Tensor) -> torch.Tensor:
        """Flat parameter vector :math:`\\theta(s)` (see :func:`landscape.core.model.flatten_params`)."""
        return flatten_params(self.params(values), self.spec)

    def tangent_basis(self, values: torch.Tensor) -> torch.Tensor:
        r"""Jacobian :math:`\partial\theta/\partial s` at ``values``: ``(num_params, dim)``.

        Its columns span the tangent space of the family at :math:`\theta(s)`; the gradient
        component normal to the family is what a stationarity certificate tests.
        """
        v = torch.as_tensor(values)
        return torch.func.jacrev(self.flat)(v)

    def sympy_params(self) -> dict[str, sympy.Matrix]:
        """The family's weights as sympy matrices (zeros included)."""
        return {k: self.blocks.get(k, sympy.zeros(*shape)) for k, shape in param_shapes(self.spec).items()}

    def latex(self) -> str:
        """LaTeX listing of the non-zero blocks."""
        return r",\quad ".join(f"{k.replace('.', r'.')} = {sympy.latex(M)}" for k, M in self.blocks.items())

    def describe(self) -> str:
        return f"{self.name}: {self.statement} [{self.problem.describe()}; symbols {', '.join(self.names)}]"


# ---------------------------------------------------------------------- built-in families
def _embed(block: sympy.Matrix, corner: sympy.Expr | None, D: int) -> sympy.Matrix:
    """``diag(block, corner)`` as a ``D×D`` sympy matrix."""
    M = sympy.zeros(D, D)
    d = block.shape[0]
    M[:d, :d] = block
    if corner is not None:
        M[D - 1, D - 1] = corner
    return M


def _need(problem: Problem, attention: str, name: str) -> None:
    if problem.attention != attention:
        raise ValueError(f"family {name!r} needs {attention} attention, the problem has {problem.attention} attention")


def _pgd_blocks(problem: Problem, name: str, *, relaxed: bool, precond: sympy.Matrix) -> dict[str, sympy.Matrix]:
    _need(problem, "linear", name)
    D, d = problem.d + 1, problem.d
    blocks = {}
    for l in range(problem.layers):
        for h in range(problem.heads):
            suffix = f"{l}" if problem.heads == 1 else f"{l}h{h}"
            a = sympy.Symbol(f"a{suffix}", real=True)
            b = sympy.Symbol(f"b{suffix}", real=True) if relaxed else sympy.Integer(0)
            blocks[f"layer{l}.head{h}.P"] = _embed(b * sympy.eye(d), sympy.Integer(1), D)
            blocks[f"layer{l}.head{h}.Q"] = _embed(-a * precond, None, D)
    return blocks


def pgd(problem: Problem) -> Family:
    """Ahn et al. 2023, Theorem 3: :math:`P_l = \\mathrm{diag}(0,1)`, :math:`Q_l = -\\mathrm{diag}(a_l\\Sigma^{-1}, 0)`."""
    return Family("pgd", "Ahn et al. 2023, Theorem 3: A_l = a_l Σ^{-1} (sparse P, Q) holds stationary points "
                  "(inf over the family of the full gradient norm is 0) for w* ~ N(0, Σ^{-1})",
                  problem, _pgd_blocks(problem, "pgd", relaxed=False, precond=problem.sigma_power(-1)),
                  prior=FAMILY_PRIOR["pgd"])


def pgd_relaxed(problem: Problem) -> Family:
    """Ahn et al. 2023, Theorem 4: :math:`P_l = \\mathrm{diag}(b_l I, 1)`, :math:`Q_l = -\\mathrm{diag}(a_l\\Sigma^{-1}, 0)`."""
    return Family("pgd-relaxed", "Ahn et al. 2023, Theorem 4: A_l = a_l Σ^{-1}, B_l = b_l I (GD++ with a covariate "
                  "transform) holds stationary points", problem,
                  _pgd_blocks(problem, "pgd-relaxed", relaxed=True, precond=problem.sigma_power(-1)),
                  prior=FAMILY_PRIOR["pgd-relaxed"])


def pgd_identity(problem: Problem) -> Family:
    """Control: :math:`Q_l = -\\mathrm{diag}(a_l I, 0)`; stationary only when :math:`\\Sigma = I`."""
    return Family("pgd-identity", "control for Ahn et al. Theorem 3: A_l = a_l I, not stationary for anisotropic Σ",
                  problem, _pgd_blocks(problem, "pgd-identity", relaxed=False, precond=sympy.eye(problem.d)),
                  prior=FAMILY_PRIOR["pgd-identity"])


def pgd_full(problem: Problem) -> Family:
    """Ahn et al. 2023, Theorem 1: one layer, :math:`P = \\mathrm{diag}(0,1)`, :math:`Q = -\\mathrm{diag}(A,0)`, ``A`` symmetric."""
    _need(problem, "linear", "pgd-full")
    if problem.layers != 1 or problem.heads != 1:
        raise ValueError("family 'pgd-full' is the one-layer, one-head family of Ahn et al. Theorem 1 (use --layers 1)")
    d, D = problem.d, problem.d + 1
    A = sympy.zeros(d, d)
    for i in range(d):
        for j in range(i, d):
            A[i, j] = A[j, i] = sympy.Symbol(f"A{i}{j}" if d <= 10 else f"A{i}_{j}", real=True)
    blocks = {"layer0.head0.P": _embed(sympy.zeros(d, d), sympy.Integer(1), D),
              "layer0.head0.Q": _embed(-A, None, D)}
    return Family("pgd-full", "Ahn et al. 2023, Theorem 1: one layer with Q = -diag(A, 0), A symmetric; the optimum "
                  "is A* = ((n+1)/n Σ + tr(Σ)/n I)^{-1} for w* ~ N(0, I)", problem, blocks,
                  prior=FAMILY_PRIOR["pgd-full"])


def _fgd_blocks(problem: Problem, name: str, *, full_value: bool, key_matrix: sympy.Matrix) -> dict[str, sympy.Matrix]:
    _need(problem, "kernel", name)
    D, d = problem.d + 1, problem.d
    H = len(problem.activations)
    blocks = {}
    for l in range(problem.layers):
        for h in range(H):
            suffix = f"{l}" if H == 1 else f"{l}h{h}"
            r = sympy.Symbol(f"r{suffix}", real=True)
            b = sympy.Symbol(f"b{suffix}", real=True)
            c = sympy.Symbol(f"c{suffix}", real=True)
            a = sympy.Symbol(f"a{suffix}", real=True) if full_value else sympy.Integer(0)
            blocks[f"layer{l}.head{h}.V"] = _embed(a * sympy.eye(d), r, D)
            blocks[f"layer{l}.head{h}.B"] = _embed(b * key_matrix, None, D)
            blocks[f"layer{l}.head{h}.C"] = _embed(c * key_matrix, None, D)
    return blocks


def fgd(problem: Problem) -> Family:
    """Cheng et al. 2024, sparse value: :math:`V_l = \\mathrm{diag}(0, r_l)`, :math:`B_l = b_l\\Sigma^{-1/2}`, :math:`C_l = c_l\\Sigma^{-1/2}`."""
    return Family("fgd", "Cheng, Chen, Sra 2024: functional-GD family with sparse value V_l = diag(0, r_l), "
                  "B_l = b_l Σ^{-1/2}, C_l = c_l Σ^{-1/2} holds stationary points for GP data on whitened inputs",
                  problem, _fgd_blocks(problem, "fgd", full_value=False, key_matrix=problem.sigma_power(-0.5)))


def fgd_full(problem: Problem) -> Family:
    """Cheng et al. 2024, full value: :math:`V_l = \\mathrm{diag}(a_l I, r_l)`, keys/queries as :func:`fgd`."""
    return Family("fgd-full", "Cheng, Chen, Sra 2024: functional-GD family with full value V_l = diag(a_l I, r_l), "
                  "B_l = b_l Σ^{-1/2}, C_l = c_l Σ^{-1/2} holds stationary points",
                  problem, _fgd_blocks(problem, "fgd-full", full_value=True, key_matrix=problem.sigma_power(-0.5)))


def fgd_identity(problem: Problem) -> Family:
    """Control: :func:`fgd` with :math:`B_l = b_l I`, :math:`C_l = c_l I`; not stationary when :math:`\\Sigma \\ne I`."""
    return Family("fgd-identity", "control for Cheng et al.: B_l = b_l I, C_l = c_l I, not stationary for anisotropic Σ",
                  problem, _fgd_blocks(problem, "fgd-identity", full_value=False, key_matrix=sympy.eye(problem.d)))


_FAMILIES: dict[str, Callable[[Problem], Family]] = {
    "pgd": pgd,
    "pgd-relaxed": pgd_relaxed,
    "pgd-full": pgd_full,
    "pgd-identity": pgd_identity,
    "fgd": fgd,
    "fgd-full": fgd_full,
    "fgd-identity": fgd_identity,
}

FAMILY_ATTENTION: dict[str, str] = {
    "pgd": "linear", "pgd-relaxed": "linear", "pgd-full": "linear", "pgd-identity": "linear",
    "fgd": "kernel", "fgd-full": "kernel", "fgd-identity": "kernel",
}
"""Which attention each built-in family needs (``linear`` = P, Q heads; ``kernel`` = V, B, C heads)."""

FAMILY_PRIOR: dict[str, str] = {
    "pgd": "inverse", "pgd-relaxed": "inverse", "pgd-identity": "inverse", "pgd-full": "identity",
}
r"""The prior of :math:`w^*` each built-in linear family's statement is about (Ahn et al.: Theorems 3–4
and their control for :math:`N(0, \Sigma^{-1})`, Theorem 1 for :math:`N(0, I)`); kernel families
are about GP data and state none."""


def known_families() -> dict[str, str]:
    """Built-in family names → the statement each encodes (built on a small default problem)."""
    out = {}
    for name, ctor in _FAMILIES.items():
        prob = Problem(d=2, layers=1, attention=FAMILY_ATTENTION[name])
        out[name] = ctor(prob).statement
    return out


def family_from_function(
    fn: Callable[[Problem], Mapping[str, sympy.Matrix]], problem: Problem, name: str | None = None,
    statement: str = "user-defined family", prior: str | None = None,
) -> Family:
    """Wrap a user function ``problem -> {param name: sympy.Matrix}`` as a :class:`Family`.

    ``prior`` is the prior of :math:`w^*` the family is about (:attr:`Family.prior`).

    Raises:
        ValueError: if the function raises, returns something that is not a dict of matrices, or
            names parameters/shapes that do not fit ``problem.spec``.
    """
    name = name or getattr(fn, "__name__", "user")
    try:
        blocks = fn(problem)
    except Exception as exc:  # a user's file: report, do not crash deep inside
        raise ValueError(f"family function {name!r} raised {type(exc).__name__}: {exc}") from exc
    if isinstance(blocks, Family):
        return blocks
    if not isinstance(blocks, Mapping):
        raise ValueError(f"family function {name!r} must return a dict of parameter name -> sympy.Matrix, "
                         f"got {type(blocks).__name__}")
    try:
        blocks = {str(k): sympy.Matrix(v) for k, v in blocks.items()}
    except (TypeError, ValueError, sympy.SympifyError) as exc:
        raise ValueError(f"family function {name!r} returned a value that is not a matrix: {exc}") from None
    doc = (fn.__doc__ or "").strip().splitlines()
    return Family(name, doc[0] if doc and statement == "user-defined family" else statement, problem, blocks,
                  prior=prior)


def is_family_file(name: object) -> bool:
    """Whether ``name`` names a user family file (``path/to/file.py:NAME``) rather than a built-in."""
    return isinstance(name, str) and ":" in name and name.rpartition(":")[0].endswith(".py")


def check_stored_family(name: str | None) -> None:
    """Refuse to build a family named by a *stored* config when that means importing a user file.

    A run store records a user family only as ``file.py:NAME`` (and the file's SHA-256); reading a
    stored run (``landscape plot``, :meth:`landscape.experiment.train.TrainConfig.from_dict`) never imports
    the file, since stored text is never executed. Built-in families are built as usual.

    Raises:
        ValueError: ``name`` is a user family file; the message says how to build it explicitly.
    """
    if is_family_file(name):
        raise ValueError(
            f"the stored config names the user family file {name!r}; a stored run is never read by importing "
            f"code, so build the family explicitly: get_family({name!r}, config.problem()) in Python "
            f"(this runs that file)")


def load_family(path: str, problem: Problem) -> Family:
    """Load ``path/to/file.py:NAME`` — a function ``NAME(problem) -> dict[str, sympy.Matrix]`` — as a family.

    Loading **imports and runs** the file: this is the user running their own code, so it happens
    only when the user names the file (``--family file.py:NAME`` on the command line, a sweep file's
    ``family`` key, or a call of this function / :func:`get_family`). A config read back from a
    run store never does it: the store records the family only as ``file.py:NAME`` plus the file's
    SHA-256 (no code, no expressions that could be evaluated), and a stored config refuses to build
    a user family (:func:`check_stored_family`), naming the explicit call that would. Figures and
    reports that need only stored metrics work without it; the weight heat map of such a run
    (``landscape plot --kind heatmap``) is skipped with that reason.

    The file may declare ``ATTENTION`` and ``PRIOR`` at module level
    (:func:`family_file_declaration`); the family then records the prior (:attr:`Family.prior`)
    and refuses a problem of the other attention.

    The family's symbols must have distinct identifier names, none of them reserved
    (:data:`RESERVED_SYMBOL_NAMES`, :data:`RESERVED_SYMBOL_PATTERN`): a symbol named ``n`` or
    ``d`` would otherwise be merged with the problem's context length or dimension.

    Raises:
        ValueError: missing file, missing ``:NAME``, import errors, or a bad family (see
            :func:`family_from_function` and :class:`Family`).
    """
    mod, attr = _import_family_file(path)
    fn = getattr(mod, attr, None)
    if not callable(fn):
        raise ValueError(f"family file {path.rpartition(':')[0]!r} has no function {attr!r}")
    attention, prior = family_file_declaration(path)
    if attention is not None and attention != problem.attention:
        raise ValueError(f"family {path!r} declares ATTENTION = {attention!r}; the problem has "
                         f"{problem.attention} attention (use --attention {attention})")
    return family_from_function(fn, problem, name=attr, prior=prior)


_FAMILY_MODULES: dict[tuple[str, str], object] = {}
"""User family modules by (resolved path, SHA-256 of the file): a file is run once per content."""


def _import_family_file(path: str) -> tuple[object, str]:
    """Import the file of ``path/to/file.py:NAME`` (once per file content); ``(module, NAME)``."""
    import hashlib

    file, sep, attr = path.rpartition(":")
    if not sep or not file or not attr:
        raise ValueError(f"a user family is given as 'path/to/file.py:NAME', got {path!r}")
    p = Path(file)
    if not p.is_file():
        raise ValueError(f"family file {file!r} does not exist")
    key = (str(p.resolve()), hashlib.sha256(p.read_bytes()).hexdigest())
    if key in _FAMILY_MODULES:
        return _FAMILY_MODULES[key], attr
    spec = importlib.util.spec_from_file_location(f"landscape_user_family_{p.stem}", p)
    if spec is None or spec.loader is None:
        raise ValueError(f"cannot import family file {file!r}")
    mod = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(mod)
    except Exception as exc:
        raise ValueError(f"family file {file!r} failed to import: {type(exc).__name__}: {exc}") from exc
    _FAMILY_MODULES[key] = mod
    return mod, attr


def family_file_declaration(path: str) -> tuple[str | None, str | None]:
    """``(ATTENTION, PRIOR)`` declared at module level by a user family file (``None`` where absent).

    A family file may state the attention its weights belong to (``ATTENTION = "linear"`` or
    ``"kernel"``) and the prior of :math:`w^*` its statement is about (``PRIOR = "identity"`` or
    ``"inverse"``, :attr:`Family.prior`). Reading them imports the file (see :func:`load_family`).

    Raises:
        ValueError: the file cannot be imported, or a declared value is not accepted.
    """
    mod, _ = _import_family_file(path)
    attention = getattr(mod, "ATTENTION", None)
    prior = getattr(mod, "PRIOR", None)
    if attention is not None and attention not in ("linear", "kernel"):
        raise ValueError(f"family file of {path!r}: ATTENTION must be 'linear' or 'kernel', got {attention!r}")
    if prior is not None and prior not in PRIORS:
        raise ValueError(f"family file of {path!r}: PRIOR must be one of {', '.join(map(repr, PRIORS))}, got {prior!r}")
    return attention, prior


def get_family(name: str | Family, problem: Problem) -> Family:
    """A built-in family by name, or a user family ``path.py:NAME``, built for ``problem``.

    Raises:
        ValueError: unknown name (lists the known ones) or a family/problem mismatch.
    """
    if isinstance(name, Family):
        return name
    if not isinstance(name, str):
        raise TypeError(f"family must be a name or a Family, got {type(name).__name__}")
    if name in _FAMILIES:
        return _FAMILIES[name](problem)
    if is_family_file(name):
        return load_family(name, problem)
    raise ValueError(f"unknown family {name!r}; known: {', '.join(_FAMILIES)} or 'path/to/file.py:NAME'")
