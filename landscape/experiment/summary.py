r"""Summaries over seeds, defined once for tables, claims, progress lines and figures.

The median over seeds is the NaN-ignoring 0.5-quantile with linear interpolation: for an even number
of values, the **mean of the two middle values** (``torch.median`` returns the lower one, which for
two seeds is their minimum). :func:`landscape.views.plots.seed_quantiles` draws the same statistic
(:func:`numpy.nanquantile`), so a table and the figure beside it agree.
"""

from __future__ import annotations

import torch

__all__ = ["seed_median"]


def seed_median(values: torch.Tensor, dim: int = -1) -> torch.Tensor:
    r"""Median over seeds along ``dim``, ignoring NaN (diverged seeds).

    .. math:: \operatorname{med}(v_1, \dots, v_S) = \tfrac12\big(v_{(\lfloor (S-1)/2\rfloor + 1)} + v_{(\lceil (S-1)/2\rceil + 1)}\big)

    over the non-NaN values sorted :math:`v_{(1)} \le \dots`; NaN where every value is NaN.

    Args:
        values: a floating tensor with the seeds along ``dim``.
        dim: the seed axis.

    Returns:
        The medians, ``values`` with ``dim`` removed.

    Raises:
        TypeError: ``values`` is not a floating-point tensor.
    """
    if not isinstance(values, torch.Tensor) or not values.is_floating_point():
        raise TypeError(f"seed_median needs a floating-point tensor, got {type(values).__name__}")
    return torch.nanquantile(values, 0.5, dim=dim, interpolation="linear")
