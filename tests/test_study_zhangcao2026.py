"""Zhang, Cao (2026) study: block parameterisation, looping, and the quick study's claims."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from analysis import zhangcao2026 as z
from figure_checks import assert_data_is_drawn, quick_study_fixture
from landscape.tolerances import CONSTRUCTION_RTOL
from landscape.theory.algorithms import normalised_gd
from landscape.theory.constructions import normalised_gd_construction
from landscape.experiment.store import RunStore
from landscape.core.tasks import LinearClassification


def _gen(seed: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def _exact_blocks(d: int, n: int, eta: float, c: float) -> dict[str, torch.Tensor]:
    eye = torch.eye(d, dtype=torch.float64)
    return {"B11": eye, "C12": -c * eye, "V21": n * eta * eye}


def test_block_params_contain_the_construction() -> None:
    d, n, eta, c = 3, 7, 0.7, 1.3
    params = z.block_params(_exact_blocks(d, n, eta, c))
    con = normalised_gd_construction(d, eta, c, 1, n)
    for k, v in con.params.items():
        torch.testing.assert_close(params[k], v, rtol=0.0, atol=0.0)


def test_looped_blocks_equal_normalised_gd() -> None:
    d, n, eta, c, T = 4, 9, 0.8, 1.5, 12
    pb = LinearClassification(d, n, margin=0.1).sample(16, _gen(5))
    X, y = pb.X[..., :-1], pb.y[..., :-1]
    w0 = torch.randn(16, d, generator=_gen(6), dtype=torch.float64)
    got = z.loop_layer(z.block_params(_exact_blocks(d, n, eta, c)), z.layer_spec(d), X, y, T, w0=w0)
    ref = normalised_gd(X, y, T, eta, c, w0=w0, return_iterates=True)
    err = ((got - ref).norm(dim=-1) / ref.norm(dim=-1)).max()
    assert float(err) < CONSTRUCTION_RTOL


def test_compare_with_ngd_scores_the_exact_layer_as_exact() -> None:
    d, n = 3, 10
    task = LinearClassification(d, n, margin=0.2)
    params = z.block_params(_exact_blocks(d, n, 1.0, 1.0))
    r = z.compare_with_ngd(params, z.layer_spec(d), task, steps=10, eta_eff=1.0, c=1.0, batch=8, generator=_gen(2))
    assert float(r.rel_error.max()) < CONSTRUCTION_RTOL
    torch.testing.assert_close(r.cos_tf, r.cos_ngd, rtol=1e-12, atol=1e-12)
    # after 10 NGD steps on margin-0.2 data the direction is already close to max margin
    assert float(r.cos_tf[-1]) > 0.95 and float(r.cos_tf[-1]) > float(r.cos_tf[1])


def test_wrong_step_is_detected() -> None:
    # the same layer compared with NGD at a different step must not look exact
    d, n = 3, 10
    task = LinearClassification(d, n, margin=0.2)
    params = z.block_params(_exact_blocks(d, n, 1.0, 1.0))
    r = z.compare_with_ngd(params, z.layer_spec(d), task, steps=5, eta_eff=0.5, c=1.0, batch=8, generator=_gen(2))
    assert float(r.rel_error[0]) > 0.5


def test_block_params_carry_the_model_keys() -> None:
    """The parameters built from the blocks are exactly the parameters of layer_spec(d), under the
    model's own keys, and the embedded blocks sit where block_params' docstring puts them."""
    from landscape.core.model import param_shapes

    d = 2
    blocks = z.init_blocks(d, _gen(5))
    params = z.block_params(blocks)
    spec = z.layer_spec(d)
    assert {k: tuple(v.shape) for k, v in params.items()} == param_shapes(spec)
    torch.testing.assert_close(params[spec.key(0, 0, "B")][:d, :d], blocks["B11"], rtol=0.0, atol=0.0)
    torch.testing.assert_close(params[spec.key(0, 0, "C")][:d, d:], blocks["C12"], rtol=0.0, atol=0.0)
    torch.testing.assert_close(params[spec.key(0, 0, "V")][d:, :d], blocks["V21"], rtol=0.0, atol=0.0)


def test_bad_input_is_rejected() -> None:
    with pytest.raises(ValueError, match="missing"):
        z.block_params({"B11": torch.eye(2)})
    with pytest.raises(ValueError, match="square"):
        z.block_params({"B11": torch.eye(2), "C12": torch.eye(3), "V21": torch.eye(2)})
    with pytest.raises(ValueError, match="eta"):
        z.train_one_step_layer(LinearClassification(2, 4), eta=-1.0, c=1.0, generator=_gen(0))


quick = quick_study_fixture("zhangcao2026", z.run)
"""The quick study, run once for the tests below; every figure it saves is kept (stem → Figure) to read its artists."""


@pytest.mark.slow
def test_quick_study_claims(quick) -> None:
    result, report, tmp_path, _ = quick
    claims = {c.name: c for c in result.claims}
    assert set(claims) == {"construction_is_ngd", "trained_layer_one_step_is_ngd", "looped_layer_tracks_ngd",
                           "direction_approaches_max_margin", "ood_tracks_ngd_and_max_margin"}

    con = claims["construction_is_ngd"]
    assert con.holds
    assert con.measured["one_step_max_rel_error"] < CONSTRUCTION_RTOL
    assert con.measured["max_rel_error_20_steps"] < CONSTRUCTION_RTOL

    one = claims["trained_layer_one_step_is_ngd"]
    assert one.holds and one.measured["mean_rel_error"] < 1e-2
    assert one.measured["score_block_error"] < 1e-2 and one.measured["value_block_error"] < 1e-2

    track = claims["looped_layer_tracks_ngd"]
    assert track.holds and track.measured["max_t_mean_rel_error"] < 1e-2

    mm = claims["direction_approaches_max_margin"]
    assert mm.holds
    assert mm.measured["cos_tf_T"] > 0.99 and mm.measured["cos_tf_T"] > mm.measured["cos_tf_1"]
    assert abs(mm.measured["cos_tf_T"] - mm.measured["cos_ngd_T"]) < 1e-3

    ood = claims["ood_tracks_ngd_and_max_margin"]
    assert ood.holds and ood.measured["max_rel_error"] < 1e-2 and ood.measured["min_mean_cos"] > 0.98

    assert report.is_file()
    with RunStore(tmp_path) as store:
        (run,) = store.list_runs()
        figs = {a.path.name for a in store.artifacts(run, "figure")}
        assert figs == {"zhangcao2026_tracking.png", "zhangcao2026_tracking.svg"}
        assert all(a.path.stat().st_size > 0 for a in store.artifacts(run, "figure"))


@pytest.mark.slow
def test_quick_figure_carries_the_numbers_it_draws(quick) -> None:
    """Beside the tracking figure, its .json holds exactly what its axes draw (every line under its gid)
    and those numbers are the study's own: the table of the looped layer vs NGD and the claims."""
    result, report, _, figures = quick
    (png,) = [f for f in result.figures if f.suffix == ".png"]
    assert png.stem == "zhangcao2026_tracking" and list(figures) == [png.stem]
    assert f"data: [{png.stem}.json]({png.stem}.json)" in report.read_text()
    data = json.loads(png.with_suffix(".json").read_text(encoding="utf-8"))
    fig = figures[png.stem]
    assert len(data["panels"]) == 3
    assert all("xscale" in p and "yscale" in p for p in data["panels"])
    curves, refs = assert_data_is_drawn(fig, data)
    assert refs == {}

    # the numbers are the study's: one row per setting of the looped layer vs NGD ...
    s = z.QUICK
    rows = result.tables["looped layer vs NGD"]
    assert len(rows) == 4 and len(curves) == 3 * len(rows) + 2
    ts = np.arange(1, s.loop_steps + 1)
    for row in rows:
        name = row["setting"]
        (x, err), (_, tf), (_, ngd) = (curves[f"{q}:{name}"] for q in ("rel_error", "1-cos:looped", "1-cos:ngd"))
        np.testing.assert_array_equal(x, ts)
        assert err.max() == row["max_rel_error"]
        assert (tf[-1], ngd[-1]) == (1 - row["cos_tf_T"], 1 - row["cos_ngd_T"])
    # ... and the claims' measured values
    claims = {c.name: c.measured for c in result.claims}
    track, mm = claims["looped_layer_tracks_ngd"], claims["direction_approaches_max_margin"]
    err, tf = curves["rel_error:in-distribution"][1], curves["1-cos:looped:in-distribution"][1]
    assert (track["max_t_mean_rel_error"], track["rel_error_at_T"]) == (err.max(), err[-1])
    assert tf[0] == 1 - mm["cos_tf_1"]
    x, adam = curves["adam"]
    np.testing.assert_array_equal(x, np.arange(s.adam_steps))
    assert len(adam) == s.adam_steps and np.all(np.isfinite(adam))
    x, lbfgs = curves["lbfgs"]
    assert x.tolist() == [s.adam_steps]
    assert lbfgs.tolist() == [claims["trained_layer_one_step_is_ngd"]["final_train_loss"]]
