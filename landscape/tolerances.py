"""Numerical tolerances, decided once per dtype.

Every comparison in the library and its tests takes its tolerance from here, so
that a change of dtype changes every threshold consistently.

``RTOL[dtype]``  relative tolerance for "equal up to round-off" after O(100) flops
``ATOL[dtype]``  absolute floor for quantities of order one
``ZERO_EIG[dtype]`` relative threshold under which a Hessian eigenvalue counts as zero
``CONSTRUCTION_RTOL`` the 1e-10 relative error asked of every construction in float64
"""

from __future__ import annotations

import torch

__all__ = [
    "RTOL",
    "ATOL",
    "ZERO_EIG",
    "CONSTRUCTION_RTOL",
    "FD_STEP",
    "FD_RTOL",
    "MC_NUM_SE",
    "ALGORITHM_RTOL",
    "STATIONARITY_ATOL",
    "RANK_RTOL",
    "LANCZOS_RTOL",
    "per_dtype",
    "rtol",
    "atol",
]

RTOL: dict[torch.dtype, float] = {
    torch.float64: 1e-10,
    torch.float32: 1e-4,
}
"""Relative tolerance for “equal up to round-off” after O(100) flops."""

ATOL: dict[torch.dtype, float] = {
    torch.float64: 1e-12,
    torch.float32: 1e-5,
}
"""Absolute floor for quantities of order one."""

ZERO_EIG: dict[torch.dtype, float] = {
    torch.float64: 1e-8,
    torch.float32: 1e-4,
}
"""Relative threshold under which a Hessian eigenvalue counts as zero."""

CONSTRUCTION_RTOL: float = 1e-10
"""Relative error allowed between a construction's forward pass and its algorithm (float64)."""

FD_STEP: dict[torch.dtype, float] = {
    torch.float64: 1e-5,
    torch.float32: 1e-2,
}
"""Central finite-difference step (error O(h^2))."""

FD_RTOL: dict[torch.dtype, float] = {
    torch.float64: 1e-6,
    torch.float32: 1e-2,
}
"""Relative tolerance when a derivative is checked against central finite differences."""


def per_dtype(table: "dict[torch.dtype, float]", dtype: torch.dtype) -> float:
    """The entry of a per-dtype tolerance table (:data:`RTOL`, :data:`FD_STEP`, ...) for ``dtype``.

    Raises:
        TypeError: if ``dtype`` is not a supported floating dtype (the table has no entry).
    """
    try:
        return table[dtype]
    except KeyError:
        raise TypeError(f"unsupported dtype {dtype}; accepted: {sorted(map(str, table))}") from None


def rtol(dtype: torch.dtype) -> float:
    """Relative tolerance for ``dtype``.

    Raises:
        TypeError: if ``dtype`` is not a supported floating dtype.
    """
    return per_dtype(RTOL, dtype)


def atol(dtype: torch.dtype) -> float:
    """Absolute tolerance for ``dtype`` (see :func:`rtol`)."""
    return per_dtype(ATOL, dtype)

MC_NUM_SE: float = 4.0
"""A Monte-Carlo estimate agrees with its exact value if within this many standard errors."""

ALGORITHM_RTOL: float = 1e-12
"""Relative error allowed between two exact float64 routes to the same short computation (a few
layers at small d, n): e.g. a reference algorithm against the unrolled matrix recursion it encodes."""

STATIONARITY_ATOL: dict[torch.dtype, float] = {
    torch.float64: 1e-8,
    torch.float32: 1e-3,
}
"""Exact losses: a normal gradient norm below this (times ``max(1, |f|)``) counts as zero."""

RANK_RTOL: dict[torch.dtype, float] = {
    torch.float64: 1e-10,
    torch.float32: 1e-5,
}
"""A singular value / covariance eigenvalue below this times the largest one counts as zero
(numerical rank of tangent bases, symmetry generators and gradient covariances)."""

LANCZOS_RTOL: dict[torch.dtype, float] = {
    torch.float64: 1e-10,
    torch.float32: 1e-5,
}
"""Lanczos stops when every wanted Ritz pair has residual below this times the largest |Ritz value|."""
