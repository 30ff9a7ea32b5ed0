"""Attention non-linearities (kernels) and the data kernels of Gaussian-process prompts.

A :class:`Kernel` is a function :math:`\\tilde h(u, w)` of two vectors, written as a sympy
expression in four invariants of the pair

.. math::
    s = u^\\top w, \\qquad r2 = \\lVert u - w\\rVert^2, \\qquad uu = \\lVert u\\rVert^2,
    \\qquad ww = \\lVert w\\rVert^2 ,

and compiled to torch with ``sympy.lambdify(modules="torch")``. Its Gram matrix
:math:`[\\tilde h(U, W)]_{ij} = \\tilde h(u_i, w_j)` (``u_i`` = column ``i`` of ``U``) is what kernel
attention (Cheng, Chen, Sra 2024) applies to the sources ``B X`` and receivers ``C X``.

Built-ins (:func:`get_kernel`): ``linear`` :math:`s`; ``relu`` :math:`\\max(s, 0)`; ``exp``
:math:`e^{\\gamma s}`; ``softmax`` :math:`e^{s_{ij}} / \\sum_{k\\le n} e^{s_{kj}}` (normalised over the
``n`` context sources separately for each receiver); ``rbf`` :math:`e^{-r2/(2\\ell^2)}`; ``laplace``
:math:`e^{-\\sqrt{r2}/\\ell}`; ``polynomial`` :math:`(s + c)^p`. A user kernel is
``Kernel.from_sympy("exp(-r2/2) + s", name="mine")``: the text is read by the safe parser
:func:`landscape._expr.parse_expression` (never executed; the functions of
:data:`KERNEL_FUNCTIONS` only), and the kernel is checked at :data:`PROBE_POINTS` — real and finite
values, finite torch derivatives — before anything uses it.

:class:`SumKernel` is the composite kernel :math:`K^\\circ(x,x') = \\sum_h \\alpha_h \\tilde h_h(G_h x, G_h x')`
of multi-head functional GD (Cheng et al., Prop. 3) and of composite GP data.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import mpmath
import sympy
import torch

from landscape._expr import FUNCTIONS, parse_expression

__all__ = [
    "INVARIANTS",
    "KERNEL_FUNCTIONS",
    "PROBE_POINTS",
    "Kernel",
    "SumKernel",
    "get_kernel",
    "known_kernels",
    "max_diagonal",
    "parse_kernel_expression",
]

s_, r2_, uu_, ww_ = sympy.symbols("s r2 uu ww", real=True)
INVARIANTS: tuple[sympy.Symbol, ...] = (s_, r2_, uu_, ww_)
"""The sympy symbols a kernel expression may use: ``s, r2, uu, ww``."""


def _safe_sqrt(x: torch.Tensor | float) -> torch.Tensor | float:
    """``sqrt(max(x, 0))`` with a finite (zero) derivative at 0, so Laplace kernels train.

    sympy may split ``sqrt(3*r2)`` into ``sqrt(3)*sqrt(r2)``, so plain numbers are accepted too.
    """
    if not isinstance(x, torch.Tensor):
        return math.sqrt(max(float(x), 0.0))
    pos = x > 0
    safe = torch.where(pos, x, torch.ones_like(x))
    return torch.where(pos, torch.sqrt(safe), torch.zeros_like(x))


def _reduce(op: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], args: Sequence[object]) -> torch.Tensor:
    ref = next((a for a in args if isinstance(a, torch.Tensor)), None)
    kw = {} if ref is None else {"dtype": ref.dtype, "device": ref.device}
    tensors = [torch.as_tensor(a, **kw) for a in args]
    out = tensors[0]
    for t in tensors[1:]:
        out = op(out, t)
    return out


def _torch_max(*args: object) -> torch.Tensor:
    """Elementwise maximum of tensors and numbers (numbers take the tensors' dtype)."""
    return _reduce(torch.maximum, args)


def _torch_min(*args: object) -> torch.Tensor:
    """Elementwise minimum of tensors and numbers (numbers take the tensors' dtype)."""
    return _reduce(torch.minimum, args)


_TORCH_MODULES = [
    {"sqrt": _safe_sqrt, "Max": _torch_max, "Min": _torch_min, "max": _torch_max, "min": _torch_min, "Abs": torch.abs},
    "torch",
]


KERNEL_FUNCTIONS: tuple[str, ...] = tuple(FUNCTIONS)
"""Functions a user kernel may call (the whitelist of :mod:`landscape._expr`)."""


def parse_kernel_expression(text: str) -> sympy.Expr:
    """Parse a user kernel ``text`` in ``s, r2, uu, ww`` with the safe parser (nothing is executed).

    Raises:
        ValueError: one line naming the offending token (see :func:`landscape._expr.parse_expression`).
    """
    return parse_expression(text, {str(x): x for x in INVARIANTS}, KERNEL_FUNCTIONS, what="kernel expression")


def _probe_points() -> tuple[tuple[float, float, float, float], ...]:
    r"""Invariants ``(s, r2, uu, ww)`` of the pairs :math:`u, w \in \mathbb R^2` with
    :math:`\lVert u\rVert, \lVert w\rVert \in \{0.5, 1, 2\}` at angles 0°, 60°, 90°, 120°, 180°:
    :math:`s \in [-4, 4]`, :math:`r2 \in [0, 16]` (0 on the diagonal of a Gram matrix),
    :math:`uu, ww \in [0.25, 4]`."""
    pts = []
    for a in (0.5, 1.0, 2.0):
        for b in (0.5, 1.0, 2.0):
            for c in (1.0, 0.5, 0.0, -0.5, -1.0):  # cos of the angle
                s = a * b * c
                pts.append((s, max(a * a + b * b - 2 * s, 0.0), a * a, b * b))
    return tuple(pts)


PROBE_POINTS: tuple[tuple[float, float, float, float], ...] = _probe_points()
"""Where a user kernel is checked (:meth:`Kernel.__post_init__`): ``(s, r2, uu, ww)`` of pairs
``u, w`` with norms 0.5, 1, 2 at angles 0°, 60°, 90°, 120°, 180° — ``s`` in [-4, 4], ``r2`` in
[0, 16] (``r2 = 0`` is the diagonal of every Gram matrix), ``uu, ww`` in [0.25, 4]: the range of
whitened or unit-sphere inputs and initial weights."""

_PROBE_RANGE = ("probe points: pairs u, w with |u|, |w| in {0.5, 1, 2} at angles 0-180 degrees, "
                "s in [-4, 4], r2 in [0, 16], uu, ww in [0.25, 4]")


def _check_functions(name: str, expr: sympy.Expr) -> None:
    """Every function applied in ``expr`` is one of the whitelisted kernel functions."""
    allowed = {FUNCTIONS[f][0] for f in KERNEL_FUNCTIONS}
    bad = sorted({str(type(f).__name__) for f in expr.atoms(sympy.Function) if type(f) not in allowed})
    if bad:
        raise ValueError(f"kernel {name!r}: unknown function(s) {bad} in {expr}; "
                         f"a kernel may call {', '.join(KERNEL_FUNCTIONS)}")


def _point_text(p: Sequence[float]) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in zip(("s", "r2", "uu", "ww"), p))


@functools.lru_cache(maxsize=256)
def _probe_failure(expr: sympy.Expr) -> str | None:
    """Why ``expr`` is not a usable kernel at :data:`PROBE_POINTS` (``None`` if it is).

    Checks, at every probe point: the exact value (mpmath, complex arithmetic) is real and
    finite; the compiled torch function (what the model runs) gives finite values; torch
    autograd gives finite derivatives in every invariant.
    """
    exact = sympy.lambdify(INVARIANTS, expr, modules="mpmath")
    for p in PROBE_POINTS:
        try:
            v = complex(exact(*(mpmath.mpf(x) for x in p)))
        except (ZeroDivisionError, ValueError, OverflowError, TypeError):
            return f"is not finite at {_point_text(p)}"
        if not (math.isfinite(v.real) and math.isfinite(v.imag)):
            return f"is not finite at {_point_text(p)}"
        if abs(v.imag) > 1e-12 * max(1.0, abs(v.real)):
            return f"is not real at {_point_text(p)} (value {v:.4g})"
    fn = sympy.lambdify(INVARIANTS, expr, modules=_TORCH_MODULES)
    cols = torch.tensor(PROBE_POINTS, dtype=torch.float64).T
    args = [c.clone().requires_grad_(True) for c in cols]
    with torch.enable_grad():
        out = torch.as_tensor(fn(*args), dtype=torch.float64)
        out = out.expand(len(PROBE_POINTS)) if out.shape != (len(PROBE_POINTS),) else out
        bad = ~torch.isfinite(out)
        if bool(bad.any()):
            return f"is not finite in torch at {_point_text(PROBE_POINTS[int(bad.nonzero()[0])])}"
        if not out.requires_grad:
            return None
        grads = torch.autograd.grad(out.sum(), args, allow_unused=True)
    for sym, g in zip(INVARIANTS, grads):
        if g is not None and not bool(torch.isfinite(g).all()):
            i = int((~torch.isfinite(g)).nonzero()[0])
            hint = " (write sqrt(r2), which has a zero derivative at 0)" if sym == r2_ and PROBE_POINTS[i][1] == 0 else ""
            return f"has no finite derivative in {sym} at {_point_text(PROBE_POINTS[i])}{hint}"
    return None


def _check_at_probe_points(name: str, expr: sympy.Expr, fn: Callable[..., torch.Tensor]) -> None:
    why = _probe_failure(expr)
    if why is not None:
        raise ValueError(f"kernel {name!r}: {sympy.sstr(expr)} {why}; a kernel must be real, finite and "
                         f"differentiable wherever attention evaluates it ({_PROBE_RANGE})")


@dataclass(frozen=True)
class Kernel:
    """A kernel / attention activation :math:`\\tilde h(u, w)`.

    Attributes:
        name: short name (``"exp"``, ``"relu"``, a user's name).
        expr: sympy expression in the invariants ``s, r2, uu, ww`` (see module docstring); a string
            is parsed with :func:`parse_kernel_expression`. A kernel compiled from its expression
            (no ``_fn``) is checked at :data:`PROBE_POINTS`; a ValueError names the failing point.
        normalised: if True the Gram matrix is normalised over sources for each receiver
            (softmax attention); ``expr`` is then the un-normalised score ``exp(s)``.
        psd: whether the kernel is positive semi-definite (``None`` if unknown). GP prompts with
            a non-PSD kernel (ReLU) are repaired by absolute eigenvalues.
        params: the constants the kernel was built with, for display and provenance.
    """

    name: str
    expr: sympy.Expr
    normalised: bool = False
    psd: bool | None = None
    params: tuple[tuple[str, float], ...] = ()
    _fn: Callable[..., torch.Tensor] = field(default=None, repr=False, compare=False)  # type: ignore[assignment]
    _uses: tuple[bool, bool, bool, bool] = field(default=(True, True, True, True), repr=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.expr, str):
            expr = parse_kernel_expression(self.expr)
        else:
            try:
                expr = sympy.sympify(self.expr, strict=True)
            except sympy.SympifyError:
                raise TypeError(f"kernel {self.name!r}: expr must be a sympy expression or a string, "
                                f"got {type(self.expr).__name__}") from None
        extra = expr.free_symbols - set(INVARIANTS)
        if extra:
            raise ValueError(
                f"kernel {self.name!r}: expression {expr} has free symbols "
                f"{sorted(map(str, extra))}; a kernel may only use its arguments "
                f"{[str(x) for x in INVARIANTS]} (s = u.w, r2 = |u-w|^2, uu = |u|^2, ww = |w|^2)"
            )
        _check_functions(self.name, expr)
        object.__setattr__(self, "expr", expr)
        probe = self._fn is None
        if self._fn is None:
            fn = sympy.lambdify(INVARIANTS, expr, modules=_TORCH_MODULES)
            object.__setattr__(self, "_fn", fn)
        uses = tuple(sym in expr.free_symbols for sym in INVARIANTS)
        object.__setattr__(self, "_uses", uses)
        if probe:  # a kernel compiled from its expression: check it where training evaluates it
            _check_at_probe_points(self.name, expr, self._fn)

    @classmethod
    def from_sympy(
        cls, expr: str | sympy.Expr, name: str = "custom", *, psd: bool | None = None
    ) -> "Kernel":
        """Build a user kernel from a sympy expression in ``s, r2, uu, ww``.

        Args:
            expr: e.g. ``"exp(-sqrt(r2))"`` (Laplace) or ``"(s + 1)**3"``.
            name: name shown in reports.
            psd: whether the kernel is known to be positive semi-definite.

        Returns:
            The compiled kernel.

        Raises:
            ValueError: one line, if the text is not in the parser's language (names the offending
                token), uses other free symbols or functions, or is not real, finite and
                differentiable at :data:`PROBE_POINTS` (names the point).
        """
        if isinstance(expr, str):
            expr = parse_kernel_expression(expr)
        return cls(name=name, expr=expr, psd=psd)

    # ------------------------------------------------------------------ evaluation
    def scores(self, U: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
        """Un-normalised Gram matrix :math:`[\\tilde h(u_i, w_j)]_{ij}`.

        Args:
            U: ``(..., k, m1)``, points as columns.
            W: ``(..., k, m2)``.

        Returns:
            ``(..., m1, m2)``.
        """
        uses_s, uses_r2, uses_uu, uses_ww = self._uses
        s = U.transpose(-1, -2) @ W
        uu = (U * U).sum(-2).unsqueeze(-1).expand_as(s) if (uses_uu or uses_r2) else None
        ww = (W * W).sum(-2).unsqueeze(-2).expand_as(s) if (uses_ww or uses_r2) else None
        r2 = (uu + ww - 2 * s).clamp_min(0) if uses_r2 else None
        zero = torch.zeros((), dtype=s.dtype, device=s.device)
        out = self._fn(s, r2 if r2 is not None else zero, uu if uu is not None else zero,
                       ww if ww is not None else zero)
        out = torch.as_tensor(out, dtype=s.dtype, device=s.device)
        return out.expand_as(s) if out.shape != s.shape else out

    def gram(self, U: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
        """Gram matrix, normalised over sources (dimension ``-2``) for softmax kernels.

        Args:
            U: sources ``(..., k, m1)``.
            W: receivers ``(..., k, m2)``.

        Returns:
            ``(..., m1, m2)``; for ``normalised`` kernels each column sums to one.
        """
        if self.normalised:
            s = U.transpose(-1, -2) @ W
            return torch.softmax(s, dim=-2)
        return self.scores(U, W)

    def __call__(self, U: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
        return self.gram(U, W)

    def latex(self) -> str:
        """LaTeX of the kernel expression."""
        body = sympy.latex(self.expr)
        return rf"\mathrm{{softmax}}\left({body}\right)" if self.normalised else body


@dataclass(frozen=True)
class SumKernel:
    """Composite kernel :math:`K^\\circ(x, x') = \\sum_h \\alpha_h\\,\\tilde h_h(G_h x, G_h x')`.

    Cheng, Chen, Sra 2024, Proposition 3 (multi-head functional GD) and their composite GP data.

    Attributes:
        terms: tuples ``(alpha_h, kernel_h, G_h)`` with ``G_h`` a ``(k_h, d)`` tensor or ``None``
            (identity).
        name: display name.
    """

    terms: tuple[tuple[float, Kernel, torch.Tensor | None], ...]
    name: str = "composite"

    def __post_init__(self) -> None:
        if not self.terms:
            raise ValueError("SumKernel needs at least one term (alpha, kernel, G)")
        for alpha, k, G in self.terms:
            if not isinstance(k, Kernel):
                raise TypeError(f"SumKernel term kernel must be a Kernel, got {type(k).__name__}")
            if k.normalised:
                raise ValueError("a normalised (softmax) kernel cannot be a term of a data kernel")
            if G is not None and G.ndim != 2:
                raise ValueError(f"SumKernel projection G must be 2-D (k, d), got shape {tuple(G.shape)}")

    @property
    def psd(self) -> bool | None:
        flags = [k.psd for _, k, _ in self.terms]
        if all(f is True for f in flags) and all(a >= 0 for a, _, _ in self.terms):
            return True
        return None

    @property
    def normalised(self) -> bool:
        return False

    def gram(self, U: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
        """:math:`\\sum_h \\alpha_h \\tilde h_h(G_h U, G_h W)`; shapes as :meth:`Kernel.gram`."""
        out = None
        for alpha, k, G in self.terms:
            Gu = U if G is None else G.to(U) @ U
            Gw = W if G is None else G.to(W) @ W
            term = alpha * k.gram(Gu, Gw)
            out = term if out is None else out + term
        return out

    scores = gram

    def __call__(self, U: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
        return self.gram(U, W)


# ---------------------------------------------------------------------- registry
def _linear() -> Kernel:
    return Kernel("linear", s_, psd=True, _fn=lambda s, r2, uu, ww: s)


def _relu() -> Kernel:
    return Kernel("relu", sympy.Max(s_, 0), psd=False, _fn=lambda s, r2, uu, ww: torch.relu(s))


def _exp(scale: float = 1.0) -> Kernel:
    return Kernel(
        "exp", sympy.exp(sympy.Float(scale) * s_ if scale != 1.0 else s_), psd=True,
        params=(("scale", float(scale)),), _fn=lambda s, r2, uu, ww: torch.exp(scale * s),
    )


def _softmax() -> Kernel:
    return Kernel("softmax", sympy.exp(s_), normalised=True, psd=None,
                  _fn=lambda s, r2, uu, ww: torch.exp(s))


def _rbf(lengthscale: float = 1.0) -> Kernel:
    if lengthscale <= 0:
        raise ValueError(f"rbf lengthscale must be > 0, got {lengthscale}")
    c = 1.0 / (2.0 * lengthscale**2)
    return Kernel("rbf", sympy.exp(-sympy.Float(c) * r2_), psd=True,
                  params=(("lengthscale", float(lengthscale)),),
                  _fn=lambda s, r2, uu, ww: torch.exp(-c * r2))


def _laplace(lengthscale: float = 1.0) -> Kernel:
    if lengthscale <= 0:
        raise ValueError(f"laplace lengthscale must be > 0, got {lengthscale}")
    return Kernel("laplace", sympy.exp(-sympy.sqrt(r2_) / sympy.Float(lengthscale)), psd=True,
                  params=(("lengthscale", float(lengthscale)),),
                  _fn=lambda s, r2, uu, ww: torch.exp(-_safe_sqrt(r2) / lengthscale))


def _polynomial(degree: int = 2, offset: float = 1.0) -> Kernel:
    if int(degree) != degree or degree < 1:
        raise ValueError(f"polynomial degree must be a positive integer, got {degree}")
    degree = int(degree)
    return Kernel("polynomial", (s_ + sympy.Float(offset)) ** degree, psd=offset >= 0,
                  params=(("degree", float(degree)), ("offset", float(offset))),
                  _fn=lambda s, r2, uu, ww: (s + offset) ** degree)


_REGISTRY: dict[str, Callable[..., Kernel]] = {
    "linear": _linear,
    "relu": _relu,
    "exp": _exp,
    "softmax": _softmax,
    "rbf": _rbf,
    "laplace": _laplace,
    "polynomial": _polynomial,
}


def known_kernels() -> tuple[str, ...]:
    """Names accepted by :func:`get_kernel`."""
    return tuple(_REGISTRY)


def get_kernel(kernel: str | Kernel, **params: float) -> Kernel:
    """Look up a built-in kernel by name, or pass a :class:`Kernel` through.

    Args:
        kernel: a name from :func:`known_kernels` (optionally ``"name:value"`` for the kernel's
            first constant, e.g. ``"exp:0.5"``), ``"sympy:EXPR"`` for a user kernel written in
            ``s, r2, uu, ww`` (e.g. ``"sympy:exp(-sqrt(r2)/2)"``), or a :class:`Kernel`.
        **params: constants of the built-in (``scale`` for exp, ``lengthscale`` for rbf/laplace,
            ``degree``/``offset`` for polynomial).

    Returns:
        The kernel.

    Raises:
        ValueError: unknown name (the message lists the known ones) or bad constants.
        TypeError: if ``kernel`` is neither a string nor a Kernel.
    """
    if isinstance(kernel, (Kernel, SumKernel)):
        if params:
            raise ValueError("constants can only be given with a kernel name, not a Kernel object")
        return kernel  # type: ignore[return-value]
    if not isinstance(kernel, str):
        raise TypeError(f"kernel must be a name or a Kernel, got {type(kernel).__name__}")
    if kernel.startswith("sympy:"):
        if params:
            raise ValueError("a 'sympy:EXPR' kernel takes its constants inside the expression")
        expr = kernel[len("sympy:"):].strip()
        return Kernel.from_sympy(expr, name=f"sympy:{expr}")
    name, _, arg = kernel.partition(":")
    name = name.strip().lower()
    if name not in _REGISTRY:
        raise ValueError(f"unknown activation/kernel {kernel!r}; known: {', '.join(_REGISTRY)}, "
                         "or 'sympy:EXPR' with EXPR in s, r2, uu, ww")
    factory = _REGISTRY[name]
    if arg:
        first = {"exp": "scale", "rbf": "lengthscale", "laplace": "lengthscale", "polynomial": "degree"}.get(name)
        if first is None:
            raise ValueError(f"kernel {name!r} takes no constant, got {kernel!r}")
        try:
            params = {first: float(arg), **params}
        except ValueError:
            raise ValueError(f"cannot read the constant in {kernel!r}: expected a number after ':'") from None
    try:
        return factory(**params)
    except TypeError as exc:
        raise ValueError(f"bad constants {params} for kernel {name!r}: {exc}") from None


def max_diagonal(kernel: Kernel | SumKernel, radius: float) -> float:
    """Upper bound of :math:`\\sup_{\\lVert x\\rVert\\le radius} K(x, x)` for dot-product/stationary kernels.

    Used for the prompt-independent safe step :math:`r < 2/\\sup_x K(x,x)` of functional GD
    (Cheng et al., Prop. 2). Evaluated on the diagonal ``s = uu = ww = radius^2, r2 = 0``.
    """
    if isinstance(kernel, SumKernel):
        return sum(abs(a) * max_diagonal(k, radius) for a, k, _ in kernel.terms)
    val = kernel.expr.subs({s_: radius**2, uu_: radius**2, ww_: radius**2, r2_: 0})
    return float(abs(sympy.N(val)))

