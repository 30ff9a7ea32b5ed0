"""``landscape verify --plot``: the certificate picture shows the numbers the verdict was computed from.

Reference: the certificate's own ``per_sample_size`` records as printed by ``--json`` (a second
read-out of the same run): the drawn lines of the figure, and the JSON written beside it, must hold
exactly those numbers. Bad ``--plot`` values are refused before any Monte-Carlo look.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from landscape.cli import main

FGD = ["fgd", "--activation", "exp", "--d", "2", "--n", "4", "--layers", "1", "--sigma", "random:0",
       "--mask", "blocks", "--samples", "2048", "--hessian-samples", "0", "--tol", "0.3", "--json"]


def _lines(fig) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    ax = fig.axes[0]
    return {ln.get_gid(): (np.asarray(ln.get_xdata(), float), np.asarray(ln.get_ydata(), float))
            for ln in ax.get_lines() if ln.get_gid()}


def test_plot_draws_the_certificate_it_prints(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import landscape.views.save as save

    drawn = []
    original = save.save_figure

    def spy(fig, path, **kw):
        drawn.append(fig)
        return original(fig, path, **kw)

    monkeypatch.setattr(save, "save_figure", spy)
    rc = main(["verify", *FGD, "--plot", str(tmp_path / "cert.png")])
    obj = json.loads(capsys.readouterr().out)
    assert rc in (0, 1) and obj["method"] == "monte_carlo" and obj["plot"] == str(tmp_path / "cert.png")
    assert (tmp_path / "cert.png").stat().st_size > 0 and not (tmp_path / "cert.svg").exists()
    looks = obj["per_sample_size"]
    T = [r["samples"] for r in looks]
    assert T == [128, 512, 2048]
    normal = [r["grad_norm_normal"]["value"] for r in looks]
    floor = [r["grad_norm_normal"]["noise_floor"] for r in looks]
    upper = [r["bounds"]["upper"] for r in looks]
    (fig,) = drawn
    name = f"fgd ({ {'stationary': 'STATIONARY', 'not_stationary': 'NOT STATIONARY'}.get(obj['verdict'], obj['verdict'].upper()) })"
    lines = _lines(fig)
    for gid, want in ((f"normal:{name}", normal), (f"floor:{name}", floor), (f"upper:{name}", upper)):
        x, y = lines[gid]
        np.testing.assert_array_equal(x, T)
        np.testing.assert_allclose(y, want, rtol=1e-15, atol=0)
    _, tol = lines["tol"]
    assert tol.tolist() == [0.3, 0.3]
    back = json.loads((tmp_path / "cert.json").read_text())
    assert back["verdict"] == obj["verdict"] and back["tol"] == 0.3
    assert [r["samples"] for r in back["per_sample_size"]] == T
    np.testing.assert_allclose([r["normal"] for r in back["per_sample_size"]], normal, rtol=1e-15)
    np.testing.assert_allclose([r["noise_floor"] for r in back["per_sample_size"]], floor, rtol=1e-15)
    np.testing.assert_allclose([r["upper"] for r in back["per_sample_size"]], upper, rtol=1e-15)
    np.testing.assert_allclose([r["lower"] for r in back["per_sample_size"]],
                               [r["bounds"]["lower"] for r in looks], rtol=1e-15)


@pytest.mark.parametrize("plot, words", [("no_such_folder/cert.png", "does not exist"),
                                         ("cert.pdf", "must name a .png or .svg file")])
def test_bad_plot_is_refused_before_sampling(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch, plot: str, words: str) -> None:
    import landscape.numeric as numeric

    def never(*a, **k):  # the Monte-Carlo work must not start
        raise AssertionError("certify_stationary ran")

    monkeypatch.setattr(numeric, "certify_stationary", never)
    rc = main(["verify", *FGD[:-1], "--plot", str(tmp_path / plot)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and words in err[0] and "--plot" in err[0], err
    assert list(tmp_path.iterdir()) == []


def test_plot_of_an_exact_certificate_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["verify", "pgd", "--d", "2", "--n", "6", "--layers", "1", "--plot", str(tmp_path / "c.svg")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "exact loss" in err[0] and "--exact no" in err[0], err
    assert list(tmp_path.iterdir()) == []
