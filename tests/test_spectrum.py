"""Curvature at a point (landscape.numeric.spectrum) against dense float64 references and known spectra."""

from __future__ import annotations

import math

import pytest
import torch

from landscape.core.model import ModelSpec, flatten_params, init_params, num_params, unflatten_params
from landscape.core.tasks import LinearRegression
from landscape.numeric.derivatives import hessian, orthonormal_complement, symmetry_generators
from landscape.numeric.oracles import MonteCarloLoss
from landscape.numeric.spectrum import (
    block_spectra,
    eigenpairs,
    hessian_operator,
    hutchinson_trace,
    hutchpp_trace,
    inertia_modulo_symmetries,
    matrix_operator,
    parameter_groups,
    spectral_density,
)

F64 = torch.float64


def _sym(P: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(P, P, generator=g, dtype=F64)
    return (A + A.T) / 2


@pytest.fixture(scope="module")
def model_point():
    spec = ModelSpec.linear(d=2, layers=2)
    task = LinearRegression(2, 6, dtype=F64)
    oracle = MonteCarloLoss.from_task(task, spec, 256, torch.Generator().manual_seed(1))
    params = init_params(spec, torch.Generator().manual_seed(2), std=0.4, dtype=F64)
    flat = flatten_params(params, spec)
    return spec, oracle, flat, hessian(oracle, flat)


# ---------------------------------------------------------------------- eigenpairs
@pytest.mark.parametrize("which", ["LA", "SA", "LM"])
def test_eigenpairs_match_dense_eigh_on_model_hessian(model_point, which):
    spec, oracle, flat, H = model_point
    ev, U = torch.linalg.eigh(H)
    order = {"LA": torch.argsort(ev, descending=True), "SA": torch.argsort(ev),
             "LM": torch.argsort(ev.abs(), descending=True)}[which][:4]
    res = eigenpairs(hessian_operator(oracle, flat), 4, which=which, generator=torch.Generator().manual_seed(3))
    scale = float(ev.abs().max())
    assert torch.allclose(res.eigenvalues, ev[order], rtol=0, atol=1e-9 * scale)
    # reported residuals are the true ones, recomputed against the dense Hessian here
    dense_res = (H @ res.eigenvectors - res.eigenvectors * res.eigenvalues).norm(dim=0)
    assert torch.allclose(res.residuals, dense_res, rtol=1e-6, atol=1e-12 * scale)
    assert res.all_converged and bool((res.residuals <= res.tol).all())
    # eigenvectors agree with eigh's up to sign
    assert torch.allclose((U[:, order] * res.eigenvectors).sum(0).abs(), torch.ones(4, dtype=F64), atol=1e-6)


def test_repeated_eigenvalues_are_found_with_their_multiplicity():
    """One Lanczos run sees one copy of each distinct eigenvalue; deflation finds every copy."""
    g = torch.Generator().manual_seed(8)
    Q, _ = torch.linalg.qr(torch.randn(30, 30, generator=g, dtype=F64))
    lam = torch.tensor([3.0] * 3 + [1.0] * 2 + [0.0] * 20 + [-2.0] * 5, dtype=F64)
    H = Q @ torch.diag(lam) @ Q.T
    H = (H + H.T) / 2
    top = eigenpairs(H, 4, which="LA", generator=g)
    assert torch.allclose(top.eigenvalues, torch.tensor([3.0, 3, 3, 1], dtype=F64), atol=1e-10)
    bottom = eigenpairs(H, 7, which="SA", generator=g)
    assert torch.allclose(bottom.eigenvalues, torch.tensor([-2.0] * 5 + [0.0] * 2, dtype=F64), atol=1e-10)
    assert top.all_converged and bottom.all_converged
    V = bottom.eigenvectors
    assert torch.allclose(V.T @ V, torch.eye(7, dtype=F64), atol=1e-10)


def test_unconverged_pairs_are_flagged():
    H = _sym(80, 0)
    res = eigenpairs(H, 3, generator=torch.Generator().manual_seed(0), max_iter=5)
    dense_res = (H @ res.eigenvectors - res.eigenvectors * res.eigenvalues).norm(dim=0)
    assert torch.allclose(res.residuals, dense_res, rtol=1e-10)
    assert not res.all_converged and float(res.residuals.max()) > 1e-2  # 5 steps cannot resolve 80 dims


def test_restricted_operator_is_the_compressed_matrix(model_point):
    spec, oracle, flat, H = model_point
    B = torch.randn(num_params(spec), 7, generator=torch.Generator().manual_seed(4), dtype=F64)
    U, _ = orthonormal_complement(B)
    ref = torch.linalg.eigvalsh(U.T @ H @ U)
    op = hessian_operator(oracle, flat, basis=B)
    assert op.dim == 7
    assert torch.allclose(op.dense(), U.T @ H @ U, atol=1e-12 * float(H.abs().max()))
    res = eigenpairs(op, 2, which="SA", generator=torch.Generator().manual_seed(5))
    assert torch.allclose(res.eigenvalues, ref[:2], atol=1e-10 * float(ref.abs().max()))


def test_matrix_operator_rejects_non_symmetric():
    with pytest.raises(ValueError, match="not symmetric"):
        matrix_operator(torch.tensor([[1.0, 2.0], [0.0, 1.0]], dtype=F64))
    with pytest.raises(ValueError, match="k = 9"):
        eigenpairs(_sym(5, 1), 9)


# ---------------------------------------------------------------------- traces
def _coverage(estimates: list, truth: float) -> float:
    """Fraction of the 95% Student-t intervals that contain the truth."""
    return sum(lo <= truth <= hi for lo, hi in (e.interval(0.95) for e in estimates)) / len(estimates)


def test_hutchinson_is_unbiased_and_its_se_calibrated():
    H = _sym(40, 7) + 3 * torch.eye(40, dtype=F64)
    tr = float(torch.trace(H))
    g = torch.Generator().manual_seed(11)
    ests = [hutchinson_trace(H, 40, g) for _ in range(400)]
    vals = torch.tensor([e.value for e in ests], dtype=F64)
    # Rademacher variance of one probe: 2 (||H||_F^2 - sum_i H_ii^2)
    var1 = 2 * (float((H**2).sum()) - float((torch.diagonal(H) ** 2).sum()))
    assert abs(float(vals.mean()) - tr) <= 4 * math.sqrt(var1 / 40 / 400)
    assert float(vals.var()) == pytest.approx(var1 / 40, rel=0.2)
    mean_se2 = sum(e.se**2 for e in ests) / len(ests)
    assert mean_se2 == pytest.approx(var1 / 40, rel=0.1)
    cov = _coverage(ests, tr)  # nominal 95%; 400 seeds: binomial sd 0.011
    assert 0.92 <= cov <= 0.98, cov


def test_hutchpp_exact_on_low_rank_and_calibrated_and_better_than_hutchinson():
    g = torch.Generator().manual_seed(12)
    P = 60
    Q, _ = torch.linalg.qr(torch.randn(P, P, generator=g, dtype=F64))
    # rank 5: the sketch of 10 vectors captures it; the remainder vanishes
    low = Q[:, :5] @ torch.diag(torch.tensor([5.0, 4, 3, 2, 1], dtype=F64)) @ Q[:, :5].T
    e = hutchpp_trace(low, 30, g)
    assert e.value == pytest.approx(15.0, abs=1e-11) and e.se < 1e-11
    # decaying spectrum lambda_i = i^-1.5: Hutch++ error << Hutchinson's at the same budget
    lam = torch.arange(1, P + 1, dtype=F64) ** -1.5
    H = Q @ torch.diag(lam) @ Q.T
    tr = float(lam.sum())
    pp = [hutchpp_trace(H, 30, g) for _ in range(300)]
    hu = [hutchinson_trace(H, 30, g) for _ in range(300)]
    rmse = lambda es: math.sqrt(sum((x.value - tr) ** 2 for x in es) / len(es))  # noqa: E731
    assert rmse(pp) < 0.3 * rmse(hu)
    assert all(x.matvecs == 30 for x in pp)
    cov = _coverage(pp, tr)  # nominal 95%, 10 remainder probes; 300 seeds: binomial sd 0.013
    assert 0.91 <= cov <= 0.985, cov


# ---------------------------------------------------------------------- spectral density
def test_slq_gauss_quadrature_moments_are_exact_per_probe():
    """Per probe, m Lanczos steps reproduce v^T H^k v for k <= 2m - 1 (Gauss quadrature), not beyond."""
    H = _sym(50, 3)
    full = spectral_density(H, torch.Generator().manual_seed(5), probes=3, steps=50)   # exact measure mu_v
    m = 6
    part = spectral_density(H, torch.Generator().manual_seed(5), probes=3, steps=m)    # same probes
    scale = float(torch.linalg.eigvalsh(H).abs().max())
    for k in range(2 * m):
        a = (full.weights * full.nodes**k).sum(1)
        b = (part.weights * part.nodes**k).sum(1)
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-9 * scale**k), k
    k = 2 * m + 2
    assert not torch.allclose((full.weights * full.nodes**k).sum(1), (part.weights * part.nodes**k).sum(1),
                              rtol=1e-6)
    # the exact measure's nodes carrying weight are H's eigenvalues
    ev = torch.linalg.eigvalsh(H)
    heavy = full.nodes[full.weights > 1e-8]
    assert float((heavy[:, None] - ev[None]).abs().min(1).values.max()) < 1e-9 * scale


def _mp_cdf(x: torch.Tensor, c: float) -> torch.Tensor:
    """Marchenko-Pastur distribution function (ratio c < 1, unit variance) by quadrature of its density."""
    lo, hi = (1 - math.sqrt(c)) ** 2, (1 + math.sqrt(c)) ** 2
    t = torch.linspace(lo, hi, 20001, dtype=F64)
    dens = torch.sqrt(torch.clamp((hi - t) * (t - lo), min=0)) / (2 * math.pi * c * t)
    cdf = torch.cumulative_trapezoid(dens, t)
    cdf = torch.cat([cdf.new_zeros(1), cdf]) / cdf[-1]
    idx = torch.searchsorted(t, x.clamp(lo, hi))
    return cdf[idx.clamp(max=t.numel() - 1)]


def test_slq_recovers_marchenko_pastur():
    """Wishart W = X X^T / n, X p x n standard Gaussian, p/n = 1/4: the SLQ distribution function is
    within 0.03 (Kolmogorov distance) of the dense eigenvalues' and within 0.04 of Marchenko-Pastur."""
    p, n, c = 400, 1600, 0.25
    g = torch.Generator().manual_seed(21)
    X = torch.randn(p, n, generator=g, dtype=F64)
    W = X @ X.T / n
    sd = spectral_density(W, g, probes=20, steps=40)
    lo, hi = (1 - math.sqrt(c)) ** 2, (1 + math.sqrt(c)) ** 2
    x = torch.linspace(lo - 0.05, hi + 0.05, 400, dtype=F64)
    ev = torch.linalg.eigvalsh(W)
    emp = (ev[None, :] <= x[:, None]).to(F64).mean(1)
    slq = sd.cdf(x)
    assert float((slq - emp).abs().max()) < 0.03
    assert float((slq - _mp_cdf(x, c)).abs().max()) < 0.04
    # the smoothed density integrates to one and peaks inside the MP support
    grid = torch.linspace(0, 3, 3001, dtype=F64)
    dens = sd.density(grid, bandwidth=0.05)
    assert float(torch.trapezoid(dens, grid)) == pytest.approx(1.0, abs=1e-3)
    assert lo < float(grid[dens.argmax()]) < hi
    # trace estimate from the quadrature: within 4 standard errors of the truth
    tr, se = sd.expectation(lambda t: t)
    assert abs(tr * p - float(torch.trace(W))) <= 4 * se * p


# ---------------------------------------------------------------------- blocks and symmetries
def test_block_spectra_by_layer_kind_and_tangent(model_point):
    spec, oracle, flat, H = model_point
    groups = parameter_groups(spec, "kind")
    assert set(groups) == {"P", "Q"} and sum(map(len, groups.values())) == num_params(spec)
    blocks = {b.name: b for b in block_spectra(H, spec, by="kind")}
    ix = torch.tensor(groups["Q"])
    assert torch.allclose(blocks["Q"].eigenvalues, torch.linalg.eigvalsh(H[ix][:, ix]), atol=1e-12)
    layers = block_spectra(H, spec, by="layer")
    assert [b.name for b in layers] == ["layer0", "layer1"] and all(b.size == 18 for b in layers)
    # the trace splits over any partition into diagonal blocks
    assert sum(float(b.eigenvalues.sum()) for b in layers) == pytest.approx(float(torch.trace(H)), rel=1e-12)
    T = torch.randn(num_params(spec), 3, generator=torch.Generator().manual_seed(0), dtype=F64)
    tan, nor = block_spectra(H, by="tangent", tangent=T)
    assert (tan.size, nor.size) == (3, num_params(spec) - 3)
    assert float(tan.eigenvalues.sum() + nor.eigenvalues.sum()) == pytest.approx(float(torch.trace(H)), rel=1e-10)
    with pytest.raises(ValueError, match="tangent"):
        block_spectra(H, by="tangent")


def test_inertia_modulo_symmetries_removes_the_rescaling_direction():
    """At a minimum of one linear head, (P, Q) -> (e^t P, e^-t Q) leaves the loss constant: the
    Hessian kills the generator, and projecting it out removes exactly one zero eigenvalue."""
    spec = ModelSpec.linear(d=2, layers=1)
    task = LinearRegression(2, 8, dtype=F64)
    oracle = MonteCarloLoss.from_task(task, spec, 512, torch.Generator().manual_seed(3))
    flat = flatten_params(init_params(spec, torch.Generator().manual_seed(4), std=0.5, dtype=F64), spec)
    # a minimum: full Newton-type descent by L-BFGS in float64
    x = flat.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([x], lr=1, max_iter=2000, tolerance_grad=1e-13, tolerance_change=0,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = oracle(x)
        loss.backward()
        return loss

    opt.step(closure)
    theta = x.detach()
    H = hessian(oracle, theta)
    G = symmetry_generators(spec, theta)
    assert float((H @ G).norm()) < 1e-6 * float(H.norm()) * float(G.norm())
    res = inertia_modulo_symmetries(oracle, theta)
    assert res.n_symmetry == 1 and res.n_neg == 0
    assert res.reduced is not None and res.reduced.n_zero == res.n_zero - 1
    U, N = orthonormal_complement(G)
    assert torch.allclose(res.reduced.eigenvalues, torch.linalg.eigvalsh(N.T @ H @ N), atol=1e-12)
    # same from the dense Hessian
    assert inertia_modulo_symmetries(H, theta, spec=spec).reduced.n_zero == res.reduced.n_zero


# ---------------------------------------------------------------------- cross-library
def test_hessian_agrees_with_curvlinops(model_point):
    curvlinops = pytest.importorskip("curvlinops", reason="curvlinops-for-pytorch is not installed")
    from landscape.core.model import predict

    spec, oracle, flat, H = model_point
    names = list(unflatten_params(flat, spec))

    class Wrapped(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.ParameterList(
                [torch.nn.Parameter(v.clone()) for v in unflatten_params(flat, spec).values()])

        def forward(self, Z: torch.Tensor) -> torch.Tensor:
            return predict(dict(zip(names, self.w)), spec, Z)

    model = Wrapped()
    data = [(oracle.Z, oracle.target)]
    op = curvlinops.HessianLinearOperator(model, torch.nn.MSELoss(reduction="mean"), list(model.parameters()), data,
                                          check_deterministic=False)
    E = torch.eye(num_params(spec), dtype=F64)
    Hc = torch.stack([op @ E[:, j] for j in range(E.shape[1])], dim=1)
    Hc = torch.as_tensor(Hc, dtype=F64)
    assert float((Hc - H).abs().max()) <= 1e-12 * float(H.abs().max())


# ---------------------------------------------------------------------- command
def test_hessian_command_at_a_family_point_matches_dense(capsys, tmp_path):
    import json

    from landscape.cli import main
    from landscape.numeric.oracles import exact_loss_oracle
    from landscape.theory.families import Problem, get_family

    plot = tmp_path / "density.png"
    argv = ["hessian", "--family", "pgd", "--d", "2", "--n", "8", "--point", "a0=0.7", "--k", "3", "--json"]
    assert main(argv + ["--plot", str(plot)]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    problem = Problem(d=2, layers=1, n=8, attention="linear")
    fam = get_family("pgd", problem)
    oracle = exact_loss_oracle(problem, LinearRegression(2, 8, dtype=F64))
    theta = fam.flat(torch.tensor([0.7], dtype=F64))
    ev = torch.linalg.eigvalsh(hessian(oracle, theta))
    assert res["loss"] == pytest.approx(float(oracle(theta)), rel=1e-12)
    assert res["top"]["eigenvalues"] == pytest.approx(ev.flip(0)[:3].tolist(), rel=1e-9)
    assert res["bottom"]["eigenvalues"] == pytest.approx(ev[:3].tolist(), abs=1e-9 * float(ev.abs().max()))
    assert all(res["top"]["converged"]) and res["exact_trace"] == pytest.approx(float(ev.sum()), rel=1e-12)
    lo, hi = res["trace"]["ci95"]
    assert lo - 1e-9 <= float(ev.sum()) <= hi + 1e-9
    assert res["inertia"]["n_symmetry"] >= 1
    assert [b["size"] for b in res["blocks"]["tangent"]] == [1, num_params(fam.spec) - 1]
    assert plot.stat().st_size > 10000
    # the matrix-free route gives the same numbers
    assert main(argv + ["--dense-max", "0", "--probes", "1", "--steps", "3", "--matvecs", "4"]) == 0
    res2 = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res2["top"]["eigenvalues"] == pytest.approx(res["top"]["eigenvalues"], rel=1e-9)
    assert "exact_trace" not in res2


def test_hessian_command_bad_input(capsys, tmp_path):
    from landscape.cli import main

    assert main(["hessian", "--family", "pgd", "--run", str(tmp_path)]) == 2
    assert "exactly one of --run" in capsys.readouterr().err
    assert main(["hessian", "--family", "pgd", "--plot", str(tmp_path / "x.pdf")]) == 2
    assert ".png or .svg" in capsys.readouterr().err
    assert main(["hessian", "--run", str(tmp_path)]) == 2
    assert "not a run store" in capsys.readouterr().err
    assert main(["hessian", "--family", "pgd", "--blocks", "rows"]) == 2
    assert main(["hessian", "--family", "pgd", "--k", "0"]) == 2
