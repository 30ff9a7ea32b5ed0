r"""Pictures of one point of the landscape: loss slices, probes of the layers, Hessian spectral densities.

* :func:`plot_slice` — a line plot, filled contour plot or surface plot of a
  :class:`~landscape.numeric.slices.LineSlice` / :class:`~landscape.numeric.slices.PlaneSlice`, with
  labelled points (trained seeds, constructions, initialisations);
* :func:`plot_probe` — relative error and cosine per layer of a
  :class:`~landscape.numeric.probe.ProbeResult`, median over seeds with the quartile band;
* :func:`plot_density` — a stochastic-Lanczos-quadrature spectral density
  (:class:`~landscape.numeric.spectrum.SpectralDensity`), with the dense eigenvalues as a rug.

Each writes PNG and SVG with the numbers it draws beside them (:func:`landscape.views.save.save_figure`).
matplotlib is imported when a figure is drawn, not when this module is.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, Sequence

import torch

from landscape._checks import check_choice
from landscape.numeric.probe import ProbeResult
from landscape.numeric.slices import LineSlice, PlaneSlice
from landscape.views.save import save_figure

__all__ = ["plot_slice", "plot_probe", "plot_density"]


def plot_slice(
    sl: LineSlice | PlaneSlice,
    path: str | os.PathLike[str],
    *,
    title: str | None = None,
    formats: Sequence[str] = ("png", "svg"),
    log: bool = False,
    points: Sequence[tuple[str, Sequence[float], float | None]] = (),
    kind: Literal["contour", "surface"] = "contour",
) -> list[Path]:
    """Draw a slice and write it as PNG and SVG: a line plot, filled contours or a surface, with labelled points.

    Args:
        sl: the slice.
        path: ``dir/name`` (a ``.png``/``.svg`` suffix is dropped); the grid and the points are
            written beside the figure as ``dir/name.json`` (:func:`landscape.views.save.save_figure`).
        title: figure title.
        formats: file formats.
        log: logarithmic loss axis / contour levels.
        points: ``(label, coordinates, loss or None)`` to mark (coordinates ``(α,)`` on a line,
            ``(α, β)`` on a plane, e.g. from :func:`landscape.numeric.slices.plane_coordinates`); the origin is marked
            only when no points are given.
        kind: planes only: ``"contour"`` or ``"surface"`` (3-D).

    Returns:
        The figure files written.

    Raises:
        TypeError: not a slice.
        ValueError: unknown ``kind``.
    """
    from matplotlib.figure import Figure

    if not isinstance(sl, (LineSlice, PlaneSlice)):
        raise TypeError(f"expected a LineSlice or PlaneSlice, got {type(sl).__name__}")
    check_choice("kind", kind, ("contour", "surface"))
    import numpy as np

    fig = Figure(figsize=(6.0, 4.6), layout="constrained")
    markers = ("o", "s", "^", "D", "v", "P", "X", "*")

    def tr(v: float) -> float:
        return float(np.log10(max(v, np.finfo(float).tiny))) if log else float(v)

    if isinstance(sl, LineSlice):
        ax = fig.add_subplot()
        ax.plot(sl.alphas.cpu().numpy(), sl.losses.cpu().numpy(), color="C0", label="loss")
        for m, (label, c, loss) in enumerate(points):
            y = float(np.interp(c[0], sl.alphas.cpu().numpy(), sl.losses.cpu().numpy())) if loss is None else loss
            ax.plot([c[0]], [y], marker=markers[m % len(markers)], ls="none", color=f"C{m + 1}",
                    markeredgecolor="k", label=label)
        if not points:
            ax.axvline(0.0, color="0.6", lw=0.8, ls=":")
        ax.set_xlabel(f"α along {sl.label}")
        ax.set_ylabel("loss")
        if log:
            ax.set_yscale("log")
        if points:
            ax.legend(fontsize=8)
    else:
        Zv = sl.losses.cpu().numpy().T
        if log:
            with np.errstate(invalid="ignore"):
                Zv = np.log10(np.maximum(Zv, np.finfo(float).tiny))
        Zv = np.ma.masked_invalid(Zv)  # overflowing grid points are left blank
        A, B = np.meshgrid(sl.alphas.cpu().numpy(), sl.betas.cpu().numpy())
        zlabel = "log10 loss" if log else "loss"
        if kind == "surface":
            ax = fig.add_subplot(projection="3d")
            surf = ax.plot_surface(A, B, Zv.filled(np.nan), cmap="viridis", linewidth=0, antialiased=True, alpha=0.85)
            fig.colorbar(surf, ax=ax, label=zlabel, shrink=0.7)
            ax.set_zlabel(zlabel)
        else:
            ax = fig.add_subplot()
            cs = ax.contourf(A, B, Zv, levels=20, cmap="viridis")
            ax.contour(A, B, Zv, levels=20, colors="k", linewidths=0.3)
            fig.colorbar(cs, ax=ax, label=zlabel)
        if not points:
            points = (("origin", (0.0, 0.0), None),)
        for m, (label, c, loss) in enumerate(points):
            mk = dict(marker=markers[m % len(markers)], ls="none", color=f"C{m + 1}", markeredgecolor="k",
                      markersize=8, label=label)
            if kind == "surface":
                z = tr(loss) if loss is not None else float(Zv.max())
                ax.plot([c[0]], [c[1]], [z], **mk)
            else:
                ax.plot([c[0]], [c[1]], **mk)
        ax.set_xlabel(f"α ({sl.labels[0]})")
        ax.set_ylabel(f"β ({sl.labels[1]})")
        ax.legend(fontsize=7, loc="upper right")
    if title:
        import textwrap

        ax.set_title("\n".join(textwrap.wrap(title, 80)), fontsize=9)
    data: dict[str, Any] = {"kind": "line" if isinstance(sl, LineSlice) else "plane", "title": title,
                            "alphas": sl.alphas, "losses": sl.losses,
                            "points": [{"label": lab, "coordinates": list(c), "loss": loss} for lab, c, loss in points]}
    if isinstance(sl, LineSlice):
        data["label"] = sl.label
    else:
        data.update(betas=sl.betas, labels=list(sl.labels))
    return save_figure(fig, path, formats=formats, data=data)


def plot_probe(result: ProbeResult, path: str | os.PathLike[str], *, title: str | None = None,
               formats: Sequence[str] = ("png", "svg")) -> list[Path]:
    """Relative error and cosine per layer, one line (median over seeds) and band (quartiles) per algorithm.

    Args:
        result: the probe's result.
        path: ``dir/name`` (a ``.png``/``.svg`` suffix is dropped); the bands are written beside the
            figure as ``dir/name.json`` (:func:`landscape.views.save.save_figure`).
        title: figure title.
        formats: file formats.

    Returns:
        The figure files written.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9.0, 3.8), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    layers = list(range(1, result.layers + 1))
    bands = result.bands()
    for i, name in enumerate(result.algorithms):
        b = bands[name]
        for ax, key in ((ax1, "relative_error"), (ax2, "cosine")):
            ax.plot(layers, b[f"{key}_median"], marker="o", color=f"C{i}", label=name)
            if result.seeds > 1:
                ax.fill_between(layers, b[f"{key}_q25"], b[f"{key}_q75"], color=f"C{i}", alpha=0.2, lw=0)
    ax1.set_yscale("log")
    ax1.set_xlabel("layer l (= algorithm steps)")
    ax1.set_ylabel("relative error ‖ŷ_l − a_l‖ / ‖a_l‖")
    ax2.set_xlabel("layer l (= algorithm steps)")
    ax2.set_ylabel("cosine similarity")
    for ax in (ax1, ax2):
        ax.set_xticks(layers)
    ax1.legend(fontsize=8)
    fig.suptitle(title or f"layers vs algorithm iterates (median and quartiles over {result.seeds} seeds)")
    return save_figure(fig, path, formats=formats,
                       data={"title": title, "layers": layers, "seeds": result.seeds, "bands": bands})


def plot_density(sd: Any, path: str | os.PathLike[str], *, eigenvalues: torch.Tensor | None = None,
                 title: str | None = None, formats: Sequence[str] = ("png", "svg"), points: int = 600) -> list[Path]:
    r"""Draw a spectral density :math:`\hat\rho(\lambda)` (Gaussian-smoothed SLQ quadrature) and write it.

    The figure is the views' one spectrum figure (:func:`landscape.views.evidence.spectrum_figure`:
    the dense eigenvalues, when given, as a histogram and rug, the density on a second axis); the
    curve is :func:`landscape.views.evidence.density_curve` (bandwidth 1 % of the span of the
    quadrature nodes).

    Args:
        sd: a :class:`~landscape.numeric.spectrum.SpectralDensity`.
        path: ``dir/name`` (a ``.png``/``.svg`` suffix is dropped); the curve, the nodes, the weights
            and the eigenvalues are written beside the figure as ``dir/name.json``.
        eigenvalues: the dense eigenvalues (``None``: none).
        title: figure title.
        formats: file formats.
        points: evaluation points of the curve.

    Returns:
        The figure files written.
    """
    from landscape.views.evidence import density_curve, spectrum_figure

    fig = spectrum_figure(eigenvalues, sd, points=points, title=title)
    grid, dens, bw = density_curve(sd, points)
    data = {"title": title, "bandwidth": bw, "eigenvalue": grid, "density": dens, "nodes": sd.nodes,
            "weights": sd.weights, "probes": sd.probes, "steps": sd.steps,
            "dense_eigenvalues": eigenvalues}
    return save_figure(fig, path, formats=formats, data=data)
