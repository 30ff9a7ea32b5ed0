r"""Human labels of runs, models, data and metrics: the one place figures take their words from.

A figure names what it shows in the paper's words, never by a run hash or a raw metric key:

* :func:`activation_label` — ``"relu"`` → ``"ReLU"``;
* :func:`model_label` — the attention of a training config (``"kernel attention (exp)"``,
  ``"linear attention, 2 heads"``; ``short=True``: ``"exp"``, ``"linear attn"`` for tick labels);
* :func:`data_label` — the prompt distribution (``"GP labels, exp kernel"``; short: ``"exp"``);
* :func:`setting_label` — task, sizes, depth, family and seeds in one line;
* :func:`metric_label` — re-exported from :mod:`landscape.experiment.metrics` (the metric-key schema);
* :func:`wrap_title` — a title broken into lines that fit a figure of a given width.

Importable without matplotlib or torch.
"""

from __future__ import annotations

import textwrap
from typing import Any

from landscape.experiment.metrics import metric_label

__all__ = [
    "ACTIVATION_LABELS",
    "activation_label",
    "model_label",
    "data_label",
    "setting_label",
    "metric_label",
    "wrap_title",
]

ACTIVATION_LABELS: dict[str, str] = {
    "linear": "linear",
    "relu": "ReLU",
    "exp": "exp",
    "softmax": "softmax",
    "exp(x12)+lin(x34)": "K° = exp(½⟨x₁:₂, x′₁:₂⟩) + ⟨x₃:₄, x′₃:₄⟩",
}
"""Human names of attention activations and data kernels."""

_TASKS = {"linear": "linear regression", "gp": "GP labels", "classification": "classification",
          "features": "feature tokens"}


def activation_label(name: str) -> str:
    """The human name of an activation or kernel (:data:`ACTIVATION_LABELS`), else ``name`` itself."""
    return ACTIVATION_LABELS.get(name, name)


def model_label(config: Any, *, short: bool = False) -> str:
    """The attention of a training config in words.

    Args:
        config: a :class:`~landscape.experiment.train.TrainConfig` (``attention``, ``activations``,
            ``heads``).
        short: a tick/legend label (``"exp"``, ``"exp+ReLU"``, ``"linear attn"``) instead of the full
            ``"kernel attention (exp)"``.

    Returns:
        The label.
    """
    if config.attention == "linear":
        heads = int(getattr(config, "heads", 1) or 1)
        if short:
            return "linear attn" if heads == 1 else f"linear attn x{heads}"
        return "linear attention" if heads == 1 else f"linear attention, {heads} heads"
    acts = [activation_label(a) for a in config.activations]
    if short:
        return "+".join(acts)
    heads = f", {len(acts)} heads" if len(acts) > 1 else ""
    return f"kernel attention ({' + '.join(acts)}{heads})"


def data_label(config: Any, *, short: bool = False) -> str:
    """The prompt distribution of a training config in words.

    Args:
        config: a training config (``task``, optional ``data_kernel`` terms).
        short: the data kernel of a GP task (``"exp"``; the terms of a composite joined by ``+``), else
            the task name.

    Returns:
        The label.
    """
    kind, _, kern = config.task.partition(":")
    terms = getattr(config, "data_kernel", None)
    if kind == "gp":
        kernel = "+".join(activation_label(k) for _, k, _ in terms) if terms else activation_label(kern)
        return kernel if short else f"GP labels, {kernel} kernel"
    return kind if short else _TASKS.get(kind, config.task)


def setting_label(config: Any, *, seeds: int | None = None, layers: bool = True, show_seeds: bool = True) -> str:
    """Task, sizes, model, depth, family and seeds of a training config in one line.

    ``"GP labels, exp kernel, d=2, n=4 · kernel attention (exp), L=2 · family fgd · 3 seeds"``.

    Args:
        config: a training config.
        seeds: the number of seeds shown (default ``config.seeds``).
        layers: include the depth ``L`` (off for figures across depths).
        show_seeds: include the seed count (off for a figure of one seed, which names it).

    Returns:
        The label.
    """
    data = f"{data_label(config)}, d={config.d}, n={config.n}"
    sigma = getattr(config, "sigma", "identity")
    if sigma not in (None, "identity"):
        data += f", Σ={sigma}"
    noise = getattr(config, "noise", 0.0)
    if noise:
        data += f", noise {noise:g}"
    model = model_label(config) + (f", L={config.layers}" if layers else "")
    parts = [data, model]
    if getattr(config, "family", None):
        parts.append(f"family {config.family}")
    S = config.seeds if seeds is None else seeds
    if show_seeds:
        parts.append(f"{S} seed{'s' if S != 1 else ''}")
    return " · ".join(parts)


def wrap_title(text: str, width_inches: float, *, fontsize: float = 10.0) -> str:
    """``text`` broken into lines that fit ``width_inches`` at ``fontsize`` points.

    A character is taken as 0.6 em wide (generous for DejaVu Sans, matplotlib's default font), so the
    lines stay inside the figure; existing line breaks are kept.

    Args:
        text: the title.
        width_inches: the width available (the figure's, less its margins).
        fontsize: the font size in points.

    Returns:
        The wrapped title.
    """
    chars = max(12, int(width_inches * 72.0 / (0.6 * fontsize)))
    return "\n".join(textwrap.fill(line, chars, break_on_hyphens=False) if line else line
                     for line in text.split("\n"))
