"""Names of the figure kinds, importable without matplotlib or torch (the command line lists them)."""

from __future__ import annotations

__all__ = ["PLOT_KINDS", "DEFAULT_SKIPS"]

PLOT_KINDS: tuple[str, ...] = ("distance", "loss", "heatmap", "depth", "context", "grid", "seeds",
                               "distance-depth", "distance-context", "spectrum")
"""Kinds of figure :func:`landscape.views.plots.plot_store` knows (``"all"`` selects every one but
those of :data:`DEFAULT_SKIPS`)."""

DEFAULT_SKIPS: tuple[str, ...] = ("spectrum",)
"""Kinds ``"all"`` leaves out because they compute (a Hessian per run): ask for them by name."""
