r"""Recording a panel as it is drawn: the numbers handed to matplotlib, ready for a figure's data file.

A figure's data file (:func:`landscape.views.save.save_figure` ``data=``) holds, per panel, what
the axes show: its title, axis labels and scales, and every curve in the schema the views use
(:func:`landscape.views.plots.figure_data`)::

    {"title", "xlabel", "ylabel", ["xscale"], ["yscale"],
     "curves": [{"id", "label", "x", "y", ["q25", "q75"]}, ...],
     ["reference": [{"id", "label", "value"}, ...]]}

``"id"`` is the gid of the artist, so that the file and the figure can be matched line by line.
:class:`DrawnPanel` is the one way a figure records this: each curve is drawn and recorded in one
call, from the same arrays, so the file holds exactly what the axes draw. A non-finite value
(``nan``, ``±inf``: e.g. a run that diverged) is drawn as a gap (matplotlib leaves ``nan`` out
of a line) and recorded as ``nan``, which :func:`~landscape.views.save.jsonable` writes as ``null``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["DrawnPanel"]


def _drawable(what: str, values: Any) -> np.ndarray:
    """``values`` as a 1-D numeric array; in a float array every non-finite entry becomes ``nan``.

    Integer arrays are kept as they are (steps stay integers in the data file).

    Raises:
        TypeError: not real numbers.
        ValueError: not one-dimensional.
    """
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    elif isinstance(values, range):
        values = list(values)
    a = np.asarray(values)
    if a.dtype.kind not in "iuf":
        raise TypeError(f"{what} must be real numbers, got an array of dtype {a.dtype}")
    if a.ndim != 1:
        raise ValueError(f"{what} must be one-dimensional, got shape {tuple(a.shape)}")
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        a = np.where(np.isfinite(a), a, np.nan)
    return a


class DrawnPanel:
    r"""One axes with the numbers drawn on it, recorded as they are handed to matplotlib.

    The axes' scales, title and labels are set when the panel is made; :meth:`line`,
    :meth:`band` and :meth:`reference` draw and record; :meth:`finish` returns the panel's
    entry of a figure's data file.

    >>> from matplotlib.figure import Figure
    >>> panel = DrawnPanel(Figure().add_subplot(), title="loss", xlabel="step", ylabel="loss", yscale="log")
    >>> ln = panel.line("total", "total loss", [0, 1, 2], [1.0, float("inf"), 0.25])
    >>> ln.get_gid(), panel.finish()["curves"][0]["y"].tolist()
    ('total', [1.0, nan, 0.25])

    Args:
        ax: the matplotlib ``Axes``.
        title, xlabel, ylabel: set on the axes and recorded.
        xscale, yscale: ``"linear"``, ``"log"``, …; ``None`` leaves the axes' scale alone and
            leaves the key out of the record.
        reference: record a ``"reference"`` list even when no reference line is drawn (a
            figure whose panels all carry the key).
    """

    def __init__(self, ax: Any, *, title: str, xlabel: str, ylabel: str, xscale: str | None = None,
                 yscale: str | None = None, reference: bool = False) -> None:
        self.ax = ax
        self._scales = {k: v for k, v in (("xscale", xscale), ("yscale", yscale)) if v is not None}
        if xscale is not None:
            ax.set_xscale(xscale)
        if yscale is not None:
            ax.set_yscale(yscale)
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        self.curves: list[dict[str, Any]] = []
        self._lines: dict[str, Any] = {}
        self.references: list[dict[str, Any]] | None = [] if reference else None

    def line(self, gid: str, label: str, x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray,
             *fmt: str, legend: bool = True, **style: Any) -> Any:
        """Draw ``y`` against ``x`` (``ax.plot``) and record it as the curve ``{"id": gid, "label", "x", "y"}``.

        Args:
            gid: the line's gid and the curve's ``"id"``.
            label: the curve's label (the legend's too, with ``legend``).
            x, y: equal-length 1-D real arrays, lists or tensors; non-finite values are drawn as
                gaps and recorded as ``nan`` (``null`` in the file).
            fmt: matplotlib's format string (``"o-"``, ``"k:"``), if any.
            legend: ``False`` keeps the line out of the legend (the recorded label stays).
            style: further ``Line2D`` properties (``color``, ``lw``, …).

        Returns:
            The ``Line2D`` drawn.

        Raises:
            TypeError: ``x`` or ``y`` is not real numbers.
            ValueError: not one-dimensional, or of different lengths; ``gid`` empty or already
                drawn on this panel (the data file is matched to the figure by gid).
        """
        self._new_gid(gid)
        xs, ys = _drawable(f"curve {gid!r} x", x), _drawable(f"curve {gid!r} y", y)
        if len(xs) != len(ys):
            raise ValueError(f"curve {gid!r} has {len(xs)} x values but {len(ys)} y values")
        (ln,) = self.ax.plot(xs, ys, *fmt, label=label if legend else None, gid=gid, **style)
        self.curves.append({"id": gid, "label": label, "x": xs, "y": ys})
        self._lines[gid] = ln
        return ln

    def band(self, gid: str, q25: Sequence[float] | np.ndarray, q75: Sequence[float] | np.ndarray, *,
             alpha: float = 0.25, **style: Any) -> Any:
        """Shade between ``q25`` and ``q75`` under the curve ``gid`` (drawn before), in its colour.

        The band's edges are recorded in that curve as ``"q25"`` and ``"q75"`` (the views'
        schema); a non-finite edge leaves a gap.

        Args:
            gid: the curve the band belongs to.
            q25, q75: the lower and upper edges, one per x value of the curve.
            alpha: the band's opacity.
            style: further ``fill_between`` properties.

        Returns:
            The ``PolyCollection`` drawn (gid ``"band:<gid>"``).

        Raises:
            KeyError: no curve ``gid`` was drawn.
            ValueError: an edge of another length than the curve.
        """
        if self._lines.get(gid) is None:
            raise KeyError(f"no curve {gid!r} was drawn; curves: {[c['id'] for c in self.curves]}")
        curve = next(c for c in self.curves if c["id"] == gid)
        ln = self._lines[gid]
        lo, hi = _drawable(f"band {gid!r} q25", q25), _drawable(f"band {gid!r} q75", q75)
        if not len(lo) == len(hi) == len(curve["x"]):
            raise ValueError(f"band {gid!r} has {len(lo)} and {len(hi)} edge values for {len(curve['x'])} x values")
        style.setdefault("color", ln.get_color())
        style.setdefault("lw", 0)
        poly = self.ax.fill_between(curve["x"], lo, hi, alpha=alpha, gid=f"band:{gid}", **style)
        curve.update(q25=lo, q75=hi)
        return poly

    def reference(self, gid: str, label: str, value: float, *, legend: bool = True, **style: Any) -> Any:
        """Draw a horizontal line at ``value`` (``ax.axhline``) and record ``{"id": gid, "label", "value"}``.

        A non-finite ``value`` draws nothing visible and is recorded as ``nan`` (``null`` in the file).

        Args:
            gid: the line's gid and the reference's ``"id"``.
            label: the reference's label (the legend's too, with ``legend``).
            value: the height.
            legend: ``False`` keeps the line out of the legend.
            style: further ``Line2D`` properties.

        Returns:
            The ``Line2D`` drawn.

        Raises:
            ValueError: ``gid`` empty or already drawn on this panel.
        """
        self._new_gid(gid)
        v = float(value)
        v = v if math.isfinite(v) else math.nan
        ln = self.ax.axhline(v, label=label if legend else None, gid=gid, **style)
        self._lines[gid] = None
        if self.references is None:
            self.references = []
        self.references.append({"id": gid, "label": label, "value": v})
        return ln

    def _new_gid(self, gid: str) -> None:
        """Raise ``ValueError`` if ``gid`` is not a string or already names a line of this panel."""
        if not isinstance(gid, str) or not gid:
            raise ValueError(f"a line's gid must be a non-empty string, got {gid!r}")
        if gid in self._lines:
            raise ValueError(f"gid {gid!r} is already drawn on this panel; each line needs its own")

    def finish(self) -> dict[str, Any]:
        """The panel's entry of a figure's data file, read back from the axes and the curves drawn.

        Returns:
            ``{"title", "xlabel", "ylabel"}``, the scales given when the panel was made
            (``"xscale"``, ``"yscale"``, as the axes now have them), ``"curves"`` in the order
            drawn and, when there are reference lines (or ``reference=True``), ``"reference"``.
        """
        ax = self.ax
        out: dict[str, Any] = {"title": ax.get_title(), "xlabel": ax.get_xlabel(), "ylabel": ax.get_ylabel()}
        out.update({k: getattr(ax, f"get_{k}")() for k in self._scales})
        out["curves"] = list(self.curves)
        if self.references is not None:
            out["reference"] = list(self.references)
        return out
