"""Landscape slices (landscape.numeric.slices) and the slice / hessian / probe commands on a trained run."""

from __future__ import annotations

import json

import pytest
import torch

from landscape.cli import main
from landscape.core.model import flatten_params, num_params, unflatten_params
from landscape.core.tasks import LinearRegression
from landscape.numeric.derivatives import hessian
from landscape.numeric.oracles import MonteCarloLoss, exact_loss_oracle
from landscape.numeric.slices import family_plane_slice, plane_coordinates, plane_slice
from landscape.views.pictures import plot_slice
from landscape.theory.families import Problem, get_family

F64 = torch.float64


def _json(capsys) -> dict:
    out = capsys.readouterr().out.strip().splitlines()
    return json.loads(out[-1])


# ---------------------------------------------------------------------- library
def test_family_plane_follows_the_family_and_equals_the_tangent_plane_when_affine():
    problem = Problem(d=2, layers=2, n=6, attention="linear")
    fam = get_family("pgd", problem)
    task = LinearRegression(2, 6, dtype=F64)
    oracle = MonteCarloLoss.from_task(task, fam.spec, 128, torch.Generator().manual_seed(0))
    s0 = torch.tensor([0.4, 0.6], dtype=F64)
    grid = torch.linspace(-0.5, 0.5, 5, dtype=F64)
    sl = family_plane_slice(oracle, fam, s0, (0, 1), alphas=grid, betas=grid)
    # every grid value is the loss at theta(s0 + a e0 + b e1), evaluated here one by one
    for i, a in enumerate(grid):
        for j, b in enumerate(grid):
            ref = oracle(fam.flat(s0 + torch.stack([a, b])))
            assert float(sl.losses[i, j]) == pytest.approx(float(ref), rel=1e-12)
    # pgd is affine in its scalars: the family plane is the plane along the tangent vectors
    T = fam.tangent_basis(s0)
    pl = plane_slice(oracle, fam.flat(s0), T[:, 0], T[:, 1], alphas=grid, betas=grid)
    assert torch.allclose(pl.losses, sl.losses, rtol=1e-12)
    line = family_plane_slice(oracle, fam, s0, (1,), alphas=grid)
    assert torch.allclose(line.losses, sl.losses[2], rtol=1e-12)  # alpha offset 0 row
    with pytest.raises(ValueError, match="symbols"):
        family_plane_slice(oracle, fam, s0, (0, 2))


def test_plane_coordinates_and_off_plane_distance():
    g = torch.Generator().manual_seed(1)
    P = 12
    o, d1, d2, e = (torch.randn(P, generator=g, dtype=F64) for _ in range(4))
    from landscape.core.model import ModelSpec

    spec = ModelSpec.linear(1, 1)  # P = 2 * 2 * 2 = 8; a plain callable over 12 numbers instead:
    assert num_params(spec) == 8
    sl = plane_slice(lambda p: (p["layer0.head0.P"] ** 2).sum(), torch.zeros(8, dtype=F64), torch.eye(8, dtype=F64)[0],
                     torch.eye(8, dtype=F64)[1], spec=spec, alphas=[-1, 1], betas=[-1, 1])
    c, off = plane_coordinates(sl, torch.tensor([0.3, -0.7, 0, 0, 0, 2.0, 0, 0], dtype=F64))
    assert c == pytest.approx((0.3, -0.7), abs=1e-14) and off == pytest.approx(2.0, abs=1e-14)
    # a general plane: the normal part of e is the off-plane distance
    from landscape.numeric.slices import PlaneSlice

    pl = PlaneSlice(torch.zeros(2), torch.zeros(2), torch.zeros(2, 2), o, torch.stack([d1, d2]))
    B, _ = torch.linalg.qr(torch.stack([d1, d2], 1))
    normal = e - B @ (B.T @ e)
    c, off = plane_coordinates(pl, o + 0.25 * d1 - 1.5 * d2 + normal)
    assert c == pytest.approx((0.25, -1.5), abs=1e-12) and off == pytest.approx(float(normal.norm()), rel=1e-12)


def test_plot_slice_surface_and_points(tmp_path):
    problem = Problem(d=2, layers=1, n=6, attention="linear")
    fam = get_family("pgd-full", problem)
    task = LinearRegression(2, 6, dtype=F64)
    oracle = MonteCarloLoss.from_task(task, fam.spec, 64, torch.Generator().manual_seed(0))
    s0 = torch.zeros(fam.dim, dtype=F64) + 0.5
    sl = family_plane_slice(oracle, fam, s0, (0, 1), alphas=torch.linspace(-1, 1, 9, dtype=F64),
                            betas=torch.linspace(-1, 1, 9, dtype=F64))
    files = plot_slice(sl, tmp_path / "surf", kind="surface", points=[("p", (0.0, 0.0), float(sl.losses[4, 4]))])
    assert [f.suffix for f in files] == [".png", ".svg"] and all(f.stat().st_size > 5000 for f in files)
    svg = files[1].read_text()
    assert "loss" in svg and sl.labels[0] in svg


# ---------------------------------------------------------------------- commands on a trained run
@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from landscape.experiment.store import RunStore
    from landscape.experiment.train import TrainConfig, train

    root = tmp_path_factory.mktemp("slice") / "store"
    cfg = TrainConfig(task="linear", d=2, n=6, attention="linear", layers=1, family="pgd", seeds=3, steps=40,
                      batch=64, lr=0.05, dtype="float64", seed=0, device="cpu", eval_batch=128, log_every=20,
                      distance_every=0, checkpoint_every=0)
    with RunStore(root) as s:
        name = train(cfg, s, progress=False).run_name
    return root, name, cfg


def _exact(cfg):
    from landscape.experiment.train import make_task

    return exact_loss_oracle(cfg.problem(), make_task(cfg))


def _stored(root):
    from landscape.numeric.points import load_trained

    return load_trained(root)


def test_slice_seeds_plane_puts_the_points_where_they_are(store, capsys, tmp_path):
    root, name, cfg = store
    out = tmp_path / "seeds.png"
    assert main(["slice", "--run", f"{root}:{name}", "--plane", "seeds", "--seeds", "0,2", "--grid", "7",
                 "--out", str(out), "--json"]) == 0
    res = _json(capsys)
    pts = {p["label"]: p for p in res["points"]}
    assert pts["trained seed 0"]["coordinates"] == pytest.approx([1.0, 0.0], abs=1e-10)
    assert pts["trained seed 2"]["coordinates"] == pytest.approx([0.0, 1.0], abs=1e-10)
    assert all(p["off_plane"] < 1e-10 for p in res["points"])
    oracle = _exact(cfg)
    tr = _stored(root)
    assert pts["trained seed 2"]["loss"] == pytest.approx(float(oracle(tr.final[2])), rel=1e-12)
    # the 7-point grid on [-0.25, 1.25] holds (0, 0), (1, 0) and (0, 1): its minimum is no higher than the points'
    assert res["min_loss"] <= min(p["loss"] for p in res["points"]) * (1 + 1e-12)
    assert out.stat().st_size > 10000


def test_slice_init_line_and_errors(store, capsys, tmp_path):
    root, name, cfg = store
    out = tmp_path / "line.svg"
    assert main(["slice", "--run", str(root), "--seed", "1", "--line", "init", "--grid", "5", "--range", "0,1",
                 "--out", str(out), "--json"]) == 0
    res = _json(capsys)
    tr = _stored(root)
    oracle = _exact(cfg)
    assert res["points"][0]["coordinates"] == pytest.approx([0.0], abs=1e-12)
    assert res["points"][1]["coordinates"] == pytest.approx([1.0], abs=1e-12)
    assert res["points"][0]["loss"] == pytest.approx(float(oracle(tr.init[1])), rel=1e-12)
    assert res["max_loss"] == pytest.approx(max(float(oracle(tr.init[1] + t * (tr.final[1] - tr.init[1])))
                                                for t in torch.linspace(0, 1, 5, dtype=F64)), rel=1e-12)
    assert out.read_text().startswith("<?xml")
    # bad input: one line, exit 2, nothing written
    assert main(["slice", "--family", "pgd", "--d", "2", "--line", "init", "--out", str(tmp_path / "x.png")]) == 2
    assert "needs trained seeds" in capsys.readouterr().err
    assert main(["slice", "--run", str(root), "--plane", "random", "--out", str(tmp_path / "x.pdf")]) == 2
    assert ".png or .svg" in capsys.readouterr().err
    assert main(["slice", "--run", str(root), "--plane", "random", "--line", "init"]) == 2
    assert main(["slice", "--run", str(root), "--seed", "7", "--plane", "random", "--out", str(tmp_path / "y.png")]) == 2
    assert "--seed must be in [0, 3)" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "y.png").exists()


def test_hessian_command_on_a_trained_seed_matches_dense(store, capsys):
    root, name, cfg = store
    assert main(["hessian", "--run", str(root), "--seed", "2", "--k", "2", "--json"]) == 0
    res = _json(capsys)
    tr = _stored(root)
    H = hessian(_exact(cfg), tr.final[2])
    ev = torch.linalg.eigvalsh(H)
    assert res["loss_kind"] == "exact population loss"
    assert res["top"]["eigenvalues"] == pytest.approx(ev.flip(0)[:2].tolist(), rel=1e-9)
    assert res["bottom"]["eigenvalues"] == pytest.approx(ev[:2].tolist(), abs=1e-9 * float(ev.abs().max()))
    assert res["exact_trace"] == pytest.approx(float(ev.sum()), rel=1e-12)
    assert res["inertia"]["n_neg"] == int((ev < -res["inertia"]["zero_tol"]).sum())
    assert {b["block"] for b in res["blocks"]["kind"]} == {"P", "Q"}


def test_probe_command_on_a_trained_run(store, capsys):
    root, name, cfg = store
    assert main(["probe", "--run", str(root), "--algorithms", "gd,pgd,newton", "--fit-samples", "64",
                 "--eval-samples", "64", "--json"]) == 0
    res = _json(capsys)
    assert res["algorithms"] == ["gd", "preconditioned_gd", "newton"] and res["seed_indices"] == [0, 1, 2]
    rel = torch.tensor(res["relative_error"])
    assert rel.shape == (3, 3, 1) and bool((rel > 0).all())
    # one layer: preconditioned GD has GD as a special case, so it fits at least as well
    assert float(torch.tensor(res["bands"]["preconditioned_gd"]["relative_error_median"])[0]) <= \
        float(torch.tensor(res["bands"]["gd"]["relative_error_median"])[0]) * 1.05
    assert main(["probe", "--run", str(root), "--algorithms", "sgd"]) == 2
