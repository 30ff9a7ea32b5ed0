"""Names of the figure kinds, importable without matplotlib or torch (the command line lists them)."""

from __future__ import annotations

__all__ = ["PLOT_KINDS"]

PLOT_KINDS: tuple[str, ...] = ("distance", "loss", "heatmap", "depth", "context", "grid")
"""Kinds of figure :func:`landscape.views.plots.plot_store` knows (``"all"`` selects every one)."""
