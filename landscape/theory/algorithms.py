r"""Reference algorithms that in-context transformer constructions must reproduce.

Each function is written directly from its mathematical definition as a plain loop in the
dtype of its inputs (use float64 for verification), so that a transformer construction can be
compared against it to round-off. Conventions, shared with :mod:`landscape.core.model`:

* every input carries a leading **prompt-batch** axis;
* covariates are stored with **tokens as columns**: ``X`` has shape ``(batch, d, n)`` and its
  column ``X[b, :, i]`` is :math:`x_i`; labels ``y`` have shape ``(batch, n)``; a query
  ``x_query`` has shape ``(batch, d)``;
* outputs have the batch axis first and the dtype/device of the inputs;
* nothing writes into its inputs, calls ``.item()`` or touches the global RNG (the functions
  are ``torch.func.vmap``-friendly), except :func:`max_margin_direction`, which calls SciPy.

Algorithms (paper in brackets):

* :func:`preconditioned_gd`, :func:`gd` — preconditioned GD on the in-context least-squares risk
  (Ahn, Cheng, Daneshmand, Sra 2023, Lemma 1).
* :func:`gd_plus_plus` — the relaxed linear-attention forward pass with covariate transforms
  (Ahn et al. 2023, Theorem 4 / GD++).
* :func:`functional_gd`, :func:`functional_gd_closed_form` — functional GD in an RKHS, and its
  closed form for constant step (Cheng, Chen, Sra 2024, Propositions 1–2).
* :func:`gp_posterior_mean`, :func:`gp_posterior_variance`, :func:`bayes_risk` — the Bayes-optimal
  predictor for Gaussian-process labels and its risk.
* :func:`newton_schulz`, :func:`least_squares_newton_schulz`, :func:`damped_newton_logistic`
  (Giannou et al. 2024).
* :func:`normalised_gd`, :func:`max_margin_direction` (Zhang, Cao 2026).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from landscape._checks import (
    check_choice,
    check_int,
    check_real,
    check_same_dtype_device,
    check_shape,
    check_tensor,
)

__all__ = [
    "in_context_risk",
    "in_context_risk_grad",
    "preconditioned_gd",
    "gd",
    "GDPlusPlusTrace",
    "gd_plus_plus",
    "FunctionalGDTrace",
    "functional_gd",
    "functional_gd_closed_form",
    "gp_posterior_mean",
    "gp_posterior_variance",
    "BayesRisk",
    "bayes_risk",
    "newton_schulz",
    "newton_schulz_residuals",
    "least_squares_newton_schulz",
    "logistic_loss",
    "logistic_grad",
    "logistic_hessian",
    "newton_decrement",
    "damped_newton_logistic",
    "normalised_gd",
    "max_margin_direction",
]

KernelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``kernel_fn(U, W)`` with ``U: (batch, d, m1)``, ``W: (batch, d, m2)`` returns the Gram
``(batch, m1, m2)`` with entries :math:`K(u_i, w_j)` (first argument = source)."""

StepSizes = Sequence[float] | Sequence[torch.Tensor] | torch.Tensor
Matrices = Sequence[torch.Tensor] | torch.Tensor


# --------------------------------------------------------------------------------------------
# private helpers
# --------------------------------------------------------------------------------------------


def _check_regression(
    X: object, y: object, x_query: object | None = None, *, y_name: str = "y", X_name: str = "X"
) -> dict[str, int]:
    """Validate ``X (batch, d, n)``, ``y (batch, n)`` and optionally ``x_query (batch, d)``."""
    X = check_tensor(X_name, X)
    y = check_tensor(y_name, y)
    dims = check_shape(X_name, X, ("batch", "d", "n"))
    check_shape(y_name, y, ("batch", "n"), dims)
    check_same_dtype_device(X_name, X, **{y_name: y})
    if x_query is not None:
        xq = check_tensor("x_query", x_query)
        check_shape("x_query", xq, ("batch", "d"), dims)
        check_same_dtype_device(X_name, X, x_query=xq)
    return dims


def _as_matrices(name: str, mats: object, ref: torch.Tensor, batch: int, d: int) -> torch.Tensor:
    """Normalise per-layer ``(d, d)`` matrices to a tensor of shape ``(1 or batch, L, d, d)``.

    Accepted: a sequence of ``L`` tensors, each ``(d, d)`` (shared by all prompts) or
    ``(batch, d, d)``; a tensor ``(L, d, d)``; a tensor ``(batch, L, d, d)``.
    """
    accepted = (
        f"a sequence of L tensors of shape (d, d) or (batch, d, d), a tensor (L, d, d) or a "
        f"tensor (batch, L, d, d) with d = {d}, batch = {batch}"
    )
    if isinstance(mats, torch.Tensor):
        check_tensor(name, mats)
        check_same_dtype_device("X", ref, **{name: mats})
        if mats.ndim == 3:
            check_shape(name, mats, ("L", d, d), min_size={"L": 0})
            return mats.unsqueeze(0)
        if mats.ndim == 4:
            check_shape(name, mats, (batch, "L", d, d), min_size={"L": 0})
            return mats
        raise ValueError(f"{name} has shape {tuple(mats.shape)}; accepted: {accepted}")
    if isinstance(mats, (str, bytes)) or not isinstance(mats, Sequence):
        raise TypeError(f"{name} must be {accepted}; got {type(mats).__name__}")
    if len(mats) == 0:
        return ref.new_zeros((1, 0, d, d))
    items = []
    for l, m in enumerate(mats):
        m = check_tensor(f"{name}[{l}]", m)
        check_same_dtype_device("X", ref, **{f"{name}[{l}]": m})
        if m.ndim == 2:
            check_shape(f"{name}[{l}]", m, (d, d))
            m = m.expand(batch, d, d)
        else:
            check_shape(f"{name}[{l}]", m, (batch, d, d))
        items.append(m)
    return torch.stack(items, dim=1)


def _as_steps(name: str, steps: object, ref: torch.Tensor, batch: int) -> torch.Tensor:
    """Normalise step sizes to a tensor of shape ``(1 or batch, L)``.

    Accepted: a sequence of ``L`` Python numbers or 0-d tensors; a tensor ``(L,)``; a tensor
    ``(batch, L)``.
    """
    accepted = "a sequence of L numbers, a tensor (L,) or a tensor (batch, L)"
    if isinstance(steps, torch.Tensor):
        check_tensor(name, steps)
        check_same_dtype_device("X", ref, **{name: steps})
        if steps.ndim == 1:
            return steps.unsqueeze(0)
        if steps.ndim == 2:
            check_shape(name, steps, (batch, "L"), min_size={"L": 0})
            return steps
        raise ValueError(f"{name} has shape {tuple(steps.shape)}; accepted: {accepted}")
    if isinstance(steps, (str, bytes)) or not isinstance(steps, Sequence):
        raise TypeError(f"{name} must be {accepted}; got {type(steps).__name__}")
    vals = []
    for l, s in enumerate(steps):
        if isinstance(s, torch.Tensor):
            check_tensor(f"{name}[{l}]", s)
            check_same_dtype_device("X", ref, **{f"{name}[{l}]": s})
            if s.ndim != 0:
                raise ValueError(f"{name}[{l}] must be a 0-d tensor, got shape {tuple(s.shape)}")
            vals.append(s)
        else:
            vals.append(torch.tensor(check_real(f"{name}[{l}]", s), dtype=ref.dtype, device=ref.device))
    if not vals:
        return ref.new_zeros((1, 0))
    return torch.stack(vals).unsqueeze(0)


def _as_scalar(name: str, value: object, ref: torch.Tensor, batch: int, *, positive: bool = False) -> torch.Tensor:
    """A Python number, 0-d tensor or ``(batch,)`` tensor, returned with shape ``(1 or batch,)``."""
    if isinstance(value, torch.Tensor):
        check_tensor(name, value)
        check_same_dtype_device("X", ref, **{name: value})
        if value.ndim == 0:
            return value.reshape(1)
        check_shape(name, value, (batch,))
        return value
    return torch.tensor([check_real(name, value, positive=positive)], dtype=ref.dtype, device=ref.device)


def _eye(d: int, ref: torch.Tensor) -> torch.Tensor:
    return torch.eye(d, dtype=ref.dtype, device=ref.device)


# --------------------------------------------------------------------------------------------
# Ahn et al. 2023: in-context least squares, preconditioned GD, GD++
# --------------------------------------------------------------------------------------------


def in_context_risk(w: torch.Tensor, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    r"""In-context least-squares risk :math:`R(w) = \frac{1}{2n}\sum_{i=1}^n (w^\top x_i - y_i)^2`.

    (Ahn, Cheng, Daneshmand, Sra 2023, Lemma 1.)

    Args:
        w: weights, shape ``(batch, d)``.
        X: context covariates, tokens as columns, shape ``(batch, d, n)``.
        y: context labels, shape ``(batch, n)``.

    Returns:
        ``R(w)`` per prompt, shape ``(batch,)``.

    Raises:
        TypeError: non-tensor input or dtype mismatch.
        ValueError: shapes inconsistent with ``(batch, d)``, ``(batch, d, n)``, ``(batch, n)``.
    """
    dims = _check_regression(X, y)
    check_tensor("w", w)
    check_shape("w", w, ("batch", "d"), dims)
    check_same_dtype_device("X", X, w=w)
    residual = torch.einsum("bdn,bd->bn", X, w) - y
    return 0.5 * (residual**2).mean(dim=-1)


def in_context_risk_grad(w: torch.Tensor, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    r"""Gradient :math:`\nabla R(w) = \frac1n \sum_i x_i (x_i^\top w - y_i) = \frac1n X(X^\top w - y)`.

    Args:
        w: weights, shape ``(batch, d)``.
        X: context covariates, shape ``(batch, d, n)``.
        y: context labels, shape ``(batch, n)``.

    Returns:
        The gradient, shape ``(batch, d)``.

    Raises:
        TypeError, ValueError: as :func:`in_context_risk`.
    """
    dims = _check_regression(X, y)
    check_tensor("w", w)
    check_shape("w", w, ("batch", "d"), dims)
    check_same_dtype_device("X", X, w=w)
    return _risk_grad(w, X, y)


def _start(ref_name: str, ref: torch.Tensor, w0: torch.Tensor | None, dims: dict[str, int]) -> torch.Tensor:
    """The starting iterate ``w0`` of an algorithm, checked against ``ref``; zeros ``(batch, d)`` if ``None``."""
    if w0 is None:
        return ref.new_zeros((dims["batch"], dims["d"]))
    check_tensor("w0", w0)
    check_shape("w0", w0, ("batch", "d"), dims)
    check_same_dtype_device(ref_name, ref, w0=w0)
    return w0


def _risk_grad(w: torch.Tensor, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    n = X.shape[-1]
    residual = torch.einsum("bdn,bd->bn", X, w) - y
    return torch.einsum("bdn,bn->bd", X, residual) / n


def preconditioned_gd(
    X: torch.Tensor,
    y: torch.Tensor,
    preconditioners: Matrices,
    w0: torch.Tensor | None = None,
    *,
    return_iterates: bool = False,
) -> torch.Tensor:
    r"""Preconditioned gradient descent on the in-context risk.

    .. math::
        w_0 = 0,\qquad w_{l+1} = w_l - A_l^\top \nabla R(w_l),\qquad
        R(w) = \frac{1}{2n}\sum_{i=1}^n (w^\top x_i - y_i)^2 .

    Ahn, Cheng, Daneshmand, Sra (2023), Lemma 1: an L-layer linear-attention transformer with
    :math:`P_l = \mathrm{diag}(0_{d\times d}, 1)`, :math:`Q_l = -\mathrm{diag}(A_l, 0)` predicts
    :math:`x_{n+1}^\top w_L`.

    Args:
        X: context covariates, tokens as columns, shape ``(batch, d, n)``.
        y: context labels, shape ``(batch, n)``.
        preconditioners: the ``A_l``: a sequence of ``L`` tensors ``(d, d)`` (or ``(batch, d, d)``),
            a tensor ``(L, d, d)``, or per-prompt ``(batch, L, d, d)``. ``L = 0`` returns ``w0``.
        w0: starting point ``(batch, d)``; zeros when ``None`` (the transformer's case).
        return_iterates: return all iterates instead of the last one.

    Returns:
        ``w_L`` of shape ``(batch, d)``, or ``(w_0, ..., w_L)`` of shape ``(batch, L+1, d)``.

    Raises:
        TypeError: non-tensor input or dtype mismatch.
        ValueError: inconsistent shapes.
    """
    dims = _check_regression(X, y)
    batch, d = dims["batch"], dims["d"]
    A = _as_matrices("preconditioners", preconditioners, X, batch, d)
    w = _start("X", X, w0, dims)
    iterates = [w]
    for l in range(A.shape[1]):
        A_l = A[:, l].expand(batch, d, d)
        grad = _risk_grad(w, X, y)
        w = w - torch.einsum("bji,bj->bi", A_l, grad)  # A_l^T grad
        iterates.append(w)
    return torch.stack(iterates, dim=1) if return_iterates else w


def gd(
    X: torch.Tensor,
    y: torch.Tensor,
    step_sizes: StepSizes,
    w0: torch.Tensor | None = None,
    *,
    return_iterates: bool = False,
) -> torch.Tensor:
    r"""Plain GD on the in-context risk: :func:`preconditioned_gd` with :math:`A_l = \eta_l I`.

    .. math:: w_{l+1} = w_l - \eta_l \nabla R(w_l),\qquad w_0 = 0.

    Args:
        X: context covariates ``(batch, d, n)``.
        y: context labels ``(batch, n)``.
        step_sizes: ``eta_l``: a sequence of ``L`` numbers, a tensor ``(L,)`` or ``(batch, L)``.
        w0: optional start ``(batch, d)``.
        return_iterates: return ``(batch, L+1, d)`` instead of ``(batch, d)``.

    Returns:
        As :func:`preconditioned_gd`.

    Raises:
        TypeError, ValueError: as :func:`preconditioned_gd`.
    """
    dims = _check_regression(X, y)
    batch, d = dims["batch"], dims["d"]
    eta = _as_steps("step_sizes", step_sizes, X, batch)
    A = eta[:, :, None, None] * _eye(d, X)
    return preconditioned_gd(X, y, A.expand(batch, -1, d, d), w0, return_iterates=return_iterates)


@dataclass(frozen=True)
class GDPlusPlusTrace:
    r"""Per-layer states of :func:`gd_plus_plus` (``l = 0 .. L``).

    Attributes:
        prediction: :math:`f_L(x_{n+1})`, shape ``(batch,)`` (the transformer's output).
        predictions: :math:`f_l(x_{n+1})` for every layer, ``(batch, L+1)``.
        X: transformed context covariates :math:`X_l`, ``(batch, L+1, d, n)``.
        x_query: transformed query :math:`x^{(l)}_{n+1}`, ``(batch, L+1, d)``.
        residuals: :math:`y_i - f_l(x_i)`, ``(batch, L+1, n)`` (the label row of ``Z_l``).
        w: the weights in the *original* coordinates, :math:`f_l(x) = x^\top w_l`,
            ``(batch, L+1, d)``.
        effective_preconditioners: :math:`\tilde A_l = T_l^\top A_l T_l`, ``(batch, L, d, d)``,
            such that ``w`` follows :func:`preconditioned_gd` with them.
    """

    prediction: torch.Tensor
    predictions: torch.Tensor
    X: torch.Tensor
    x_query: torch.Tensor
    residuals: torch.Tensor
    w: torch.Tensor
    effective_preconditioners: torch.Tensor


def gd_plus_plus(
    X: torch.Tensor,
    y: torch.Tensor,
    x_query: torch.Tensor,
    preconditioners: Matrices,
    covariate_transforms: Matrices,
    *,
    return_iterates: bool = False,
) -> torch.Tensor | GDPlusPlusTrace:
    r"""Preconditioned GD on transformed covariates — the relaxed linear-attention forward pass.

    Ahn, Cheng, Daneshmand, Sra (2023), Theorem 4: layers with
    :math:`P_l = \mathrm{diag}(B_l, 1)`, :math:`Q_l = -\mathrm{diag}(A_l, 0)` (GD++ when
    :math:`B_l = b_l I`).

    **Derivation.** Write :math:`Z_l = [X_l; Y_l]` with :math:`X_l \in \mathbb R^{d\times(n+1)}`
    (query included) and :math:`Y_l \in \mathbb R^{1\times(n+1)}`, :math:`M = \mathrm{diag}(I_n,0)`.
    Then :math:`Z^\top Q_l Z = -X_l^\top A_l X_l` and :math:`P_l Z M = [B_l X_l M; Y_l M]`, so
    :math:`Z_{l+1} = Z_l + \frac1n P_l Z_l M (Z_l^\top Q_l Z_l)` splits into

    .. math::
        x^{(l+1)}_j = x^{(l)}_j - \frac1n B_l \sum_{i\le n} x^{(l)}_i\, x^{(l)\top}_i A_l x^{(l)}_j
                    = (I - B_l S_l A_l)\, x^{(l)}_j,\qquad
        S_l = \frac1n \sum_{i\le n} x^{(l)}_i x^{(l)\top}_i ,

    for every column ``j`` (contexts **and** the query), and

    .. math::
        Y^{(l+1)}_j = Y^{(l)}_j - x^{(l)\top}_j A_l^\top g_l,\qquad
        g_l = \frac1n \sum_{i\le n} x^{(l)}_i Y^{(l)}_i .

    By induction :math:`Y^{(l)}_j = y_j - f_l(x_j)` (with :math:`y_{n+1} := 0`), where
    :math:`f_0 = 0` and :math:`f_{l+1}(x) = f_l(x) + x^{(l)\top} A_l^\top g_l`: each layer takes one
    preconditioned GD step :math:`A_l^\top g_l = -A_l^\top \nabla_u \frac{1}{2n}\sum_i
    (u^\top x^{(l)}_i - r^{(l)}_i)^2|_{u=0}` on the current residuals
    :math:`r^{(l)}_i = y_i - f_l(x_i)`, with the covariates as they are in layer ``l``; then all
    covariates are transformed by :math:`I - B_l S_l A_l`. The prediction is
    :math:`\mathrm{TF} = -Y^{(L)}_{n+1} = f_L(x_{n+1}) = \sum_{l<L} x^{(l)\top}_{n+1} A_l^\top g_l`.

    With :math:`T_l = (I - B_{l-1}S_{l-1}A_{l-1})\cdots(I - B_0 S_0 A_0)` (so
    :math:`x^{(l)} = T_l x`), :math:`f_l(x) = x^\top w_l` with
    :math:`w_{l+1} = w_l - \tilde A_l^\top \nabla R(w_l)`, :math:`\tilde A_l = T_l^\top A_l T_l`:
    preconditioned GD (:func:`preconditioned_gd`) in the original coordinates with data-dependent
    preconditioners. ``B_l = 0`` gives back Lemma 1.

    Args:
        X: context covariates ``(batch, d, n)``.
        y: context labels ``(batch, n)``.
        x_query: query covariate ``(batch, d)``.
        preconditioners: the ``A_l`` (formats as in :func:`preconditioned_gd`).
        covariate_transforms: the ``B_l``, same formats and the same ``L``.
        return_iterates: return a :class:`GDPlusPlusTrace` instead of the prediction.

    Returns:
        The prediction :math:`f_L(x_{n+1})`, shape ``(batch,)``, or a :class:`GDPlusPlusTrace`.

    Raises:
        TypeError: non-tensor input or dtype mismatch.
        ValueError: inconsistent shapes or different numbers of ``A_l`` and ``B_l``.
    """
    dims = _check_regression(X, y, x_query)
    batch, d, n = dims["batch"], dims["d"], dims["n"]
    A = _as_matrices("preconditioners", preconditioners, X, batch, d)
    B = _as_matrices("covariate_transforms", covariate_transforms, X, batch, d)
    if A.shape[1] != B.shape[1]:
        raise ValueError(
            f"preconditioners has L = {A.shape[1]} layers but covariate_transforms has "
            f"L = {B.shape[1]}; they must match"
        )
    eye = _eye(d, X)
    X_l, xq_l = X, x_query
    residual = y  # r^{(0)}_i = y_i - f_0(x_i) = y_i
    f_q = X.new_zeros((batch,))  # f_0(x_{n+1}) = 0
    w = X.new_zeros((batch, d))
    T = eye.expand(batch, d, d)
    Xs, xqs, residuals, fqs, ws, A_eff = [X_l], [xq_l], [residual], [f_q], [w], []
    for l in range(A.shape[1]):
        A_l = A[:, l].expand(batch, d, d)
        B_l = B[:, l].expand(batch, d, d)
        # one preconditioned GD step on the residuals, in layer-l coordinates
        g = torch.einsum("bdn,bn->bd", X_l, residual) / n
        step = torch.einsum("bji,bj->bi", A_l, g)  # A_l^T g_l
        residual = residual - torch.einsum("bdn,bd->bn", X_l, step)
        f_q = f_q + torch.einsum("bd,bd->b", xq_l, step)
        # the same step in the original coordinates: f(x) += (T_l x)^T step
        A_eff.append(T.transpose(-1, -2) @ A_l @ T)
        w = w + torch.einsum("bji,bj->bi", T, step)  # T_l^T step
        # covariate transform x <- (I - B_l S_l A_l) x, query included
        S_l = X_l @ X_l.transpose(-1, -2) / n
        G_l = eye - B_l @ S_l @ A_l
        X_l = G_l @ X_l
        xq_l = torch.einsum("bij,bj->bi", G_l, xq_l)
        T = G_l @ T
        Xs.append(X_l)
        xqs.append(xq_l)
        residuals.append(residual)
        fqs.append(f_q)
        ws.append(w)
    if not return_iterates:
        return f_q
    return GDPlusPlusTrace(
        prediction=f_q,
        predictions=torch.stack(fqs, dim=1),
        X=torch.stack(Xs, dim=1),
        x_query=torch.stack(xqs, dim=1),
        residuals=torch.stack(residuals, dim=1),
        w=torch.stack(ws, dim=1),
        effective_preconditioners=(
            torch.stack(A_eff, dim=1) if A_eff else X.new_zeros((batch, 0, d, d))
        ),
    )


# --------------------------------------------------------------------------------------------
# Cheng, Chen, Sra 2024: functional GD and Gaussian processes
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FunctionalGDTrace:
    r"""Per-layer states of :func:`functional_gd` (``l = 0 .. L``).

    Attributes:
        prediction: :math:`f_L(x_{n+1})`, ``(batch,)``.
        residuals: :math:`y_i - f_l(x_i)`, ``(batch, L+1, n)`` (the label row of ``Z_l``).
        query_values: :math:`f_l(x_{n+1})`, ``(batch, L+1)`` (minus the label slot of the query).
    """

    prediction: torch.Tensor
    residuals: torch.Tensor
    query_values: torch.Tensor


def functional_gd(
    X: torch.Tensor,
    y: torch.Tensor,
    x_query: torch.Tensor,
    kernel_fn: KernelFn,
    step_sizes: StepSizes,
    *,
    normalise: bool = False,
    return_iterates: bool = False,
) -> torch.Tensor | FunctionalGDTrace:
    r"""Functional gradient descent in the RKHS of a kernel ``K``.

    Cheng, Chen, Sra (2024), Proposition 1:

    .. math::
        f_0 = 0,\qquad
        f_{l+1} = f_l + \frac{r_l}{n} \sum_{i=1}^n \big(y_i - f_l(x_i)\big)\, K(x_i, \cdot).

    A kernel-attention transformer with :math:`V_l = \mathrm{diag}(0, -r_l)`, ``B_l = C_l = I``
    and activation ``K`` predicts :math:`f_L(x_{n+1})`.

    The Gram is evaluated once with the ``n`` context points as **sources** (first argument) and
    all ``n+1`` points (contexts, then the query) as **receivers**: ``G = kernel_fn(X, [X, x_q])``
    of shape ``(batch, n, n+1)``. With ``normalise=True`` (softmax attention) the kernel is the
    context-dependent normalised kernel

    .. math:: \bar K(x_i, z_j) = K(x_i, z_j) \Big/ \sum_{k\le n} K(x_k, z_j),

    normalised over the ``n`` sources separately for every receiver ``z_j`` (query included);
    with ``K(u, w) = exp(u^T w)`` this is ``softmax``. The ``1/n`` factor is kept, as in the
    transformer.

    Args:
        X: context covariates ``(batch, d, n)``.
        y: context labels ``(batch, n)``.
        x_query: query ``(batch, d)``.
        kernel_fn: ``kernel_fn(U, W) -> (batch, m1, m2)`` with entries ``K(u_i, w_j)``.
        step_sizes: ``r_l``: a sequence of ``L`` numbers, a tensor ``(L,)`` or ``(batch, L)``.
        normalise: normalise the Gram over sources for each receiver (softmax attention).
        return_iterates: return a :class:`FunctionalGDTrace`.

    Returns:
        :math:`f_L(x_{n+1})` of shape ``(batch,)``, or a :class:`FunctionalGDTrace`.

    Raises:
        TypeError: non-tensor input, dtype mismatch, or ``kernel_fn`` not callable.
        ValueError: inconsistent shapes, or a Gram of the wrong shape.
    """
    dims = _check_regression(X, y, x_query)
    batch, n = dims["batch"], dims["n"]
    if not callable(kernel_fn):
        raise TypeError(f"kernel_fn must be callable (U, W) -> Gram, got {type(kernel_fn).__name__}")
    r = _as_steps("step_sizes", step_sizes, X, batch)
    receivers = torch.cat([X, x_query.unsqueeze(-1)], dim=-1)  # (batch, d, n+1)
    G = kernel_fn(X, receivers)
    if not isinstance(G, torch.Tensor):
        raise TypeError(f"kernel_fn must return a torch.Tensor, got {type(G).__name__}")
    if tuple(G.shape) != (batch, n, n + 1):
        raise ValueError(
            f"kernel_fn(U, W) returned shape {tuple(G.shape)}; expected (batch, n, n+1) = "
            f"{(batch, n, n + 1)} for sources U = X and receivers W = [X, x_query]"
        )
    check_same_dtype_device("X", X, **{"kernel_fn output": G})
    if normalise:
        G = G / G.sum(dim=1, keepdim=True)
    # f values at all n+1 receivers; residual of a receiver j: y_j - f_l(z_j), y_{n+1} := 0
    f = X.new_zeros((batch, n + 1))
    residuals, query_values = [y], [f[:, n]]
    for l in range(r.shape[1]):
        residual = y - f[:, :n]
        f = f + (r[:, l, None] / n) * torch.einsum("bi,bij->bj", residual, G)
        residuals.append(y - f[:, :n])
        query_values.append(f[:, n])
    prediction = f[:, n]
    if not return_iterates:
        return prediction
    return FunctionalGDTrace(
        prediction=prediction,
        residuals=torch.stack(residuals, dim=1),
        query_values=torch.stack(query_values, dim=1),
    )


def _check_gp(K_nn: object, k_q: object, y: object | None = None, K_qq: object | None = None) -> dict[str, int]:
    K_nn = check_tensor("K_nn", K_nn)
    k_q = check_tensor("k_q", k_q)
    dims = check_shape("K_nn", K_nn, ("batch", "n", "n"))
    check_shape("k_q", k_q, ("batch", "n"), dims)
    check_same_dtype_device("K_nn", K_nn, k_q=k_q)
    if y is not None:
        y = check_tensor("y", y)
        check_shape("y", y, ("batch", "n"), dims)
        check_same_dtype_device("K_nn", K_nn, y=y)
    if K_qq is not None:
        K_qq = check_tensor("K_qq", K_qq)
        check_shape("K_qq", K_qq, ("batch",), dims)
        check_same_dtype_device("K_nn", K_nn, K_qq=K_qq)
    return dims


def functional_gd_closed_form(
    K_nn: torch.Tensor, k_q: torch.Tensor, y: torch.Tensor, step: float, layers: int
) -> torch.Tensor:
    r"""Closed form of ``L`` steps of functional GD with constant step ``r``, by diagonalisation.

    Cheng, Chen, Sra (2024), Proposition 2: the residuals obey :math:`e_{l+1} = (I - cK)e_l`,
    :math:`e_0 = y`, :math:`c = r/n`, so

    .. math::
        f_L(x_{n+1}) = c\, k_q^\top \sum_{s<L} (I - cK_{nn})^s y
                     = k_q^\top U \,\mathrm{diag}\big(\varphi(\lambda)\big)\, U^\top y,\qquad
        \varphi(\lambda) = c\sum_{s<L}(1 - c\lambda)^s = \frac{1 - (1 - c\lambda)^L}{\lambda},

    with :math:`K_{nn} = U \Lambda U^\top` (``eigh``; ``K_nn`` must be symmetric) and
    :math:`\varphi(0) = cL`. For :math:`c\lambda < 1`, :math:`1-(1-c\lambda)^L` is evaluated as
    ``-expm1(L * log1p(-c*lambda))`` to avoid cancellation at small eigenvalues. As
    :math:`L\to\infty` with :math:`0 < r < 2n/\lambda_{\max}` this tends to the GP posterior mean
    :math:`k_q^\top K_{nn}^{-1} y`.

    Args:
        K_nn: context Gram ``(batch, n, n)``, symmetric.
        k_q: ``K(x_i, x_{n+1})``, ``(batch, n)``.
        y: context labels ``(batch, n)``.
        step: the constant step ``r``.
        layers: ``L >= 0``.

    Returns:
        :math:`f_L(x_{n+1})`, shape ``(batch,)``.

    Raises:
        TypeError, ValueError: non-tensor inputs, dtype or shape mismatch, non-integer ``layers``.
    """
    dims = _check_gp(K_nn, k_q, y)
    n = dims["n"]
    L = check_int("layers", layers, minimum=0)
    r = check_real("step", step)
    c = r / n
    lam, U = torch.linalg.eigh(K_nn)
    cl = c * lam
    small = cl < 1.0
    one_minus_qL_small = -torch.expm1(L * torch.log1p(-torch.where(small, cl, torch.zeros_like(cl))))
    one_minus_qL_large = 1.0 - (1.0 - cl) ** L
    one_minus_qL = torch.where(small, one_minus_qL_small, one_minus_qL_large)
    zero = lam == 0
    phi = torch.where(zero, torch.full_like(lam, c * L), one_minus_qL / torch.where(zero, torch.ones_like(lam), lam))
    kU = torch.einsum("bi,bij->bj", k_q, U)
    yU = torch.einsum("bi,bij->bj", y, U)
    return (kU * phi * yU).sum(dim=-1)


def gp_posterior_mean(K_nn: torch.Tensor, k_q: torch.Tensor, y: torch.Tensor, jitter: float = 0.0) -> torch.Tensor:
    r"""Gaussian-process posterior mean :math:`k_q^\top (K_{nn} + \epsilon I)^{-1} y`.

    For labels :math:`(y_1, \dots, y_{n+1}) \sim \mathcal N(0, K)` this is the Bayes-optimal
    predictor :math:`\mathbb E[y_{n+1} \mid x_{1:n+1}, y_{1:n}]` (Cheng, Chen, Sra 2024, Prop. 2);
    ``jitter`` :math:`\epsilon` plays the role of a label-noise variance.

    Args:
        K_nn: context Gram ``(batch, n, n)``.
        k_q: cross-covariances :math:`K(x_i, x_{n+1})`, ``(batch, n)``.
        y: context labels ``(batch, n)``.
        jitter: :math:`\epsilon \ge 0` added to the diagonal.

    Returns:
        The posterior mean, ``(batch,)``.

    Raises:
        TypeError, ValueError: non-tensor input, dtype or shape mismatch, negative jitter.
    """
    dims = _check_gp(K_nn, k_q, y)
    eps = check_real("jitter", jitter, nonnegative=True)
    K = K_nn + eps * _eye(dims["n"], K_nn)
    alpha = torch.linalg.solve(K, y.unsqueeze(-1)).squeeze(-1)
    return (k_q * alpha).sum(dim=-1)


def gp_posterior_variance(
    K_nn: torch.Tensor, k_q: torch.Tensor, K_qq: torch.Tensor, jitter: float = 0.0
) -> torch.Tensor:
    r"""Gaussian-process posterior variance :math:`K_{qq} - k_q^\top (K_{nn} + \epsilon I)^{-1} k_q`.

    Args:
        K_nn: context Gram ``(batch, n, n)``.
        k_q: :math:`K(x_i, x_{n+1})`, ``(batch, n)``.
        K_qq: :math:`K(x_{n+1}, x_{n+1})`, ``(batch,)``.
        jitter: :math:`\epsilon \ge 0` added to the diagonal of ``K_nn``.

    Returns:
        The posterior variance, ``(batch,)`` (not clipped at zero; round-off may make it slightly
        negative for near-singular Grams).

    Raises:
        TypeError, ValueError: non-tensor input, dtype or shape mismatch, negative jitter.
    """
    dims = _check_gp(K_nn, k_q, K_qq=K_qq)
    eps = check_real("jitter", jitter, nonnegative=True)
    K = K_nn + eps * _eye(dims["n"], K_nn)
    alpha = torch.linalg.solve(K, k_q.unsqueeze(-1)).squeeze(-1)
    return K_qq - (k_q * alpha).sum(dim=-1)


@dataclass(frozen=True)
class BayesRisk:
    r"""Bayes risk of GP regression averaged over a batch of prompts.

    Attributes:
        value: mean over prompts of the per-prompt Bayes risk (0-d tensor).
        per_prompt: :math:`K_{qq} - k_q^\top K_{nn}^{-1} k_q` for each prompt, ``(batch,)``.
        standard_error: standard error of ``value`` as a Monte-Carlo estimate of the population
            Bayes risk (sample std / sqrt(batch); ``nan`` when batch = 1).
    """

    value: torch.Tensor
    per_prompt: torch.Tensor
    standard_error: torch.Tensor


def bayes_risk(K_nn: torch.Tensor, k_q: torch.Tensor, K_qq: torch.Tensor, jitter: float = 0.0) -> BayesRisk:
    r"""Bayes-optimal mean-squared error for noiseless GP labels.

    Given the covariates of a prompt, :math:`y_{n+1} \mid y_{1:n}` is Gaussian with the
    :func:`gp_posterior_mean` and variance :math:`K_{qq} - k_q^\top K_{nn}^{-1} k_q`, so the
    Bayes risk :math:`\mathbb E[(y_{n+1} - \mathbb E[y_{n+1}\mid\cdot])^2 \mid x_{1:n+1}]` is that
    variance; averaging over the prompts in the batch estimates the population Bayes risk.

    Args:
        K_nn, k_q, K_qq, jitter: as :func:`gp_posterior_variance`.

    Returns:
        A :class:`BayesRisk`.

    Raises:
        TypeError, ValueError: as :func:`gp_posterior_variance`.
    """
    per_prompt = gp_posterior_variance(K_nn, k_q, K_qq, jitter)
    batch = per_prompt.shape[0]
    value = per_prompt.mean()
    if batch > 1:
        se = per_prompt.std(correction=1) / batch**0.5
    else:
        se = torch.full_like(value, float("nan"))
    return BayesRisk(value=value, per_prompt=per_prompt, standard_error=se)


# --------------------------------------------------------------------------------------------
# Giannou et al. 2024: Newton–Schulz, least squares, damped Newton for logistic regression
# --------------------------------------------------------------------------------------------


def newton_schulz(
    A: torch.Tensor,
    X0: torch.Tensor | None = None,
    alpha: float | torch.Tensor | None = None,
    *,
    steps: int,
    return_iterates: bool = False,
) -> torch.Tensor:
    r"""Newton–Schulz iteration for the matrix inverse (Giannou et al. 2024).

    .. math:: X_{t+1} = X_t (2I - A X_t),\qquad X_0 = \alpha A^\top .

    The residual :math:`R_t = I - A X_t` obeys :math:`R_{t+1} = R_t^2` exactly, so
    :math:`\|R_t\| \le \|R_0\|^{2^t}`. With :math:`X_0 = \alpha A^\top`, :math:`R_0 = I - \alpha
    AA^\top` is symmetric with eigenvalues :math:`1 - \alpha\sigma_i^2`, hence
    :math:`\|R_0\|_2 < 1` iff :math:`0 < \alpha < 2/\|A\|_2^2` and A is invertible. The default
    :math:`\alpha = 1/\|A\|_2^2` gives :math:`\|R_0\|_2 = 1 - 1/\kappa(A)^2`. For symmetric A (the
    paper's case, e.g. :math:`A^\top A`) :math:`X_0 = \alpha A`.

    Args:
        A: square matrices ``(batch, m, m)``.
        X0: starting point ``(batch, m, m)``; mutually exclusive with ``alpha``.
        alpha: scale of :math:`X_0 = \alpha A^\top`: a number, 0-d or ``(batch,)`` tensor;
            default :math:`1/\|A\|_2^2` per prompt.
        steps: number of iterations ``T >= 0`` (keyword-only).
        return_iterates: return all iterates.

    Returns:
        ``X_T`` of shape ``(batch, m, m)``, or ``(X_0, ..., X_T)`` of shape ``(batch, T+1, m, m)``.

    Raises:
        TypeError, ValueError: non-tensor ``A``, wrong shapes, dtype mismatch, both ``X0`` and
        ``alpha`` given, negative ``steps``.
    """
    A = check_tensor("A", A)
    dims = check_shape("A", A, ("batch", "m", "m"))
    T = check_int("steps", steps, minimum=0)
    if X0 is not None and alpha is not None:
        raise ValueError("give at most one of X0 and alpha (X0 = alpha * A^T)")
    if X0 is not None:
        check_tensor("X0", X0)
        check_shape("X0", X0, ("batch", "m", "m"), dims)
        check_same_dtype_device("A", A, X0=X0)
        X = X0
    else:
        if alpha is None:
            a = torch.linalg.matrix_norm(A, ord=2) ** -2
        else:
            a = _as_scalar("alpha", alpha, A, dims["batch"], positive=True)
        X = a[:, None, None] * A.transpose(-1, -2)
    eye = _eye(dims["m"], A)
    iterates = [X]
    for _ in range(T):
        X = X @ (2.0 * eye - A @ X)
        iterates.append(X)
    return torch.stack(iterates, dim=1) if return_iterates else X


def newton_schulz_residuals(
    A: torch.Tensor, iterates: torch.Tensor, ord: Literal["spectral", "fro"] = "spectral"
) -> torch.Tensor:
    r"""Residual norms :math:`\|I - A X_t\|` of Newton–Schulz iterates.

    Args:
        A: ``(batch, m, m)``.
        iterates: ``(batch, T+1, m, m)`` (as returned by :func:`newton_schulz` with
            ``return_iterates=True``) or a single ``(batch, m, m)``.
        ord: ``"spectral"`` (largest singular value, default) or ``"fro"`` (Frobenius).

    Returns:
        ``(batch, T+1)``, or ``(batch,)`` for a single iterate.

    Raises:
        TypeError, ValueError: non-tensor input, shape or dtype mismatch, unknown ``ord``.
    """
    A = check_tensor("A", A)
    dims = check_shape("A", A, ("batch", "m", "m"))
    check_tensor("iterates", iterates)
    check_same_dtype_device("A", A, iterates=iterates)
    check_choice("ord", ord, ("spectral", "fro"))
    if iterates.ndim == 4:
        check_shape("iterates", iterates, ("batch", "T", "m", "m"), dims)
        AX = A.unsqueeze(1) @ iterates
    else:
        check_shape("iterates", iterates, ("batch", "m", "m"), dims)
        AX = A @ iterates
    R = _eye(dims["m"], A) - AX
    return torch.linalg.matrix_norm(R, ord=2 if ord == "spectral" else "fro")


def least_squares_newton_schulz(
    A_data: torch.Tensor,
    y: torch.Tensor,
    a_test: torch.Tensor,
    steps: int,
    *,
    alpha: float | torch.Tensor | None = None,
    return_iterates: bool = False,
) -> torch.Tensor:
    r"""Least-squares prediction with the Gram inverse from Newton–Schulz (Giannou et al. 2024).

    With data points :math:`a_i` stored as **columns** of ``A_data`` (shape ``(batch, d, n)``, the
    same convention as ``X`` elsewhere; the paper's row-wise design matrix is ``A_data^T``), the
    least-squares solution is :math:`\hat w = (\sum_i a_i a_i^\top)^{-1} \sum_i a_i y_i`. This
    returns

    .. math:: \hat y_t = a_{\text{test}}^\top X_t\, A_{\text{data}}\, y,

    where :math:`X_t` is the :func:`newton_schulz` iterate for :math:`G = A_{\text{data}}
    A_{\text{data}}^\top` (:math:`X_t \to G^{-1}`). The prediction does not depend on rescaling
    ``G`` by ``1/n`` when the default ``alpha`` is used.

    Args:
        A_data: ``(batch, d, n)``, columns ``a_i``.
        y: ``(batch, n)``.
        a_test: ``(batch, d)``.
        steps: Newton–Schulz iterations ``T >= 0``.
        alpha: as in :func:`newton_schulz`.
        return_iterates: return the predictions for every ``t = 0..T``.

    Returns:
        ``(batch,)``, or ``(batch, T+1)``.

    Raises:
        TypeError, ValueError: as the checks in :func:`newton_schulz` and shape mismatches.
    """
    dims = _check_regression(A_data, y, X_name="A_data")
    check_tensor("a_test", a_test)
    check_shape("a_test", a_test, ("batch", "d"), dims)
    check_same_dtype_device("A_data", A_data, a_test=a_test)
    G = A_data @ A_data.transpose(-1, -2)
    b = torch.einsum("bdn,bn->bd", A_data, y)
    Xs = newton_schulz(G, alpha=alpha, steps=steps, return_iterates=True)
    preds = torch.einsum("bi,btij,bj->bt", a_test, Xs, b)
    return preds if return_iterates else preds[:, -1]


def _check_logistic(w: object, A: object, y: object) -> dict[str, int]:
    dims = _check_regression(A, y, X_name="A")
    check_tensor("w", w)
    check_shape("w", w, ("batch", "d"), dims)
    check_same_dtype_device("A", A, w=w)
    return dims


def _margins(w: torch.Tensor, A: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """:math:`m_i = y_i w^\\top a_i`, shape ``(batch, n)``."""
    return y * torch.einsum("bdn,bd->bn", A, w)


def logistic_loss(w: torch.Tensor, A: torch.Tensor, y: torch.Tensor, mu: float | torch.Tensor) -> torch.Tensor:
    r"""Regularised logistic loss (Giannou et al. 2024).

    .. math:: f(w) = \frac1n \sum_{i=1}^n \log\big(1 + e^{-y_i w^\top a_i}\big) + \frac\mu2\|w\|^2 .

    Args:
        w: ``(batch, d)``.
        A: data points as columns, ``(batch, d, n)``.
        y: labels in ``{-1, +1}`` (not checked), ``(batch, n)``.
        mu: regularisation :math:`\mu > 0`: a number, 0-d or ``(batch,)`` tensor.

    Returns:
        ``(batch,)``.

    Raises:
        TypeError, ValueError: non-tensor input, dtype or shape mismatch, ``mu <= 0``.
    """
    dims = _check_logistic(w, A, y)
    m = _as_scalar("mu", mu, A, dims["batch"], positive=True)
    return torch.nn.functional.softplus(-_margins(w, A, y)).mean(dim=-1) + 0.5 * m * (w**2).sum(-1)


def _logistic_grad(w: torch.Tensor, A: torch.Tensor, y: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    n = A.shape[-1]
    s = torch.sigmoid(-_margins(w, A, y))  # sigma(-m_i)
    return -torch.einsum("bdn,bn->bd", A, y * s) / n + m[:, None] * w


def _logistic_hessian(w: torch.Tensor, A: torch.Tensor, y: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    n, d = A.shape[-1], A.shape[-2]
    margins = _margins(w, A, y)
    weights = torch.sigmoid(margins) * torch.sigmoid(-margins)  # y_i^2 = 1
    H = torch.einsum("bin,bn,bjn->bij", A, weights, A) / n
    return H + m[:, None, None] * _eye(d, A)


def logistic_grad(w: torch.Tensor, A: torch.Tensor, y: torch.Tensor, mu: float | torch.Tensor) -> torch.Tensor:
    r"""Gradient :math:`\nabla f(w) = -\frac1n\sum_i \sigma(-y_i w^\top a_i)\, y_i a_i + \mu w`.

    Args, Raises: as :func:`logistic_loss`.

    Returns:
        ``(batch, d)``.
    """
    dims = _check_logistic(w, A, y)
    return _logistic_grad(w, A, y, _as_scalar("mu", mu, A, dims["batch"], positive=True))


def logistic_hessian(w: torch.Tensor, A: torch.Tensor, y: torch.Tensor, mu: float | torch.Tensor) -> torch.Tensor:
    r"""Hessian :math:`\nabla^2 f(w) = \frac1n\sum_i \sigma(m_i)\sigma(-m_i)\, a_i a_i^\top + \mu I`,
    :math:`m_i = y_i w^\top a_i` (uses :math:`y_i^2 = 1`).

    Args, Raises: as :func:`logistic_loss`.

    Returns:
        ``(batch, d, d)``.
    """
    dims = _check_logistic(w, A, y)
    return _logistic_hessian(w, A, y, _as_scalar("mu", mu, A, dims["batch"], positive=True))


def newton_decrement(w: torch.Tensor, A: torch.Tensor, y: torch.Tensor, mu: float | torch.Tensor) -> torch.Tensor:
    r"""Squared Newton decrement :math:`\lambda^2(w) = \nabla f^\top [\nabla^2 f]^{-1} \nabla f`.

    Args, Raises: as :func:`logistic_loss`.

    Returns:
        ``(batch,)``.
    """
    dims = _check_logistic(w, A, y)
    m = _as_scalar("mu", mu, A, dims["batch"], positive=True)
    g = _logistic_grad(w, A, y, m)
    step = torch.linalg.solve(_logistic_hessian(w, A, y, m), g.unsqueeze(-1)).squeeze(-1)
    return (g * step).sum(-1)


def damped_newton_logistic(
    A: torch.Tensor,
    y: torch.Tensor,
    mu: float | torch.Tensor,
    steps: int,
    w0: torch.Tensor | None = None,
    *,
    return_iterates: bool = False,
) -> torch.Tensor:
    r"""Damped Newton's method for regularised logistic regression (Giannou et al. 2024).

    .. math::
        w_{t+1} = w_t - g(\lambda_t^2)\,[\nabla^2 f(w_t)]^{-1}\nabla f(w_t),\qquad
        g(z) = \frac{1}{1 + \sqrt z},\qquad
        \lambda_t^2 = \nabla f(w_t)^\top [\nabla^2 f(w_t)]^{-1} \nabla f(w_t),

    on :func:`logistic_loss`; the damping makes every step safe (self-concordance) and the
    method converges quadratically once :math:`\lambda_t` is small.

    Args:
        A: data points as columns, ``(batch, d, n)``.
        y: labels in ``{-1, +1}``, ``(batch, n)``.
        mu: :math:`\mu > 0`.
        steps: number of Newton steps ``T >= 0``.
        w0: start ``(batch, d)``; zeros when ``None``.
        return_iterates: return all iterates.

    Returns:
        ``w_T`` ``(batch, d)``, or ``(w_0, ..., w_T)`` ``(batch, T+1, d)``.

    Raises:
        TypeError, ValueError: non-tensor input, dtype or shape mismatch, ``mu <= 0``,
        negative ``steps``.
    """
    dims = _check_regression(A, y, X_name="A")
    batch = dims["batch"]
    m = _as_scalar("mu", mu, A, batch, positive=True)
    T = check_int("steps", steps, minimum=0)
    w = _start("A", A, w0, dims)
    iterates = [w]
    for _ in range(T):
        g = _logistic_grad(w, A, y, m)
        newton_step = torch.linalg.solve(_logistic_hessian(w, A, y, m), g.unsqueeze(-1)).squeeze(-1)
        lam2 = (g * newton_step).sum(-1).clamp_min(0.0)
        w = w - newton_step / (1.0 + lam2.sqrt())[:, None]
        iterates.append(w)
    return torch.stack(iterates, dim=1) if return_iterates else w


# --------------------------------------------------------------------------------------------
# Zhang, Cao 2026: normalised GD for in-context classification
# --------------------------------------------------------------------------------------------


def normalised_gd(
    X: torch.Tensor,
    y: torch.Tensor,
    steps: int,
    eta: float | torch.Tensor,
    c: float | torch.Tensor = 1.0,
    w0: torch.Tensor | None = None,
    loss: Literal["exp", "logsumexp1"] = "exp",
    *,
    return_iterates: bool = False,
) -> torch.Tensor:
    r"""Normalised GD on an in-context exponential-type loss (Zhang, Cao 2026).

    With scores :math:`s_i(w) = -c\, y_i x_i^\top w`:

    * ``loss="exp"``: :math:`L(w) = \sum_i e^{s_i(w)}`, and the normalised step

      .. math:: w_{t+1} = w_t - \frac{\eta}{c}\,\frac{\nabla L(w_t)}{L(w_t)},\qquad
                \nabla L(w) = -c \sum_i e^{s_i(w)}\, y_i x_i .

      This equals :math:`w + \eta\sum_i \mathrm{softmax}(s)_i\, y_i x_i`: one softmax-attention
      layer with score :math:`s_i`, value :math:`\eta y_i x_i` and a residual connection.
    * ``loss="logsumexp1"``: the state token also attends to itself with score 0 and value 0,
      giving :math:`w + \eta\sum_i \frac{e^{s_i}}{1 + \sum_k e^{s_k}} y_i x_i`. Since
      :math:`\nabla_w \log(1 + \sum_k e^{s_k}) = -c\sum_i \frac{e^{s_i}}{1+\sum_k e^{s_k}} y_i x_i`,
      this is the **plain** gradient step :math:`w - \frac{\eta}{c}\nabla L(w)` on
      :math:`L(w) = \log(1 + \sum_i e^{s_i(w)})` (not normalised).

    The update is computed from the gradient and loss as written (not through ``softmax``). For
    numerical range both ``L`` and ``∇L`` are multiplied by :math:`e^{-s_{\max}}`
    (:math:`s_{\max} = \max(0, \max_i s_i)` for ``"logsumexp1"``), a factor that cancels in the
    ratio ``∇L / L`` resp. ``∇L / (1 + Σ e^{s})``.

    Args:
        X: covariates ``(batch, d, n)``.
        y: labels in ``{-1, +1}`` (not checked), ``(batch, n)``.
        steps: number of steps ``T >= 0``.
        eta: step :math:`\eta` (number, 0-d or ``(batch,)`` tensor).
        c: score scale :math:`c > 0` (number, 0-d or ``(batch,)`` tensor).
        w0: start ``(batch, d)``; zeros when ``None``.
        loss: ``"exp"`` or ``"logsumexp1"``.
        return_iterates: return all iterates.

    Returns:
        ``w_T`` ``(batch, d)``, or ``(w_0, ..., w_T)`` ``(batch, T+1, d)``.

    Raises:
        TypeError, ValueError: non-tensor input, dtype or shape mismatch, unknown ``loss``,
        ``c <= 0``, negative ``steps``.
    """
    dims = _check_regression(X, y)
    batch = dims["batch"]
    T = check_int("steps", steps, minimum=0)
    check_choice("loss", loss, ("exp", "logsumexp1"))
    eta_t = _as_scalar("eta", eta, X, batch)
    c_t = _as_scalar("c", c, X, batch, positive=True)
    w = _start("X", X, w0, dims)
    u = y.unsqueeze(1) * X  # columns u_i = y_i x_i, (batch, d, n)
    iterates = [w]
    for _ in range(T):
        s = -c_t[:, None] * torch.einsum("bdn,bd->bn", u, w)
        if loss == "exp":
            shift = s.amax(dim=-1, keepdim=True)
            e = torch.exp(s - shift)
            L_scaled = e.sum(dim=-1)  # e^{-shift} L(w)
        else:
            shift = s.amax(dim=-1, keepdim=True).clamp_min(0.0)
            e = torch.exp(s - shift)
            L_scaled = torch.exp(-shift.squeeze(-1)) + e.sum(dim=-1)  # e^{-shift}(1 + sum e^s)
        grad_scaled = -c_t[:, None] * torch.einsum("bdn,bn->bd", u, e)  # e^{-shift} grad of sum e^s
        # exp: grad L / L;  logsumexp1: grad log(1 + sum e^s) = grad(sum e^s) / (1 + sum e^s)
        direction = grad_scaled / L_scaled[:, None]
        w = w - (eta_t / c_t)[:, None] * direction
        iterates.append(w)
    return torch.stack(iterates, dim=1) if return_iterates else w


def max_margin_direction(X: torch.Tensor, y: torch.Tensor, *, tol: float = 1e-12) -> torch.Tensor:
    r"""Unit direction of the hard-margin SVM through the origin.

    Solves :math:`\min_w \tfrac12\|w\|^2` s.t. :math:`y_i x_i^\top w \ge 1` for every prompt with
    SciPy's SLSQP (gradient and constraint Jacobian supplied) and returns :math:`w/\|w\|`; the
    direction towards which normalised GD on the exponential loss converges (Zhang, Cao 2026).
    Not differentiable and not vmappable (it leaves torch).

    Args:
        X: covariates ``(batch, d, n)``.
        y: labels in ``{-1, +1}``, ``(batch, n)``.
        tol: SLSQP ``ftol``.

    Returns:
        Unit vectors ``(batch, d)`` in the dtype/device of ``X``.

    Raises:
        TypeError, ValueError: non-tensor input, dtype or shape mismatch.
        RuntimeError: if the solver fails or the data of a prompt is not linearly separable
            through the origin (a constraint is violated at the solution).
    """
    from scipy.optimize import minimize

    _check_regression(X, y)
    tol = check_real("tol", tol, positive=True)
    U = (y.unsqueeze(1) * X).detach().to("cpu", torch.float64).numpy()  # (batch, d, n)
    out = []
    for b in range(U.shape[0]):
        Ub = U[b]
        # start: a feasible point if the least-squares fit of margins 1 is feasible
        w_start = np.linalg.lstsq(Ub.T, np.ones(Ub.shape[1]), rcond=None)[0]
        res = minimize(
            lambda w: 0.5 * float(w @ w),
            w_start,
            jac=lambda w: w,
            method="SLSQP",
            constraints=[{"type": "ineq", "fun": lambda w, Ub=Ub: Ub.T @ w - 1.0, "jac": lambda w, Ub=Ub: Ub.T}],
            options={"ftol": tol, "maxiter": 1000},
        )
        violation = float(np.max(1.0 - Ub.T @ res.x))
        if not res.success or violation > 1e-6:
            raise RuntimeError(
                f"max_margin_direction: prompt {b} failed (solver: {res.message!r}, max constraint "
                f"violation {violation:.3g}); is the data linearly separable through the origin?"
            )
        out.append(res.x / np.linalg.norm(res.x))
    return torch.as_tensor(np.stack(out), dtype=X.dtype, device=X.device)
