"""Texts and bounds of the accepted forms of user specs, shared by :mod:`landscape.recipe` (which
owns them) and the command line's argument types, which must not import torch or sympy to build
``--help``. Pure Python: importing this module loads nothing else."""

from __future__ import annotations

__all__ = ["MAX_SEED", "SIGMA_FORMS"]

MAX_SEED = 2**63 - 1
"""Largest seed (``torch.Generator.manual_seed`` takes 64-bit seeds)."""

SIGMA_FORMS = ("identity | random[:SEED] | diag:l1,...,ld (the diagonal matrix) | spectrum:l1,...,ld[:SEED] "
               "(that spectrum, randomly rotated) | path to a .npy/.txt/.pt matrix")
"""The accepted covariance specs (for messages)."""
