"""Names of the sweep executors, importable without torch (the command line lists them)."""

from __future__ import annotations

__all__ = ["EXECUTORS"]

EXECUTORS: tuple[str, ...] = ("local", "ray")
"""Accepted executors of :func:`landscape.experiment.sweep.run_sweep`."""
