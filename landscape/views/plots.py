r"""Figures: distance to the construction, learned weights, loss scaling, comparison grids.

Two layers:

* **array functions** (``*_figure`` taking arrays) build a :class:`matplotlib.figure.Figure` from
  plain numbers, so studies can call them directly;
* **store functions** (``plot_*`` taking a :class:`~landscape.experiment.store.RunStore` and run names) read
  everything they show from the run store (metrics, results, configs, final weights), build the
  figure with the array functions and write PNG and SVG next to the data (``<store>/figures/...``).

Figures read, never write: no store function changes the store, whether it is open read-only
(``landscape plot``) or writable (no results, no artifacts). The Bayes-optimal
loss of a run without a recorded ``bayes_loss`` result is estimated in memory (cached by config
hash); recording it is :func:`landscape.experiment.bayes.record_bayes_loss`'s job, done where
results are produced (every point of a sweep).

Figures are built on :class:`matplotlib.figure.Figure` objects directly — never through
``pyplot`` — so importing this module changes no global matplotlib state (no backend switch, no
rcParams change, no figure registry) and works headless; ``Figure.savefig`` renders PNG with the
Agg canvas and SVG with the SVG canvas.

Seed statistics. A metric logged per seed is a table ``values[step, seed]``. Curves show the
median over seeds and the inter-quartile band ``[Q_{0.25}, Q_{0.75}]`` (NaN entries — e.g. a seed
that diverged — are ignored; a step where every seed is NaN is left out).

References: the distance metric :math:`\mathrm{Dist}(M, I) = \min_\alpha \|M-\alpha I\|_F/\|M\|_F`
(Ahn et al. 2023, arXiv 2306.00297, Fig. 2) and the activation × data-kernel loss comparisons
(Cheng, Chen, Sra 2024, arXiv 2312.06528, Figs. 2–4).
"""

from __future__ import annotations

import math
import os
import re
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from landscape.experiment.bayes import bayes_loss_estimate, stored_bayes_loss, stored_family_minimum
from landscape.experiment.metrics import is_distance_key, metric_label, metric_sort_key, parse_metric_key
from landscape.experiment.store import MetricSeries, Run, RunStore
from landscape.experiment.train import stored_config
from landscape.views.kinds import DEFAULT_SKIPS, PLOT_KINDS
from landscape.views.labels import data_label, model_label, setting_label, wrap_title

__all__ = [
    "FIGURE_FORMATS",
    "PLOT_KINDS",
    "SavedFigure",
    "seed_quantiles",
    "save_figure",
    "figure_data",
    "distance_figure",
    "loss_curves_figure",
    "matrix_heatmaps_figure",
    "loss_vs_figure",
    "comparison_grid_figure",
    "distance_keys",
    "plot_distance",
    "plot_loss",
    "plot_heatmaps",
    "plot_loss_vs",
    "plot_grid",
    "plot_seed_distances",
    "plot_distance_vs",
    "plot_spectrum",
    "plot_store",
    "PlotReport",
    "bayes_loss_estimate",
]

FIGURE_FORMATS: tuple[str, ...] = ("png", "svg")
"""File formats every figure is written in."""


_FIGURE_DIR = "figures"
_QUANTILES = (0.25, 0.5, 0.75)


# ----------------------------------------------------------------------------------------------
# Small helpers
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SavedFigure:
    """A figure written to disk.

    Attributes:
        name: file stem (``"distance"``).
        paths: the written files, one per format in :data:`FIGURE_FORMATS` (PNG first).
        runs: names of the runs whose data it shows.
        figure: the matplotlib figure (to inspect the plotted data).
    """

    name: str
    paths: tuple[Path, ...]
    runs: tuple[str, ...]
    figure: Figure = field(repr=False, compare=False)

    @property
    def png(self) -> Path:
        """The PNG file."""
        return self.paths[0]

    @property
    def svg(self) -> Path:
        """The SVG file."""
        return self.paths[1]


def _as_2d(name: str, values: object) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"{name} must have shape (n_steps,) or (n_steps, n_seeds); got {arr.shape}")
    return arr


def _as_1d(name: str, values: object, length: int | None = None) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional; got shape {arr.shape}")
    if length is not None and arr.shape[0] != length:
        raise ValueError(f"{name} has {arr.shape[0]} entries; expected {length}")
    return arr


def seed_quantiles(values: object) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    r"""Median and inter-quartile range over seeds, ignoring NaN.

    For each row ``i`` of ``values`` (a step), the NaN-ignoring quantiles
    :math:`Q_{0.25}, Q_{0.5}, Q_{0.75}` of ``values[i, :]`` (linear interpolation, as
    :func:`numpy.nanquantile`). Rows where every entry is NaN are dropped. An infinite value (a
    diverged seed) counts as larger than every finite one; a quantile between two infinite order
    statistics is that infinity.

    Args:
        values: array ``(n_steps, n_seeds)`` (or ``(n_steps,)`` for one seed).

    Returns:
        ``(rows, q25, median, q75)``: the indices of the kept rows and the three quantiles there.

    Raises:
        ValueError: if ``values`` has more than two axes.
    """
    arr = _as_2d("values", values)
    keep = np.flatnonzero(~np.all(np.isnan(arr), axis=1))
    if keep.size == 0:
        empty = np.empty(0)
        return keep, empty, empty, empty
    with np.errstate(invalid="ignore"):  # inf - inf when interpolating between two diverged seeds
        q = np.nanquantile(arr[keep], _QUANTILES, axis=1)
    bad = np.isnan(q)
    if bad.any():  # both neighbours infinite: the quantile is that infinity (nearest order statistic)
        q[bad] = np.nanquantile(arr[keep], _QUANTILES, axis=1, method="nearest")[bad]
    return keep, q[0], q[1], q[2]


def _positive_for_log(*arrays: np.ndarray) -> bool:
    """Whether every finite entry is > 0 (a log axis can show it)."""
    for a in arrays:
        finite = a[np.isfinite(a)]
        if finite.size and np.any(finite <= 0):
            return False
    return True


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "figure"


_DRAWN: weakref.WeakKeyDictionary[Figure, dict[str, Any]] = weakref.WeakKeyDictionary()
"""The numbers each figure of the array functions holds, recorded as it is drawn (by figure)."""


def _record(fig: Figure, data: Mapping[str, Any]) -> Figure:
    """Remember ``data`` as the numbers ``fig`` shows (read back by :func:`figure_data`); return ``fig``."""
    _DRAWN[fig] = dict(data)
    return fig


def figure_data(fig: Figure) -> dict[str, Any] | None:
    """The numbers an array function of the views drew into ``fig``, as they were passed to matplotlib.

    Every array function here and in :mod:`landscape.views.evidence` records, while drawing, what
    each artist holds: ``"curves"`` (a list of ``{"id", "label", "x", "y"}`` and, where a band is
    shaded or error bars drawn, its edges ``"q25"``/``"q75"``; ``"id"`` is the line's gid),
    ``"reference"`` (horizontal lines, ``{"id", "label", "value"}``), matrices and tables for the
    heatmaps, eigenvalues and densities for spectra, and the axis labels and title. Nothing is
    recomputed from the figure; :func:`save_figure` writes it beside the figure as ``<name>.json``
    when it is passed as ``data``.

    Args:
        fig: a figure.

    Returns:
        A copy of the recorded mapping, or ``None`` for a figure no array function built.
    """
    got = _DRAWN.get(fig)
    return None if got is None else dict(got)


def save_figure(
    fig: Figure,
    directory: str | os.PathLike[str],
    name: str,
    *,
    runs: Sequence[Run | str] = (),
    dpi: int = 150,
    data: Mapping[str, Any] | None = None,
) -> SavedFigure:
    """Write ``fig`` as PNG and SVG (through :func:`landscape.views.save.save_figure`: atomically, reproducible
    bytes); touch no run store.

    Args:
        fig: the figure.
        directory: output folder (created if missing).
        name: file stem; characters other than letters, digits, ``_ . -`` become ``_``.
        runs: the runs (or their names) the figure shows, recorded in :attr:`SavedFigure.runs`.
            To register the files as artifacts of a run, the code that produces results calls
            :meth:`landscape.experiment.store.RunStore.add_artifact` itself; figures never write
            to a store.
        dpi: PNG resolution.
        data: the numbers the figure shows (e.g. :func:`figure_data`), written beside it as
            ``<name>.json``; ``None`` writes no data file.

    Returns:
        The :class:`SavedFigure`.

    Raises:
        TypeError: ``data`` holds something that is not a number, string, list or dict.
    """
    from landscape.views.save import save_figure as write_files

    stem = _slug(name)
    paths = [p.resolve() for p in write_files(fig, Path(directory).expanduser() / stem, formats=FIGURE_FORMATS,
                                              dpi=dpi, data=data)]
    names = tuple(r.name if isinstance(r, Run) else str(r) for r in runs)
    return SavedFigure(stem, tuple(paths), names, fig)


# ----------------------------------------------------------------------------------------------
# Array functions
# ----------------------------------------------------------------------------------------------


def _title(fig: Figure, text: str, *, ax: Axes | None = None, fontsize: float = 11.0) -> None:
    """Set the figure's (or ``ax``'s) title, wrapped to the figure's width so it is never cut off."""
    width = fig.get_figwidth() * (0.92 if ax is None else 0.92 / max(1, len(fig.axes)))
    wrapped = wrap_title(text, width, fontsize=fontsize)
    if ax is None:
        fig.suptitle(wrapped, fontsize=fontsize)
    else:
        ax.set_title(wrapped, fontsize=fontsize)


def _band(ax: Axes, x: np.ndarray, values: np.ndarray, *, label: str, color: str | None,
          gid: str | None = None) -> dict[str, Any] | None:
    """Draw the median line and IQR band; return what was drawn (``None``: nothing, every step NaN)."""
    rows, q25, med, q75 = seed_quantiles(values)
    if rows.size == 0:
        return None
    xs = x[rows]
    (line,) = ax.plot(xs, med, label=label, color=color, lw=1.8)
    line.set_gid(f"median:{label if gid is None else gid}")
    drawn: dict[str, Any] = {"id": line.get_gid(), "label": label, "x": xs, "y": med, "seeds": int(values.shape[1])}
    if values.shape[1] > 1:
        ax.fill_between(xs, q25, q75, color=line.get_color(), alpha=0.25, lw=0)
        drawn.update(q25=q25, q75=q75)
    return drawn


def distance_figure(
    curves: Mapping[str, tuple[object, object]],
    *,
    panels: Mapping[str, Sequence[str]] | None = None,
    labels: Mapping[str, str] | None = None,
    ylabel: str = "distance to construction",
    xlabel: str = "step",
    log_y: bool = True,
    title: str | None = None,
    band_label: bool = False,
) -> Figure:
    r"""Distance to the construction against training step: median over seeds with IQR band.

    One curve per entry of ``curves`` (e.g. one per layer, ``Dist(Σ^{1/2} A_l Σ^{1/2}, I)`` for
    :math:`l = 0, \dots, L-1`, Ahn et al. 2023, Fig. 2). The line of each curve has gid
    ``"median:<key>"`` (the key of ``curves``); its y-data is the median over seeds at each step.
    The legend shows ``labels[key]`` (default: the key) and, with ``band_label``, names the shaded band.

    Args:
        curves: label ↦ ``(steps (n_steps,), values (n_steps, n_seeds))``.
        panels: panel title ↦ keys of the curves drawn in it (one axes each, side by side);
            None puts every curve in one axes.
        labels: key ↦ legend label (human words; default the key).
        band_label: add a legend entry ``"shaded: interquartile range over S seeds"``.
        ylabel, xlabel, title: axis labels and title.
        log_y: logarithmic y axes (switched off per panel if a value is <= 0).

    Returns:
        The figure.

    Raises:
        ValueError: no curves, a panel naming an unknown curve, or array shapes that do not match.
    """
    if not curves:
        raise ValueError("distance_figure needs at least one curve")
    groups = {"": list(curves)} if panels is None else {k: list(v) for k, v in panels.items()}
    for title_, members in groups.items():
        unknown = [lab for lab in members if lab not in curves]
        if unknown:
            raise ValueError(f"panel {title_!r} names unknown curves {unknown}; curves: {list(curves)}")
    names = dict(labels or {})
    fig = Figure(figsize=(5.2 * len(groups) + 1.2, 4.4), layout="constrained")
    axes = fig.subplots(1, len(groups), squeeze=False)[0]
    n_seeds = max(_as_2d("values", v).shape[1] for _, v in curves.values())
    drawn: list[dict[str, Any]] = []
    for ax, (panel, keys) in zip(axes, groups.items()):
        all_vals = []
        for key in keys:
            steps, values = curves[key]
            v = _as_2d(f"curves[{key!r}] values", values)
            x = _as_1d(f"curves[{key!r}] steps", steps, v.shape[0])
            got = _band(ax, x, v, label=names.get(key, str(key)), color=None, gid=str(key))
            if got is not None:
                drawn.append({"key": str(key), "panel": panel, **got})
            all_vals.append(v)
        if log_y and _positive_for_log(*all_vals):
            ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if panel:
            ax.set_title(wrap_title(panel, 5.0, fontsize=10), fontsize=10)
        if band_label and n_seeds > 1:
            _legend_with_band(ax, n_seeds)
        else:
            ax.legend(fontsize="small")
        ax.grid(True, which="both", alpha=0.3)
    text = title or f"{ylabel}: median over {n_seeds} seeds"
    _title(fig, text)
    return _record(fig, {"title": text, "xlabel": xlabel, "ylabel": ylabel,
                         "band": "interquartile range over seeds (q25, q75)", "curves": drawn})


def _legend_with_band(ax: Axes, seeds: int, *, what: str = "shaded") -> None:
    """The axes' legend with one more entry naming the band: ``"shaded: interquartile range over S seeds"``."""
    from matplotlib.patches import Patch

    handles, labels = ax.get_legend_handles_labels()
    handles.append(Patch(facecolor="0.6", alpha=0.4, lw=0))
    labels.append(f"{what}: interquartile range over {seeds} seeds")
    ax.legend(handles, labels, fontsize="small")


def loss_curves_figure(
    steps: object,
    values: object,
    seeds: Sequence[int] | None = None,
    *,
    bayes: float | None = None,
    bayes_label: str = "Bayes-optimal loss",
    family_min: float | None = None,
    family_min_label: str = "minimum over the family",
    ylabel: str = "loss",
    log_y: bool = True,
    title: str | None = None,
) -> Figure:
    r"""A loss against step for every seed, with the median over seeds in bold.

    Each seed's line has gid ``"seed:<s>"`` and the median line gid ``"median"``; a horizontal line
    at ``bayes`` (gid ``"bayes"``, legend ``"<bayes_label> = <value>"``) marks the Bayes-optimal
    loss when given, and one at ``family_min`` (gid ``"family_min"``, dotted, legend
    ``"<family_min_label> = <value>"``) the minimum of the loss over the run's family.

    Args:
        steps: ``(n_steps,)``.
        values: ``(n_steps, n_seeds)``.
        seeds: the seed of each column (default ``0..S-1``).
        bayes: Bayes-optimal loss, or None.
        bayes_label: its legend label (the value is appended).
        family_min: minimum of the loss over the family, or None.
        family_min_label: its legend label (the value is appended).
        ylabel, title: labels.
        log_y: logarithmic y axis (switched off automatically if a value is <= 0).

    Returns:
        The figure.

    Raises:
        ValueError: mismatched shapes.
    """
    v = _as_2d("values", values)
    x = _as_1d("steps", steps, v.shape[0])
    seed_list = list(range(v.shape[1])) if seeds is None else [int(s) for s in seeds]
    if len(seed_list) != v.shape[1]:
        raise ValueError(f"seeds has {len(seed_list)} entries but values has {v.shape[1]} columns")
    fig = Figure(figsize=(6.4, 4.4), layout="constrained")
    ax = fig.add_subplot()
    drawn: list[dict[str, Any]] = []
    for j, s in enumerate(seed_list):
        ok = ~np.isnan(v[:, j])
        (ln,) = ax.plot(x[ok], v[ok, j], lw=0.8, alpha=0.45, color="tab:blue",
                        label="one seed" if j == 0 else None)
        ln.set_gid(f"seed:{s}")
        drawn.append({"id": ln.get_gid(), "label": f"seed {s}", "seed": s, "x": x[ok], "y": v[ok, j]})
    rows, _, med, _ = seed_quantiles(v)
    (ln,) = ax.plot(x[rows], med, lw=2.0, color="black", label=f"median of {v.shape[1]} seeds")
    ln.set_gid("median")
    drawn.append({"id": "median", "label": ln.get_label(), "x": x[rows], "y": med})
    reference: list[dict[str, Any]] = []
    if bayes is not None and math.isfinite(bayes):
        bl = ax.axhline(bayes, ls="--", color="tab:red", label=f"{bayes_label} = {bayes:.3g}")
        bl.set_gid("bayes")
        reference.append({"id": "bayes", "label": bayes_label, "value": float(bayes)})
    if family_min is not None and math.isfinite(family_min):
        fl = ax.axhline(family_min, ls=":", lw=1.6, color="tab:green", label=f"{family_min_label} = {family_min:.4g}")
        fl.set_gid("family_min")
        reference.append({"id": "family_min", "label": family_min_label, "value": float(family_min)})
    extra = [np.array([v]) for v in (bayes, family_min) if v is not None]
    if log_y and _positive_for_log(v, *extra):
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    text = title or f"{ylabel} ({v.shape[1]} seeds)"
    _title(fig, text)
    # below the axes: a legend inside would hide a reference line near the bottom of the plot
    ax.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.14))
    ax.grid(True, which="both", alpha=0.3)
    return _record(fig, {"title": text, "xlabel": "step", "ylabel": ylabel, "curves": drawn, "reference": reference})


def matrix_heatmaps_figure(
    learned: Mapping[str, object],
    construction: Mapping[str, object],
    *,
    titles: tuple[str, str] = ("learned", "construction"),
    cmap: str = "RdBu_r",
    title: str | None = None,
) -> Figure:
    r"""Learned against construction matrices, side by side, one row per matrix, one colour scale.

    Every panel uses the same symmetric colour range :math:`[-m, m]`,
    :math:`m = \max |entries|` over all panels, so equal colours mean equal numbers across rows
    and columns. Panel images carry gid ``"learned:<name>"`` / ``"construction:<name>"``.

    Args:
        learned: matrix name (e.g. ``"layer0.head0.Q"``) ↦ 2-D array.
        construction: same names ↦ arrays of the same shapes.
        titles: column titles.
        cmap: a diverging matplotlib colormap name.
        title: figure title.

    Returns:
        The figure.

    Raises:
        ValueError: empty input, names that differ, non-2-D arrays or mismatched shapes.
    """
    if not learned:
        raise ValueError("matrix_heatmaps_figure needs at least one matrix")
    if set(learned) != set(construction):
        raise ValueError(
            f"learned and construction name different matrices: {sorted(learned)} vs {sorted(construction)}"
        )
    names = list(learned)
    pairs: list[tuple[np.ndarray, np.ndarray]] = []
    for n in names:
        a = np.asarray(learned[n], dtype=np.float64)
        b = np.asarray(construction[n], dtype=np.float64)
        if a.ndim != 2 or a.shape != b.shape:
            raise ValueError(f"matrix {n!r}: learned {a.shape} and construction {b.shape} must be equal 2-D shapes")
        pairs.append((a, b))
    m = max(float(np.nanmax(np.abs(np.stack(p)))) for p in pairs)
    m = m if m > 0 else 1.0
    rows = len(names)
    fig = Figure(figsize=(6.0, 2.6 * rows + 0.6), layout="constrained")
    axes = fig.subplots(rows, 2, squeeze=False)
    im = None
    for i, (n, (a, b)) in enumerate(zip(names, pairs)):
        for j, (mat, col) in enumerate(((a, titles[0]), (b, titles[1]))):
            ax = axes[i, j]
            im = ax.imshow(mat, cmap=cmap, vmin=-m, vmax=m, interpolation="nearest")
            im.set_gid(f"{col}:{n}")
            ax.set_title(f"{n} — {col}", fontsize="small")
            ax.set_xticks(range(mat.shape[1]))
            ax.set_yticks(range(mat.shape[0]))
            ax.tick_params(labelsize="x-small")
    assert im is not None
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8)
    if title:
        _title(fig, title)
    return _record(fig, {"title": title, "columns": list(titles), "colour_range": [-m, m],
                         "matrices": [{"name": n, titles[0]: a, titles[1]: b} for n, (a, b) in zip(names, pairs)]})


def loss_vs_figure(
    curves: Mapping[str, tuple[object, object]],
    *,
    bayes: tuple[object, object] | Mapping[str, tuple[object, object]] | None = None,
    xlabel: str = "layers",
    ylabel: str = "final loss",
    log_y: bool = True,
    title: str | None = None,
    band_label: bool = False,
) -> Figure:
    r"""Final loss against a size (depth or context length) for several models, with Bayes line.

    Each curve is a model (e.g. an attention activation) with one value per seed at each x; the
    line (gid ``"median:<label>"``) is the median over seeds, with the IQR as error bars. The
    Bayes-optimal loss (gid ``"bayes"``), when given, is drawn dashed (Cheng, Chen, Sra 2024,
    Figs. 2–3: the activation matching the data kernel approaches it as depth / n grow).

    Args:
        curves: label ↦ ``(x (n_x,), values (n_x, n_seeds))``.
        bayes: ``(x, bayes_loss)`` arrays, or label ↦ such a pair (one dashed line each; gid
            ``"bayes:<label>"`` when there are several), or None.
        xlabel, ylabel, title: labels.
        log_y: logarithmic y axis (switched off automatically if a value is <= 0).
        band_label: add a legend entry ``"error bars: interquartile range over S seeds"``.

    Returns:
        The figure.

    Raises:
        ValueError: no curves, or mismatched shapes.
    """
    if not curves:
        raise ValueError("loss_vs_figure needs at least one curve")
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.add_subplot()
    all_vals: list[np.ndarray] = []
    drawn: list[dict[str, Any]] = []
    for label, (xs, values) in curves.items():
        v = _as_2d(f"curves[{label!r}] values", values)
        x = _as_1d(f"curves[{label!r}] x", xs, v.shape[0])
        order = np.argsort(x, kind="stable")
        x, v = x[order], v[order]
        rows, q25, med, q75 = seed_quantiles(v)
        with np.errstate(invalid="ignore"):  # inf - inf where diverged seeds make a quartile infinite
            err = np.vstack([med - q25, q75 - med])
        err = np.where(np.isfinite(err), err, np.nan)
        cont = ax.errorbar(x[rows], med, yerr=err, marker="o", ms=4, capsize=3, label=str(label))
        cont.lines[0].set_gid(f"median:{label}")
        drawn.append({"id": f"median:{label}", "label": str(label), "x": x[rows], "y": med,
                      "q25": q25, "q75": q75, "seeds": int(v.shape[1])})
        all_vals.append(v)
    lines = {} if bayes is None else (dict(bayes) if isinstance(bayes, Mapping) else {"Bayes-optimal": bayes})
    styles = ("--", ":", "-.", (0, (5, 1)), (0, (3, 1, 1, 1)))
    for i, (blabel, (bx_, by_)) in enumerate(lines.items()):
        bx = _as_1d(f"bayes[{blabel!r}] x", bx_)
        by = np.broadcast_to(np.asarray(by_, dtype=np.float64), bx.shape)
        order = np.argsort(bx, kind="stable")
        single = bx.size == 1  # one x: a line of one point is invisible, draw a wide tick
        (bl,) = ax.plot(bx[order], by[order], ls=styles[i % len(styles)], color="black", label=blabel,
                        marker="_" if single else None, ms=28 if single else 0, mew=1.6)
        bl.set_gid("bayes" if len(lines) == 1 else f"bayes:{blabel}")
        drawn.append({"id": bl.get_gid(), "label": str(blabel), "x": bx[order], "y": by[order]})
        all_vals.append(by[:, None])
    if log_y and _positive_for_log(*all_vals):
        ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    text = title or f"{ylabel} vs {xlabel}"
    _title(fig, text)
    _record(fig, {"title": text, "xlabel": xlabel, "ylabel": ylabel,
                  "band": "error bars: interquartile range over seeds (q25, q75)", "curves": drawn})
    n_seeds = max(v.shape[1] for v in all_vals[:len(curves)])
    if band_label and n_seeds > 1:
        from matplotlib.lines import Line2D

        handles, labels = ax.get_legend_handles_labels()
        handles.append(Line2D([], [], color="0.4", marker="|", ms=10, ls=""))
        labels.append(f"error bars: interquartile range over {n_seeds} seeds")
        ax.legend(handles, labels, fontsize="small")
    else:
        ax.legend(fontsize="small")
    ax.grid(True, which="both", alpha=0.3)
    return fig


def _colour_range(v: np.ndarray) -> dict[str, float]:
    """A colour range around a table whose finite cells are all equal (seaborn would pick ±0.1 around 0)."""
    finite = v[np.isfinite(v)]
    if finite.size and finite.min() == finite.max():
        x = float(finite[0])
        half = 0.5 * abs(x) if x != 0 else 1.0
        return {"vmin": x - half, "vmax": x + half}
    return {}


def comparison_grid_figure(
    values: object,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    *,
    annotate: bool = True,
    fmt: str = ".3g",
    cbar_label: str = "final loss / Bayes loss",
    xlabel: str = "data kernel",
    ylabel: str = "attention activation",
    title: str | None = None,
    cmap: str = "viridis",
) -> Figure:
    r"""Annotated heatmap of a (model × data) table, e.g. final loss over Bayes loss.

    Rows are attention activations, columns the data kernel of the GP labels (Cheng, Chen, Sra
    2024, Fig. 2: the activation matching the kernel has the lowest loss, ratio → 1). Missing
    cells are NaN and left blank; an infinite cell (most seeds diverged) reads "∞ (diverged)". Drawn
    with :func:`seaborn.heatmap`; the cell image is the
    axes' first collection (``ax.collections[0].get_array()`` is ``values`` row-major).

    Args:
        values: ``(n_rows, n_cols)``.
        row_labels, col_labels: tick labels.
        annotate: write each value in its cell with format ``fmt``.
        cbar_label, xlabel, ylabel, title, cmap: decoration.

    Returns:
        The figure.

    Raises:
        ValueError: labels not matching the shape.
    """
    import seaborn as sns  # imported here: seaborn pulls in pyplot (no state is changed)

    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 2:
        raise ValueError(f"values must be 2-D (rows × columns); got shape {v.shape}")
    if len(row_labels) != v.shape[0] or len(col_labels) != v.shape[1]:
        raise ValueError(
            f"values has shape {v.shape} but {len(row_labels)} row labels and {len(col_labels)} column labels"
        )
    fig = Figure(figsize=(1.3 * v.shape[1] + 2.8, 0.8 * v.shape[0] + 1.8), layout="constrained")
    ax = fig.add_subplot()
    sns.heatmap(
        np.ma.masked_invalid(v),
        ax=ax,
        annot=annotate,
        fmt=fmt,
        cmap=cmap,
        xticklabels=list(col_labels),
        yticklabels=list(row_labels),
        cbar_kws={"label": cbar_label},
        linewidths=0.5,
        **_colour_range(v),
    )
    for i, j in zip(*np.nonzero(np.isinf(v))):  # an infinite median: most seeds diverged
        ax.text(j + 0.5, i + 0.5, "∞ (diverged)", ha="center", va="center", fontsize="small", color="0.3")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    text = title or cbar_label
    _title(fig, text)
    return _record(fig, {"title": text, "xlabel": xlabel, "ylabel": ylabel, "value": cbar_label,
                         "rows": list(row_labels), "columns": list(col_labels), "values": v})


# ----------------------------------------------------------------------------------------------
# Reading the run store
# ----------------------------------------------------------------------------------------------

def _resolve(store: RunStore, run: Run | str | int) -> Run:
    return store._resolve(run) if isinstance(run, Run) else store.get_run(run)


def _store_data(fig: Figure, runs: Sequence[Run], **context: Any) -> dict[str, Any]:
    """What a store figure writes beside it: the runs it shows, ``context`` and :func:`figure_data`."""
    return {"runs": [r.name for r in runs], **context, **(figure_data(fig) or {})}


def _figure_dir(store: RunStore, run: Run | None, out: str | os.PathLike[str] | None) -> Path:
    base = Path(out).expanduser() if out is not None else store.root / _FIGURE_DIR
    return base / run.name if run is not None else base


def _metric_keys(store: RunStore, run: Run) -> list[str]:
    return sorted({row.key for row in store.metrics_long(run)})


def _model_label(config: Any) -> str:
    """Short attention label (:func:`landscape.views.labels.model_label`): ``"linear attn"``, ``"exp"``."""
    return model_label(config, short=True)


def _data_label(config: Any) -> str:
    """Short data label (:func:`landscape.views.labels.data_label`): ``"exp"`` for ``"gp:exp"``, else the task."""
    return data_label(config, short=True)


def distance_keys(store: RunStore, run: Run | str | int) -> list[str]:
    """Metric keys of a run that are distances to a construction (names containing ``dist``).

    Keys that differ only in a layer/head index sort by that index (``layer2`` before ``layer10``;
    the key schema is :mod:`landscape.experiment.metrics`).

    Args:
        store: the run store.
        run: the run, its name or id.

    Returns:
        The keys, possibly empty.
    """
    r = _resolve(store, run)
    return sorted((k for k in _metric_keys(store, r) if is_distance_key(k)), key=metric_sort_key)


def _series(store: RunStore, run: Run, key: str) -> MetricSeries:
    return store.metrics(run, key)[key]


def _per_seed(series: MetricSeries) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(steps, seeds, values)``; the shared column is dropped when per-seed columns exist."""
    seeds, values = series.seeds, series.values
    if seeds.size > 1 and seeds[0] < 0:
        seeds, values = seeds[1:], values[:, 1:]
    return series.steps, seeds, values


def _final_per_seed(store: RunStore, run: Run) -> np.ndarray:
    """Final held-out loss per seed: the ``final_loss`` result, else the last ``eval_loss``/``loss``."""
    res = store.results(run).get("final_loss")
    if isinstance(res, list) and res:
        return np.array([np.nan if v is None else float(v) for v in res], dtype=np.float64)
    keys = _metric_keys(store, run)
    key = "eval_loss" if "eval_loss" in keys else "loss"
    _, _, values = _per_seed(_series(store, run, key))
    out = np.full(values.shape[1], np.nan)
    for j in range(values.shape[1]):
        ok = np.flatnonzero(~np.isnan(values[:, j]))
        if ok.size:
            out[j] = values[ok[-1], j]
    return out


_BAYES_CACHE: dict[str, tuple[float, float] | None] = {}
"""Bayes-loss estimates by config hash (deterministic: fixed prompts and seed), kept in memory."""


def _bayes_loss(store: RunStore, run: Run, config: Any | None = None) -> float | None:
    """The Bayes-optimal loss of a run's task: its recorded ``bayes_loss`` result, else estimated.

    Read-only: an estimate (:func:`~landscape.experiment.bayes.bayes_loss_estimate`) is cached in
    memory by config hash and never written to the store; recording it is
    :func:`landscape.experiment.bayes.record_bayes_loss`'s job (a sweep does it for its points).
    """
    have = stored_bayes_loss(store.results(run))
    if have is not None:
        return have
    config = stored_config(run) if config is None else config
    if config is None:
        return None
    if run.config_hash not in _BAYES_CACHE:
        _BAYES_CACHE[run.config_hash] = bayes_loss_estimate(config)
    est = _BAYES_CACHE[run.config_hash]
    return None if est is None else est[0]


def plot_distance(
    store: RunStore,
    run: Run | str | int,
    *,
    keys: Sequence[str] | None = None,
    out: str | os.PathLike[str] | None = None,
    log_y: bool = True,
) -> SavedFigure:
    """Distances to the constructions against step for one run (median and IQR over its seeds).

    Reads the metrics ``keys`` (default :func:`distance_keys`); keys that differ only by a layer or
    head index share a panel (one curve per layer), e.g. ``dist_identity.layer{l}.head0``,
    ``dist_identity_whitened.layer{l}.head0`` and ``family_distance`` give three panels. Writes
    ``distance.png``/``.svg`` under ``<store>/figures/<run>/`` (or ``<out>/<run>/``).

    Args:
        store: the run store.
        run: the run, its name or id.
        keys: distance metric keys (default: every key containing ``dist``).
        out: output folder.
        log_y: logarithmic y axes.

    Returns:
        The :class:`SavedFigure`.

    Raises:
        ValueError: unknown run, or no distance metric logged.
    """
    r = _resolve(store, run)
    keys = list(keys) if keys is not None else distance_keys(store, r)
    if not keys:
        raise ValueError(
            f"run {r.name!r} has no distance metric (no key containing 'dist'); "
            f"logged metrics: {_metric_keys(store, r)}"
        )
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    panels: dict[str, list[str]] = {}
    for k in keys:
        steps, _, values = _per_seed(_series(store, r, k))
        curves[k] = (steps, values)
        panels.setdefault(metric_label(parse_metric_key(k).name), []).append(k)
    config = stored_config(r)
    labels = {k: _curve_label(k) for k in keys}
    n_seeds = max(v.shape[1] for _, v in curves.values())
    setting = setting_label(config, seeds=n_seeds) if config is not None else r.name
    fig = distance_figure(curves, panels=panels, labels=labels, log_y=log_y, band_label=True,
                          title=f"Distance to the construction, median over seeds: {setting}")
    return save_figure(fig, _figure_dir(store, r, out), "distance", runs=[r],
                       data=_store_data(fig, [r], metrics=keys))


def _curve_label(key: str) -> str:
    """Legend label of a metric inside its panel (the panel names the metric): ``"layer 1, head 0"``."""
    k = parse_metric_key(key)
    parts = [f"layer {k.layer}"] if k.layer is not None else []
    parts += [f"head {k.head}"] if k.head is not None else []
    return ", ".join(parts) or metric_label(key)


def plot_loss(
    store: RunStore,
    run: Run | str | int,
    *,
    key: str | None = None,
    out: str | os.PathLike[str] | None = None,
    log_y: bool = True,
) -> SavedFigure:
    """Loss curves of every seed of a run, the median in bold, and the Bayes-optimal loss.

    The default is the held-out loss (``eval_loss``, measured at every log step *and* at the
    final step ``T``); the training-batch loss (``loss``) is logged before each update, so its last
    point is the last log step before ``T``. Runs without ``eval_loss`` show ``loss``. Writes
    ``loss.png``/``.svg`` (``<key>.png`` for an explicit ``key``).

    The Bayes loss is the run's ``bayes_loss`` result; for a training run without one it is
    estimated in memory (:func:`bayes_loss_estimate`, never written). The minimum of the loss over
    the run's family is drawn when the run has a ``family_minimum`` result
    (:func:`landscape.experiment.bayes.record_family_minimum`), labelled with how it was found
    (certified exhaustive search or multi-start); without one nothing is computed.

    Args:
        store: the run store.
        run: the run, its name or id.
        key: the loss metric (``"eval_loss"``: held-out prompts, the default when logged;
            ``"loss"``: training batch).
        out: output folder.
        log_y: logarithmic y axis.

    Returns:
        The :class:`SavedFigure`.

    Raises:
        ValueError: unknown run or metric.
    """
    r = _resolve(store, run)
    stem = "loss" if key is None else key
    if key is None:
        key = "eval_loss" if "eval_loss" in _metric_keys(store, r) else "loss"
    steps, seeds, values = _per_seed(_series(store, r, key))
    bayes = _bayes_loss(store, r)
    if bayes is not None and bayes <= 0:
        bayes = None  # a zero Bayes risk (noiseless, n >= d) has no place on a log axis
    config = stored_config(r)
    what = metric_label(key)
    title = f"{what} of every seed: " + (setting_label(config, seeds=values.shape[1]) if config is not None else r.name)
    fmin = stored_family_minimum(store.results(r))
    fig = loss_curves_figure(steps, values, [int(s) for s in seeds], bayes=bayes, ylabel=what,
                             bayes_label=_bayes_words(config), log_y=log_y, title=title,
                             family_min=None if fmin is None else float(fmin["value"]),
                             family_min_label=_family_min_words(fmin))
    return save_figure(fig, _figure_dir(store, r, out), stem, runs=[r], data=_store_data(fig, [r], metric=key))


def _family_min_words(record: Mapping[str, Any] | None) -> str:
    """What the family-minimum line is, in words: the family and how the minimum was found."""
    if record is None:
        return "minimum over the family"
    fam = record.get("family") or "the family"
    if record.get("exhaustive"):
        how = "certified exhaustive search" if record.get("certified") else "exhaustive search"
        return f"minimum over family {fam} (exact loss, {how})"
    return f"lowest point found on family {fam} (exact loss, multistart: not exhaustive)"


def _bayes_words(config: Any) -> str:
    """What the Bayes-optimal line is, in words (the predictor behind it)."""
    kind = getattr(config, "task", "").partition(":")[0]
    if kind == "gp":
        return "Bayes-optimal loss (GP posterior mean)"
    if kind == "linear":
        return "Bayes-optimal loss (posterior-mean regression)"
    return "Bayes-optimal loss"


def plot_heatmaps(
    store: RunStore,
    run: Run | str | int,
    *,
    seed: int = 0,
    out: str | os.PathLike[str] | None = None,
) -> SavedFigure:
    r"""Learned weights of one seed against the construction nearest to them, per layer.

    With a family in the run's config, every parameter matrix is shown next to the family point
    found by :func:`landscape.experiment.distance.project_onto_family` (modulo symmetries). Without one,
    the whitened covariate matrix :math:`\Sigma^{1/2}M_l\Sigma^{1/2}` of every layer
    (:func:`landscape.experiment.distance.attention_matrices`) is shown next to its nearest multiple of the
    identity :math:`\alpha^* I` (Ahn et al. 2023). Reads the final weights of the run; writes
    ``heatmap-seed<seed>.png``/``.svg``.

    Args:
        store: the run store.
        run: a finished training run.
        seed: which seed of the stack (``0..S-1``).
        out: output folder.

    Returns:
        The :class:`SavedFigure`.

    Raises:
        ValueError: not a training run, no final weights, seed out of range.
    """
    import torch

    from landscape.experiment.distance import identity_distances, project_onto_family

    r = _resolve(store, run)
    config = stored_config(r)
    if config is None:
        raise ValueError(f"run {r.name!r} is not a training run (its config is not a TrainConfig)")
    final = store.load_final(r)
    stacked = {k: v.to(torch.float64) for k, v in final["params"].items()}
    S = next(iter(stacked.values())).shape[0]
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < S:
        raise ValueError(f"seed must be an int in [0, {S}), got {seed!r}")
    params = {k: v[seed] for k, v in stacked.items()}
    sigma = config.sigma_matrix()
    family = config.make_family(sigma)
    if family is not None:
        proj = project_onto_family(params, family)
        learned = {k: v.numpy() for k, v in params.items()}
        construction = {k: proj.point[k].numpy() for k in params}
        title = (f"Seed {seed} (left) and the nearest point of family {family.name} (right), relative distance "
                 f"{proj.distance:.3g}: {setting_label(config, show_seeds=False)}")
    else:
        spec = config.spec
        ids = identity_distances({k: v[None] for k, v in params.items()}, spec, sigma)
        W = ids.matrices[0]
        if sigma is not None:
            from landscape.experiment.distance import whiten

            W = whiten(W, sigma)
        eye = torch.eye(spec.d, dtype=torch.float64)
        learned, construction = {}, {}
        for l in range(spec.layers):
            for h in range(len(spec.heads)):
                name = f"layer{l}.head{h} M" if sigma is None else f"layer{l}.head{h} S^1/2 M S^1/2"
                learned[name] = W[l, h].numpy()
                construction[name] = (ids.alpha[0, l, h] * eye).numpy()
        title = (f"Seed {seed}: attention matrix of each layer (left) and its nearest multiple of the identity "
                 f"(right): {setting_label(config, show_seeds=False)}")
    fig = matrix_heatmaps_figure(learned, construction, title=title)
    return save_figure(fig, _figure_dir(store, r, out), f"heatmap-seed{seed}", runs=[r],
                       data=_store_data(fig, [r], seed=seed))


def _training_runs(store: RunStore, runs: Sequence[Run | str | int] | None) -> list[tuple[Run, Any]]:
    """(run, TrainConfig) of the given runs (default: every finished training run of the store)."""
    if runs is None:
        chosen = [r for r in store.list_runs() if r.status == "finished"]
        out = [(r, c) for r in chosen if (c := stored_config(r)) is not None]
    else:
        out = []
        for run in runs:
            r = _resolve(store, run)
            c = stored_config(r)
            if c is None:
                raise ValueError(f"run {r.name!r} is not a training run (its config is not a TrainConfig)")
            out.append((r, c))
    if not out:
        raise ValueError(f"no finished training runs in {store.root}")
    return out


_SETTING_SKIP = {"attention", "activations", "heads", "family", "format", "seed", "device"}
_DATA_KEYS = ("task", "d", "n", "sigma", "task_cov", "covariates", "noise", "probs", "margin", "flip")


def _runs_along(store: RunStore, runs: Sequence[Run | str] | None, x: str) -> list[tuple[Run, Any]]:
    """The training runs (with their configs) of a figure against ``x`` (``"layers"`` or ``"n"``).

    Raises:
        ValueError: another ``x``, no training runs, or fewer than two distinct values of ``x``.
    """
    if x not in ("layers", "n"):
        raise ValueError(f"x must be 'layers' (depth) or 'n' (context length); got {x!r}")
    pairs = _training_runs(store, runs)
    xs = sorted({getattr(c, x) for _, c in pairs})
    if len(xs) < 2:
        raise ValueError(f"the runs have a single value of {x!r} ({xs}); nothing to plot against it")
    return pairs


def _seed_table(by_x: Mapping[float, Sequence[np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """x value ↦ per-seed arrays (from several runs) → sorted ``x`` and a ``(len(x), max seeds)`` table, NaN-padded."""
    xv = np.array(sorted(by_x))
    cols = max(sum(v.size for v in by_x[k]) for k in xv)
    table = np.full((xv.size, cols), np.nan)
    for i, k in enumerate(xv):
        row = np.concatenate(by_x[k])
        table[i, : row.size] = row
    return xv, table


def plot_loss_vs(
    store: RunStore,
    runs: Sequence[Run | str | int] | None = None,
    *,
    x: str = "layers",
    out: str | os.PathLike[str] | None = None,
    log_y: bool = True,
) -> SavedFigure:
    r"""Final held-out loss against depth (``x="layers"``) or context length (``x="n"``).

    One curve per attention model (activation); runs that differ in another config entry
    (other than the master ``seed``, whose seeds are pooled) get separate curves labelled with
    it. Each point is the median over seeds of the run's ``final_loss`` with the IQR; the
    Bayes-optimal loss of the data (its ``bayes_loss`` result, else :func:`bayes_loss_estimate` in memory) is the
    dashed line, one per data setting. Writes ``loss-vs-<x>.png``/``.svg`` under
    ``<store>/figures``.

    Args:
        store: the run store.
        runs: runs to show (default: every finished training run).
        x: ``"layers"`` or ``"n"``.
        out: output folder.
        log_y: logarithmic y axis.

    Returns:
        The :class:`SavedFigure`.

    Raises:
        ValueError: bad ``x``, no training runs, or fewer than two distinct values of ``x``.
    """
    pairs = _runs_along(store, runs, x)
    settings = []
    for r, c in pairs:
        cfg = {k: v for k, v in c.to_dict().items() if k not in _SETTING_SKIP and k != x}
        settings.append(cfg)
    differing = sorted({k for s in settings for k in s if any(s.get(k) != t.get(k) for t in settings)})
    groups: dict[str, dict[float, list[np.ndarray]]] = {}
    bayes: dict[str, dict[float, list[float]]] = {}
    for (r, c), cfg in zip(pairs, settings):
        extra = ", ".join(f"{'L' if k == 'layers' else k}={cfg[k]}" for k in differing)
        label = _model_label(c) + (f" | {extra}" if extra else "")
        groups.setdefault(label, {}).setdefault(float(getattr(c, x)), []).append(_final_per_seed(store, r))
        b = _bayes_loss(store, r, c)
        if b is not None and b > 0:
            dkeys = [k for k in differing if k in _DATA_KEYS]
            dlabel = ", ".join(f"{k}={cfg[k]}" for k in dkeys)
            bayes.setdefault(dlabel, {}).setdefault(float(getattr(c, x)), []).append(b)
    curves = {label: _seed_table(by_x) for label, by_x in groups.items()}
    bayes_lines = {
        (f"Bayes-optimal ({lab})" if lab else "Bayes-optimal"): (
            np.array(sorted(bx)), np.array([np.mean(bx[k]) for k in sorted(bx)]))
        for lab, bx in bayes.items()
    }
    xlabel = "layers L" if x == "layers" else "context length n"
    fig = loss_vs_figure(curves, bayes=bayes_lines or None, xlabel=xlabel, ylabel="final held-out loss", band_label=True,
                         log_y=log_y, title=f"Final held-out loss vs {xlabel}: {_common_setting(pairs)}")
    shown = [r for r, _ in pairs]
    return save_figure(fig, _figure_dir(store, None, out), f"loss-vs-{x}", runs=shown,
                       data=_store_data(fig, shown, x=x))


def plot_grid(
    store: RunStore,
    runs: Sequence[Run | str | int] | None = None,
    *,
    ratio: bool = True,
    out: str | os.PathLike[str] | None = None,
) -> SavedFigure:
    r"""Attention activation × data kernel grid of the final loss (over the Bayes loss).

    Rows are attention models, columns the data (the GP kernel of ``task = "gp:KERNEL"``, else the
    task). Each cell is the median over seeds of the run's ``final_loss``, divided by the Bayes
    loss of its data when ``ratio`` and every run has a positive one (Cheng, Chen, Sra 2024: the
    matching activation is closest to 1). When several runs fall in one cell, the one with the
    largest ``(layers, n)`` is shown. Writes ``grid.png``/``.svg`` under ``<store>/figures``.

    Args:
        store: the run store.
        runs: runs to show (default: every finished training run).
        ratio: divide by the Bayes loss.
        out: output folder.

    Returns:
        The :class:`SavedFigure`; the figure's heatmap holds the cell values row-major.

    Raises:
        ValueError: no training runs.
    """
    pairs = _training_runs(store, runs)
    cells: dict[tuple[str, str], tuple[tuple[int, int, float], Run, Any]] = {}
    for r, c in pairs:
        key = (_model_label(c), _data_label(c))
        rank = (c.layers, c.n, r.created_at)
        if key not in cells or rank > cells[key][0]:
            cells[key] = (rank, r, c)
    rows = sorted({k[0] for k in cells})
    cols = sorted({k[1] for k in cells})
    losses = {k: float(np.nanmedian(_final_per_seed(store, r))) for k, (_, r, _c) in cells.items()}
    bayes = {k: _bayes_loss(store, r, c) for k, (_, r, c) in cells.items()} if ratio else {}
    use_ratio = ratio and all(b is not None and b > 0 for b in bayes.values())
    vals = np.full((len(rows), len(cols)), np.nan)
    for (a, b), v in losses.items():
        vals[rows.index(a), cols.index(b)] = v / bayes[(a, b)] if use_ratio else v  # type: ignore[operator]
    label = "final loss / Bayes loss" if use_ratio else "final held-out loss"
    dup = len(cells) < len(pairs)
    fig = comparison_grid_figure(
        vals, rows, cols, cbar_label=label,
        title=label + (" (largest depth and context per cell)" if dup else ""),
    )
    shown = [r for (_, r, _c) in cells.values()]
    which = {f"{a} | {b}": r.name for (a, b), (_, r, _c) in cells.items()}
    return save_figure(fig, _figure_dir(store, None, out), "grid", runs=shown,
                       data=_store_data(fig, shown, cells=which))


_MEASURES = ("auto", "family", "identity")


def _final_distance_per_seed(store: RunStore, run: Run, measure: str) -> tuple[np.ndarray, str] | None:
    r"""Final distance of every seed of a run and its name, or None when the run has no such result.

    ``"family"``: the ``family_distance`` result (relative distance to the family modulo its
    symmetries); ``"identity"``: the whitened :math:`\mathrm{Dist}(\Sigma^{1/2}M\Sigma^{1/2}, I)` of
    the last layer, head 0 (the ``identity_distance_whitened`` result, ``[seed][layer][head]``).
    """
    res = store.results(run)
    if measure == "family":
        v = res.get("family_distance")
        if isinstance(v, list) and v:
            return np.array([np.nan if x is None else float(x) for x in v]), metric_label("family_distance")
        return None
    v = res.get("identity_distance_whitened")
    if isinstance(v, list) and v and isinstance(v[0], list):
        vals = np.array([np.nan if s[-1][0] is None else float(s[-1][0]) for s in v])
        return vals, metric_label("dist_identity_whitened") + ", last layer"
    return None


def _pick_measure(store: RunStore, pairs: Sequence[tuple[Run, Any]], measure: str) -> str:
    if measure not in _MEASURES:
        raise ValueError(f"measure must be one of {list(_MEASURES)}; got {measure!r}")
    if measure != "auto":
        return measure
    fam = all(_final_distance_per_seed(store, r, "family") is not None for r, _ in pairs)
    return "family" if fam else "identity"


def plot_seed_distances(
    store: RunStore,
    runs: Sequence[Run | str | int] | None = None,
    *,
    measure: str = "auto",
    out: str | os.PathLike[str] | None = None,
) -> SavedFigure:
    """The final distance of every seed, one box and strip per run (or sweep cell).

    ``measure``: ``"family"`` (each run's ``family_distance`` result), ``"identity"`` (the whitened
    identity distance of the last layer) or ``"auto"`` (family when every run has one). Runs are
    labelled by what differs between them (the sweep's grid values), else by their attention.
    Writes ``seed-distances.png``/``.svg`` under ``<store>/figures``
    (:func:`landscape.views.evidence.seed_distribution_figure`).

    Raises:
        ValueError: no training runs, or a run without the distance asked for.
    """
    from landscape.views.evidence import seed_distribution_figure

    pairs = _training_runs(store, runs)
    m = _pick_measure(store, pairs, measure)
    groups: dict[str, np.ndarray] = {}
    ylabel = ""
    labels = _run_labels(pairs)
    for (r, _c), lab in zip(pairs, labels):
        got = _final_distance_per_seed(store, r, m)
        if got is None:
            raise ValueError(f"run {r.name!r} has no final {m} distance (train with a family for 'family')")
        groups[lab], ylabel = got
    n = max(v.size for v in groups.values())
    common = _common_setting(pairs)
    fig = seed_distribution_figure(groups, ylabel=ylabel, log_y=True,
                                   title=f"Final {ylabel} of every seed ({n} seeds per run): {common}")
    shown = [r for r, _ in pairs]
    return save_figure(fig, _figure_dir(store, None, out), "seed-distances", runs=shown,
                       data=_store_data(fig, shown, measure=m, group_runs=dict(zip(labels, [r.name for r in shown]))))


def _run_labels(pairs: Sequence[tuple[Run, Any]]) -> list[str]:
    """A short label per run: the config entries that differ between the runs (else the model)."""
    dicts = [{k: v for k, v in c.to_dict().items() if k not in ("format", "device")} for _, c in pairs]
    differing = [k for k in dicts[0] if any(d.get(k) != dicts[0].get(k) for d in dicts)] if dicts else []
    out = []
    for (_r, c), d in zip(pairs, dicts):
        parts = []
        for k in differing:
            if k == "activations" or k == "attention":
                parts.append(_model_label(c))
            elif k == "task":
                parts.append(f"data {_data_label(c)}")
            else:
                parts.append(f"{'L' if k == 'layers' else k}={d[k]}")
        out.append(", ".join(dict.fromkeys(parts)) or _model_label(c))
    return out


def _common_setting(pairs: Sequence[tuple[Run, Any]]) -> str:
    """The setting the runs share, in words (their first config, without what differs)."""
    cfgs = [c for _, c in pairs]
    first = cfgs[0]
    same = lambda attr: all(getattr(c, attr, None) == getattr(first, attr, None) for c in cfgs)  # noqa: E731
    parts = []
    if same("task") and same("d") and same("n"):
        parts.append(f"{data_label(first)}, d={first.d}, n={first.n}")
    elif same("task"):
        parts.append(data_label(first))
    if same("attention") and same("activations"):
        parts.append(model_label(first) + (f", L={first.layers}" if same("layers") else ""))
    if same("family") and first.family:
        parts.append(f"family {first.family}")
    return " · ".join(parts) or "several settings"


def plot_distance_vs(
    store: RunStore,
    runs: Sequence[Run | str | int] | None = None,
    *,
    x: str = "layers",
    measure: str = "auto",
    out: str | os.PathLike[str] | None = None,
) -> SavedFigure:
    """Final distance against depth (``x="layers"``) or context length (``x="n"``), one line per model.

    Each line is an attention model (activation; runs that differ in another entry get their own
    line, labelled with it), the median over seeds (seeds of runs at the same x pooled) with the
    inter-quartile band (:func:`landscape.views.evidence.final_vs_figure`). ``measure`` as in
    :func:`plot_seed_distances`. Writes ``distance-vs-<x>.png``/``.svg`` under ``<store>/figures``.

    Raises:
        ValueError: bad ``x``, no training runs, fewer than two values of ``x``, a run without the
            distance.
    """
    from landscape.views.evidence import final_vs_figure

    pairs = _runs_along(store, runs, x)
    m = _pick_measure(store, pairs, measure)
    groups, ylabel = _grouped_per_seed(pairs, x, lambda r: _final_distance_per_seed(store, r, m), m)
    xlabel = "layers L" if x == "layers" else "context length n"
    fig = final_vs_figure(groups, xlabel=xlabel, ylabel=f"final {ylabel}",
                          title=f"Final {ylabel} vs {xlabel}: {_common_setting(pairs)}")
    shown = [r for r, _ in pairs]
    return save_figure(fig, _figure_dir(store, None, out), f"distance-vs-{x}", runs=shown,
                       data=_store_data(fig, shown, x=x, measure=m))


def _grouped_per_seed(pairs: Sequence[tuple[Run, Any]], x: str, fetch: Any,
                      what: str) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], str]:
    """label ↦ (x values, per-seed values (n_x, S)) grouped by model and differing settings."""
    settings = [{k: v for k, v in c.to_dict().items() if k not in _SETTING_SKIP and k != x} for _, c in pairs]
    differing = sorted({k for s in settings for k in s if any(s.get(k) != t.get(k) for t in settings)})
    by_label: dict[str, dict[float, list[np.ndarray]]] = {}
    ylabel = ""
    for (r, c), cfg in zip(pairs, settings):
        got = fetch(r)
        if got is None:
            raise ValueError(f"run {r.name!r} has no final {what} distance")
        vals, ylabel = got
        extra = ", ".join(f"{'L' if k == 'layers' else k}={cfg[k]}" for k in differing)
        label = _model_label(c) + (f" | {extra}" if extra else "")
        by_label.setdefault(label, {}).setdefault(float(getattr(c, x)), []).append(vals)
    curves = {label: _seed_table(by_x) for label, by_x in by_label.items()}
    return curves, ylabel


def plot_spectrum(
    store: RunStore,
    run: Run | str | int,
    *,
    seed: int | None = None,
    samples: int = 4096,
    dense_max: int = 600,
    out: str | os.PathLike[str] | None = None,
) -> SavedFigure:
    r"""The Hessian spectrum of the loss at a trained seed's final weights.

    The loss is the exact population loss where the symbolic layer has one, else a Monte-Carlo loss
    on ``samples`` fixed prompts (:func:`landscape.numeric.points.landscape_oracle`, seed 0). With
    ``P <= dense_max`` parameters every eigenvalue of the dense Hessian is drawn (histogram and rug);
    above, the SLQ density (:func:`landscape.numeric.spectrum.spectral_density`, 8 probes ×
    min(P, 40) Lanczos steps). The store is only read (the weights are loaded read-only).
    Writes ``spectrum-seed<seed>.png``/``.svg`` under ``<store>/figures/<run>/``.

    Args:
        store: the run store.
        run: a finished training run.
        seed: which seed (default: the first that did not diverge).
        samples: Monte-Carlo prompts of the loss where no exact one is known.
        dense_max: largest parameter count for the dense Hessian.
        out: output folder.

    Raises:
        ValueError: not a finished training run, a seed out of range or diverged, every seed diverged.
    """
    import torch

    from landscape.numeric.derivatives import hessian
    from landscape.numeric.points import landscape_oracle, load_trained
    from landscape.numeric.spectrum import hessian_operator, spectral_density
    from landscape.views.evidence import spectrum_figure

    r = _resolve(store, run)
    tr = load_trained(store.root, r.name)
    if seed is None:
        alive = [i for i in range(tr.seeds) if bool(tr.alive[i])]
        if not alive:
            raise ValueError(f"every seed of run {r.name!r} diverged: no trained weights to take a Hessian at")
        seed = alive[0]
    k = tr.check_seed(seed)
    if not bool(tr.alive[k]) or not bool(torch.isfinite(tr.final[k]).all()):
        raise ValueError(f"seed {k} of run {r.name!r} diverged: no Hessian at its weights")
    problem = tr.config.problem(tr.sigma)
    oracle, desc = landscape_oracle(problem, tr.task, tr.spec, samples=samples,
                                    generator=torch.Generator().manual_seed(0))
    flat = tr.final[k]
    P = int(flat.numel())
    gen = torch.Generator().manual_seed(0)
    if P <= dense_max:
        H = hessian(oracle, flat)
        if not bool(torch.isfinite(H).all()):
            raise ValueError(f"the Hessian at seed {k} of run {r.name!r} is not finite (the loss overflows there)")
        ev, sd = torch.linalg.eigvalsh(H), None
    else:
        ev, sd = None, spectral_density(hessian_operator(oracle, flat), gen, probes=8, steps=min(P, 40))
    title = (f"Hessian spectrum at seed {k}'s trained weights ({P} parameters; {desc}): "
             f"{setting_label(tr.config, show_seeds=False)}")
    fig = spectrum_figure(ev, sd, title=title)
    return save_figure(fig, _figure_dir(store, r, out), f"spectrum-seed{k}", runs=[r],
                       data=_store_data(fig, [r], seed=k, parameters=P, loss=desc))


@dataclass(frozen=True)
class PlotReport:
    """What :func:`plot_store` produced.

    Attributes:
        figures: the written figures.
        skipped: ``(kind, run or "", reason)`` for every figure that could not be made.
    """

    figures: tuple[SavedFigure, ...]
    skipped: tuple[tuple[str, str, str], ...]


def plot_store(
    store: RunStore,
    kinds: Sequence[str] = ("all",),
    *,
    runs: Sequence[Run | str | int] | None = None,
    out: str | os.PathLike[str] | None = None,
) -> PlotReport:
    """Make every requested kind of figure that the store's data supports.

    Per run (every finished training run, or ``runs``): ``distance``, ``loss`` (held-out loss with
    the Bayes line), ``heatmap`` (seed 0) and ``spectrum`` (Hessian at seed 0; computed, so only
    when asked for by name). Across runs: ``depth`` / ``context`` (final loss vs layers / n),
    ``grid`` (activation × data kernel; ``"all"`` skips a grid of a single cell), ``seeds``
    (per-seed final distance per run), ``distance-depth`` / ``distance-context`` (final distance vs
    layers / n). A figure the data cannot support (no distance metric, a single depth, ...) is
    skipped with its reason instead of failing the rest. Nothing is written to the store.

    Args:
        store: the run store.
        kinds: kinds from :data:`PLOT_KINDS`, or ``"all"`` (every kind but :data:`DEFAULT_SKIPS`).
        runs: runs to plot (default: every finished training run).
        out: output folder (default ``<store>/figures``).

    Returns:
        A :class:`PlotReport`.

    Raises:
        ValueError: unknown kind, no training runs.
    """
    kinds = list(kinds)
    bad = [k for k in kinds if k not in (*PLOT_KINDS, "all")]
    if bad:
        raise ValueError(f"unknown plot kinds {bad}; accepted: {[*PLOT_KINDS, 'all']}")
    everything = "all" in kinds
    chosen = (set(PLOT_KINDS) - set(DEFAULT_SKIPS) if everything else set()) | (set(kinds) - {"all"})
    pairs = _training_runs(store, runs)
    figures: list[SavedFigure] = []
    skipped: list[tuple[str, str, str]] = []
    per_run = {"distance": plot_distance, "loss": plot_loss, "heatmap": plot_heatmaps, "spectrum": plot_spectrum}
    for r, _c in pairs:
        for kind, fn in per_run.items():
            if kind in chosen:
                try:
                    figures.append(fn(store, r, out=out))
                except ValueError as exc:
                    skipped.append((kind, r.name, str(exc)))
    names = [r.name for r, _ in pairs]
    across = (("depth", plot_loss_vs, {"x": "layers"}), ("context", plot_loss_vs, {"x": "n"}),
              ("grid", plot_grid, {}), ("seeds", plot_seed_distances, {}),
              ("distance-depth", plot_distance_vs, {"x": "layers"}),
              ("distance-context", plot_distance_vs, {"x": "n"}))
    for kind, fn, kw in across:
        if kind not in chosen:
            continue
        if kind == "grid" and everything and "grid" not in kinds:
            cells = {(_model_label(c), _data_label(c)) for _, c in pairs}
            if len(cells) == 1:
                skipped.append((kind, "", "a single attention model on a single data kernel: a 1 x 1 grid "
                                          "(ask for --kind grid to draw it anyway)"))
                continue
        try:
            figures.append(fn(store, names, out=out, **kw))
        except ValueError as exc:
            skipped.append((kind, "", str(exc)))
    return PlotReport(tuple(figures), tuple(skipped))
