r"""Figures of the evidence behind a result: certificates, seed distributions, size scans, spectra.

Array functions (plain numbers or the library's result objects in, a
:class:`matplotlib.figure.Figure` out; nothing is recomputed and nothing is written):

* :func:`certificate_figure` — a stationarity certificate as a picture: the normal-gradient norm
  :math:`\lVert N^\top\bar g\rVert` against the Monte-Carlo sample size ``T`` with its noise floor
  :math:`\sqrt{\operatorname{tr} C}` and the confidence bounds on :math:`\lVert N^\top\nabla f\rVert`,
  for the family point and, optionally, a control point, with the tolerance ``tol``;
* :func:`seed_distribution_figure` — the per-seed values of a final quantity (e.g. the distance to
  the family), one box and strip per run or sweep cell;
* :func:`final_vs_figure` — a final quantity against depth or context length, one line per model,
  median over seeds with the inter-quartile band;
* :func:`spectrum_figure` — a Hessian spectrum: the eigenvalues (histogram and rug) and/or the
  stochastic-Lanczos-quadrature density.

Each drawn artist carries a gid naming what it holds, so tests read the numbers back. The store
functions that feed them from a run store are in :mod:`landscape.views.plots`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from landscape.views.labels import wrap_title

__all__ = ["certificate_figure", "seed_distribution_figure", "final_vs_figure", "spectrum_figure", "density_curve"]

_COLOURS = ("tab:blue", "tab:red", "tab:green", "tab:purple", "tab:orange", "tab:brown")


def _title(fig: Figure, text: str, *, fontsize: float = 11.0) -> None:
    fig.suptitle(wrap_title(text, fig.get_figwidth() * 0.92, fontsize=fontsize), fontsize=fontsize)


def _quantiles(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from landscape.views.plots import seed_quantiles

    return seed_quantiles(values)


def _record(fig: Figure, data: Mapping[str, Any]) -> Figure:
    from landscape.views.plots import _record as record

    return record(fig, data)


def _verdict_words(cert: Any) -> str:
    return {"stationary": "STATIONARY", "not_stationary": "NOT STATIONARY"}.get(cert.verdict, cert.verdict.upper())


def certificate_figure(
    family: Any,
    control: Any | None = None,
    *,
    labels: tuple[str, str] | None = None,
    title: str | None = None,
) -> Figure:
    r"""A Monte-Carlo stationarity certificate (and a control) as a picture.

    For each certificate (:class:`landscape.numeric.certificate.StationarityCertificate` with
    ``method="monte_carlo"``), against the evaluation sample size ``T`` of each look (log–log):

    * the measured normal-gradient norm :math:`\lVert N^\top\bar g\rVert` (solid, markers; gid
      ``"normal:<label>"``);
    * its noise floor :math:`\sqrt{\operatorname{tr}C}`, the size it has when
      :math:`N^\top\nabla f = 0` (dashed; gid ``"floor:<label>"``): a stationary point follows the
      floor down as :math:`T^{-1/2}`, a non-stationary one levels off above it;
    * the confidence interval :math:`[\ell, u]` on :math:`\lVert N^\top\nabla f\rVert` of each look
      (shaded; the upper bound :math:`u` dotted, gid ``"upper:<label>"``);
    * the tolerance ``tol`` a ``stationary`` verdict certifies (a horizontal line, gid ``"tol"``):
      the verdict is stationary once :math:`u <` ``tol``.

    Everything is read from the certificates' ``per_sample_size`` records; nothing is recomputed.

    Args:
        family: the certificate of the family point.
        control: optionally the certificate of a control point (e.g. a family off the stationary one).
        labels: legend names of the two (default ``"<family name> (<verdict>)"``).
        title: the figure title.

    Returns:
        The figure.

    Raises:
        ValueError: a certificate without Monte-Carlo looks (an exact certificate has no sample size).
    """
    certs = [family] + ([control] if control is not None else [])
    names = list(labels) if labels is not None else [f"{c.family} ({_verdict_words(c)})" for c in certs]
    if len(names) < len(certs):
        raise ValueError(f"labels has {len(names)} entries for {len(certs)} certificates")
    for c in certs:
        if not c.per_sample_size:
            raise ValueError(f"certificate of {c.family!r} has no Monte-Carlo looks (method {c.method!r}); "
                             "only a Monte-Carlo certificate has a sample-size picture")
    fig = Figure(figsize=(7.0, 4.8), layout="constrained")
    ax = fig.add_subplot()
    tols = set()
    for i, (c, name) in enumerate(zip(certs, names)):
        col = _COLOURS[i % len(_COLOURS)]
        T = np.array([r.samples for r in c.per_sample_size], dtype=np.float64)
        normal = np.array([r.normal.value for r in c.per_sample_size])
        floor = np.array([r.normal.noise_floor for r in c.per_sample_size])
        lower = np.array([np.nan if r.bounds is None else r.bounds.lower for r in c.per_sample_size])
        upper = np.array([np.nan if r.bounds is None else r.bounds.upper for r in c.per_sample_size])
        (ln,) = ax.plot(T, normal, "o-", color=col, lw=1.8, label=f"{name}: measured |Nᵀḡ|")
        ln.set_gid(f"normal:{name}")
        (fl,) = ax.plot(T, floor, "--", color=col, lw=1.2, label=f"{name}: noise floor √tr C")
        fl.set_gid(f"floor:{name}")
        if np.isfinite(upper).any():
            # a lower bound of 0 cannot be drawn on a log axis: the band then reaches below the data
            shown = np.r_[normal, floor, upper]
            bottom = np.nanmin(shown[shown > 0]) / 10 if np.any(shown > 0) else 1e-12
            band = ax.fill_between(T, np.where(lower > 0, lower, bottom), upper, color=col, alpha=0.15, lw=0,
                                   label=f"{name}: bounds on |Nᵀ∇f| (each side at the look's level αₖ)")
            band.set_gid(f"interval:{name}")
            (up,) = ax.plot(T, upper, ":", color=col, lw=1.4)
            up.set_gid(f"upper:{name}")
        if np.isfinite(c.tol):
            tols.add(float(c.tol))
    for j, tol in enumerate(sorted(tols)):
        tl = ax.axhline(tol, color="black", lw=1.0, ls="-.",
                        label=f"tolerance tol = {tol:.3g}" if len(tols) == 1 else f"tolerance {tol:.3g}")
        tl.set_gid("tol" if len(tols) == 1 else f"tol:{j}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("Monte-Carlo prompts per sample T")
    ax.set_ylabel("normal-gradient norm")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="x-small", loc="best")
    _title(fig, title or "Stationarity certificate: " + "; ".join(
        f"{c.family} {_verdict_words(c)}" for c in certs))
    return fig


def seed_distribution_figure(
    groups: Mapping[str, object],
    *,
    ylabel: str = "final distance",
    xlabel: str = "",
    log_y: bool = False,
    title: str | None = None,
) -> Figure:
    """The per-seed values of a final quantity: a box (quartiles, median) and every seed as a point.

    The points of group ``g`` are the scatter collection with gid ``"seeds:<g>"`` (their y-data are
    the values, in the given order; x is the group's position plus a fixed spread so equal values
    stay visible); NaN values (diverged seeds) are left out and counted in the tick label.

    Args:
        groups: label (a run, a sweep cell) ↦ values ``(S,)``.
        ylabel, xlabel, title: labels.
        log_y: logarithmic y axis (only if every value is > 0).

    Returns:
        The figure.

    Raises:
        ValueError: no groups, or a group that is not one-dimensional.
    """
    if not groups:
        raise ValueError("seed_distribution_figure needs at least one group")
    names = list(groups)
    vals = []
    for g in names:
        v = np.asarray(groups[g], dtype=np.float64)
        if v.ndim != 1:
            raise ValueError(f"groups[{g!r}] must be one-dimensional (one value per seed); got shape {v.shape}")
        vals.append(v)
    fig = Figure(figsize=(max(4.8, 1.3 * len(names) + 2.4), 4.6), layout="constrained")
    ax = fig.add_subplot()
    finite = [v[np.isfinite(v)] for v in vals]
    pos = np.arange(1, len(names) + 1, dtype=np.float64)
    keep = [i for i, f in enumerate(finite) if f.size]
    drawn: list[dict[str, Any]] = [{"id": f"seeds:{g}", "label": g, "values": v, "x": float(pos[i])}
                                   for i, (g, v) in enumerate(zip(names, vals))]
    if keep:
        box = ax.boxplot([finite[i] for i in keep], positions=pos[keep], widths=0.5, showfliers=False,
                         medianprops={"color": "black", "lw": 1.6}, boxprops={"color": "0.4"},
                         whiskerprops={"color": "0.4"}, capprops={"color": "0.4"})
        for j, i in enumerate(keep):  # the box as matplotlib drew it: quartiles from the box outline
            ys = np.asarray(box["boxes"][j].get_ydata(), dtype=np.float64)
            lo, hi = (np.asarray(box["whiskers"][2 * j + w].get_ydata(), dtype=np.float64)[1] for w in (0, 1))
            drawn[i].update(median=float(box["medians"][j].get_ydata()[0]), q25=float(ys.min()),
                            q75=float(ys.max()), whiskers=[float(lo), float(hi)])
    for i, (g, f) in enumerate(zip(names, finite)):
        spread = np.linspace(-0.15, 0.15, f.size) if f.size > 1 else np.zeros(f.size)
        sc = ax.scatter(pos[i] + spread, f, s=22, color=_COLOURS[i % len(_COLOURS)], alpha=0.85, zorder=3,
                        label="one seed" if i == 0 else None)
        sc.set_gid(f"seeds:{g}")
    ticks = [g + (f"\n({int(np.sum(~np.isfinite(v)))} diverged)" if np.any(~np.isfinite(v)) else "")
             for g, v in zip(names, vals)]
    ax.set_xticks(pos)
    ax.set_xticklabels([wrap_title(t, 1.3, fontsize=8) for t in ticks], fontsize=8)
    ax.set_xlim(0.4, len(names) + 0.6)
    allf = np.concatenate(finite) if finite else np.empty(0)
    if log_y and allf.size and np.all(allf > 0):
        ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    if xlabel:
        ax.set_xlabel(xlabel)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker="o", ls="", color=_COLOURS[0], label="one seed"),
               Line2D([], [], color="black", lw=1.6, label="median; box: quartiles; whiskers: 1.5 IQR")]
    ax.legend(handles=handles, fontsize="small")
    ax.grid(True, axis="y", which="both", alpha=0.3)
    text = title or f"{ylabel}: every seed"
    _title(fig, text)
    return _record(fig, {"title": text, "xlabel": xlabel, "ylabel": ylabel,
                         "box": "median, quartiles (q25, q75) and 1.5 IQR whiskers of the finite values",
                         "groups": drawn})


def final_vs_figure(
    curves: Mapping[str, tuple[object, object]],
    *,
    xlabel: str = "layers L",
    ylabel: str = "final distance",
    log_y: bool = True,
    title: str | None = None,
) -> Figure:
    """A final per-seed quantity against a size: median over seeds with the inter-quartile band.

    One curve per model (activation, attention); the line (gid ``"median:<label>"``) holds the
    median over seeds at each x (sorted), the shaded band the quartiles; x ticks are integers.

    Args:
        curves: label ↦ ``(x (n_x,), values (n_x, n_seeds))`` (NaN where a seed is missing).
        xlabel, ylabel, title: labels.
        log_y: logarithmic y axis (only if every value is > 0).

    Returns:
        The figure.

    Raises:
        ValueError: no curves or mismatched shapes.
    """
    if not curves:
        raise ValueError("final_vs_figure needs at least one curve")
    fig = Figure(figsize=(6.6, 4.6), layout="constrained")
    ax = fig.add_subplot()
    allv: list[np.ndarray] = []
    drawn: list[dict[str, Any]] = []
    n_seeds = 1
    for i, (label, (xs, values)) in enumerate(curves.items()):
        v = np.asarray(values, dtype=np.float64)
        v = v[:, None] if v.ndim == 1 else v
        x = np.asarray(xs, dtype=np.float64)
        if x.ndim != 1 or v.ndim != 2 or v.shape[0] != x.shape[0]:
            raise ValueError(f"curves[{label!r}]: x has shape {x.shape} and values {v.shape}; expected (n,) and (n, S)")
        order = np.argsort(x, kind="stable")
        x, v = x[order], v[order]
        rows, q25, med, q75 = _quantiles(v)
        col = _COLOURS[i % len(_COLOURS)]
        (ln,) = ax.plot(x[rows], med, "o-", color=col, lw=1.8, label=str(label))
        ln.set_gid(f"median:{label}")
        drawn.append({"id": f"median:{label}", "label": str(label), "x": x[rows], "y": med, "seeds": int(v.shape[1])})
        if v.shape[1] > 1:
            ax.fill_between(x[rows], q25, q75, color=col, alpha=0.2, lw=0)
            drawn[-1].update(q25=q25, q75=q75)
        n_seeds = max(n_seeds, v.shape[1])
        allv.append(v[np.isfinite(v)])
    flat = np.concatenate(allv)
    if log_y and flat.size and np.all(flat > 0):
        ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    from matplotlib.patches import Patch

    handles, labs = ax.get_legend_handles_labels()
    if n_seeds > 1:
        handles.append(Patch(facecolor="0.6", alpha=0.4, lw=0))
        labs.append(f"shaded: interquartile range over {n_seeds} seeds")
    ax.legend(handles, labs, fontsize="small")
    ax.grid(True, which="both", alpha=0.3)
    text = title or f"{ylabel} vs {xlabel}"
    _title(fig, text)
    return _record(fig, {"title": text, "xlabel": xlabel, "ylabel": ylabel,
                         "band": "interquartile range over seeds (q25, q75)", "curves": drawn})


def spectrum_figure(
    eigenvalues: object | None = None,
    density: Any | None = None,
    *,
    bins: int = 40,
    points: int = 600,
    title: str | None = None,
) -> Figure:
    r"""A Hessian spectrum: eigenvalues (histogram and rug) and/or the SLQ spectral density.

    Args:
        eigenvalues: the eigenvalues (e.g. ``torch.linalg.eigvalsh`` of the dense Hessian, or the
            extreme ones of :func:`landscape.numeric.spectrum.eigenpairs`); drawn as a rug (gid
            ``"eigenvalues"``, x-data = the eigenvalues) and a histogram of counts.
        density: a :class:`landscape.numeric.spectrum.SpectralDensity`; its Gaussian-smoothed
            density (:meth:`~landscape.numeric.spectrum.SpectralDensity.density`, bandwidth 1 % of
            the node range) is drawn on a second y axis (gid ``"density"``).
        bins: histogram bins.
        points: evaluation points of the density curve (:func:`density_curve`).
        title: the figure title.

    Returns:
        The figure.

    Raises:
        ValueError: neither eigenvalues nor a density.
    """
    if eigenvalues is None and density is None:
        raise ValueError("spectrum_figure needs eigenvalues, a spectral density, or both")
    fig = Figure(figsize=(6.8, 4.4), layout="constrained")
    ax = fig.add_subplot()
    handles = []
    drawn: dict[str, Any] = {"xlabel": "Hessian eigenvalue λ"}
    if eigenvalues is not None:
        ev = np.asarray(getattr(eigenvalues, "numpy", lambda: eigenvalues)(), dtype=np.float64).reshape(-1)
        counts, edges, _ = ax.hist(ev, bins=bins, color="tab:blue", alpha=0.45,
                                   label=f"eigenvalues ({ev.size}), histogram")
        drawn.update(eigenvalues=ev, histogram={"counts": counts, "edges": edges})
        (rug,) = ax.plot(ev, np.zeros_like(ev), "|", color="tab:blue", markersize=16, mew=1.2,
                         label="eigenvalues (one tick each)")
        rug.set_gid("eigenvalues")
        ax.set_ylabel("number of eigenvalues")
        handles += ax.get_legend_handles_labels()[0]
        n_neg = int(np.sum(ev < -1e-10 * max(1.0, float(np.abs(ev).max()))))
        ax.set_title(f"{n_neg} negative of {ev.size}; smallest {ev.min():.3g}, largest {ev.max():.3g}",
                     fontsize="small")
    if density is not None:
        grid, dens, bw = density_curve(density, points)
        dax = ax.twinx() if eigenvalues is not None else ax
        (dl,) = dax.plot(grid.numpy(), dens.numpy(), color="tab:red", lw=1.6,
                         label=f"SLQ density ({density.probes} probes × {density.steps} steps, bandwidth {bw:.2g})")
        dl.set_gid("density")
        drawn["density"] = {"id": "density", "x": grid, "y": dens, "bandwidth": bw,
                            "probes": density.probes, "steps": density.steps}
        dax.set_ylabel("spectral density")
        if dax is not ax:
            dax.set_ylim(bottom=0.0)  # the density is >= 0: its zero on the histogram's zero
            handles.append(dl)
        else:
            handles = [dl]
    ax.set_xlabel("Hessian eigenvalue λ")
    ax.legend(handles=handles, fontsize="x-small", loc="upper right")
    ax.grid(True, alpha=0.3)
    text = title or "Hessian spectrum"
    _title(fig, text)
    return _record(fig, {"title": text, **drawn})


def density_curve(density: Any, points: int = 600) -> tuple[Any, Any, float]:
    r"""The drawn curve of an SLQ spectral density: grid, smoothed density and bandwidth.

    The grid spans the quadrature nodes :math:`[\lambda_{\min}, \lambda_{\max}]` padded by 5 % on
    each side; the density is :meth:`~landscape.numeric.spectrum.SpectralDensity.density` with a
    Gaussian bandwidth of 1 % of the node range.

    Args:
        density: a :class:`landscape.numeric.spectrum.SpectralDensity`.
        points: grid points.

    Returns:
        ``(grid (points,), density (points,), bandwidth)`` (tensors in the nodes' dtype).
    """
    import torch

    nodes = density.nodes
    lo, hi = float(nodes.min()), float(nodes.max())
    pad = 0.05 * max(hi - lo, 1e-12)
    grid = torch.linspace(lo - pad, hi + pad, int(points), dtype=nodes.dtype)
    bw = max(0.01 * (hi - lo), 1e-12)
    return grid, density.density(grid, bw), bw
