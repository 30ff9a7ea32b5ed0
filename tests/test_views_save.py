"""Figures are written once (landscape.views.save.save_figure): PNG and SVG with their data beside them."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET

import pytest
import torch

from landscape.views.save import figure_base, figure_path, save_figure

F64 = torch.float64


def _figure():
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3, 2))
    ax = fig.add_subplot()
    ax.plot([0, 1, 2], [1.0, 0.5, 2.0], label="loss")
    ax.set_xlabel("α")
    ax.set_ylabel("loss")
    ax.legend()
    return fig


def test_save_figure_writes_png_svg_and_the_data(tmp_path) -> None:
    data = {"alphas": torch.tensor([0.0, 1.0, 2.0], dtype=F64), "losses": [1.0, float("nan"), float("inf")],
            "label": "a line", "nested": {"k": (1, 2)}}
    files = save_figure(_figure(), tmp_path / "sub" / "fig.png", data=data)
    assert [f.name for f in files] == ["fig.png", "fig.svg"]
    assert files[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert ET.parse(files[1]).getroot().tag.endswith("svg")
    back = json.loads((tmp_path / "sub" / "fig.json").read_text())
    assert back == {"alphas": [0.0, 1.0, 2.0], "losses": [1.0, None, None], "label": "a line", "nested": {"k": [1, 2]}}
    # nothing else is left in the folder (no temporary files)
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["fig.json", "fig.png", "fig.svg"]
    # the same figure is the same bytes (no dates in the files)
    again = save_figure(_figure(), tmp_path / "again", formats=("svg",))
    assert [f.name for f in again] == ["again.svg"] and not (tmp_path / "again.json").exists()
    assert again[0].read_bytes() == files[1].read_bytes()


def test_save_figure_refuses_bad_formats_and_data_before_writing(tmp_path) -> None:
    with pytest.raises(ValueError, match="png and/or svg"):
        save_figure(_figure(), tmp_path / "x", formats=("pdf",))
    with pytest.raises(TypeError, match="figure data"):
        save_figure(_figure(), tmp_path / "y", data={"f": object()})
    assert list(tmp_path.iterdir()) == []


def test_figure_path_and_base(tmp_path) -> None:
    assert figure_path(str(tmp_path / "a.SVG")) == tmp_path / "a.SVG"
    with pytest.raises(ValueError, match=r"--plot must name a \.png or \.svg file"):
        figure_path("a.pdf", "--plot")
    (tmp_path / "d.png").mkdir()
    with pytest.raises(ValueError, match="is a folder"):
        figure_path(str(tmp_path / "d.png"))
    assert figure_base("out/run.v2.png").name == "run.v2" and figure_base("out/run.v2").name == "run.v2"


def test_plot_slice_and_plot_density_write_the_numbers_they_draw(tmp_path) -> None:
    from landscape.core.model import ModelSpec, num_params
    from landscape.numeric.slices import line_slice
    from landscape.numeric.spectrum import matrix_operator, spectral_density
    from landscape.views.pictures import plot_density, plot_slice

    spec = ModelSpec.linear(d=1, layers=1)
    P = num_params(spec)

    def loss(params):
        from landscape.core.model import flatten_params

        w = flatten_params(params, spec)
        return (w**2).sum()

    from landscape.numeric.oracles import as_oracle

    oracle = as_oracle(loss, spec)
    origin = torch.zeros(P, dtype=F64)
    direction = torch.ones(P, dtype=F64)
    sl = line_slice(oracle, origin, direction=direction, alphas=torch.linspace(-1, 1, 5, dtype=F64), label="ones")
    plot_slice(sl, tmp_path / "line", points=[("origin", (0.0,), 0.0)])
    back = json.loads((tmp_path / "line.json").read_text())
    # the loss along the line is |α·1|² = P α²
    assert back["losses"] == pytest.approx([P * a * a for a in (-1.0, -0.5, 0.0, 0.5, 1.0)], rel=1e-12)
    assert back["points"] == [{"label": "origin", "coordinates": [0.0], "loss": 0.0}] and back["label"] == "ones"
    H = torch.diag(torch.arange(1.0, P + 1.0, dtype=F64))
    sd = spectral_density(matrix_operator(H, "diag"), torch.Generator().manual_seed(0), probes=2, steps=P)
    files = plot_density(sd, tmp_path / "dens.svg", eigenvalues=torch.linalg.eigvalsh(H), formats=("svg",))
    assert [f.name for f in files] == ["dens.svg"]
    dens = json.loads((tmp_path / "dens.json").read_text())
    assert dens["dense_eigenvalues"] == pytest.approx(list(range(1, P + 1)))
    # the drawn curve is a density: it integrates to about one over the drawn window
    x, y = torch.tensor(dens["eigenvalue"]), torch.tensor(dens["density"])
    assert float(torch.trapezoid(y, x)) == pytest.approx(1.0, abs=0.05)
    assert all(math.isfinite(v) for v in dens["density"])


def test_one_json_conversion_for_figure_data_and_command_output(capsys) -> None:
    import json as _json

    import numpy as np

    from landscape.cli import emit_json
    from landscape.views.save import jsonable

    class Opaque:
        def __str__(self) -> str:
            return "opaque"

    value = {"t": torch.tensor([1.0, float("inf")]), "s": np.float64(0.25), "i": np.int64(3), "o": Opaque()}
    with pytest.raises(TypeError, match="got Opaque"):
        jsonable(value)  # figure data must read back as numbers
    assert jsonable(value, strict=False) == {"t": [1.0, None], "s": 0.25, "i": 3, "o": "opaque"}
    emit_json(value)
    assert _json.loads(capsys.readouterr().out) == {"t": [1.0, None], "s": 0.25, "i": 3, "o": "opaque"}
