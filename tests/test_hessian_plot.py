"""``landscape hessian --plot``: the spectral-density figure is the views' spectrum figure and draws
exactly the SLQ result the command computed.

Reference: the :class:`~landscape.numeric.spectrum.SpectralDensity` returned to the command (captured)
and its own smoothed density on the drawn grid; the dense eigenvalues of the exact Hessian
(``torch.linalg.eigvalsh`` of the pgd one-layer exact loss, an independent route to the rug).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from landscape.cli import main


def test_hessian_density_figure_draws_the_slq_result(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    # the modules the command will use (sys.modules: another test may have re-imported them), and the
    # name views.pictures writes through (bound when it was first imported)
    spectrum = importlib.import_module("landscape.numeric.spectrum")
    pictures = importlib.import_module("landscape.views.pictures")
    from landscape.core.tasks import LinearRegression
    from landscape.numeric.derivatives import hessian
    from landscape.numeric.oracles import exact_loss_oracle
    from landscape.theory.families import Problem, get_family

    densities, figures = [], []
    slq, writer = spectrum.spectral_density, pictures.save_figure

    def spy_slq(*a, **k):
        densities.append(slq(*a, **k))
        return densities[-1]

    def spy_save(fig, path, **k):
        figures.append(fig)
        return writer(fig, path, **k)

    monkeypatch.setattr(spectrum, "spectral_density", spy_slq)
    monkeypatch.setattr(pictures, "save_figure", spy_save)
    plot = tmp_path / "density.svg"
    argv = ["hessian", "--family", "pgd", "--d", "2", "--n", "8", "--point", "a0=0.7", "--probes", "3", "--json",
            "--plot", str(plot)]
    assert main(argv) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    (sd,), (fig,) = densities, figures
    assert plot.is_file() and not plot.with_suffix(".png").exists()
    lines = {ln.get_gid(): ln for ax in fig.axes for ln in ax.get_lines() if ln.get_gid()}
    # the density line: the SLQ density of the command at the drawn grid, bandwidth 1% of the node range
    x, y = np.asarray(lines["density"].get_xdata()), np.asarray(lines["density"].get_ydata())
    bw = 0.01 * float(sd.nodes.max() - sd.nodes.min())
    np.testing.assert_allclose(y, sd.density(torch.tensor(x, dtype=torch.float64), bw).numpy(), rtol=1e-12)
    assert x[0] < float(sd.nodes.min()) and x[-1] > float(sd.nodes.max())
    assert res["density"]["probes"] == sd.probes == 3 and res["density"]["min_node"] == pytest.approx(float(sd.nodes.min()))
    # the rug: the dense eigenvalues of the exact Hessian at the point
    problem = Problem(d=2, layers=1, n=8, attention="linear")
    theta = get_family("pgd", problem).flat(torch.tensor([0.7], dtype=torch.float64))
    ev = torch.linalg.eigvalsh(hessian(exact_loss_oracle(problem, LinearRegression(2, 8, dtype=torch.float64)), theta))
    np.testing.assert_allclose(np.sort(lines["eigenvalues"].get_xdata()), ev.numpy(),
                               atol=1e-9 * float(ev.abs().max()))
    # the JSON beside it holds the drawn numbers
    back = json.loads((tmp_path / "density.json").read_text())
    np.testing.assert_allclose(back["eigenvalue"], x, rtol=0, atol=0)
    np.testing.assert_allclose(back["density"], y, rtol=0, atol=0)
    assert back["bandwidth"] == pytest.approx(bw, rel=1e-12)
    assert fig.axes[0].get_xlabel() == "Hessian eigenvalue λ" and "Hessian spectrum at" in fig._suptitle.get_text()
