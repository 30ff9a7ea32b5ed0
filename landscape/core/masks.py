r"""Masks: which entries of the weights are free. The one vocabulary of mask names.

A *mask* is a ``dict`` name → bool tensor of the parameter's shape (``True`` = free). Training
zeroes the other entries at initialisation and their gradient at every step
(:mod:`landscape.experiment.train`); the stationarity certificate takes the gradient over the free
entries only (:func:`landscape.numeric.free_entries`).

The names, for tokens :math:`z = (x, y) \in \mathbb R^{d+1}` and weights split into the four
structural blocks

.. math::
    W = \begin{bmatrix} W_{xx} & W_{xy} \\ W_{yx} & W_{yy} \end{bmatrix}
    \quad (W_{xx}: d\times d \text{ covariate block}, \; W_{xy}: \text{label column}, \;
    W_{yx}: \text{label row}, \; W_{yy}: \text{corner}),

are in :data:`MASKS` (one docstring each). ``"all"`` is an alias of ``"full"`` (:data:`ALIASES`):
both give the same masks; the stored and command-line spellings of either keep working (training
runs store ``"full"``, the certificate's ``--mask all``). ``"blocks"`` depends on a parameter family
(which blocks its symbols move), the other names on the architecture alone (:data:`SPEC_MASKS`,
the names a training run can take).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

import torch

if TYPE_CHECKING:
    from landscape.core.model import ModelSpec

__all__ = ["MASKS", "ALIASES", "SPEC_MASKS", "FAMILY_MASKS", "canonical_mask", "make_mask", "structural_blocks"]

MASKS: dict[str, str] = {
    "full": "every entry of every matrix is free (alias 'all').",
    "paper": "the papers' sparsity (Ahn et al. 2023; Cheng, Chen, Sra 2024): keys and queries read x only "
             "(B, C, Q free on the d×d covariate block only) and values keep the block-diagonal form diag(A, r) "
             "(V, P free on the covariate block and the corner).",
    "sparse": "Ahn et al.'s Theorem 3 form P = diag(0, p), Q = diag(A, 0) and Cheng et al.'s sparse-value form "
              "V = diag(0, r), B = diag(B', 0), C = diag(C', 0): P, V free on the corner only; Q, B, C on the "
              "covariate block only.",
    "blocks": "the structural blocks (covariate block, label column, label row, corner) in which a parameter "
              "family has a free symbol: the sparse parameterisation the papers' theorems are stated in "
              "(needs the family's blocks).",
}
"""Every mask name → what it leaves free."""

ALIASES: dict[str, str] = {"all": "full"}
"""Accepted spellings → the canonical name (same masks)."""

SPEC_MASKS: tuple[str, ...] = ("full", "paper", "sparse")
"""Masks built from the architecture alone (the names a training run takes)."""

FAMILY_MASKS: tuple[str, ...] = ("blocks",)
"""Masks that need a parameter family (its symbolic blocks)."""

_BLOCK_NAMES = ("covariate", "label_column", "label_row", "corner")


def _describe_names(accepted: Sequence[str]) -> str:
    out = []
    for name in accepted:
        alias = [a for a, c in ALIASES.items() if c == name]
        out.append(repr(name) + (f" (alias {', '.join(map(repr, alias))})" if alias else ""))
    return ", ".join(out)


def canonical_mask(name: object, accepted: Sequence[str] = tuple(MASKS)) -> str:
    """The canonical spelling of a mask name.

    Args:
        name: a name of :data:`MASKS` or an alias of :data:`ALIASES`.
        accepted: the canonical names the caller takes (default every name).

    Returns:
        The canonical name (``"all"`` → ``"full"``).

    Raises:
        ValueError: an unknown name or one the caller does not take; the message lists the accepted
            names and their aliases.
    """
    canon = ALIASES.get(name, name) if isinstance(name, str) else name
    if canon not in accepted:
        raise ValueError(f"unknown mask {name!r}; accepted: {_describe_names(accepted)}")
    return canon  # type: ignore[return-value]


def structural_blocks(token_dim: int, d: int) -> dict[str, tuple[slice, slice]]:
    """The four structural blocks of a ``(token_dim, token_dim)`` weight as ``(rows, cols)`` slices.

    ``"covariate"`` = ``[:d, :d]``, ``"label_column"`` = ``[:d, d:]``, ``"label_row"`` = ``[d:, :d]``,
    ``"corner"`` = ``[d:, d:]``.
    """
    x, y = slice(0, d), slice(d, token_dim)
    return {"covariate": (x, x), "label_column": (x, y), "label_row": (y, x), "corner": (y, y)}


def _union(shape: tuple[int, int], d: int, names: Sequence[str]) -> torch.Tensor:
    out = torch.zeros(shape, dtype=torch.bool)
    for rows, cols in (structural_blocks(shape[0], d)[n] for n in names):
        out[rows, cols] = True
    return out


# Per mask name and parameter letter, the structural blocks left free.
_PRESET_BLOCKS: dict[str, dict[str, tuple[str, ...]]] = {
    "full": {k: _BLOCK_NAMES for k in "PQVBC"},
    "paper": {"P": ("covariate", "corner"), "V": ("covariate", "corner"),
              "Q": ("covariate",), "B": ("covariate",), "C": ("covariate",)},
    "sparse": {"P": ("corner",), "V": ("corner",), "Q": ("covariate",), "B": ("covariate",), "C": ("covariate",)},
}


def make_mask(
    spec: "ModelSpec",
    preset: str = "full",
    d: int | None = None,
    *,
    family_blocks: Mapping[str, Any] | None = None,
) -> dict[str, torch.Tensor]:
    r"""Boolean masks of the *free* entries of every parameter for a mask name.

    Args:
        spec: the architecture.
        preset: a name of :data:`MASKS` (or an alias, :data:`ALIASES`).
        d: covariate block size (defaults to ``spec.d``).
        family_blocks: for ``"blocks"`` — parameter name → the family's symbolic matrix (a sympy
            ``Matrix`` whose entries have ``free_symbols``; names left out are fixed, i.e. all
            ``False``). Ignored by the other names.

    Returns:
        ``dict`` name → bool tensor of the parameter's shape, in
        :func:`landscape.core.model.param_shapes` order.

    Raises:
        ValueError: an unknown name, or ``"blocks"`` without ``family_blocks``.
    """
    from landscape.core.model import param_shapes  # local: model imports this module

    name = canonical_mask(preset)
    d = spec.d if d is None else d
    shapes = param_shapes(spec)
    out: dict[str, torch.Tensor] = {}
    if name == "blocks":
        if family_blocks is None:
            raise ValueError("mask 'blocks' needs the family's blocks (family_blocks=family.blocks)")
        for key, shape in shapes.items():
            M = family_blocks.get(key)
            free = []
            if M is not None:
                for block, (rows, cols) in structural_blocks(shape[0], d).items():
                    if any(getattr(e, "free_symbols", None) for e in M[rows, cols]):
                        free.append(block)
            out[key] = _union(shape, d, free)
        return out
    table = _PRESET_BLOCKS[name]
    for key, shape in shapes.items():
        out[key] = _union(shape, d, table[key.rsplit(".", 1)[1]])
    return out
