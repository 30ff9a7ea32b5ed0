r"""Weights for which the transformer's forward pass *is* an algorithm.

Every builder returns a :class:`Construction`: a :class:`~landscape.core.model.ModelSpec`, a flat
parameter dict in the convention of :mod:`landscape.core.model`, and the two maps that connect the
algorithm's inputs and outputs to the residual stream:

.. math::
    \text{inputs} \xrightarrow{\ \texttt{embed}\ } Z_0
    \xrightarrow{\ \texttt{forward}\ } Z_L
    \xrightarrow{\ \texttt{readout}\ } \text{output}.

One mechanism serves all of them: :func:`landscape.core.model.forward` with the construction's
``n_sources`` (how many leading tokens are attention sources; the model divides every update by
that ``n``, and constructions that must not scale fold the factor ``n`` into their value matrix).
``readout`` applied to every state ``Z_l`` (:meth:`Construction.trace`) gives the algorithm's
iterate after ``l`` steps.

Builders (paper in brackets; each reference algorithm is in :mod:`landscape.theory.algorithms`):

============================================ =================================================================
:func:`preconditioned_gd_construction`        Ahn et al. 2023, Lemma 1 — :func:`~landscape.theory.algorithms.preconditioned_gd`
:func:`gd_plus_plus_construction`             Ahn et al. 2023, Thm 4 — :func:`~landscape.theory.algorithms.gd_plus_plus`
:func:`functional_gd_construction`            Cheng, Chen, Sra 2024, Props 1 and 3 — :func:`~landscape.theory.algorithms.functional_gd`
:func:`newton_schulz_construction`            Giannou et al. 2024 — :func:`~landscape.theory.algorithms.newton_schulz`
:func:`normalised_gd_construction`            Zhang, Cao 2026 — :func:`~landscape.theory.algorithms.normalised_gd`
============================================ =================================================================

Everything is built from tensors with differentiable, out-of-place operations, so step sizes or
preconditioners given as tensors that require grad stay in the autograd graph.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch

from landscape._checks import check_int, check_real, check_shape, check_tensor
from landscape.core.kernels import Kernel, SumKernel, get_kernel, known_kernels
from landscape.core.model import HeadSpec, ModelSpec, forward

__all__ = [
    "Construction",
    "embed_regression",
    "prediction_readout",
    "composite_kernel",
    "preconditioned_gd_construction",
    "gd_plus_plus_construction",
    "functional_gd_construction",
    "newton_schulz_construction",
    "normalised_gd_construction",
]

Matrices = Sequence[torch.Tensor] | torch.Tensor
Steps = Sequence[float] | Sequence[torch.Tensor] | torch.Tensor


# ---------------------------------------------------------------------- the construction object
@dataclass(frozen=True, eq=False)
class Construction:
    r"""A transformer together with the embedding/readout that make it run an algorithm.

    Attributes:
        name: short name (``"preconditioned_gd"``, ``"functional_gd"`` ...).
        spec: the architecture.
        params: flat parameter dict (see :mod:`landscape.core.model`).
        embed: ``embed(*inputs) -> Z0`` builds the residual stream ``(..., token_dim, N)`` from the
            algorithm's inputs (the signature is documented by each builder).
        readout: ``readout(Z) -> output`` reads the algorithm's state off the residual stream.
        n_sources: number of leading tokens that are attention sources (``None``: all but the
            last token, the model's default); the model divides each update by it.
        description: the maths in one line, with its paper.
        meta: extra objects describing the construction (e.g. ``"kernel"``: the kernel whose
            functional GD the model runs; ``"looped"``: whether every layer has the same weights).
    """

    name: str
    spec: ModelSpec
    params: dict[str, torch.Tensor]
    embed: Callable[..., torch.Tensor]
    readout: Callable[[torch.Tensor], torch.Tensor]
    n_sources: int | None = None
    description: str = ""
    meta: Mapping[str, object] = field(default_factory=dict)

    def forward(self, Z: torch.Tensor, *, return_states: bool = False) -> torch.Tensor | list[torch.Tensor]:
        """:func:`landscape.core.model.forward` with this construction's weights and ``n_sources``."""
        return forward(self.params, self.spec, Z, n_sources=self.n_sources, return_states=return_states)

    def __call__(self, *inputs: torch.Tensor, **kwargs: torch.Tensor) -> torch.Tensor:
        """``readout(forward(embed(*inputs)))``: the algorithm's output after ``spec.layers`` steps."""
        return self.readout(self.forward(self.embed(*inputs, **kwargs)))  # type: ignore[arg-type]

    def trace(self, *inputs: torch.Tensor, **kwargs: torch.Tensor) -> list[torch.Tensor]:
        """``[readout(Z_0), ..., readout(Z_L)]``: the algorithm's iterate after every layer."""
        states = self.forward(self.embed(*inputs, **kwargs), return_states=True)
        return [self.readout(Z) for Z in states]  # type: ignore[union-attr]


# ---------------------------------------------------------------------- embeddings and readouts
def embed_regression(X: torch.Tensor, y: torch.Tensor, x_query: torch.Tensor) -> torch.Tensor:
    r"""The prompt :math:`Z_0 = \begin{bmatrix} X & x_{n+1} \\ y^\top & 0\end{bmatrix}` (tokens as columns).

    Args:
        X: context covariates ``(..., d, n)`` (column ``i`` is :math:`x_i`).
        y: context labels ``(..., n)``.
        x_query: query ``(..., d)``.

    Returns:
        ``Z0`` of shape ``(..., d+1, n+1)``.

    Raises:
        TypeError: non-tensor or non-float input, or mixed dtypes/devices.
        ValueError: shapes that do not fit together.
    """
    for name, t in (("X", X), ("y", y), ("x_query", x_query)):
        check_tensor(name, t)
    if X.ndim < 2:
        raise ValueError(f"X must have shape (..., d, n), got {tuple(X.shape)}")
    lead = tuple(X.shape[:-2])
    d, n = X.shape[-2], X.shape[-1]
    if tuple(y.shape) != lead + (n,):
        raise ValueError(f"y must have shape {lead + (n,)} (..., n) to match X {tuple(X.shape)}, got {tuple(y.shape)}")
    if tuple(x_query.shape) != lead + (d,):
        raise ValueError(
            f"x_query must have shape {lead + (d,)} (..., d) to match X {tuple(X.shape)}, got {tuple(x_query.shape)}"
        )
    _same_kind(X, y=y, x_query=x_query)
    top = torch.cat([X, x_query.unsqueeze(-1)], dim=-1)
    bottom = torch.cat([y, torch.zeros_like(y[..., :1])], dim=-1).unsqueeze(-2)
    return torch.cat([top, bottom], dim=-2)


def prediction_readout(Z: torch.Tensor) -> torch.Tensor:
    r"""The transformer's prediction :math:`\mathrm{TF}(Z_0) = -[Z_L]_{d+1, n+1}`."""
    return -Z[..., -1, -1]


def _same_kind(ref: torch.Tensor, **others: torch.Tensor) -> None:
    for name, t in others.items():
        if t.dtype != ref.dtype:
            raise TypeError(f"{name} has dtype {t.dtype} but the first input has {ref.dtype}; use one dtype")
        if t.device != ref.device:
            raise TypeError(f"{name} is on {t.device} but the first input is on {ref.device}; use one device")


# ---------------------------------------------------------------------- helpers
def _resolve_dtype(dtype: torch.dtype | None, *tensors: object) -> torch.dtype:
    for t in tensors:
        if isinstance(t, torch.Tensor) and t.is_floating_point():
            if dtype is not None and t.dtype != dtype:
                raise TypeError(f"inputs have dtype {t.dtype} but dtype={dtype} was asked for; use one dtype")
            return t.dtype
    dtype = torch.float64 if dtype is None else dtype
    if dtype not in (torch.float32, torch.float64):
        raise TypeError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    return dtype


def _matrices(name: str, mats: Matrices, d: int | None = None) -> list[torch.Tensor]:
    """Per-layer square matrices: a sequence of ``L >= 1`` tensors ``(d, d)`` or a tensor ``(L, d, d)``."""
    accepted = "a sequence of L >= 1 tensors of shape (d, d) or one tensor of shape (L, d, d)"
    if isinstance(mats, torch.Tensor):
        check_tensor(name, mats)
        dims = check_shape(name, mats, ("L", "d", "d"), None if d is None else {"d": d})
        out = [mats[l] for l in range(dims["L"])]
    elif isinstance(mats, Sequence) and not isinstance(mats, (str, bytes)):
        if len(mats) == 0:
            raise ValueError(f"{name} is empty; accepted: {accepted}")
        out = []
        dims = {} if d is None else {"d": d}
        for l, m in enumerate(mats):
            check_tensor(f"{name}[{l}]", m)
            check_shape(f"{name}[{l}]", m, ("d", "d"), dims)
            out.append(m)
    else:
        raise TypeError(f"{name} must be {accepted}; got {type(mats).__name__}")
    _same_kind(out[0], **{f"{name}[{l}]": m for l, m in enumerate(out)})
    return out


def _steps(name: str, steps: Steps, dtype: torch.dtype, device: torch.device | str | None) -> list[torch.Tensor]:
    """Per-layer scalars: a sequence of ``L >= 1`` numbers / 0-d tensors or a tensor ``(L,)``."""
    accepted = "a sequence of L >= 1 numbers or a tensor of shape (L,)"
    if isinstance(steps, torch.Tensor):
        check_tensor(name, steps)
        if steps.ndim != 1 or steps.shape[0] < 1:
            raise ValueError(f"{name} has shape {tuple(steps.shape)}; accepted: {accepted}")
        return [steps[l] for l in range(steps.shape[0])]
    if isinstance(steps, (str, bytes)) or not isinstance(steps, Sequence):
        raise TypeError(f"{name} must be {accepted}; got {type(steps).__name__}")
    if len(steps) == 0:
        raise ValueError(f"{name} is empty; accepted: {accepted}")
    out = []
    for l, s in enumerate(steps):
        if isinstance(s, torch.Tensor):
            check_tensor(f"{name}[{l}]", s)
            if s.ndim != 0:
                raise ValueError(f"{name}[{l}] must be a number or 0-d tensor, got shape {tuple(s.shape)}")
            out.append(s)
        else:
            out.append(torch.tensor(check_real(f"{name}[{l}]", s), dtype=dtype, device=device))
    return out


def _place(block: torch.Tensor | None, corner: torch.Tensor | float | None, D: int, *,
           like: torch.Tensor, row: int = 0, col: int = 0) -> torch.Tensor:
    r"""A ``D×D`` matrix with ``block`` at ``(row, col)`` and ``corner`` at ``(D-1, D-1)``; zero elsewhere.

    Built with ``pad``/``cat`` (no in-place writes) so gradients flow into ``block`` and ``corner``.
    """
    out = torch.zeros(D, D, dtype=like.dtype, device=like.device)
    if block is not None:
        k1, k2 = block.shape
        out = out + torch.nn.functional.pad(block, (col, D - col - k2, row, D - row - k1))
    if corner is not None:
        c = torch.as_tensor(corner, dtype=like.dtype, device=like.device)
        e = torch.zeros(D, dtype=like.dtype, device=like.device)
        e = torch.cat([e[1:], torch.ones_like(e[:1])])  # the last unit vector
        out = out + c * torch.outer(e, e)
    return out


# ---------------------------------------------------------------------- Ahn et al. 2023
def _linear_gd(A: list[torch.Tensor], B: list[torch.Tensor] | None) -> tuple[ModelSpec, dict[str, torch.Tensor]]:
    """Weights ``P_l = diag(B_l or 0, 1)``, ``Q_l = -diag(A_l, 0)`` of a one-head linear-attention model."""
    d = A[0].shape[-1]
    L, D = len(A), d + 1
    spec = ModelSpec.linear(d, L)
    params: dict[str, torch.Tensor] = {}
    for l in range(L):
        params[spec.key(l, 0, "P")] = _place(None if B is None else B[l], 1.0, D, like=A[0])
        params[spec.key(l, 0, "Q")] = _place(-A[l], None, D, like=A[0])
    return spec, params


def preconditioned_gd_construction(preconditioners: Matrices) -> Construction:
    r"""Linear attention that runs preconditioned GD (Ahn, Cheng, Daneshmand, Sra 2023, Lemma 1).

    Layer ``l`` has :math:`P_l = \mathrm{diag}(0_{d\times d}, 1)`, :math:`Q_l = -\mathrm{diag}(A_l, 0)`.
    With :math:`Z^\top Q_l Z = -X^\top A_l X` and the label row :math:`Y_i = y_i - x_i^\top w_l`,

    .. math::
        Y_j^{+} = Y_j - \frac1n\sum_{i\le n} Y_i\, x_i^\top A_l x_j
                = y_j - x_j^\top\big(w_l - A_l^\top \nabla R(w_l)\big),\qquad
        R(w) = \frac1{2n}\sum_{i\le n}(w^\top x_i - y_i)^2,

    so the label row holds the residuals :math:`y_i - x_i^\top w_l` of
    :math:`w_{l+1} = w_l - A_l^\top\nabla R(w_l)`, :math:`w_0 = 0` (the query slot holds
    :math:`-x_{n+1}^\top w_l`), the covariates never change, and the prediction
    :math:`-[Z_L]_{d+1,n+1} = x_{n+1}^\top w_L`.

    Args:
        preconditioners: the :math:`A_l`: ``L >= 1`` tensors ``(d, d)`` or one tensor ``(L, d, d)``;
            the parameters take their dtype and device.

    Returns:
        A :class:`Construction` with ``embed = embed_regression(X (..., d, n), y (..., n), x_query (..., d))``
        and ``readout = prediction_readout`` (:math:`x_{n+1}^\top w_L`).

    Raises:
        TypeError: non-tensor preconditioners or mixed dtypes/devices.
        ValueError: wrong shapes or no layers.
    """
    A = _matrices("preconditioners", preconditioners)
    spec, params = _linear_gd(A, None)
    return Construction(
        "preconditioned_gd", spec, params, embed_regression, prediction_readout,
        description="Ahn et al. 2023, Lemma 1: P_l = diag(0, 1), Q_l = -diag(A_l, 0) gives "
                    "w_{l+1} = w_l - A_l^T grad R(w_l), prediction x_q^T w_L",
    )


def gd_plus_plus_construction(preconditioners: Matrices, covariate_transforms: Matrices) -> Construction:
    r"""Relaxed linear attention: GD with covariate transforms (Ahn et al. 2023, Theorem 4; GD++).

    Layer ``l`` has :math:`P_l = \mathrm{diag}(B_l, 1)`, :math:`Q_l = -\mathrm{diag}(A_l, 0)`. The
    label row takes the preconditioned GD step of :func:`preconditioned_gd_construction` on the
    current covariates :math:`X_l`, and every token's covariate (query included) becomes

    .. math:: x_j^{(l+1)} = (I - B_l S_l A_l)\,x_j^{(l)},\qquad S_l = \frac1n\sum_{i\le n} x_i^{(l)} x_i^{(l)\top},

    which is :func:`landscape.theory.algorithms.gd_plus_plus` (GD++ when :math:`B_l = b_l I`).

    Args:
        preconditioners: the :math:`A_l` (``L`` tensors ``(d, d)`` or one ``(L, d, d)``).
        covariate_transforms: the :math:`B_l`, same format, ``d`` and ``L``.

    Returns:
        A :class:`Construction` (embed/readout as :func:`preconditioned_gd_construction`).

    Raises:
        TypeError, ValueError: as :func:`preconditioned_gd_construction`, or a different ``L``/``d``.
    """
    A = _matrices("preconditioners", preconditioners)
    B = _matrices("covariate_transforms", covariate_transforms, A[0].shape[-1])
    if len(B) != len(A):
        raise ValueError(f"preconditioners has L = {len(A)} layers but covariate_transforms has "
                         f"L = {len(B)}; they must match")
    _same_kind(A[0], covariate_transforms=B[0])
    spec, params = _linear_gd(A, B)
    return Construction(
        "gd_plus_plus", spec, params, embed_regression, prediction_readout,
        description="Ahn et al. 2023, Theorem 4: P_l = diag(B_l, 1), Q_l = -diag(A_l, 0): a preconditioned GD "
                    "step on the residuals, then x <- (I - B_l S_l A_l) x for every token (GD++)",
    )


# ---------------------------------------------------------------------- Cheng, Chen, Sra 2024
def composite_kernel(
    activations: Sequence[Kernel | str],
    projections: Sequence[torch.Tensor | None] | None = None,
    weights: Sequence[float] | None = None,
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    r"""The kernel :math:`K^\circ(u, w) = \sum_h \alpha_h \tilde h_h(G_h u, G_h w)` as a Gram function.

    Cheng, Chen, Sra 2024, Proposition 3. For kernels that are not normalised this is
    :meth:`landscape.core.kernels.SumKernel.gram`; a softmax head contributes its Gram normalised over
    the sources (dimension ``-2``), i.e. the context-dependent kernel of softmax attention.

    Args:
        activations: one kernel per head.
        projections: one ``(k_h, d)`` tensor or ``None`` (identity) per head.
        weights: :math:`\alpha_h` per head (default 1).

    Returns:
        ``kernel_fn(U (..., d, m1), W (..., d, m2)) -> (..., m1, m2)``.
    """
    kernels = [get_kernel(a) for a in activations]
    G = list(projections) if projections is not None else [None] * len(kernels)
    alpha = [1.0] * len(kernels) if weights is None else [float(a) for a in weights]
    if not any(k.normalised for k in kernels):
        return SumKernel(tuple(zip(alpha, kernels, G)), name="+".join(k.name for k in kernels)).gram

    def kernel_fn(U: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
        out = None
        for a, k, g in zip(alpha, kernels, G):
            Gu = U if g is None else g.to(U) @ U
            Gw = W if g is None else g.to(W) @ W
            term = a * k.gram(Gu, Gw)
            out = term if out is None else out + term
        return out  # type: ignore[return-value]

    return kernel_fn


def functional_gd_construction(
    d: int,
    step_sizes: Steps,
    activations: Kernel | str | Sequence[Kernel | str] = "exp",
    projections: Sequence[torch.Tensor | None] | None = None,
    weights: Sequence[float] | None = None,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> Construction:
    r"""Kernel attention that runs functional GD (Cheng, Chen, Sra 2024, Propositions 1 and 3).

    One head: :math:`V_l = \mathrm{diag}(0_{d\times d}, -r_l)`, :math:`B_l = C_l = \mathrm{diag}(I_d, 0)`.
    By induction the label row of :math:`Z_l` is :math:`y_i - f_l(x_i)` (context) and
    :math:`-f_l(x_{n+1})` (query), the covariates never change, and

    .. math:: f_0 = 0,\qquad f_{l+1} = f_l + \frac{r_l}{n}\sum_{i\le n}\big(y_i - f_l(x_i)\big) K(x_i, \cdot),

    with :math:`K = \tilde h` (for softmax: :math:`\tilde h` normalised over the ``n`` sources for
    each receiver). Heads ``h`` with :math:`V_{lh} = \mathrm{diag}(0, -r_l\alpha_h)` and
    :math:`B_{lh} = C_{lh} = G_h` (padded with zeros to ``(d+1, d+1)``) give the same recursion with
    :math:`K^\circ(x, x') = \sum_h \alpha_h \tilde h_h(G_h x, G_h x')` (Proposition 3), available as
    ``construction.meta["kernel"]``.

    Args:
        d: covariate dimension.
        step_sizes: the :math:`r_l` (``L >= 1`` numbers or a tensor ``(L,)``).
        activations: one kernel (name from :func:`landscape.core.kernels.known_kernels` or a
            :class:`~landscape.core.kernels.Kernel`) or a sequence, one per head.
        projections: per head a ``(k_h, d)`` tensor :math:`G_h` with ``k_h <= d + 1``, or ``None``
            (identity); ``None`` for all heads by default.
        weights: per head :math:`\alpha_h` (default 1).
        dtype: parameter dtype (default: that of tensor inputs, else float64).
        device: parameter device (default: that of tensor inputs, else CPU).

    Returns:
        A :class:`Construction`; ``embed = embed_regression``, ``readout = prediction_readout``
        (:math:`f_L(x_{n+1})`).

    Raises:
        ValueError: ``d < 1``, unknown activation, lengths of ``projections``/``weights`` that do not
            match the number of heads, a projection of the wrong shape.
        TypeError: wrong argument types or mixed dtypes.
    """
    d = check_int("d", d, minimum=1)
    if isinstance(activations, (str, Kernel)):
        activations = [activations]
    if isinstance(activations, (bytes,)) or not isinstance(activations, Sequence) or len(activations) == 0:
        raise TypeError(f"activations must be a kernel or a non-empty sequence of kernels "
                        f"(names: {', '.join(known_kernels())}), got {activations!r}")
    kernels = [get_kernel(a) for a in activations]
    H = len(kernels)
    if isinstance(step_sizes, torch.Tensor):
        tensors: list[object] = [step_sizes]
    elif isinstance(step_sizes, Sequence) and not isinstance(step_sizes, (str, bytes)):
        tensors = list(step_sizes)
    else:
        raise TypeError(f"step_sizes must be a sequence of L >= 1 numbers or a tensor of shape (L,); "
                        f"got {type(step_sizes).__name__}")
    G: list[torch.Tensor | None]
    if projections is None:
        G = [None] * H
    else:
        if not isinstance(projections, Sequence) or len(projections) != H:
            raise ValueError(f"projections must list one (k, d) tensor or None per head ({H} heads), got {projections!r}")
        G = list(projections)
        for h, g in enumerate(G):
            if g is None:
                continue
            check_tensor(f"projections[{h}]", g)
            if g.ndim != 2 or g.shape[1] != d or not 1 <= g.shape[0] <= d + 1:
                raise ValueError(f"projections[{h}] must have shape (k, d) = (k, {d}) with 1 <= k <= d+1 = {d + 1}, "
                                 f"got {tuple(g.shape)}")
            tensors.append(g)
    alpha: list[float]
    if weights is None:
        alpha = [1.0] * H
    else:
        if not isinstance(weights, Sequence) or len(weights) != H:
            raise ValueError(f"weights must list one number alpha_h per head ({H} heads), got {weights!r}")
        alpha = [check_real(f"weights[{h}]", a) for h, a in enumerate(weights)]
    dtype = _resolve_dtype(dtype, *tensors)
    if device is None:
        device = next((t.device for t in tensors if isinstance(t, torch.Tensor)), None)
    r = _steps("step_sizes", step_sizes, dtype, device)
    like = r[0]
    _same_kind(like, **{f"step_sizes[{l}]": s for l, s in enumerate(r)},
               **{f"projections[{h}]": g for h, g in enumerate(G) if g is not None})
    L, D = len(r), d + 1
    spec = ModelSpec.kernel(d, L, kernels)
    eye = torch.eye(d, dtype=like.dtype, device=like.device)
    keys = [_place(eye if g is None else g, None, D, like=like) for g in G]
    params: dict[str, torch.Tensor] = {}
    for l in range(L):
        for h in range(H):
            params[spec.key(l, h, "V")] = _place(None, -r[l] * alpha[h], D, like=like)
            params[spec.key(l, h, "B")] = keys[h]
            params[spec.key(l, h, "C")] = keys[h]
    names = "+".join(k.name for k in kernels)
    return Construction(
        "functional_gd", spec, params, embed_regression, prediction_readout,
        description=("Cheng, Chen, Sra 2024, Prop. 1" + (" and 3" if H > 1 else "")
                     + f": V_l = diag(0, -r_l alpha_h), B = C = G_h; functional GD with kernel {names}"),
        meta={"kernel": composite_kernel(kernels, G, alpha), "activations": tuple(kernels),
              "projections": tuple(G), "weights": tuple(alpha)},
    )


# ---------------------------------------------------------------------- Giannou et al. 2024
def newton_schulz_construction(
    m: int, steps: int, *, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None
) -> Construction:
    r"""Two-head linear attention that runs Newton–Schulz, one step per layer (Giannou et al. 2024).

    Tokens :math:`z_j = (a_j, x_j, e_j) \in \mathbb R^{3m}`, ``j = 1..m``, where :math:`a_j` is row
    ``j`` of ``A`` (so the first block of ``Z`` is :math:`A^\top`; :math:`A` itself when symmetric),
    :math:`x_j` column ``j`` of the iterate ``X`` and :math:`e_j` the ``j``-th unit vector. All ``m``
    tokens are sources (``n_sources = m``) and the model's ``1/m`` is folded into ``P``:

    * head 1, score :math:`z_k^\top Q_1 z_j = a_k^\top x_j`, value :math:`P_1 z_k = (0, -m\,x_k, 0)`:
      :math:`\frac1m\sum_k (-m x_k) a_k^\top x_j = -(XAX)_{:,j}`;
    * head 2, score :math:`e_k^\top e_j = \delta_{kj}`, value :math:`(0, m\,x_k, 0)`: :math:`+X_{:,j}`;
    * the residual adds ``X``: :math:`X^+ = 2X - XAX = X(2I - AX)`.

    The ``a`` and ``e`` blocks are never written, so every layer performs one step and the
    residual :math:`I - AX_t` squares layer by layer.

    Args:
        m: size of the matrix to invert.
        steps: number of layers = Newton–Schulz steps ``T >= 1``.
        dtype: parameter dtype.
        device: parameter device.

    Returns:
        A :class:`Construction` with ``embed(A (..., m, m), X0 (..., m, m) | None) -> Z (..., 3m, m)``
        (``X0 = None`` means :math:`X_0 = A^\top/\|A\|_2^2`, as :func:`landscape.theory.algorithms.newton_schulz`)
        and ``readout(Z) -> X (..., m, m)``.

    Raises:
        ValueError: ``m < 1`` or ``steps < 1``.
        TypeError: non-integer sizes or an unsupported dtype.
    """
    m = check_int("m", m, minimum=1)
    T = check_int("steps", steps, minimum=1)
    dtype = _resolve_dtype(dtype)
    like = torch.zeros((), dtype=dtype, device=device)
    D = 3 * m
    spec = ModelSpec(m, T, (HeadSpec("linear"), HeadSpec("linear")), token_dim=D)
    eye = torch.eye(m, dtype=dtype, device=device)
    P1 = _place(-m * eye, None, D, like=like, row=m, col=m)
    Q1 = _place(eye, None, D, like=like, row=0, col=m)
    P2 = _place(m * eye, None, D, like=like, row=m, col=m)
    Q2 = _place(eye, None, D, like=like, row=2 * m, col=2 * m)
    params: dict[str, torch.Tensor] = {}
    for l in range(T):
        params.update({spec.key(l, 0, "P"): P1, spec.key(l, 0, "Q"): Q1,
                       spec.key(l, 1, "P"): P2, spec.key(l, 1, "Q"): Q2})

    def embed(A: torch.Tensor, X0: torch.Tensor | None = None) -> torch.Tensor:
        check_tensor("A", A)
        if A.ndim < 2 or tuple(A.shape[-2:]) != (m, m):
            raise ValueError(f"A must have shape (..., {m}, {m}) for this construction (m = {m}), got {tuple(A.shape)}")
        if X0 is None:
            alpha = torch.linalg.matrix_norm(A, ord=2) ** -2
            X0 = alpha[..., None, None] * A.transpose(-1, -2)
        check_tensor("X0", X0)
        if tuple(X0.shape) != tuple(A.shape):
            raise ValueError(f"X0 must have the shape of A {tuple(A.shape)}, got {tuple(X0.shape)}")
        _same_kind(A, X0=X0)
        E = torch.eye(m, dtype=A.dtype, device=A.device).expand(A.shape)
        return torch.cat([A.transpose(-1, -2), X0, E], dim=-2)

    def readout(Z: torch.Tensor) -> torch.Tensor:
        return Z[..., m : 2 * m, :]

    return Construction(
        "newton_schulz", spec, params, embed, readout, n_sources=m,
        description="Giannou et al. 2024: tokens (a_j, x_j, e_j); head 1 (scores a_k^T x_j, values -x_k) gives -XAX, "
                    "head 2 (scores e_k^T e_j, values x_k) gives +X, residual +X: X <- X(2I - AX)",
        meta={"looped": True},
    )


# ---------------------------------------------------------------------- Zhang, Cao 2026
def normalised_gd_construction(
    d: int,
    eta: float,
    c: float,
    layers: int,
    n: int,
    *,
    loss: Literal["exp", "logsumexp1"] = "exp",
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> Construction:
    r"""Looped softmax attention that runs normalised GD for in-context classification (Zhang, Cao 2026).

    Tokens live in :math:`\mathbb R^{2d}`: ``n`` context tokens :math:`(u_i, 0)` with
    :math:`u_i = y_i x_i`, then a state token :math:`(0, w)` that receives. One softmax kernel head,
    the same in every layer: ``B`` reads ``u`` (:math:`B z = (u, 0)`), ``C`` reads the state
    (:math:`C z = (-c\,w, 0)`), so the score of source ``i`` for the state token is
    :math:`s_i = -c\,u_i^\top w`; the value is :math:`V z_i = (0, n\eta\,u_i)` (the ``n`` cancels the
    model's ``1/n``). With the residual,

    .. math::
        w^+ = w + \eta\sum_{i\le n}\mathrm{softmax}(s)_i\,u_i
            = w - \frac{\eta}{c}\,\frac{\nabla L(w)}{L(w)},\qquad L(w) = \sum_i e^{-c\,y_i x_i^\top w},

    normalised GD on the exponential loss (``loss="exp"``). With ``loss="logsumexp1"`` the state
    token is a source as well (``n_sources = n + 1``; its score is 0 and its value 0, and the value
    carries ``n + 1``), which gives the plain gradient step on :math:`\log(1 + \sum_i e^{s_i})`.
    The context tokens' ``w`` block also changes, but it is never read by a score or a value.
    This embedding is ours (docs/theory.md §6), not the paper's.

    Args:
        d: covariate dimension.
        eta: step :math:`\eta`.
        c: score scale :math:`c > 0`.
        layers: number of layers = steps ``T >= 1``.
        n: context length the construction is built for (the ``1/n`` is folded into ``V``).
        loss: ``"exp"`` or ``"logsumexp1"`` (see above).
        dtype: parameter dtype.
        device: parameter device.

    Returns:
        A :class:`Construction` with ``embed(X (..., d, n), y (..., n), w0 (..., d) | None) -> Z (..., 2d, n+1)``
        and ``readout(Z) -> w (..., d)``.

    Raises:
        ValueError: ``d, n, layers < 1``, ``c <= 0``, unknown ``loss``, or (from ``embed``) a prompt
            whose context length is not ``n``.
        TypeError: wrong argument types.
    """
    d = check_int("d", d, minimum=1)
    n = check_int("n", n, minimum=1)
    T = check_int("layers", layers, minimum=1)
    eta = check_real("eta", eta)
    c = check_real("c", c, positive=True)
    if loss not in ("exp", "logsumexp1"):
        raise ValueError(f"loss must be one of 'exp', 'logsumexp1'; got {loss!r}")
    dtype = _resolve_dtype(dtype)
    like = torch.zeros((), dtype=dtype, device=device)
    D = 2 * d
    sources = n if loss == "exp" else n + 1
    spec = ModelSpec(d, T, (HeadSpec("kernel", "softmax"),), token_dim=D)
    eye = torch.eye(d, dtype=dtype, device=device)
    V = _place(sources * eta * eye, None, D, like=like, row=d, col=0)
    B = _place(eye, None, D, like=like, row=0, col=0)
    C = _place(-c * eye, None, D, like=like, row=0, col=d)
    params: dict[str, torch.Tensor] = {}
    for l in range(T):
        params.update({spec.key(l, 0, "V"): V, spec.key(l, 0, "B"): B, spec.key(l, 0, "C"): C})

    def embed(X: torch.Tensor, y: torch.Tensor, w0: torch.Tensor | None = None) -> torch.Tensor:
        check_tensor("X", X)
        check_tensor("y", y)
        if X.ndim < 2 or X.shape[-2] != d or X.shape[-1] != n:
            raise ValueError(f"X must have shape (..., d, n) = (..., {d}, {n}) for this construction "
                             f"(built for d = {d}, n = {n}), got {tuple(X.shape)}")
        if tuple(y.shape) != tuple(X.shape[:-2]) + (n,):
            raise ValueError(f"y must have shape {tuple(X.shape[:-2]) + (n,)}, got {tuple(y.shape)}")
        _same_kind(X, y=y)
        if w0 is None:
            w0 = torch.zeros(X.shape[:-2] + (d,), dtype=X.dtype, device=X.device)
        check_tensor("w0", w0)
        if tuple(w0.shape) != tuple(X.shape[:-2]) + (d,):
            raise ValueError(f"w0 must have shape {tuple(X.shape[:-2]) + (d,)}, got {tuple(w0.shape)}")
        _same_kind(X, w0=w0)
        U = y.unsqueeze(-2) * X
        top = torch.cat([U, torch.zeros_like(U[..., :1])], dim=-1)
        bottom = torch.cat([torch.zeros_like(U), w0.unsqueeze(-1)], dim=-1)
        return torch.cat([top, bottom], dim=-2)

    def readout(Z: torch.Tensor) -> torch.Tensor:
        return Z[..., d:, -1]

    return Construction(
        "normalised_gd", spec, params, embed, readout, n_sources=sources,
        description="Zhang, Cao 2026 (mechanism of docs/theory.md §6): looped softmax head, score -c u_i^T w, value eta u_i: "
                    + ("w <- w - (eta/c) grad L/L, L = sum_i exp(-c y_i x_i^T w)" if loss == "exp" else
                       "w <- w - (eta/c) grad log(1 + sum_i exp(-c y_i x_i^T w))"),
        meta={"looped": True, "loss": loss, "n": n},
    )
