r"""Weight symmetries of the in-context transformer, declared once.

A :class:`Symmetry` is a Lie group :math:`G` acting on the weights of one head that leaves
:func:`landscape.core.model.forward` unchanged. It is *declared* (a kind, the parameters it moves,
a degree), and everything else is derived from the declaration:

* the finite action :meth:`Symmetry.act` (Lie-algebra coordinates :math:`t \mapsto \exp(\sum_i t_iX_i)`)
  and :meth:`Symmetry.chart` (a chart of each connected component, used by the projection onto a
  family, :func:`landscape.experiment.distance.project_onto_family`);
* the Lie-algebra generators :meth:`Symmetry.generators`, the tangent vectors
  :math:`\frac{d}{d\varepsilon}\,\exp(\varepsilon X_i)\cdot\theta\,|_{\varepsilon=0}` of the orbit
  (used by the Hessian inertia modulo symmetries, :func:`landscape.numeric.symmetry_generators`,
  and by the symbolic solver, :func:`landscape.symbolic.solve.symmetry_directions`).

Kinds (``D`` = token dimension ``d + 1``):

============== ================================================================================================
``scale``       :math:`\theta_{\rm up} \mapsto c^{k}\theta_{\rm up},\ \theta_{\rm down} \mapsto c^{-1}\theta_{\rm down}`,
                :math:`c = e^t` (and :math:`c < 0` when ``flip``); generator :math:`(k\,\theta_{\rm up}, -\theta_{\rm down})`
``gl``          :math:`(B, C) \mapsto (GB, G^{-\top}C)`, :math:`G \in GL(D)`: :math:`(Gu)^\top(G^{-\top}w) = u^\top w`;
                generators :math:`(XB, -X^\top C)`, :math:`X = E_{ab}` (``D²`` of them)
``orthogonal``  :math:`(B, C) \mapsto (GB, GC)`, :math:`G \in O(D)`: keeps :math:`u^\top w, \lVert u\rVert, \lVert w\rVert,
                \lVert u - w\rVert`; generators :math:`(XB, XC)`, :math:`X = E_{ab} - E_{ba}`, ``a < b``
``custom``      a user's one-parameter group ``action(params, t)``; generator by forward-mode AD at ``t = 0``
============== ================================================================================================

The symmetries of a model (:func:`model_symmetries`), per head:

* linear head (Ahn et al. 2023): ``scale`` of ``(P, Q)``, degree 1, with sign flip (the update is bilinear);
* kernel head with a dot-product activation (a function of :math:`s = u^\top w` only — linear,
  ReLU, exp, polynomials, softmax): ``gl`` of ``(B, C)`` (it contains :math:`B \to e^tB,\ C \to e^{-t}C`);
* kernel head with any other activation (a function of :math:`s, \lVert u-w\rVert^2, \lVert u\rVert^2,
  \lVert w\rVert^2`): ``orthogonal`` of ``(B, C)``;
* activation positively homogeneous of degree ``k`` in its second argument,
  :math:`\tilde h(u, cw) = c^k\tilde h(u, w)` for ``c > 0`` (linear, ReLU: ``k = 1``; :math:`s^k`):
  ``scale`` of ``(V, C)`` with degree ``k``; when the activation is not a function of ``s`` alone
  but homogeneous in its first argument, ``scale`` of ``(V, B)``. The sign flip is declared when
  ``k`` is an integer and :math:`\tilde h(-s) = (-1)^k\tilde h(s)` (exact, sympy): linear yes, ReLU no.
  Homogeneity is tested on fixed probe points (:func:`homogeneity_degree`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal, Mapping, Sequence

import sympy
import torch

from landscape.core.kernels import INVARIANTS, Kernel
from landscape.core.model import ModelSpec, flatten_params, unflatten_params

__all__ = ["Symmetry", "SymmetryKind", "SYMMETRY_KINDS", "model_symmetries", "homogeneity_degree",
           "is_dot_product", "symmetry_generators"]

SymmetryKind = Literal["scale", "gl", "orthogonal", "custom"]
SYMMETRY_KINDS: tuple[str, ...] = ("scale", "gl", "orthogonal", "custom")

Params = Mapping[str, torch.Tensor]


def _reflection(D: int, dtype: torch.dtype, device: torch.device | None) -> torch.Tensor:
    R = torch.eye(D, dtype=dtype, device=device)
    R[-1, -1] = -1
    return R


@dataclass(frozen=True)
class Symmetry:
    r"""A Lie group acting on a model's weights that leaves every prediction unchanged.

    ``Symmetry(name, action)`` declares a user's one-parameter group (``kind="custom"``); the
    built-in kinds are declared with ``kind``, ``keys`` and, for ``scale``, ``power`` and ``flip``
    (see the module docstring).

    Attributes:
        name: e.g. ``"PQ-scale@layer0.head0"``.
        action: ``custom`` only: ``action(params, t) -> params`` for a scalar tensor ``t`` (``t = 0``
            is the identity), differentiable in ``t``.
        kind: one of :data:`SYMMETRY_KINDS`.
        keys: the parameters moved: ``(up, down)`` for ``scale``, ``(B, C)`` for ``gl`` / ``orthogonal``.
        power: ``scale``: the degree ``k`` of :math:`\theta_{\rm up} \mapsto c^k\theta_{\rm up}`.
        flip: ``scale``: the negative scales :math:`c < 0` are symmetries too.
        size: ``gl`` / ``orthogonal``: the matrix size ``D``.
    """

    name: str
    action: Callable[[Params, torch.Tensor], dict[str, torch.Tensor]] | None = None
    kind: str = "custom"
    keys: tuple[str, ...] = ()
    power: float = 1.0
    flip: bool = False
    size: int = 0

    def __post_init__(self) -> None:
        if self.kind not in SYMMETRY_KINDS:
            raise ValueError(f"symmetry {self.name!r}: kind must be one of {SYMMETRY_KINDS}, got {self.kind!r}")
        if self.kind == "custom":
            if not callable(self.action):
                raise TypeError(f"symmetry {self.name!r}: a custom symmetry needs a callable action(params, t)")
        elif self.action is not None:
            raise ValueError(f"symmetry {self.name!r}: only a custom symmetry takes an action; "
                             f"a {self.kind!r} symmetry is derived from its keys")
        if self.kind == "scale" and (len(self.keys) != 2 or not math.isfinite(self.power) or self.power == 0):
            raise ValueError(f"symmetry {self.name!r}: a scale symmetry needs keys (up, down) and a finite power != 0")
        if self.kind in ("gl", "orthogonal") and (len(self.keys) != 2 or self.size < 1):
            raise ValueError(f"symmetry {self.name!r}: a {self.kind} symmetry needs keys (B, C) and size D >= 1")

    # ------------------------------------------------------------------ the group
    @property
    def dim(self) -> int:
        """Dimension of the group (number of Lie-algebra coordinates)."""
        if self.kind == "gl":
            return self.size * self.size
        if self.kind == "orthogonal":
            return self.size * (self.size - 1) // 2
        return 1

    @property
    def components(self) -> tuple[int, ...]:
        """Connected components reachable by :meth:`chart`: ``(1,)``, or ``(1, -1)`` when the group has a
        second one (negative scales of a flippable ``scale``; :math:`\\det G < 0` for ``gl`` / ``orthogonal``)."""
        if self.kind in ("gl", "orthogonal") or (self.kind == "scale" and self.flip):
            return (1, -1)
        return (1,)

    def lie_basis(self, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None) -> torch.Tensor:
        r"""``gl`` / ``orthogonal``: the Lie-algebra basis :math:`X_i`, ``(dim, D, D)``."""
        if self.kind not in ("gl", "orthogonal"):
            raise ValueError(f"symmetry {self.name!r} ({self.kind}) has no matrix Lie algebra")
        D = self.size
        if self.kind == "gl":
            return torch.eye(D * D, dtype=dtype, device=device).reshape(D * D, D, D)
        out = torch.zeros(self.dim, D, D, dtype=dtype, device=device)
        i = 0
        for a in range(D):
            for b in range(a + 1, D):
                out[i, a, b], out[i, b, a] = 1, -1
                i += 1
        return out

    def _matrix(self, t: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        D = self.size
        t = torch.as_tensor(t, dtype=ref.dtype, device=ref.device)
        if t.shape == (D, D):
            X = t
            if self.kind == "orthogonal":
                X = (X - X.transpose(-1, -2)) / 2
            return X
        if t.shape != (self.dim,):
            raise ValueError(f"symmetry {self.name!r} has {self.dim} coordinates; give a ({self.dim},) vector "
                             f"or a ({D}, {D}) Lie-algebra matrix, got shape {tuple(t.shape)}")
        return torch.einsum("i,iab->ab", t, self.lie_basis(ref.dtype, ref.device))

    def _apply_matrix(self, params: Params, G: torch.Tensor, Ginv_T: torch.Tensor) -> dict[str, torch.Tensor]:
        kb, kc = self.keys
        out = dict(params)
        out[kb] = G @ params[kb]
        out[kc] = Ginv_T @ params[kc]
        return out

    def _apply_scale(self, params: Params, c_up: torch.Tensor, c_down: torch.Tensor) -> dict[str, torch.Tensor]:
        up, down = self.keys
        out = dict(params)
        out[up] = params[up] * c_up
        out[down] = params[down] * c_down
        return out

    def act(self, params: Params, t: torch.Tensor | float) -> dict[str, torch.Tensor]:
        r"""The group element :math:`\exp(\sum_i t_iX_i)` applied to ``params`` (``t = 0``: identity).

        Args:
            params: parameter dict (leading batch axes allowed).
            t: a scalar (one-parameter kinds), or ``(dim,)`` coordinates / a ``(D, D)`` Lie-algebra
                matrix (``gl``, ``orthogonal``; an orthogonal one is antisymmetrised).

        Returns:
            The transformed parameters (the other entries are the same tensors).

        Raises:
            ValueError: coordinates of the wrong shape.
        """
        ref = params[self.keys[0]] if self.keys else next(iter(params.values()))
        if self.kind == "custom":
            return dict(self.action(params, torch.as_tensor(t, dtype=ref.dtype, device=ref.device)))  # type: ignore[misc]
        if self.kind == "scale":
            t = torch.as_tensor(t, dtype=ref.dtype, device=ref.device).reshape(())
            return self._apply_scale(params, torch.exp(self.power * t), torch.exp(-t))
        X = self._matrix(t, ref)
        return self._apply_matrix(params, torch.linalg.matrix_exp(X),
                                  torch.linalg.matrix_exp(-X.transpose(-1, -2)))

    def chart(self, params: Params, coords: torch.Tensor, component: int = 1) -> dict[str, torch.Tensor]:
        r"""A chart of one connected component of the group, applied to ``params``: what the projection
        onto a family optimises over (``coords = 0``, ``component = 1``: the identity).

        * ``scale``: :math:`c = \pm e^{t}` (``component`` = the sign);
        * ``gl``: :math:`G = R(I + Y)` with ``Y`` the ``(D, D)`` coordinates — every invertible matrix of
          the component :math:`\operatorname{sign}\det G = \det R` is reached (``R = I`` or the reflection
          :math:`\mathrm{diag}(1, \dots, 1, -1)`);
        * ``orthogonal``: :math:`G = R\exp(X)` with ``X`` antisymmetric — onto the component (``exp`` is
          onto :math:`SO(D)`);
        * ``custom``: :meth:`act` (one component).

        Args:
            params: parameter dict.
            coords: ``(dim,)`` coordinates.
            component: ``1`` or ``-1`` (see :attr:`components`).

        Returns:
            The transformed parameters.
        """
        ref = params[self.keys[0]] if self.keys else next(iter(params.values()))
        coords = torch.as_tensor(coords, dtype=ref.dtype, device=ref.device).reshape(-1)
        if component not in self.components:
            raise ValueError(f"symmetry {self.name!r} has components {self.components}, got {component!r}")
        if self.kind == "custom":
            return self.act(params, coords[0])
        if self.kind == "scale":
            t = coords[0]
            c = component * torch.exp(t)
            return self._apply_scale(params, c ** self.power if component < 0 else torch.exp(self.power * t),
                                     1 / c)
        D = self.size
        eye = torch.eye(D, dtype=ref.dtype, device=ref.device)
        R = eye if component > 0 else _reflection(D, ref.dtype, ref.device)
        if self.kind == "gl":
            G = R @ (eye + coords.reshape(D, D))
            return self._apply_matrix(params, G, torch.linalg.inv(G).transpose(-1, -2))
        G = R @ torch.linalg.matrix_exp(self._matrix(coords, ref))
        return self._apply_matrix(params, G, G)

    def element(self, coords: torch.Tensor, component: int = 1) -> torch.Tensor:
        """The group element of :meth:`chart`: the signed scale ``c`` (``scale``), the matrix ``G``
        (``gl``, ``orthogonal``) or the parameter ``t`` (``custom``), as a float64 tensor."""
        coords = torch.as_tensor(coords, dtype=torch.float64).reshape(-1)
        if self.kind == "scale":
            return component * torch.exp(coords[0])
        if self.kind == "custom":
            return coords[0]
        D = self.size
        eye = torch.eye(D, dtype=torch.float64)
        R = eye if component > 0 else _reflection(D, torch.float64, None)
        if self.kind == "gl":
            return R @ (eye + coords.reshape(D, D))
        return R @ torch.linalg.matrix_exp(self._matrix(coords, eye))

    # ------------------------------------------------------------------ the Lie algebra
    def generators(self, params: Params) -> list[dict[str, torch.Tensor]]:
        r"""Tangent vectors of the orbit at ``params``, one per Lie-algebra basis element.

        Each is a dict holding only the parameters it moves (:math:`\frac{d}{d\varepsilon}
        \exp(\varepsilon X_i)\cdot\theta|_{\varepsilon = 0}`): ``scale`` :math:`(k\theta_{\rm up}, -\theta_{\rm down})`;
        ``gl`` / ``orthogonal`` :math:`(X_iB, -X_i^\top C)`; ``custom`` by forward-mode AD of the action.
        """
        if self.kind == "scale":
            up, down = self.keys
            return [{up: self.power * params[up], down: -params[down]}]
        if self.kind == "custom":
            ref = next(iter(params.values()))
            t0 = torch.zeros((), dtype=ref.dtype, device=ref.device)
            keys = list(params)

            def path(t: torch.Tensor) -> tuple[torch.Tensor, ...]:
                moved = self.action(params, t)  # type: ignore[misc]
                return tuple(moved[k] for k in keys)

            _, tang = torch.func.jvp(path, (t0,), (torch.ones_like(t0),))
            return [dict(zip(keys, tang))]
        kb, kc = self.keys
        B, C = params[kb], params[kc]
        basis = self.lie_basis(B.dtype, B.device)
        return [{kb: X @ B, kc: -X.transpose(-1, -2) @ C} for X in basis]

    def describe(self) -> str:
        if self.kind == "scale":
            up, down = self.keys
            k = "" if self.power == 1 else f"^{self.power:g}"
            return f"{self.name}: {up} -> c{k} {up}, {down} -> {down}/c ({'c != 0' if self.flip else 'c > 0'})"
        if self.kind == "gl":
            return f"{self.name}: ({self.keys[0]}, {self.keys[1]}) -> (G B, G^-T C), G in GL({self.size})"
        if self.kind == "orthogonal":
            return f"{self.name}: ({self.keys[0]}, {self.keys[1]}) -> (G B, G C), G in O({self.size})"
        return f"{self.name}: user-declared one-parameter group"


# ---------------------------------------------------------------------- kernel properties
_HOMOGENEITY_POINTS = ((0.7, 0.3, 1.1), (-1.3, 0.8, 0.5), (2.1, 1.7, 2.9), (0.4, 2.2, 0.6))
"""Fixed probe values (s, |u|², |w|²) of the homogeneity test (deterministic: a property of the kernel)."""


def is_dot_product(kern: Kernel) -> bool:
    """Whether the activation depends on :math:`s = u^\\top w` only (softmax included)."""
    return bool(kern.normalised or kern.expr.free_symbols <= {INVARIANTS[0]})


def homogeneity_degree(kern: Kernel, side: str) -> float | None:
    r"""Degree ``k`` with :math:`\tilde h(tu, w) = t^k\tilde h(u, w)` for all ``t > 0`` (``side="u"``; ``"w"`` for
    the second argument), or ``None``. Kernels that read :math:`|u - w|^2` are never homogeneous.

    Checked on fixed probe points for ``t ∈ {1/2, 2, 3.7}`` to relative accuracy 1e-10; ``k`` is
    estimated from the first probe with :math:`\tilde h \ne 0`.
    """
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


def _odd_parity(kern: Kernel, k: float) -> bool:
    r"""Whether negative scales are symmetries too: ``k`` an integer and :math:`\tilde h(-s) = (-1)^k\tilde h(s)`
    (with :math:`\lVert u\rVert, \lVert w\rVert` fixed), decided exactly by sympy."""
    if abs(k - round(k)) > 1e-12:
        return False
    s_ = INVARIANTS[0]
    expr = kern.expr
    try:
        return bool(sympy.simplify(expr.subs(s_, -s_) - (-1) ** int(round(k)) * expr) == 0)
    except (TypeError, ValueError):  # pragma: no cover - sympy could not decide
        return False


def model_symmetries(spec: ModelSpec) -> tuple[Symmetry, ...]:
    """The symmetries every model of ``spec`` has (module docstring), per layer and head.

    Names: ``PQ-scale@layer{l}.head{h}``, ``BC-gl@…`` (dot-product activations), ``BC-rotation@…``
    (others), ``VC-scale@…``, ``VB-scale@…``.
    """
    out: list[Symmetry] = []
    D = spec.token_dim
    for l in range(spec.layers):
        for h, head in enumerate(spec.heads):
            k = lambda name: spec.key(l, h, name)  # noqa: E731
            at = f"@layer{l}.head{h}"
            if head.kind == "linear":
                out.append(Symmetry(f"PQ-scale{at}", kind="scale", keys=(k("P"), k("Q")), flip=True))
                continue
            kern = head.kernel
            dot = is_dot_product(kern)
            if dot:
                out.append(Symmetry(f"BC-gl{at}", kind="gl", keys=(k("B"), k("C")), size=D))
            else:
                out.append(Symmetry(f"BC-rotation{at}", kind="orthogonal", keys=(k("B"), k("C")), size=D))
            kw = homogeneity_degree(kern, "w")
            if kw is not None and kw != 0:
                out.append(Symmetry(f"VC-scale{at}", kind="scale", keys=(k("V"), k("C")), power=kw,
                                    flip=_odd_parity(kern, kw)))
            ku = homogeneity_degree(kern, "u")
            if not dot and ku is not None and ku != 0:
                out.append(Symmetry(f"VB-scale{at}", kind="scale", keys=(k("V"), k("B")), power=ku,
                                    flip=_odd_parity(kern, ku)))
    return tuple(out)


def symmetry_generators(
    spec: ModelSpec,
    flat: torch.Tensor,
    symmetries: Sequence[object] | None = None,
) -> torch.Tensor:
    r"""Infinitesimal generators of the continuous symmetries of the model at :math:`\theta`, ``(P, m)``.

    The model's function (hence any loss) is invariant along each generator, so at a stationary
    point each independent generator carries a zero Hessian eigenvalue. The generators are derived
    from the symmetry declarations (:meth:`landscape.theory.symmetries.Symmetry.generators`, the
    one source): :math:`(P, Q) \mapsto (e^tP, e^{-t}Q)` per linear head; :math:`(XB, -X^\top C)`
    for every :math:`X = E_{ab}` per dot-product kernel head (:math:`B \mapsto GB,\ C \mapsto G^{-\top}C`);
    :math:`(XB, XC)` for antisymmetric ``X`` per other kernel head (common rotations); the value
    scalings of positively homogeneous kernels; and a user's ``custom`` groups.

    Args:
        spec: architecture.
        flat: :math:`\theta`.
        symmetries: the :class:`~landscape.theory.symmetries.Symmetry` declarations (e.g.
            ``family.symmetries``); default :func:`~landscape.theory.symmetries.model_symmetries` of ``spec``.

    Returns:
        Generators as columns (possibly dependent; use :func:`orthonormal_complement`).
    """
    params = unflatten_params(flat, spec)
    syms = model_symmetries(spec) if symmetries is None else tuple(symmetries)
    zeros = {k: torch.zeros_like(v) for k, v in params.items()}
    cols: list[torch.Tensor] = []
    for sym in syms:
        for tangent in sym.generators(params):  # type: ignore[attr-defined]
            d = dict(zeros)
            d.update(tangent)
            cols.append(flatten_params(d, spec))
    if not cols:
        return torch.zeros(flat.shape[0], 0, dtype=flat.dtype, device=flat.device)
    return torch.stack(cols, dim=1)
