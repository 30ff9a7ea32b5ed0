"""Symmetries declared once (landscape/theory/symmetries.py) and the distance that quotients them.

References: the forward pass itself (a declared symmetry must leave landscape.core.model.forward
unchanged to float64 round-off, on random weights — every entry of V, B, C free — and random
prompts); central finite differences of the finite action (the generators must be the tangent of
the orbit); constructions transformed by random group elements (random invertible G for
dot-product kernels, random orthogonal G for a kernel that reads norms) whose distance to the
family must vanish; and, for a non-construction, an explicit optimisation over G written in this
test (scipy BFGS from several starts) that the projection must match.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from landscape.core.model import ModelSpec, flatten_params, forward, init_params
from landscape.core.tasks import LinearRegression, random_covariance
from landscape.experiment.distance import project_onto_family
from landscape.numeric import symmetry_generators
from landscape.theory.families import Problem, get_family
from landscape.theory.symmetries import Symmetry, model_symmetries
from landscape.tolerances import RTOL

F64 = torch.float64
ACTIVATIONS = ["linear", "relu", "exp", "softmax", "rbf"]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _setting(act: str, seed: int) -> tuple[ModelSpec, dict[str, torch.Tensor], torch.Tensor]:
    spec = ModelSpec.kernel(3, 2, [act]) if act != "pq" else ModelSpec.linear(3, 2)
    g = _gen(seed)
    params = init_params(spec, g, std=0.3, dtype=F64)  # every entry random (mask "full")
    Z = LinearRegression(3, 5).sample(16, g).Z.to(F64)
    return spec, params, Z


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def test_declarations_per_activation() -> None:
    """Which groups each head gets: P/Q scale; GL for dot-product kernels; O(D) for norm-reading kernels;
    value scalings for homogeneous ones (with sign flip only where the kernel is odd)."""
    def kinds(act: str) -> list[tuple[str, str, bool]]:
        spec = ModelSpec.kernel(2, 1, [act]) if act != "pq" else ModelSpec.linear(2, 1)
        return [(s.name.split("@")[0], s.kind, s.flip) for s in model_symmetries(spec)]

    assert kinds("pq") == [("PQ-scale", "scale", True)]
    assert kinds("linear") == [("BC-gl", "gl", False), ("VC-scale", "scale", True)]
    assert kinds("relu") == [("BC-gl", "gl", False), ("VC-scale", "scale", False)]
    assert kinds("exp") == kinds("softmax") == [("BC-gl", "gl", False)]
    assert kinds("rbf") == [("BC-rotation", "orthogonal", False)]
    spec = ModelSpec.kernel(2, 1, ["exp"])
    assert model_symmetries(spec)[0].dim == 9 and model_symmetries(ModelSpec.kernel(2, 1, ["rbf"]))[0].dim == 3


@pytest.mark.parametrize("act", ["pq", *ACTIVATIONS])
def test_every_declared_symmetry_leaves_the_forward_pass_unchanged(act: str) -> None:
    """For each declared symmetry and each of its components, a random group element (exp map and
    chart) leaves every state Z_1..Z_L of the forward pass unchanged to float64 round-off; the same
    weights moved by a non-symmetry (B -> GB, C -> C) change the output."""
    spec, params, Z = _setting(act, 1)
    ref = torch.stack(forward(params, spec, Z, return_states=True))
    g = _gen(2)
    checked = 0
    for sym in model_symmetries(spec):
        for comp in sym.components:
            t = 0.4 * torch.randn(sym.dim, generator=g, dtype=F64)
            moved_exp = sym.act(params, t if sym.dim > 1 else t[0]) if comp == 1 else None
            moved_chart = sym.chart(params, t, comp)
            for moved in (moved_exp, moved_chart):
                if moved is None:
                    continue
                assert any(not torch.equal(moved[k], params[k]) for k in params), sym.name
                out = torch.stack(forward(moved, spec, Z, return_states=True))
                assert _rel(out, ref) < RTOL[F64], (sym.name, comp, _rel(out, ref))
                checked += 1
    assert checked >= 2 * spec.layers
    if act != "pq":
        G = torch.eye(spec.token_dim, dtype=F64) + 0.3 * torch.randn(spec.token_dim, spec.token_dim, generator=g,
                                                                      dtype=F64)
        wrong = dict(params)
        wrong["layer0.head0.B"] = G @ params["layer0.head0.B"]
        assert _rel(torch.stack(forward(wrong, spec, Z, return_states=True)), ref) > 1e-4


@pytest.mark.parametrize("act", ["pq", *ACTIVATIONS])
def test_generators_are_tangent_to_the_orbit(act: str) -> None:
    """Each generator equals the central difference (act(θ, hX) − act(θ, −hX)) / 2h of the finite action
    along its Lie-algebra basis element, and symmetry_generators stacks exactly these."""
    spec, params, _ = _setting(act, 3)
    h = 1e-6
    cols = []
    for sym in model_symmetries(spec):
        gens = sym.generators(params)
        assert len(gens) == sym.dim
        for i, tangent in enumerate(gens):
            e = torch.zeros(sym.dim, dtype=F64)
            e[i] = h
            plus = sym.act(params, e if sym.dim > 1 else e[0])
            minus = sym.act(params, -e if sym.dim > 1 else -e[0])
            fd = {k: (plus[k] - minus[k]) / (2 * h) for k in params}
            for k in params:
                want = tangent.get(k, torch.zeros_like(params[k]))
                assert float((fd[k] - want).abs().max()) <= 1e-8 * max(1.0, float(want.abs().max())), (sym.name, i, k)
            full = {k: tangent.get(k, torch.zeros_like(v)) for k, v in params.items()}
            cols.append(flatten_params(full, spec))
    G = symmetry_generators(spec, flatten_params(params, spec))
    assert torch.equal(G, torch.stack(cols, dim=1))


def test_custom_symmetry_generator_by_forward_mode() -> None:
    """A user's one-parameter group: its generator is d/dt act(θ, t) at 0 (here P -> e^{2t}P, Q -> e^{-2t}Q)."""
    spec, params, Z = _setting("pq", 4)

    def act(p, t):
        return {**p, "layer1.head0.P": p["layer1.head0.P"] * torch.exp(2 * t),
                "layer1.head0.Q": p["layer1.head0.Q"] * torch.exp(-2 * t)}

    sym = Symmetry("double", act)
    (tangent,) = sym.generators(params)
    assert torch.allclose(tangent["layer1.head0.P"], 2 * params["layer1.head0.P"], rtol=1e-14, atol=0)
    assert torch.allclose(tangent["layer1.head0.Q"], -2 * params["layer1.head0.Q"], rtol=1e-14, atol=0)
    with pytest.raises(TypeError, match="callable"):
        Symmetry("bad", kind="custom")
    with pytest.raises(ValueError, match="coordinates"):
        model_symmetries(ModelSpec.kernel(2, 1, ["exp"]))[0].act(init_params(ModelSpec.kernel(2, 1, ["exp"]), _gen(0),
                                                                             dtype=F64), torch.tensor(0.3))


# ---------------------------------------------------------------------- the distance quotients GL / O(D)
def _transform(family, params: dict[str, torch.Tensor], g: torch.Generator) -> dict[str, torch.Tensor]:
    """Apply a random element of every GL / O(D) symmetry: G Gaussian (either sign of det) or orthogonal (QR)."""
    out = dict(params)
    for sym in family.symmetries:
        if sym.kind not in ("gl", "orthogonal"):
            continue
        A = torch.randn(sym.size, sym.size, generator=g, dtype=F64)
        if sym.kind == "gl":
            G, H = A, torch.linalg.inv(A).T
        else:
            G, _ = torch.linalg.qr(A)
            H = G
        kb, kc = sym.keys
        out[kb], out[kc] = G @ out[kb], H @ out[kc]
    return out


@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("name", ["fgd", "fgd-full"])
def test_transformed_construction_has_family_distance_zero(act: str, name: str) -> None:
    """A family point moved by random G per layer (B -> GB, C -> G^{-T}C; orthogonal G for rbf) is at
    distance 0 (round-off) modulo the symmetries, and far from the family without them."""
    sigma = random_covariance(3, _gen(11))
    fam = get_family(name, Problem(d=3, layers=2, n=6, sigma=sigma, attention="kernel", activations=(act,)))
    g = _gen(12)
    for _ in range(2):
        theta = fam.params(torch.randn(fam.dim, generator=g, dtype=F64))
        moved = _transform(fam, theta, g)
        proj = project_onto_family(moved, fam, starts=1)
        assert proj.distance < 1e-12, (act, name, proj.distance)
        assert project_onto_family(moved, fam, symmetries=False).distance > 0.1


def _explicit_gl_distance(target: dict[str, torch.Tensor], fam, starts: int = 4) -> float:
    """min over (s, G_0, G_1) of |θ − g·θ(s)| / |θ| for a one-head kernel family, by scipy BFGS on the
    free entries of G_l (G = I + Y) — written here, independent of the library's least squares."""
    keys = list(target)
    tvec = torch.cat([target[k].reshape(-1) for k in keys])
    L, D, k = fam.spec.layers, fam.spec.token_dim, fam.dim

    def cost(x: np.ndarray) -> float:
        xt = torch.as_tensor(x, dtype=F64)
        p = fam.params(xt[:k])
        for l in range(L):
            G = torch.eye(D, dtype=F64) + xt[k + l * D * D:k + (l + 1) * D * D].reshape(D, D)
            p[f"layer{l}.head0.B"] = G @ p[f"layer{l}.head0.B"]
            p[f"layer{l}.head0.C"] = torch.linalg.solve(G.T, p[f"layer{l}.head0.C"])
        r = torch.cat([p[kk].reshape(-1) for kk in keys]) - tvec
        return float((r**2).sum())

    g = np.random.default_rng(0)
    best = np.inf
    for i in range(starts):
        x0 = np.concatenate([g.normal(size=k), 0.1 * i * g.normal(size=L * D * D)])
        res = minimize(cost, x0, method="BFGS", options={"gtol": 1e-12, "maxiter": 20000})
        best = min(best, res.fun)
    return float(np.sqrt(best) / tvec.norm())


def test_non_construction_keeps_a_positive_distance_equal_to_explicit_optimisation() -> None:
    """Random weights (not a construction) keep a clearly positive distance to fgd modulo GL, and it equals
    an explicit optimisation over G written in the test (to 1e-6 relative), below the distance without GL."""
    sigma = random_covariance(2, _gen(21))
    fam = get_family("fgd", Problem(d=2, layers=1, n=6, sigma=sigma, attention="kernel", activations=("exp",)))
    theta = init_params(fam.spec, _gen(22), std=0.5, dtype=F64)
    proj = project_onto_family(theta, fam, starts=3)
    ref = _explicit_gl_distance(theta, fam)
    plain = project_onto_family(theta, fam, symmetries=False).distance
    assert 0.2 < proj.distance < plain
    assert abs(proj.distance - ref) <= 1e-6 * ref, (proj.distance, ref)


@pytest.mark.parametrize("diag", [(1.0, -1.0, 1.0), (-1.0, -1.0, 1.0)])
def test_reflected_and_half_turned_constructions_are_at_distance_zero(diag) -> None:
    """rbf (a kernel of ‖u − w‖²): the construction moved by a reflection of the covariate plane (det −1) or
    by a rotation by π (no principal matrix logarithm) is at distance 0 modulo O(D) — the case of trained
    seeds with det B < 0."""
    sigma = random_covariance(2, _gen(31))
    fam = get_family("fgd", Problem(d=2, layers=1, n=6, sigma=sigma, attention="kernel", activations=("rbf",)))
    theta = fam.params(torch.tensor([1.5, 1.4, -3.1], dtype=F64))
    G = torch.diag(torch.tensor(diag, dtype=F64))
    moved = {**theta, "layer0.head0.B": G @ theta["layer0.head0.B"], "layer0.head0.C": G @ theta["layer0.head0.C"]}
    proj = project_onto_family(moved, fam, starts=1)
    assert proj.distance < 1e-12, proj.distance
    Gf = proj.group["BC-rotation@layer0.head0"]
    assert torch.allclose(Gf.T @ Gf, torch.eye(3, dtype=F64), atol=1e-12)  # the fitted element is orthogonal
    for k in moved:
        assert torch.allclose(proj.point[k], moved[k], atol=1e-12)
