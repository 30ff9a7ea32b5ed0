"""Shared input validation: clear errors before any expensive work starts.

All checks look at shapes, dtypes and devices only (never at tensor values), so they are safe
inside ``torch.func.vmap`` and never force a device synchronisation.

Shapes are described by *specs*: tuples whose entries are named dimensions (``"batch"``, ``"d"``,
``"n"`` ...) or fixed integers. A ``dims`` dict shared between calls binds each name to the size
first seen, so later arguments are checked against it::

    dims: dict[str, int] = {}
    check_shape("X", X, ("batch", "d", "n"), dims)
    check_shape("y", y, ("batch", "n"), dims)   # ValueError if y's n differs from X's
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from numbers import Integral, Real

import torch

__all__ = [
    "FLOAT_DTYPES",
    "check_tensor",
    "check_shape",
    "check_same_dtype_device",
    "check_int",
    "check_real",
    "check_choice",
    "format_spec",
]

FLOAT_DTYPES: tuple[torch.dtype, ...] = (torch.float64, torch.float32)
"""Floating dtypes accepted by the numerical routines."""


def format_spec(spec: tuple[int | str, ...]) -> str:
    """Render a shape spec as ``(batch, d, n)``."""
    return "(" + ", ".join(str(s) for s in spec) + ("," if len(spec) == 1 else "") + ")"


def check_tensor(name: str, value: object, *, floating: bool = True) -> torch.Tensor:
    """Check that ``value`` is a tensor (of a supported floating dtype when ``floating``).

    Raises:
        TypeError: if ``value`` is not a ``torch.Tensor`` or has an unsupported dtype.
    """
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if floating and value.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{name} has dtype {value.dtype}; accepted dtypes: {', '.join(map(str, FLOAT_DTYPES))}"
        )
    return value


def check_shape(
    name: str,
    value: torch.Tensor,
    spec: tuple[int | str, ...],
    dims: dict[str, int] | None = None,
    *,
    min_size: Mapping[str, int] | None = None,
) -> dict[str, int]:
    """Check ``value.shape`` against ``spec``, binding named dimensions in ``dims``.

    Args:
        name: the argument's name, used in messages.
        value: the tensor to check.
        spec: expected shape; ``str`` entries are named dimensions, ``int`` entries fixed sizes.
        dims: bindings of named dimensions from earlier arguments (updated in place). A fresh dict
            is used when ``None``.
        min_size: minimum size per named dimension; names not listed must be >= 1. Pass e.g.
            ``{"L": 0}`` to allow an empty axis.

    Returns:
        The (updated) ``dims`` dict.

    Raises:
        ValueError: wrong number of axes, a size that disagrees with ``spec`` or with an earlier
            binding, or a named dimension below its minimum.
    """
    dims = {} if dims is None else dims
    shape = tuple(value.shape)
    bound = tuple(dims.get(s, s) if isinstance(s, str) else s for s in spec)
    where = f"{format_spec(spec)}" + (f" = {format_spec(bound)}" if bound != spec else "")
    if len(shape) != len(spec):
        raise ValueError(
            f"{name} must have {len(spec)} axes with shape {where}; got shape {shape}"
        )
    for axis, (s, size) in enumerate(zip(spec, shape)):
        if isinstance(s, str):
            if s in dims and dims[s] != size:
                raise ValueError(
                    f"{name} must have shape {where}; got shape {shape} "
                    f"(axis {axis}, '{s}', is {size} but earlier arguments fixed {s} = {dims[s]})"
                )
            lo = 1 if min_size is None else min_size.get(s, 1)
            if size < lo:
                raise ValueError(
                    f"{name} has {s} = {size} (shape {shape}, expected {format_spec(spec)}); "
                    f"{s} must be >= {lo}"
                )
            dims[s] = size
        elif size != s:
            raise ValueError(f"{name} must have shape {where}; got shape {shape} (axis {axis})")
    return dims


def check_same_dtype_device(ref_name: str, ref: torch.Tensor, **others: torch.Tensor | None) -> None:
    """Check that every tensor in ``others`` has the dtype and device of ``ref``.

    ``None`` entries are skipped.

    Raises:
        TypeError: on a dtype mismatch.
        ValueError: on a device mismatch.
    """
    for name, t in others.items():
        if t is None:
            continue
        if t.dtype != ref.dtype:
            raise TypeError(
                f"{name} has dtype {t.dtype} but {ref_name} has dtype {ref.dtype}; "
                "all tensor inputs must share one floating dtype"
            )
        if t.device != ref.device:
            raise ValueError(
                f"{name} is on device {t.device} but {ref_name} is on {ref.device}; "
                "all tensor inputs must be on one device"
            )


def check_int(name: str, value: object, *, minimum: int = 0) -> int:
    """Check that ``value`` is a Python integer ``>= minimum`` (bools are rejected).

    Raises:
        TypeError: if ``value`` is not an integer.
        ValueError: if ``value < minimum``.
    """
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an int >= {minimum}, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value}")
    return int(value)


def check_real(
    name: str,
    value: object,
    *,
    positive: bool = False,
    nonnegative: bool = False,
) -> float:
    """Check that ``value`` is a finite Python real number (optionally > 0 or >= 0).

    Raises:
        TypeError: if ``value`` is not a real number.
        ValueError: if it is not finite or violates the sign requirement.
    """
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    if positive and not v > 0:
        raise ValueError(f"{name} must be > 0, got {v}")
    if nonnegative and not v >= 0:
        raise ValueError(f"{name} must be >= 0, got {v}")
    return v


def check_choice(name: str, value: object, choices: tuple[str, ...]) -> str:
    """Check that ``value`` is one of ``choices``.

    Raises:
        ValueError: listing the accepted values.
    """
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value  # type: ignore[return-value]
