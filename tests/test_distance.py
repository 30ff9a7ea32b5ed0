"""Tests of landscape/experiment/distance.py.

References: brute-force minimisation over alpha and the eigenvalue formula for Dist(M, I); family
points transformed by known symmetries (and signs) plus known noise, whose scalars, group
parameters and residual the projection must recover; an independent linear least-squares solve
for projections without symmetries; predictions computed seed by seed with landscape.core.model.predict.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import sympy
import torch
from scipy.optimize import minimize_scalar

from landscape.tolerances import ALGORITHM_RTOL, CONSTRUCTION_RTOL, RTOL
from landscape.experiment.distance import (
    Projection,
    attention_matrices,
    dist_to_identity,
    extract_blocks,
    identity_coefficient,
    identity_distances,
    prediction_gap,
    project_onto_family,
    project_stacked,
    whiten,
)
from landscape.theory.families import Problem, family_from_function, get_family
from landscape.core.model import ModelSpec, flatten_params, init_params, predict
from landscape.core.tasks import LinearRegression, random_covariance, sqrtm_psd

F64 = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------- Dist(M, I)
def test_dist_to_identity_matches_brute_force_minimisation() -> None:
    g = _gen(0)
    M = torch.randn(7, 4, 4, generator=g, dtype=F64) + 0.3 * torch.eye(4, dtype=F64)
    dist = dist_to_identity(M)
    alpha = identity_coefficient(M)
    for i in range(M.shape[0]):
        Mi = M[i].numpy()
        f = lambda a: np.linalg.norm(Mi - a * np.eye(4)) / np.linalg.norm(Mi)  # noqa: E731
        res = minimize_scalar(f, bracket=(-5, 5), tol=1e-14)
        assert abs(float(dist[i]) - res.fun) < 1e-12
        assert abs(float(alpha[i]) - res.x) < 1e-6  # the argmin of a flat-bottomed quadratic
    assert dist.shape == (7,)


def test_dist_to_identity_eigenvalue_formula_scale_invariance_and_zero() -> None:
    # For symmetric M with eigenvalues lam: Dist^2 = sum (lam - mean)^2 / sum lam^2.
    g = _gen(1)
    sigma = random_covariance(5, g)
    M = torch.linalg.inv(sigma)
    lam = torch.linalg.eigvalsh(M)
    ref = math.sqrt(float(((lam - lam.mean()) ** 2).sum() / (lam**2).sum()))
    # Ahn's spectrum (1, 1, 1/4, 1/16, 1): Sigma^{-1} has eigenvalues (1, 1, 4, 16, 1)
    lam_ref = torch.tensor([1.0, 1.0, 4.0, 16.0, 1.0], dtype=F64)
    ref2 = math.sqrt(float(((lam_ref - lam_ref.mean()) ** 2).sum() / (lam_ref**2).sum()))
    assert abs(float(dist_to_identity(M)) - ref) < RTOL[F64]
    assert abs(ref - ref2) < RTOL[F64]
    for c in (3.0, -0.25):
        assert abs(float(dist_to_identity(c * M)) - ref) < RTOL[F64]
    assert float(dist_to_identity(2.5 * torch.eye(3, dtype=F64))) == 0.0
    assert torch.isnan(dist_to_identity(torch.zeros(3, 3, dtype=F64)))


def test_dist_to_identity_vmaps() -> None:
    M = torch.randn(5, 3, 3, generator=_gen(2), dtype=F64)
    out = torch.func.vmap(dist_to_identity)(M)
    assert torch.allclose(out, dist_to_identity(M), rtol=RTOL[F64], atol=0)


def test_dist_to_identity_rejects_non_square() -> None:
    with pytest.raises(ValueError, match="square"):
        dist_to_identity(torch.zeros(3, 4, dtype=F64))
    with pytest.raises(TypeError):
        dist_to_identity(np.eye(3))  # type: ignore[arg-type]


# ---------------------------------------------------------------------- blocks and whitening
def _pgd_point(d: int, L: int, sigma: torch.Tensor, values: list[float]):
    fam = get_family("pgd", Problem(d=d, layers=L, n=10, sigma=sigma, attention="linear"))
    return fam, fam.params(torch.tensor(values, dtype=F64))


def test_whitened_distance_vanishes_on_pgd_family_and_raw_does_not() -> None:
    """Ahn et al. Thm 3 family A_l = a_l Sigma^{-1}: Sigma^{1/2} A_l Sigma^{1/2} = a_l I exactly."""
    sigma = random_covariance(5, _gen(3))
    fam, theta = _pgd_point(5, 3, sigma, [0.7, -0.4, 1.3])
    stacked = {k: v.unsqueeze(0) for k, v in theta.items()}
    ids = identity_distances(stacked, fam.spec, sigma)
    lam = torch.tensor([1.0, 1.0, 4.0, 16.0, 1.0], dtype=F64)
    raw_ref = math.sqrt(float(((lam - lam.mean()) ** 2).sum() / (lam**2).sum()))
    assert ids.whitened.shape == (1, 3, 1)
    assert float(ids.whitened.abs().max()) < 1e-12
    assert torch.allclose(ids.raw, torch.full_like(ids.raw, raw_ref), rtol=1e-10, atol=0)
    assert torch.allclose(ids.alpha[0, :, 0], torch.tensor([0.7, -0.4, 1.3], dtype=F64), rtol=1e-12, atol=0)
    A = attention_matrices(stacked, fam.spec)
    assert torch.allclose(A[0, 1, 0], -theta["layer1.head0.Q"][:5, :5], rtol=0, atol=0)
    half = sqrtm_psd(sigma)
    assert torch.allclose(whiten(A, sigma)[0, 2, 0], half @ A[0, 2, 0] @ half, rtol=1e-14, atol=1e-14)


def test_kernel_attention_matrix_is_BtC_and_fgd_whitens_to_identity() -> None:
    sigma = random_covariance(4, _gen(4))
    fam = get_family("fgd", Problem(d=4, layers=2, n=6, sigma=sigma, attention="kernel", activations=("exp",)))
    theta = fam.params(torch.tensor([0.5, 1.5, -2.0, 0.8, 0.3, 1.1], dtype=F64))
    M = attention_matrices(theta, fam.spec)
    B, C = theta["layer1.head0.B"], theta["layer1.head0.C"]
    assert torch.allclose(M[1, 0], B[:, :4].T @ C[:, :4], rtol=0, atol=0)
    ids = identity_distances(theta, fam.spec, sigma)
    assert float(ids.whitened.abs().max()) < 1e-12
    assert float(ids.raw.min()) > 0.1


def test_extract_blocks_shapes_and_errors() -> None:
    spec = ModelSpec.kernel(3, 2, ["exp", "linear"])
    p = init_params(spec, _gen(5), seeds=4, dtype=F64)
    blk = extract_blocks(p, spec, "V", slice(3, 4), slice(3, 4))
    assert blk.shape == (4, 2, 2, 1, 1)
    assert torch.equal(blk[2, 1, 0, 0, 0], p["layer1.head0.V"][2, 3, 3])
    with pytest.raises(ValueError, match="no parameter 'Q'"):
        extract_blocks(p, spec, "Q")


# ---------------------------------------------------------------------- projection
def _scale_pair(theta: dict, l: int, c: float) -> dict:
    out = dict(theta)
    out[f"layer{l}.head0.P"] = theta[f"layer{l}.head0.P"] * c
    out[f"layer{l}.head0.Q"] = theta[f"layer{l}.head0.Q"] / c
    return out


def test_projection_recovers_scalars_symmetry_and_sign_from_noisy_transformed_point() -> None:
    sigma = random_covariance(5, _gen(6))
    fam, theta = _pgd_point(5, 3, sigma, [0.7, -0.4, 0.3])
    moved = _scale_pair(_scale_pair(theta, 0, -math.exp(0.5)), 1, math.exp(-0.3))  # layer 0 sign-flipped
    g = _gen(7)
    eps = 1e-6
    noise = {k: eps * torch.randn(v.shape, generator=g, dtype=F64) for k, v in moved.items()}
    noisy = {k: moved[k] + noise[k] for k in moved}
    proj = project_onto_family(noisy, fam)
    assert proj.names == ("a0", "a1", "a2")
    for name, ref in zip(proj.names, (0.7, -0.4, 0.3)):
        assert abs(proj.values[name] - ref) < 100 * eps
    t = proj.symmetry_t
    assert abs(t["PQ-scale@layer0.head0"] - 0.5) < 100 * eps
    assert abs(t["PQ-scale@layer1.head0"] + 0.3) < 100 * eps
    assert abs(t["PQ-scale@layer2.head0"]) < 100 * eps
    assert proj.signs == {"PQ-scale@layer0.head0": -1, "PQ-scale@layer1.head0": 1, "PQ-scale@layer2.head0": 1}
    assert abs(proj.scale("PQ-scale@layer0.head0") + math.exp(0.5)) < 100 * eps
    # The residual is the noise minus its projection on the 6-dim tangent space of the orbit:
    # between sqrt(1 - 6/P) and 1 times |noise| / |theta| (P = 216 entries), to first order.
    nn = float(flatten_params(noise, fam.spec).norm()) / float(flatten_params(noisy, fam.spec).norm())
    assert 0.9 * nn < proj.distance <= 1.0001 * nn
    assert proj.null_dim == 0 and proj.converged
    # the projected point is the transformed family point
    for k in moved:
        assert torch.allclose(proj.point[k], moved[k], rtol=0, atol=1e-4)


def test_projection_without_symmetries_equals_linear_least_squares() -> None:
    """pgd is affine in its scalars: with symmetries off the fit is one linear least squares."""
    sigma = random_covariance(3, _gen(8))
    fam, theta = _pgd_point(3, 2, sigma, [0.9, 0.2])
    moved = _scale_pair(theta, 1, 2.0)
    proj = project_onto_family(moved, fam, symmetries=False)
    target = flatten_params(moved, fam.spec)
    c = fam.flat(torch.zeros(2, dtype=F64))
    J = torch.stack([fam.flat(torch.eye(2, dtype=F64)[i]) - c for i in range(2)], dim=1)
    s, *_ = np.linalg.lstsq(J.numpy(), (target - c).numpy(), rcond=None)
    ref = float(np.linalg.norm(target.numpy() - c.numpy() - J.numpy() @ s)) / float(target.norm())
    assert abs(proj.distance - ref) < 1e-10
    assert np.allclose(proj.vector().numpy(), s, rtol=1e-9, atol=1e-12)
    assert proj.distance > 0.05  # the P/Q scaling moved the point off the family ...
    assert project_onto_family(moved, fam).distance < CONSTRUCTION_RTOL  # ... but not off its orbit


def test_projection_flags_unidentifiable_scalars_of_fgd() -> None:
    """fgd: b_l and c_l trade off against the B/C scaling; the distance is still exactly 0."""
    sigma = random_covariance(3, _gen(9))
    fam = get_family("fgd", Problem(d=3, layers=1, n=6, sigma=sigma, attention="kernel", activations=("exp",)))
    theta = fam.params(torch.tensor([0.8, -1.2, 0.5], dtype=F64))  # b0, c0, r0
    proj = project_onto_family(theta, fam)
    assert proj.distance < CONSTRUCTION_RTOL
    assert proj.null_dim >= 1
    v = proj.values
    assert abs(v["b0"] * v["c0"] - 0.8 * -1.2) < 1e-9  # only the product is identified
    assert abs(v["r0"] - 0.5) < 1e-9


def test_projection_onto_a_nonlinear_user_family() -> None:
    """A user family whose weights are nonlinear in the scalar: Q = -diag(exp(u) I, 0), P = diag(0, 1 + u^2)."""
    u = sympy.Symbol("u", real=True)

    def expfam(problem: Problem) -> dict[str, sympy.Matrix]:
        D, d = problem.d + 1, problem.d
        P = sympy.zeros(D, D)
        P[d, d] = 1 + u**2
        Q = sympy.zeros(D, D)
        Q[:d, :d] = -sympy.exp(u) * sympy.eye(d)
        return {"layer0.head0.P": P, "layer0.head0.Q": Q}

    prob = Problem(d=3, layers=1, n=5, attention="linear")
    fam = family_from_function(expfam, prob)
    theta = fam.params(torch.tensor([0.4], dtype=F64))
    # plain fit (no symmetry): exact recovery
    proj = project_onto_family(theta, fam, symmetries=False)
    assert abs(proj.values["u"] - 0.4) < 1e-9 and proj.distance < CONSTRUCTION_RTOL
    # with the P/Q scaling the orbit is 2-dimensional; a transformed point is at distance 0
    moved = _scale_pair(theta, 0, 3.0)
    assert project_onto_family(moved, fam).distance < 1e-9


def test_project_stacked_equals_per_seed_projections() -> None:
    sigma = random_covariance(3, _gen(10))
    fam, _ = _pgd_point(3, 2, sigma, [0.5, 0.5])
    p = init_params(fam.spec, _gen(11), seeds=3, dtype=F64)
    sp = project_stacked(p, fam)
    assert sp.distance.shape == (3,) and sp.values.shape == (3, 2)
    for i in range(3):
        one = project_onto_family({k: v[i] for k, v in p.items()}, fam)
        assert abs(one.distance - float(sp.distance[i])) < 1e-12
    # at most 1: the orbit of the family comes arbitrarily close to theta = 0 (P -> 0, a -> 0)
    assert all(0 < float(x) <= 1 for x in sp.distance)


def test_projection_errors() -> None:
    sigma = random_covariance(3, _gen(12))
    fam, theta = _pgd_point(3, 1, sigma, [0.5])
    with pytest.raises(ValueError, match="starts"):
        project_onto_family(theta, fam, starts=0)
    other = ModelSpec.linear(3, 2)
    with pytest.raises(ValueError, match="missing"):
        project_onto_family(init_params(other, _gen(0), dtype=F64), fam)
    bad = Projection("x", ("b0",), {"b0": 1.0}, 0.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="not onto"):
        project_onto_family(theta, fam, init=bad)


def test_projection_warm_start_reaches_same_optimum() -> None:
    sigma = random_covariance(4, _gen(13))
    fam, theta = _pgd_point(4, 2, sigma, [0.6, 1.1])
    g = _gen(14)
    noisy = {k: v + 0.01 * torch.randn(v.shape, generator=g, dtype=F64) for k, v in _scale_pair(theta, 0, -2.0).items()}
    cold = project_onto_family(noisy, fam)
    warm = project_onto_family(noisy, fam, init=cold)
    assert abs(warm.distance - cold.distance) < 1e-10 * cold.distance
    assert warm.signs == cold.signs


# ---------------------------------------------------------------------- function space
def test_prediction_gap_zero_on_symmetry_orbit_and_matches_manual_rms() -> None:
    sigma = random_covariance(3, _gen(15))
    fam, theta = _pgd_point(3, 2, sigma, [0.5, 0.8])
    prompts = LinearRegression(3, 8, sigma=sigma, task_cov="inverse").sample(256, _gen(16))
    moved = _scale_pair(theta, 0, -1.7)
    gap0 = prediction_gap(moved, theta, fam.spec, prompts)
    assert float(gap0) < 1e-13
    g = _gen(17)
    other = {k: v + 0.05 * torch.randn(v.shape, generator=g, dtype=F64) for k, v in theta.items()}
    gap = prediction_gap(other, theta, fam.spec, prompts.Z)
    f = predict(other, fam.spec, prompts.Z)
    f_ref = predict(theta, fam.spec, prompts.Z)
    ref = torch.sqrt(((f - f_ref) ** 2).mean()) / torch.sqrt((f_ref**2).mean())
    assert abs(float(gap) - float(ref)) < ALGORITHM_RTOL * float(ref)


def test_prediction_gap_stacked_against_projection() -> None:
    sigma = random_covariance(3, _gen(18))
    fam, theta = _pgd_point(3, 1, sigma, [0.7])
    g = _gen(19)
    stack = {k: torch.stack([v + 0.02 * (i + 1) * torch.randn(v.shape, generator=g, dtype=F64) for i in range(3)])
             for k, v in theta.items()}
    sp = project_stacked(stack, fam)
    prompts = LinearRegression(3, 8, sigma=sigma).sample(128, _gen(20))
    gaps = prediction_gap(stack, sp, fam.spec, prompts)
    assert gaps.shape == (3,)
    for i in range(3):
        one = prediction_gap({k: v[i] for k, v in stack.items()}, sp.projections[i], fam.spec, prompts)
        assert abs(float(gaps[i]) - float(one)) < ALGORITHM_RTOL * float(one)
    assert float(gaps[0]) < float(gaps[2])  # more noise, farther in function space


def test_prediction_gap_rejects_wrong_prompts() -> None:
    spec = ModelSpec.linear(3, 1)
    p = init_params(spec, _gen(0), dtype=F64)
    with pytest.raises(ValueError, match="prompts must have shape"):
        prediction_gap(p, p, spec, torch.zeros(5, 3, 7, dtype=F64))


# ---------------------------------------------------------------------- step sizes: whitened fit
def _ahn_weights(family, a: list[float], sigma: torch.Tensor, noise: torch.Tensor) -> dict[str, torch.Tensor]:
    """Stacked Ahn-style weights: A_l = Sigma^{-1/2} (a_l I + noise[s, l]) Sigma^{-1/2} in Q_l = -diag(A_l, 0),
    P_l = diag(0, 1) exactly (noise (S, L, d, d) in whitened coordinates)."""
    S, L, d = noise.shape[0], noise.shape[1], sigma.shape[0]
    inv_half = torch.linalg.inv(sqrtm_psd(sigma))
    base = family.params(torch.tensor(a, dtype=F64))
    out = {k: v.expand(S, *v.shape).clone() for k, v in base.items()}
    for l in range(L):
        A = inv_half @ (a[l] * torch.eye(d, dtype=F64) + noise[:, l]) @ inv_half
        out[f"layer{l}.head0.Q"][:, :d, :d] = -A
    return out


def test_step_sizes_are_the_whitened_fit_of_ahn_weights() -> None:
    """For A_l = a_l Sigma^{-1} perturbed by noise, the step sizes train reports (family_whitened.*) are
    the least-squares fit in whitened coordinates, a_l + tr(G_l)/d (closed form), which recovers a_l;
    the raw fit <A_l, Sigma^{-1}>_F / ||Sigma^{-1}||_F^2 (closed form) weighs the slowest direction of
    Sigma with lambda_min^{-2} / sum lambda^{-2} = 256/275 = 93 % (Ahn et al.'s spectrum)."""
    from landscape.experiment.distance import whitened_family
    from landscape.experiment.train import _measure

    d, L, S = 5, 2, 6
    sigma = random_covariance(d, _gen(0))  # spectrum (1, 1, 1/4, 1/16, 1), Haar-rotated
    family = get_family("pgd", Problem(d=d, layers=L, n=20, sigma=sigma, attention="linear", heads=1))
    white = whitened_family(family, "pgd")
    assert white is not None and white.problem.sigma is None
    a = [0.6, 0.9]
    g = _gen(11)
    G = 0.05 * torch.randn(S, L, d, d, generator=g, dtype=F64)
    G = (G + G.transpose(-1, -2)) / 2
    params = _ahn_weights(family, a, sigma, G)
    batch = LinearRegression(d, 20, sigma=sigma).sample(8, _gen(12))
    meas = _measure(family.spec, family, sigma, params, batch.Z, batch.target, True, white)
    sinv = torch.linalg.inv(sigma)
    for l in range(L):
        steps = meas[f"family_whitened.a{l}"]
        want = a[l] + torch.diagonal(G[:, l], dim1=-2, dim2=-1).sum(-1) / d
        assert torch.allclose(steps, want, rtol=0, atol=1e-8), (steps, want)
        assert float((steps - a[l]).abs().max()) < 0.1  # recovers a_l: the error tr(G_l)/d has sd 0.05/sqrt(5)
        A = -params[f"layer{l}.head0.Q"][:, :d, :d]
        raw_want = (A * sinv).sum((-1, -2)) / (sinv * sinv).sum()
        assert torch.allclose(meas[f"family.a{l}"], raw_want, rtol=0, atol=1e-8)

    # one direction off: the slowest eigenvector of Sigma, delta in whitened coordinates
    lam, U = torch.linalg.eigh(sigma)
    v = U[:, 0]  # lambda = 1/16
    delta = 0.3
    one = torch.zeros(1, L, d, d, dtype=F64)
    one[0, :] = delta * torch.outer(v, v)
    params = _ahn_weights(family, a, sigma, one)
    meas = _measure(family.spec, family, sigma, params, batch.Z, batch.target, True, white)
    w_slow = float(lam[0] ** -2 / (lam ** -2).sum())
    assert abs(w_slow - 256 / 275) < 1e-12
    for l in range(L):
        assert abs(float(meas[f"family_whitened.a{l}"][0]) - (a[l] + delta / d)) < 1e-8
        assert abs(float(meas[f"family.a{l}"][0]) - (a[l] + w_slow * delta)) < 1e-8


def test_whitened_family_exists_only_where_the_family_is_whitening_covariant() -> None:
    from landscape.experiment.distance import project_whitened, whitened_family

    sigma = random_covariance(3, _gen(1))
    prob = Problem(d=3, layers=1, n=10, sigma=sigma, attention="linear", heads=1)
    assert whitened_family(get_family("pgd-relaxed", prob), "pgd-relaxed") is not None
    assert whitened_family(get_family("pgd-identity", prob), "pgd-identity") is None  # A = a I ignores Sigma
    iso = get_family("pgd", Problem(d=3, layers=1, n=10, sigma=None, attention="linear", heads=1))
    assert whitened_family(iso) is iso
    with pytest.raises(ValueError, match="Sigma = I"):
        project_whitened({}, get_family("pgd", prob), sigma)


def test_train_labels_the_two_fits(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from landscape.cli import main

    argv = ["train", "--d", "3", "--n", "4", "--family", "pgd", "--sigma", "random:0", "--seeds", "1", "--steps", "0",
            "--batch", "4", "--eval-batch", "8", "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.lstrip().startswith("seed"))
    assert header.split()[-2:] == ["a0", "raw:a0"]
    assert "a0: step sizes, the family fitted in whitened coordinates" in out
    assert "raw:a0: least-squares fit over the raw weight entries" in out
    assert main([*argv, "--json"]) == 0
    obj = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(obj["family_step_sizes"]) == set(obj["family_values"]) == {"a0"}
    assert "whitened" in obj["family_fits"]["family_step_sizes"]
    assert "raw" in obj["family_fits"]["family_values"]
