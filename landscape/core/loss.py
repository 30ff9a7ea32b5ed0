r"""The in-context loss: the one place where the squared error of a prediction is formed.

For a prompt distribution :math:`\mathcal D` (:mod:`landscape.core.tasks`) the in-context loss of
Ahn et al. (2023, arXiv 2306.00297) and Cheng, Chen, Sra (2024, arXiv 2312.06528) is

.. math::
    f(\theta) = \mathbb E_{Z_0 \sim \mathcal D}\big[(\mathrm{TF}_\theta(Z_0) - y_{n+1})^2\big],
    \qquad \mathrm{TF}_\theta(Z_0) = -[Z_L]_{d+1,\,n+1}

(:func:`landscape.core.model.predict`), estimated on a batch of ``B`` prompts by the sample mean

.. math::
    \hat f_B(\theta) = \frac1B \sum_{b=1}^{B} \big(\mathrm{TF}_\theta(Z_0^{(b)}) - y^{(b)}_{n+1}\big)^2 .

**Conventions.** No factor :math:`\tfrac12` and no division by the dimension ``d``: the loss is the
plain mean squared error of the scalar query prediction, the quantity the papers' theorems and the
exact symbolic losses (:mod:`landscape.symbolic`) are stated for. The target is a scalar per prompt
(the hidden query label), so there is no per-coordinate average to take. A *relative* error — the
loss divided by :math:`\mathbb E y_{n+1}^2`, the loss of the predictor that always says 0 — is a
different report of the same quantity; a study that reports it divides the value of :func:`loss`
by its :math:`\mathbb E y^2` explicitly (e.g. ``analysis/giannou2024.py``, where
:math:`\mathbb E y^2 = d`).

Two entry points, one formula:

* :func:`loss` — parameters, architecture and a :class:`~landscape.core.tasks.PromptBatch`: the
  reference forward pass (:func:`landscape.core.model.predict`) then the mean squared error;
  pure, vmappable over a stack of parameter dicts (``torch.func.vmap``) and differentiable by
  ``torch.func``;
* :func:`squared_error` — predictions already computed (by a fused engine, a reference algorithm, a
  Bayes predictor, ...) against targets, with the reduction over the prompt axis spelled out:
  ``"mean"`` (the loss), ``"sum"`` (for chunked accumulation, divided by ``B`` by the caller) or
  ``"none"`` (per-prompt errors, for standard errors and per-prompt gradients).
"""

from __future__ import annotations

from typing import Literal, Mapping

import torch

from landscape._checks import check_choice
from landscape.core.model import ModelSpec, predict
from landscape.core.tasks import PromptBatch

__all__ = ["loss", "squared_error", "REDUCTIONS"]

Reduction = Literal["mean", "sum", "none"]
REDUCTIONS: tuple[str, ...] = ("mean", "sum", "none")
"""Reductions of :func:`squared_error` over the last (prompt) axis."""


def squared_error(prediction: torch.Tensor, target: torch.Tensor, *,
                  reduction: Reduction = "mean") -> torch.Tensor:
    r"""Squared errors :math:`(\hat y_b - y_b)^2` of predictions against targets, reduced over prompts.

    .. math::
        \text{mean: } \frac1B\sum_b (\hat y_b - y_b)^2, \qquad
        \text{sum: } \sum_b (\hat y_b - y_b)^2, \qquad
        \text{none: } (\hat y_b - y_b)^2 .

    Args:
        prediction: ``(..., B)`` predictions (leading axes, e.g. seeds, are kept).
        target: targets broadcastable against ``prediction`` (usually ``(B,)`` or ``(..., B)``).
        reduction: ``"mean"`` (the in-context loss), ``"sum"`` or ``"none"`` over the last axis.

    Returns:
        ``(...,)`` for ``"mean"``/``"sum"``, the broadcast shape for ``"none"``.

    Raises:
        ValueError: unknown ``reduction``.
    """
    check_choice("reduction", reduction, REDUCTIONS)
    err = (prediction - target) ** 2
    if reduction == "mean":
        return err.mean(-1)
    if reduction == "sum":
        return err.sum(-1)
    return err


def loss(params: Mapping[str, torch.Tensor], spec: ModelSpec, batch: PromptBatch, *,
         validate: bool = True) -> torch.Tensor:
    r"""The in-context loss :math:`\hat f_B(\theta) = \frac1B\sum_b (\mathrm{TF}_\theta(Z_0^{(b)}) - y^{(b)}_{n+1})^2`.

    The batch mean of the squared error of the prediction at the query (module docstring: no
    :math:`\tfrac12`, no :math:`1/d`).

    Args:
        params: one model's flat parameter dict (:mod:`landscape.core.model`); for a stack of
            models use ``torch.func.vmap(lambda p: loss(p, spec, batch, validate=False))``.
        spec: the architecture.
        batch: a :class:`~landscape.core.tasks.PromptBatch` — ``batch.Z`` the ``(B, d+1, n+1)``
            prompts (query label slot zero) and ``batch.target`` the ``(B,)`` hidden query labels;
            nothing else of the batch is read.
        validate: check parameters and prompts first (see :func:`landscape.core.model.forward`).

    Returns:
        A 0-d tensor.

    Raises:
        TypeError: ``batch`` is not a :class:`~landscape.core.tasks.PromptBatch`-like object with
            ``Z`` and ``target``; parameters or prompts of the wrong dtype/device (from the forward).
        ValueError: parameters or prompts that do not fit ``spec``; targets whose shape is not the
            prompt count.
    """
    Z, target = getattr(batch, "Z", None), getattr(batch, "target", None)
    if not isinstance(Z, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise TypeError(f"batch must be a PromptBatch (tensors Z and target), got {type(batch).__name__}")
    pred = predict(params, spec, Z, validate=validate)
    if validate and tuple(target.shape) != tuple(pred.shape):
        raise ValueError(f"batch.target has shape {tuple(target.shape)} but batch.Z holds {tuple(pred.shape)} "
                         "prompts; one target per prompt")
    return squared_error(pred, target)
