"""Shared input validation: clear errors before any expensive work starts.

All checks look at shapes, dtypes and devices only (never at tensor values), so they are safe
inside ``torch.func.vmap`` and never force a device synchronisation.

One exception type per kind of error: a value of the wrong Python type, a tensor of the wrong
dtype **or device** — ``TypeError``; a value of the right type that is out of range, an unknown
name, a wrong shape — ``ValueError``. A device mismatch is a ``TypeError`` because dtype and
device together are a tensor's type in torch (``torch.tensor(1.).cuda().type()`` is
``'torch.cuda.FloatTensor'``): the tensor's entries and shape may be fine, its kind is not.

Shapes are described by *specs*: tuples whose entries are named dimensions (``"batch"``, ``"d"``,
``"n"`` ...) or fixed integers. A ``dims`` dict shared between calls binds each name to the size
first seen, so later arguments are checked against it:

>>> dims: dict[str, int] = {}
>>> check_shape("X", torch.zeros(4, 3, 10), ("batch", "d", "n"), dims)
{'batch': 4, 'd': 3, 'n': 10}
>>> check_shape("y", torch.zeros(4, 9), ("batch", "n"), dims)
Traceback (most recent call last):
    ...
ValueError: y must have shape (batch, n) = (4, 10); got shape (4, 9) (axis 1, 'n', is 9 but earlier arguments fixed n = 10)

Numbers are checked by type first, then by range:

>>> check_int("steps", 3)
3
>>> check_int("steps", 2.0)
Traceback (most recent call last):
    ...
TypeError: steps must be an int >= 0, got float
>>> check_real("lr", -0.1, positive=True)
Traceback (most recent call last):
    ...
ValueError: lr must be > 0, got -0.1
"""

from __future__ import annotations

import math
import os
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
    "available_memory",
    "format_bytes",
    "prompt_memory",
    "check_memory",
    "MEMORY_FRACTION",
    "LONG_WORK_SECONDS",
    "warn_if_long",
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

    ``None`` entries are skipped. Names may be any string (pass ``**{"param 'x'": t}``).

    Raises:
        TypeError: on a dtype or a device mismatch (module docstring: both are the tensor's type).
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
            raise TypeError(
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


# ---------------------------------------------------------------------- size limits
MEMORY_FRACTION = 0.8
"""Share of the available memory a command may plan to use before :func:`check_memory` refuses."""


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation now (``MemAvailable`` of ``/proc/meminfo``;
    else free physical pages from ``os.sysconf``), or ``None`` when the platform says neither."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return None


def format_bytes(n: float) -> str:
    """``1536`` → ``"1.5 KiB"`` (binary units up to EiB)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024:
            return f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} EiB"


def prompt_memory(*, batch: int, d: int, n: int, layers: int, seeds: int = 1, dtype_bytes: int = 8,
                  factor: float = 1.0, kernel_heads: int = 0, kernel_factor: float = 0.0) -> int:
    r"""Estimated peak bytes of pushing prompts through a transformer (the sizes alone; nothing allocated).

    .. math::
        \text{bytes} \approx S\,B\,L\,b\,\big(f\,(d+1)(n+1) + f_k\,H_k\,(n+1)^2\big)

    — ``S`` seeds × ``B`` prompts × ``L`` layers of ``(d+1) × (n+1)`` tokens in ``b``-byte floats,
    times a factor ``f`` for the intermediates kept (measured per command), plus the
    ``(n+1) × (n+1)`` score matrices of ``H_k`` kernel heads (factor ``f_k``). Python integers, so
    sizes far beyond memory do not overflow.

    Args:
        batch, d, n, layers, seeds: the sizes.
        dtype_bytes: bytes per float (4 or 8).
        factor: intermediates per token entry.
        kernel_heads: kernel-attention heads (0 for linear attention).
        kernel_factor: intermediates per score entry.

    Returns:
        The estimate in bytes.
    """
    tokens = (d + 1) * (n + 1)
    scores = kernel_heads * (n + 1) ** 2
    return int(seeds * batch * layers * dtype_bytes * (factor * tokens + kernel_factor * scores))


def check_memory(what: str, needed: int, how: str, *, available: int | None = None,
                 fraction: float = MEMORY_FRACTION) -> None:
    """Refuse work whose estimated memory does not fit, before anything is allocated.

    Args:
        what: the sizes it is about, for the message (``"--batch 10000000 --seeds 64"``).
        needed: estimated bytes (e.g. :func:`prompt_memory`).
        how: the formula of the estimate, for the message.
        available: bytes available (default :func:`available_memory`; unknown: no check).
        fraction: share of ``available`` the work may use.

    Raises:
        ValueError: ``needed > fraction · available``; the message names the estimate, the
            formula and the available memory.
    """
    avail = available_memory() if available is None else available
    if avail is None or needed <= fraction * avail:
        return
    raise ValueError(
        f"{what} needs about {format_bytes(needed)} of memory ({how}), but this machine has "
        f"{format_bytes(avail)} available; reduce the sizes"
    )


LONG_WORK_SECONDS = 120.0
"""Estimated run time above which a command warns before it starts."""


def warn_if_long(prog: str, seconds: float, how: str, *, threshold: float = LONG_WORK_SECONDS) -> bool:
    """Print one warning line on stderr when the estimated work exceeds ``threshold`` seconds.

    Args:
        prog: the command (``"landscape check"``).
        seconds: estimated run time.
        how: what the estimate is made of, for the message.
        threshold: seconds.

    Returns:
        Whether it warned.
    """
    import sys

    if not seconds > threshold:
        return False
    mins = seconds / 60
    when = f"{seconds:.0f} s" if mins < 2 else f"{mins:.0f} min" if mins < 120 else f"{mins / 60:.1f} h"
    print(f"{prog}: warning: this will take about {when} on this machine ({how}); Ctrl-C stops it",
          file=sys.stderr, flush=True)
    return True
