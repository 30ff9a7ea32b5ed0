"""Probing layers against algorithm iterates (landscape.numeric.probe) on constructions that *are* an algorithm."""

from __future__ import annotations

import pytest
import torch

import landscape.theory.algorithms as alg
from landscape.core.model import flatten_params
from landscape.core.tasks import KernelGP, LinearRegression
from landscape.numeric.probe import fit_algorithm, layer_predictions, probe
from landscape.theory.constructions import (
    functional_gd_construction,
    gd_plus_plus_construction,
    preconditioned_gd_construction,
)

F64 = torch.float64
ROUND_OFF = 1e-10


def _flat(c):
    return flatten_params(c.params, c.spec)


def test_layer_predictions_are_the_construction_trace():
    g = torch.Generator().manual_seed(0)
    A = 0.4 * torch.randn(2, 3, 3, generator=g, dtype=F64)
    c = preconditioned_gd_construction(A)
    X = torch.randn(5, 3, 7, generator=g, dtype=F64)
    y = torch.randn(5, 7, generator=g, dtype=F64)
    xq = torch.randn(5, 3, generator=g, dtype=F64)
    preds = layer_predictions(c.params, c.spec, c.embed(X, y, xq))
    ref = torch.einsum("bld,bd->bl", alg.preconditioned_gd(X, y, A, return_iterates=True), xq)
    assert torch.allclose(preds, ref, atol=1e-13)


def test_preconditioned_gd_construction_is_recovered_and_gd_is_not():
    g = torch.Generator().manual_seed(1)
    d, L = 3, 3
    A = 0.8 * torch.eye(d, dtype=F64) + 0.3 * torch.randn(L, d, d, generator=g, dtype=F64)
    c = preconditioned_gd_construction(A)
    task = LinearRegression(d, 10, dtype=F64)
    r = probe(_flat(c)[None], c.spec, task, g, algorithms=("preconditioned_gd", "gd", "newton"),
              fit_samples=200, eval_samples=300)
    assert r.relative_error.shape == (1, 3, L)
    assert float(r.relative_error[0, 0].max()) < ROUND_OFF
    assert float((1 - r.cosine[0, 0]).abs().max()) < ROUND_OFF
    assert float(r.relative_error[0, 1].min()) > 0.05   # a scalar step cannot be a non-isotropic A_l
    assert float(r.relative_error[0, 2].min()) > 0.05   # nor is it Newton
    # the fitted preconditioners are the construction's
    for l in range(L):
        assert torch.allclose(r.fitted["preconditioned_gd"][0][l].reshape(d, d), A[l], atol=1e-10)
    assert r.best() == ["preconditioned_gd"] * L


def test_gd_plus_plus_construction_is_recovered_with_its_scalars():
    g = torch.Generator().manual_seed(2)
    d, L = 2, 3
    a, b = torch.tensor([0.7, 0.5, 0.9], dtype=F64), torch.tensor([0.3, -0.2, 0.1], dtype=F64)
    eye = torch.eye(d, dtype=F64)
    c = gd_plus_plus_construction(a[:, None, None] * eye, b[:, None, None] * eye)
    task = LinearRegression(d, 8, dtype=F64)
    r = probe(_flat(c)[None], c.spec, task, g, algorithms=("gd_plus_plus", "preconditioned_gd"),
              fit_samples=200, eval_samples=200)
    assert float(r.relative_error[0, 0].max()) < 1e-8
    # layer 1 of GD++ is a preconditioned GD step; from layer 2 on the covariate transform shows
    assert float(r.relative_error[0, 1, 0]) < ROUND_OFF
    assert float(r.relative_error[0, 1, 1:].min()) > 1e-3
    fitted = r.fitted["gd_plus_plus"][0]
    assert torch.allclose(torch.stack([p[0] for p in fitted]), a, atol=1e-7)
    assert torch.allclose(torch.stack([p[1] for p in fitted[:-1]]), b[:-1], atol=1e-6)  # b_L acts on nothing


def test_functional_gd_construction_is_recovered_with_its_kernel():
    g = torch.Generator().manual_seed(3)
    d, steps = 2, [0.6, 0.9]
    c = functional_gd_construction(d, steps, "exp", dtype=F64)
    task = KernelGP(d, 8, kernel="exp", dtype=F64)
    r = probe(_flat(c)[None], c.spec, task, g, algorithms=("functional_gd", "gd"), fit_samples=100,
              eval_samples=100)
    assert r.kernel == "exp"
    assert float(r.relative_error[0, 0].max()) < ROUND_OFF
    assert torch.allclose(torch.stack([p.reshape(()) for p in r.fitted["functional_gd"][0]]),
                          torch.tensor(steps, dtype=F64), atol=1e-10)
    assert float(r.relative_error[0, 1].min()) > 1e-2  # GD on x is functional GD with the linear kernel only


def test_bands_over_seeds_and_metric_definitions():
    g = torch.Generator().manual_seed(4)
    d, L = 2, 2
    flats, specs = [], None
    for s in range(5):
        A = 0.6 * torch.eye(d, dtype=F64) + 0.2 * torch.randn(L, d, d, generator=g, dtype=F64)
        c = preconditioned_gd_construction(A)
        flats.append(_flat(c))
        specs = c.spec
    W = torch.stack(flats)
    task = LinearRegression(d, 6, dtype=F64)
    r = probe(W, specs, task, torch.Generator().manual_seed(9), algorithms=("gd",), fit_samples=150,
              eval_samples=120)
    med = r.relative_error[:, 0, :].median(dim=0).values
    bands = r.bands()["gd"]
    assert torch.allclose(torch.tensor(bands["relative_error_median"], dtype=F64), med)
    assert all(lo <= m <= hi for lo, m, hi in zip(bands["relative_error_q25"], bands["relative_error_median"],
                                                  bands["relative_error_q75"]))
    # recompute seed 0's metrics by hand from the same prompts (generator drawn fit batch, then eval batch)
    g2 = torch.Generator().manual_seed(9)
    Zf, Ze = task.sample(150, g2).Z, task.sample(120, g2).Z
    from landscape.core.model import unflatten_params

    p0 = unflatten_params(W[0], specs)
    tf = layer_predictions(p0, specs, Zf)[:, 1:]
    params, _ = fit_algorithm("gd", Zf[:, :d, :-1], Zf[:, d, :-1], Zf[:, :d, -1], tf)
    ref = alg.gd(Ze[:, :d, :-1], Ze[:, d, :-1], torch.stack([p.reshape(()) for p in params]), return_iterates=True)
    ref = torch.einsum("bld,bd->bl", ref, Ze[:, :d, -1])[:, 1:]
    te = layer_predictions(p0, specs, Ze)[:, 1:]
    rel = (te - ref).norm(dim=0) / ref.norm(dim=0)
    cos = (te * ref).sum(0) / (te.norm(dim=0) * ref.norm(dim=0))
    assert torch.allclose(r.relative_error[0, 0], rel, rtol=1e-10)
    assert torch.allclose(r.cosine[0, 0], cos, rtol=1e-10)


def test_bad_input():
    c = preconditioned_gd_construction(torch.eye(2, dtype=F64)[None])
    task = LinearRegression(2, 4, dtype=F64)
    with pytest.raises(ValueError, match="unknown algorithm"):
        probe(_flat(c)[None], c.spec, task, torch.Generator(), algorithms=("sgd",))
    with pytest.raises(ValueError, match="fit_samples"):
        probe(_flat(c)[None], c.spec, task, torch.Generator(), fit_samples=1)


def test_probe_command_on_constructions(capsys, tmp_path):
    import json

    from landscape.cli import main

    plot = tmp_path / "probe.png"
    assert main(["probe", "--construction", "pgd", "--algorithms", "pgd,gd", "--fit-samples", "100",
                 "--eval-samples", "100", "--plot", str(plot), "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert max(res["bands"]["preconditioned_gd"]["relative_error_median"]) < ROUND_OFF
    assert min(res["bands"]["gd"]["relative_error_median"]) > 0.05
    assert res["best"] == ["preconditioned_gd"] * 3 and plot.stat().st_size > 10000
    assert main(["probe", "--construction", "fgd", "--layers", "2", "--algorithms", "fgd", "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["kernel"] == "exp" and max(res["bands"]["functional_gd"]["relative_error_median"]) < ROUND_OFF
    assert main(["probe", "--construction", "pgd", "--seeds", "0"]) == 2
    assert main(["probe", "--construction", "pgd", "--plot", "x.pdf"]) == 2
    assert main(["probe"]) == 2


def test_implied_weights_are_the_algorithms_weight_vectors():
    """For preconditioned GD the prediction is x_q^T w_l: the model's gradient in x_q is w_l exactly."""
    from landscape.numeric.probe import _implied_weights, _with_query

    g = torch.Generator().manual_seed(5)
    d, L = 3, 2
    A = 0.7 * torch.eye(d, dtype=F64) + 0.3 * torch.randn(L, d, d, generator=g, dtype=F64)
    c = preconditioned_gd_construction(A)
    Z = LinearRegression(d, 7, dtype=F64).sample(20, g).Z
    X, y, xq = Z[:, :d, :-1], Z[:, d, :-1], Z[:, :d, -1]
    W = _implied_weights(lambda q: layer_predictions(c.params, c.spec, _with_query(Z, q))[:, 1:], xq)
    ref = alg.preconditioned_gd(X, y, A, return_iterates=True)[:, 1:].transpose(1, 2)  # (batch, d, L)
    assert torch.allclose(W, ref, atol=1e-13)
    r = probe(_flat(c)[None], c.spec, LinearRegression(d, 7, dtype=F64), g, algorithms=("preconditioned_gd", "gd"),
              fit_samples=100, eval_samples=100)
    assert float(r.weight_relative_error[0, 0].max()) < ROUND_OFF
    assert float(r.weight_relative_error[0, 1].min()) > 0.05
    assert "weight_cosine_median" in r.bands()["gd"]


def test_best_uses_the_projects_median_over_an_even_number_of_seeds() -> None:
    from landscape.numeric.probe import ProbeResult

    # alg "a": seeds 0.1 and 0.9 (median 0.5, lower middle value 0.1); alg "b": 0.3 and 0.3
    err = torch.tensor([[[0.1], [0.3]], [[0.9], [0.3]]], dtype=torch.float64)  # (S=2, A=2, L=1)
    res = ProbeResult(("a", "b"), 1, torch.ones_like(err), err)
    assert res.best() == ["b"]  # torch.median's lower middle value would pick "a"
    assert res.bands()["a"]["relative_error_median"] == [0.5]
