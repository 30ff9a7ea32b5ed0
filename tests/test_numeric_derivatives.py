"""Derivative routes of the numerical layer on the real transformer models (float64).

Every quantity is checked against a second, independent route: the dense Hessian by vmapped HVPs
against ``jacfwd(jacrev)`` and against central differences of the reverse-mode gradient; the
gradient against central differences of the loss; Lanczos and ARPACK eigenvalues against
``torch.linalg.eigvalsh``; per-prompt gradient moments against a Python loop with autograd; the
symmetry generators against the invariance of the loss; the Imhof tail against ``chi2.sf`` and a
simulation.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import pytest
import torch
from scipy.stats import chi2

from landscape.tolerances import FD_RTOL, RTOL, ZERO_EIG
from landscape.theory.families import Problem, get_family
from landscape.core.model import ModelSpec, flatten_params, init_params, num_params, predict, unflatten_params
from landscape.numeric import (
    ExactLoss,
    MonteCarloLoss,
    finite_difference_gradient,
    finite_difference_hessian,
    gradient,
    hessian,
    hessian_blocks,
    hessian_directions,
    hessian_eigenpairs,
    hvp,
    inertia,
    lanczos,
    line_slice,
    plane_slice,
    quadratic_form_sf,
    random_directions,
    symmetry_generators,
    tangent_split,
)
from landscape.views.pictures import plot_slice
from landscape.core.tasks import KernelGP, LinearRegression, random_covariance

F64 = torch.float64
TOL = RTOL[F64]


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def _model(kind: str, seed: int = 0, activation: str = "exp") -> tuple[MonteCarloLoss, torch.Tensor]:
    """A 2-layer model (d = 2, n = 3) at a random point, with a 50-prompt oracle in unequal chunks."""
    g = torch.Generator().manual_seed(seed)
    sig = random_covariance(2, g)
    if kind == "linear":
        spec = ModelSpec.linear(2, 2)
        task = LinearRegression(2, 3, sigma=sig, task_cov="inverse")
    else:
        spec = ModelSpec.kernel(2, 2, activation)
        task = KernelGP(2, 3, "exp", sigma=sig)
    oracle = MonteCarloLoss.from_task(task, spec, 50, g, chunk_size=20)
    flat = flatten_params(init_params(spec, g, std=0.4 if kind == "linear" else 0.2, dtype=F64), spec)
    return oracle, flat


MODELS = [("linear", "linear"), ("kernel", "exp"), ("kernel", "softmax")]


@pytest.mark.parametrize("kind,activation", MODELS)
def test_loss_and_gradient_against_direct_and_finite_differences(kind: str, activation: str) -> None:
    oracle, flat = _model(kind, activation=activation)
    assert oracle.num_chunks == 3
    pred = predict(unflatten_params(flat, oracle.spec), oracle.spec, oracle.Z)
    direct = ((pred - oracle.target) ** 2).mean()
    assert abs(float(oracle(flat)) - float(direct)) <= TOL * abs(float(direct))
    g = gradient(oracle, flat)
    fd = finite_difference_gradient(oracle, flat)
    assert rel(g, fd) < FD_RTOL[F64]
    one_chunk = MonteCarloLoss(oracle.spec, oracle.Z, oracle.target, chunk_size=50)
    assert rel(gradient(one_chunk, flat), g) < TOL


@pytest.mark.parametrize("kind,activation", MODELS)
def test_dense_hessian_three_routes_agree(kind: str, activation: str) -> None:
    oracle, flat = _model(kind, activation=activation, seed=1)
    H = hessian(oracle, flat, vector_chunk=7)
    H2 = hessian(oracle, flat, method="jacfwd")
    assert rel(H, H2) < TOL
    assert float((H - H.T).abs().max()) == 0.0
    Hfd = finite_difference_hessian(oracle, flat)
    assert rel(Hfd, H) < FD_RTOL[F64]
    V = torch.randn(4, flat.numel(), generator=torch.Generator().manual_seed(2), dtype=F64)
    assert rel(hvp(oracle, flat, V), V @ H) < TOL
    assert rel(hvp(oracle, flat, V[0]), H @ V[0]) < TOL


@pytest.mark.parametrize("kind", ["linear", "kernel"])
def test_lanczos_and_eigsh_match_eigvalsh(kind: str) -> None:
    oracle, flat = _model(kind, seed=3)
    oracle = MonteCarloLoss(oracle.spec, oracle.Z, oracle.target, chunk_size=50)
    H = hessian(oracle, flat)
    ev = torch.linalg.eigvalsh(H)
    scale = float(ev.abs().max())
    g = torch.Generator().manual_seed(4)
    top = hessian_eigenpairs(oracle, flat, 3, which="LA", generator=g)
    bot = hessian_eigenpairs(oracle, flat, 3, which="SA", generator=g)
    lm = hessian_eigenpairs(oracle, flat, 2, which="LM", generator=g)
    arp = hessian_eigenpairs(oracle, flat, 3, which="SA", method="eigsh", generator=g)
    assert top.converged and bot.converged
    assert float((top.eigenvalues - ev.flip(0)[:3]).abs().max()) <= 1e-8 * scale
    assert float((bot.eigenvalues - ev[:3]).abs().max()) <= 1e-8 * scale
    assert float((arp.eigenvalues - ev[:3]).abs().max()) <= 1e-8 * scale
    by_mag = ev[ev.abs().argsort(descending=True)][:2]
    assert float((lm.eigenvalues - by_mag).abs().max()) <= 1e-8 * scale
    for res in (top, bot):
        V = res.eigenvectors
        assert float((V.T @ V - torch.eye(3, dtype=F64)).abs().max()) < 1e-10
        resid = (H @ V - V * res.eigenvalues).norm(dim=0)
        assert float(resid.max()) <= 1e-7 * scale


def test_lanczos_breakdown_restart_recovers_repeated_eigenvalues() -> None:
    g = torch.Generator().manual_seed(5)
    Q, _ = torch.linalg.qr(torch.randn(8, 8, generator=g, dtype=F64))
    lam = torch.tensor([4.0, 4.0, 4.0, 1.0, 1.0, -2.0, 0.0, 0.0], dtype=F64)
    A = (Q * lam) @ Q.T
    res = lanczos(lambda v: A @ v, 8, 8, which="SA", generator=g)
    assert torch.allclose(res.eigenvalues, torch.sort(lam).values, atol=1e-12)
    # single-vector Krylov: a repeated eigenvalue shows up once per block (documented limitation),
    # but what is returned is exact: genuine eigenvalues with round-off residuals
    top = lanczos(lambda v: A @ v, 8, 3, which="LA", generator=g)
    assert abs(float(top.eigenvalues[0]) - 4.0) < 1e-12
    V = top.eigenvectors
    assert float((A @ V - V * top.eigenvalues).norm(dim=0).max()) < 1e-12
    assert all(float((lam - e).abs().min()) < 1e-12 for e in top.eigenvalues)


def test_inertia_counts_and_classification() -> None:
    g = torch.Generator().manual_seed(6)
    Q, _ = torch.linalg.qr(torch.randn(5, 5, generator=g, dtype=F64))
    lam = torch.tensor([3.0, 1e-13, -2.0, 0.0, 5.0], dtype=F64)
    In = inertia((Q * lam) @ Q.T)
    assert (In.n_pos, In.n_zero, In.n_neg) == (2, 2, 1)
    assert In.classification == "saddle"
    assert math.isclose(In.tol, ZERO_EIG[F64] * 5.0, rel_tol=1e-12)
    assert inertia(torch.tensor([1.0, 2.0], dtype=F64)).classification == "minimum"
    psd = (Q * torch.tensor([3.0, 0.0, 2.0, 1.0, 5.0], dtype=F64)) @ Q.T
    assert inertia(psd).classification == "degenerate"
    reduced = inertia(psd, symmetries=Q[:, 1:2])
    assert reduced.n_symmetry == 1 and reduced.classification == "minimum"
    assert (reduced.reduced.n_pos, reduced.reduced.n_zero) == (4, 0)


@pytest.mark.parametrize("kind,activation", [("linear", "linear"), ("kernel", "exp"), ("kernel", "rbf"),
                                             ("kernel", "linear")])
def test_symmetry_generators_leave_the_loss_invariant(kind: str, activation: str) -> None:
    oracle, flat = _model(kind, activation=activation, seed=7)
    G = symmetry_generators(oracle.spec, flat)
    assert G.shape[1] > 0
    grad = gradient(oracle, flat)
    # directional derivatives along symmetry generators vanish for every prompt
    per_prompt = oracle.per_prompt_gradients(flat, 0, oracle.samples)
    scale = float(per_prompt.norm(dim=1).max() * G.norm(dim=0).max())
    assert float((per_prompt @ G).abs().max()) <= 1e-12 * scale
    assert float((grad @ G).abs().max()) <= 1e-12 * scale


def test_hessian_blocks_and_tangent_split_against_family_hessian() -> None:
    g = torch.Generator().manual_seed(8)
    sig = random_covariance(2, g)
    prob = Problem(d=2, layers=2, n=4, sigma=sig, attention="linear")
    fam = get_family("pgd-relaxed", prob)
    oracle = MonteCarloLoss.from_task(LinearRegression(2, 4, sigma=sig, task_cov="inverse"), prob.spec, 40, g)
    s = torch.tensor([0.3, -0.2, 0.5, 0.1], dtype=F64)
    theta = fam.flat(s)
    H = hessian(oracle, theta)
    blocks = hessian_blocks(H, prob.spec)
    assert set(blocks) == {(a, b) for a in ("layer0", "layer1") for b in ("layer0", "layer1")}
    top = torch.cat([blocks[("layer0", "layer0")], blocks[("layer0", "layer1")]], 1)
    bottom = torch.cat([blocks[("layer1", "layer0")], blocks[("layer1", "layer1")]], 1)
    assert torch.equal(torch.cat([top, bottom], 0), H)
    by_param = hessian_blocks(H, prob.spec, by="param")
    assert by_param[("layer1.head0.Q", "layer0.head0.P")].shape == (9, 9)
    # the family is linear in its scalars: d²f(θ(s))/ds² = Jᵀ H J
    J = fam.tangent_basis(s)
    Hs = torch.func.hessian(lambda v: oracle(fam.flat(v)))(s)
    assert rel(J.T @ H @ J, Hs) < TOL
    split = tangent_split(H, J)
    U, N = split.tangent_basis, split.normal_basis
    assert U.shape == (36, 4) and N.shape == (36, 32)
    assert float((torch.cat([U, N], 1).T @ torch.cat([U, N], 1) - torch.eye(36, dtype=F64)).abs().max()) < 1e-12
    assert float((N.T @ J).abs().max()) < 1e-12
    assert rel(split.H_tangent, U.T @ H @ U) < TOL
    # the tangent block has the spectrum of the family Hessian in orthonormal coordinates
    Lc = torch.linalg.cholesky(J.T @ J)
    Linv = torch.linalg.inv(Lc)
    assert rel(torch.linalg.eigvalsh(split.H_tangent), torch.linalg.eigvalsh(Linv @ Hs @ Linv.T)) < 1e-9


def test_gradient_moments_against_a_loop() -> None:
    oracle, flat = _model("kernel", seed=9)
    mom = oracle.gradient_moments(flat)
    rows = []
    for i in range(oracle.samples):
        x = flat.clone().requires_grad_(True)
        p = predict(unflatten_params(x, oracle.spec), oracle.spec, oracle.Z[i:i + 1])
        ((p - oracle.target[i:i + 1]) ** 2).sum().backward()
        rows.append(x.grad)
    G = torch.stack(rows)
    assert rel(mom.mean, G.mean(0)) < TOL
    assert rel(mom.cov, torch.cov(G.T)) < 1e-9
    assert rel(mom.mean, gradient(oracle, flat)) < TOL
    vals = ((predict(unflatten_params(flat, oracle.spec), oracle.spec, oracle.Z) - oracle.target) ** 2)
    assert math.isclose(mom.loss_se, float(vals.std() / math.sqrt(50)), rel_tol=1e-9)


def test_exact_loss_callable_quadratic_closed_form() -> None:
    spec = ModelSpec.linear(1, 1)
    P = num_params(spec)
    g = torch.Generator().manual_seed(10)
    M = torch.randn(P, P, generator=g, dtype=F64)
    A = M @ M.T - 3 * torch.eye(P, dtype=F64)
    b = torch.randn(P, generator=g, dtype=F64)

    def quad(params: dict[str, torch.Tensor]) -> torch.Tensor:
        x = flatten_params(params, spec)
        return 0.5 * x @ A @ x + b @ x

    ex = ExactLoss(spec, quad)
    x = torch.randn(P, generator=g, dtype=F64)
    assert rel(gradient(ex, x), A @ x + b) < TOL
    assert rel(hessian(ex, x), A) < TOL
    In = inertia(hessian(ex, x))
    ev = torch.linalg.eigvalsh(A)
    assert In.n_neg == int((ev < 0).sum()) and In.n_pos == int((ev > 0).sum())


def test_quadratic_form_tail_against_chi2_and_simulation() -> None:
    lam = torch.ones(5, dtype=F64) * 2.0
    for x in (1.0, 8.0, 25.0):
        assert abs(quadratic_form_sf(x, lam) - chi2.sf(x / 2.0, 5)) < 1e-8
        assert abs(quadratic_form_sf(x, lam, method="satterthwaite") - chi2.sf(x / 2.0, 5)) < 1e-12
    w = torch.tensor([3.0, 1.0, 0.5, 0.1], dtype=F64)
    g = torch.Generator().manual_seed(11)
    sims = (torch.randn(100_000, 4, generator=g, dtype=F64) ** 2) @ w
    for x in (2.0, 6.0, 15.0):
        p_sim = float((sims > x).double().mean())
        se = math.sqrt(p_sim * (1 - p_sim) / sims.numel())
        assert abs(quadratic_form_sf(x, w) - p_sim) < 4 * se + 1e-6


def test_slices_match_direct_evaluations_and_plot(tmp_path) -> None:
    oracle, flat = _model("linear", seed=12)
    g = torch.Generator().manual_seed(13)
    other = flat + 0.1 * torch.randn(flat.shape, generator=g, dtype=F64)
    line = line_slice(oracle, flat, end=other, alphas=torch.linspace(0, 1, 5, dtype=F64))
    assert abs(float(line.losses[0]) - float(oracle(flat))) <= TOL * float(oracle(flat))
    assert abs(float(line.losses[-1]) - float(oracle(other))) <= TOL * float(oracle(other))
    mid = oracle(flat + 0.5 * (other - flat))
    assert abs(float(line.losses[2]) - float(mid)) <= TOL * float(mid)
    dirs = random_directions(oracle.spec, flat, g, 2)
    rows = dirs.reshape(2, -1, oracle.spec.token_dim)
    th_rows = flat.reshape(-1, oracle.spec.token_dim)
    assert rel(rows.norm(dim=2), th_rows.norm(dim=1).expand(2, -1)) < TOL
    plane = plane_slice(oracle, flat, dirs[0], dirs[1], alphas=[-1.0, 0.0, 0.5], betas=[0.0, 1.0])
    assert plane.losses.shape == (3, 2)
    expected = oracle(flat + 0.5 * dirs[0] + 1.0 * dirs[1])
    assert abs(float(plane.losses[2, 1]) - float(expected)) <= TOL * float(expected)
    assert abs(float(plane.losses[1, 0]) - float(oracle(flat))) <= TOL * float(oracle(flat))
    files = plot_slice(plane, tmp_path / "plane") + plot_slice(line, tmp_path / "line.png")
    assert sorted(p.name for p in files) == ["line.png", "line.svg", "plane.png", "plane.svg"]
    for p in files:
        if p.suffix == ".png":
            assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        else:
            assert ET.parse(p).getroot().tag.endswith("svg")


def test_slice_along_top_eigenvector_has_the_eigenvalue_as_curvature() -> None:
    oracle, flat = _model("kernel", seed=14)
    oracle = MonteCarloLoss(oracle.spec, oracle.Z, oracle.target, chunk_size=50)
    g = torch.Generator().manual_seed(15)
    v = hessian_directions(oracle, flat, 1, generator=g)[0]
    lam = float(hessian_eigenpairs(oracle, flat, 1, generator=torch.Generator().manual_seed(15)).eigenvalues[0])
    h = 1e-3
    sl = line_slice(oracle, flat, direction=v, alphas=[-h, 0.0, h], label="top Hessian eigenvector")
    curv = float(sl.losses[0] - 2 * sl.losses[1] + sl.losses[2]) / h**2
    assert abs(curv - lam) < 1e-4 * abs(lam)


def test_bad_inputs_are_rejected_clearly() -> None:
    oracle, flat = _model("linear")
    with pytest.raises(ValueError, match="shape"):
        gradient(oracle, flat[:-1])
    with pytest.raises(ValueError, match="method"):
        hessian(oracle, flat, method="magic")
    with pytest.raises(ValueError, match="which"):
        hessian_eigenpairs(oracle, flat, 1, which="XX")
    with pytest.raises(ValueError, match="exactly one"):
        line_slice(oracle, flat)
    with pytest.raises(TypeError, match="spec"):
        gradient(lambda p: p, flat)
    with pytest.raises(ValueError, match="target"):
        MonteCarloLoss(oracle.spec, oracle.Z, oracle.target[:-1])
