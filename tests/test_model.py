"""Tests of landscape/core/model.py (and the shared family suite).

References: the layer update written with the explicit mask matrix ``M = diag(I_n, 0)`` and
dense matrix products (docs/theory.md §1), independently of the model's slicing; a Python loop for
``vmap`` (bit for bit); the change-of-basis identity; and clear errors on bad input.
"""

from __future__ import annotations

import pytest
import torch
from base_suites import ALL_FAMILIES, F32, F64, FamilySuite, family_id, rel_err

from landscape.tolerances import RTOL
from landscape.theory.families import Family, Problem, get_family
from landscape.core.kernels import Kernel, get_kernel
from landscape.core.masks import make_mask
from landscape.core.model import (
    HeadSpec,
    ModelSpec,
    apply_mask,
    change_of_basis,
    check_params,
    flatten_params,
    forward,
    init_params,
    num_params,
    param_shapes,
    predict,
    stack_params,
    unflatten_params,
    unstack_params,
    whitening_transform,
)
from landscape.core.tasks import LinearRegression, random_covariance


class TestBuiltinFamilies(FamilySuite):
    """The shared family suite over every built-in family (:data:`base_suites.ALL_FAMILIES`)."""

    @pytest.fixture(params=ALL_FAMILIES, ids=family_id)
    def family(self, request: pytest.FixtureRequest) -> Family:
        name, problem = request.param
        return get_family(name, problem)


# ---------------------------------------------------------------------- forward = docs/theory.md §1 with an explicit mask
def _reference_forward(params: dict[str, torch.Tensor], spec: ModelSpec, Z: torch.Tensor, n: int) -> torch.Tensor:
    """``Z_{l+1} = Z_l + (1/n) Σ_h Attn(Z_l)`` with ``M = diag(1_n, 0)`` as a dense matrix; unbatched Z."""
    N = Z.shape[-1]
    M = torch.diag(torch.cat([torch.ones(n, dtype=Z.dtype), torch.zeros(N - n, dtype=Z.dtype)]))
    for l in range(spec.layers):
        upd = torch.zeros_like(Z)
        for h, head in enumerate(spec.heads):
            k = lambda name: params[spec.key(l, h, name)]  # noqa: E731
            if head.kind == "linear":
                upd = upd + k("P") @ Z @ M @ (Z.T @ k("Q") @ Z)
            else:
                U, W = k("B") @ Z, k("C") @ Z
                kern = head.kernel
                H = torch.empty(N, N, dtype=Z.dtype)
                for i in range(N):
                    for j in range(N):
                        u, w = U[:, i], W[:, j]
                        s = u @ w
                        if kern.normalised:
                            H[i, j] = torch.exp(s)
                        else:
                            H[i, j] = kern.gram(u[:, None], w[:, None])[0, 0]
                if kern.normalised:  # normalise over the sources only: the mask zeroes the others
                    H = (M @ H) / (M @ H).sum(0, keepdim=True)
                upd = upd + k("V") @ Z @ M @ H
        Z = Z + upd / n
    return Z


@pytest.mark.parametrize(
    "spec",
    [
        ModelSpec.linear(3, 2),
        ModelSpec.linear(2, 2, heads=3),
        ModelSpec.kernel(3, 2, ["exp", "softmax", "relu"]),
        ModelSpec.kernel(2, 3, [Kernel.from_sympy("exp(-sqrt(r2))", name="lap"), "linear"]),
        ModelSpec(2, 2, (HeadSpec("linear"), HeadSpec("kernel", "softmax"))),
    ],
    ids=lambda s: s.describe(),
)
@pytest.mark.parametrize("n_sources", [None, "all"])
def test_forward_equals_dense_reference(spec: ModelSpec, n_sources: str | None) -> None:
    g = torch.Generator().manual_seed(1)
    params = init_params(spec, g, std=0.4, dtype=F64)
    Z = torch.randn(3, spec.token_dim, 6, generator=g, dtype=F64) / spec.token_dim**0.5
    n = 5 if n_sources is None else 6
    out = forward(params, spec, Z, n_sources=None if n_sources is None else 6)
    ref = torch.stack([_reference_forward(params, spec, Z[b], n) for b in range(3)])
    assert rel_err(out, ref) <= RTOL[F64]
    assert float(out.abs().max()) > 0


def test_return_states_and_predict() -> None:
    g = torch.Generator().manual_seed(2)
    spec = ModelSpec.kernel(2, 3, "exp")
    params = init_params(spec, g, std=0.3, dtype=F64)
    Z = torch.randn(4, 3, 5, generator=g, dtype=F64)
    states = forward(params, spec, Z, return_states=True)
    assert len(states) == 4 and states[0] is Z
    for l in range(1, 4):
        sub = {k: v for k, v in params.items() if int(k.split(".")[0][5:]) < l}
        assert torch.equal(states[l], forward(sub, ModelSpec.kernel(2, l, "exp"), Z))
    assert torch.equal(predict(params, spec, Z), -states[-1][:, -1, -1])


# ---------------------------------------------------------------------- vmap over parameter sets
@pytest.mark.parametrize(
    "spec",
    [ModelSpec.linear(3, 3, heads=2), ModelSpec.kernel(3, 3, ["exp", "softmax", "relu", "laplace"])],
    ids=["linear", "kernel"],
)
def test_vmap_over_8_parameter_sets_equals_loop_bitwise(spec: ModelSpec) -> None:
    g = torch.Generator().manual_seed(3)
    stacked = init_params(spec, g, std=0.3, seeds=8, dtype=F64)
    Z = torch.randn(16, spec.token_dim, 9, generator=g, dtype=F64)
    vm = torch.func.vmap(lambda p: predict(p, spec, Z, validate=False))(stacked)
    loop = torch.stack([predict(p, spec, Z) for p in unstack_params(stacked)])
    assert vm.shape == (8, 16)
    assert torch.equal(vm, loop)
    # and the stack round-trips
    again = stack_params(unstack_params(stacked))
    assert all(torch.equal(again[k], stacked[k]) for k in stacked)


# ---------------------------------------------------------------------- flat views, masks, change of basis
def test_flatten_roundtrip_and_counts() -> None:
    spec = ModelSpec.kernel(3, 2, ["exp", "linear"])
    g = torch.Generator().manual_seed(4)
    stacked = init_params(spec, g, seeds=5, dtype=F64)
    flat = flatten_params(stacked, spec)
    assert flat.shape == (5, num_params(spec)) and num_params(spec) == 2 * 2 * 3 * 16
    back = unflatten_params(flat, spec)
    assert list(back) == list(param_shapes(spec))
    assert all(torch.equal(back[k], stacked[k]) for k in stacked)


def test_paper_mask_zeroes_the_label_row_of_keys_and_the_cross_blocks_of_values() -> None:
    spec = ModelSpec.kernel(3, 1, "exp")
    p = init_params(spec, torch.Generator().manual_seed(5), mask="paper", dtype=F64)
    B, V = p["layer0.head0.B"], p["layer0.head0.V"]
    assert torch.equal(B[3, :], torch.zeros(4, dtype=F64)) and torch.equal(B[:, 3], torch.zeros(4, dtype=F64))
    assert torch.equal(V[:3, 3], torch.zeros(3, dtype=F64)) and torch.equal(V[3, :3], torch.zeros(3, dtype=F64))
    assert bool((V[:3, :3] != 0).all()) and bool(V[3, 3] != 0)
    full = init_params(spec, torch.Generator().manual_seed(5), dtype=F64)
    masked = apply_mask(full, make_mask(spec, "paper"))
    assert all(torch.equal(masked[k], p[k]) for k in p)


def test_whitening_transform_is_the_symmetric_square_root_of_sigma() -> None:
    """T = diag(Σ^{1/2}, 1): T Tᵀ = diag(Σ, 1), T symmetric, and T maps N(0, I) tokens to N(0, Σ) covariates.

    (Any invertible T passes the change-of-basis test below; this pins T itself.)
    """
    g = torch.Generator().manual_seed(16)
    d = 4
    sigma = random_covariance(d, g, spectrum=[3.0, 1.0, 0.5, 0.2])
    T = whitening_transform(sigma)
    target = torch.zeros(d + 1, d + 1, dtype=F64)
    target[:d, :d] = sigma
    target[d, d] = 1.0
    assert tuple(T.shape) == (d + 1, d + 1)
    assert rel_err(T @ T.T, target) <= RTOL[F64]
    assert rel_err(T, T.T) <= RTOL[F64]
    assert float(torch.linalg.eigvalsh(T[:d, :d]).min()) > 0
    # Independent route: the square root from scipy.
    import scipy.linalg

    ref = torch.from_numpy(scipy.linalg.sqrtm(sigma.numpy()).real)
    assert rel_err(T[:d, :d], ref) <= 1e-10


def test_whitening_change_of_basis_leaves_predictions_unchanged() -> None:
    g = torch.Generator().manual_seed(6)
    d = 3
    sigma = random_covariance(d, g)
    T = whitening_transform(sigma)
    for spec in (ModelSpec.linear(d, 2), ModelSpec.kernel(d, 2, ["exp", "softmax"])):
        params = init_params(spec, g, std=0.3, dtype=F64)
        zeta = torch.randn(5, d + 1, 7, generator=g, dtype=F64)
        Zraw = T @ zeta
        moved = change_of_basis(params, spec, T)
        assert rel_err(predict(moved, spec, zeta), predict(params, spec, Zraw)) <= RTOL[F64]
        assert rel_err(T @ forward(moved, spec, zeta), forward(params, spec, Zraw)) <= RTOL[F64]


# ---------------------------------------------------------------------- bad input
def test_bad_token_shapes() -> None:
    spec = ModelSpec.linear(3, 1)
    p = init_params(spec, torch.Generator().manual_seed(7), dtype=F64)
    with pytest.raises(ValueError, match=r"Z must have shape \(batch, 4, N\).*got \(2, 3, 5\)"):
        forward(p, spec, torch.zeros(2, 3, 5, dtype=F64))
    with pytest.raises(ValueError, match=r"Z must have shape"):
        forward(p, spec, torch.zeros(4, dtype=F64))
    with pytest.raises(ValueError, match=r"n_sources must be in \[1, N=5\], got 6"):
        forward(p, spec, torch.zeros(2, 4, 5, dtype=F64), n_sources=6)
    with pytest.raises(ValueError, match=r"n_sources must be in \[1, N=1\], got 0"):
        forward(p, spec, torch.zeros(2, 4, 1, dtype=F64))
    with pytest.raises(TypeError, match="Z must be a torch.Tensor, got list"):
        forward(p, spec, [[0.0]])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Z must be floating point"):
        forward(p, spec, torch.zeros(2, 4, 5, dtype=torch.int64))


def test_bad_params() -> None:
    spec = ModelSpec.kernel(2, 2, "exp")
    p = init_params(spec, torch.Generator().manual_seed(8), dtype=F64)
    Z = torch.zeros(1, 3, 4, dtype=F64)
    missing = {k: v for k, v in p.items() if k != "layer1.head0.C"}
    with pytest.raises(ValueError, match=r"missing \['layer1.head0.C'\]"):
        forward(missing, spec, Z)
    extra = {**p, "layer2.head0.V": p["layer0.head0.V"]}
    with pytest.raises(ValueError, match=r"unexpected \['layer2.head0.V'\]"):
        forward(extra, spec, Z)
    wrong = {**p, "layer0.head0.B": torch.zeros(4, 4, dtype=F64)}
    with pytest.raises(ValueError, match=r"param 'layer0.head0.B' has shape \(4, 4\), expected 0 leading axes \+ \(3, 3\)"):
        forward(wrong, spec, Z)
    with pytest.raises(TypeError, match="params must be a dict"):
        check_params(spec, [1, 2])  # type: ignore[arg-type]
    mixed = {**p, "layer0.head0.V": p["layer0.head0.V"].to(F32)}
    with pytest.raises(TypeError, match=r"param 'layer0.head0.B' has dtype torch.float64 but param "
                                        r"'layer0.head0.V' has dtype torch.float32; all tensor inputs must share one"):
        forward(mixed, spec, Z)
    on_meta = {**p, "layer1.head0.C": torch.zeros(3, 3, dtype=F64, device="meta")}
    with pytest.raises(TypeError, match=r"param 'layer1.head0.C' is on device meta but param 'layer0.head0.V' is on "
                                        r"cpu; all tensor inputs must be on one device"):
        forward(on_meta, spec, Z)


def test_dtype_and_device_mismatch_between_params_and_tokens() -> None:
    spec = ModelSpec.linear(2, 1)
    p = init_params(spec, torch.Generator().manual_seed(9), dtype=F64)
    with pytest.raises(TypeError, match=r"Z has dtype torch.float32 but params has dtype torch.float64; "
                                        r"all tensor inputs must share one floating dtype"):
        forward(p, spec, torch.zeros(1, 3, 4, dtype=F32))
    with pytest.raises(TypeError, match=r"Z is on device meta but params is on cpu; all tensor inputs must be on one device"):
        forward(p, spec, torch.zeros(1, 3, 4, dtype=F64, device="meta"))


def test_bad_spec_and_settings() -> None:
    with pytest.raises(ValueError, match=r"ModelSpec.d must be an int >= 1, got 0"):
        ModelSpec.linear(0, 1)
    with pytest.raises(ValueError, match=r"ModelSpec.layers must be an int >= 1, got 0"):
        ModelSpec.kernel(2, 0, "exp")
    with pytest.raises(ValueError, match="head kind must be 'linear' or 'kernel'"):
        HeadSpec("mlp")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"unknown activation/kernel 'tanh'; known: linear, relu, exp, softmax, rbf"):
        ModelSpec.kernel(2, 1, "tanh")
    with pytest.raises(ValueError, match=r"unknown mask 'dense'; accepted: 'full' \(alias 'all'\), 'paper', 'sparse'"):
        make_mask(ModelSpec.linear(2, 1), "dense")
    with pytest.raises(TypeError, match="dtype must be torch.float32 or torch.float64"):
        init_params(ModelSpec.linear(2, 1), torch.Generator(), dtype=torch.int32)
    with pytest.raises(ValueError, match=r"^ModelSpec.token_dim must be an int >= 1, got 0$"):
        ModelSpec(d=2, layers=1, token_dim=0)
    with pytest.raises(TypeError, match=r"^ModelSpec.token_dim must be an int >= 1, got float$"):
        ModelSpec(d=2, layers=1, token_dim=3.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^seeds must be an int >= 1, got 0$"):
        init_params(ModelSpec.linear(2, 1), torch.Generator(), seeds=0)
    with pytest.raises(TypeError, match=r"^seeds must be an int >= 1, got float$"):
        init_params(ModelSpec.linear(2, 1), torch.Generator(), seeds=2.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^std must be >= 0, got -0.1$"):
        init_params(ModelSpec.linear(2, 1), torch.Generator(), std=-0.1)
    with pytest.raises(ValueError, match=r"^std must be finite, got nan$"):
        init_params(ModelSpec.linear(2, 1), torch.Generator(), std=float("nan"))
    with pytest.raises(ValueError, match=r"flat parameter vector has 5 entries"):
        unflatten_params(torch.zeros(5), ModelSpec.linear(2, 1))
    with pytest.raises(ValueError, match=r"T must have shape \(3, 3\)"):
        change_of_basis({}, ModelSpec.linear(2, 1), torch.eye(2))


def test_bad_problem_for_family() -> None:
    with pytest.raises(ValueError, match="needs linear attention"):
        get_family("pgd", Problem(2, 1, attention="kernel"))
    with pytest.raises(ValueError, match=r"unknown family 'pgdx'; known: pgd, pgd-relaxed"):
        get_family("pgdx", Problem(2, 1))
    with pytest.raises(ValueError, match=r"Problem.d must be an int >= 1, got 0"):
        Problem(0, 1)
    with pytest.raises(ValueError, match="not positive definite"):
        Problem(2, 1, sigma=torch.tensor([[1.0, 2.0], [2.0, 1.0]], dtype=F64))


def test_kernel_heads_accept_kernel_objects() -> None:
    k = get_kernel("rbf:0.5")
    spec = ModelSpec.kernel(2, 1, k)
    assert spec.heads[0].kernel is k
    with pytest.raises(AttributeError, match="a linear-attention head has no kernel"):
        ModelSpec.linear(2, 1).heads[0].kernel
    # LinearRegression prompts run through a model of the matching width
    batch = LinearRegression(2, 4).sample(3, torch.Generator().manual_seed(10))
    out = predict(init_params(spec, torch.Generator().manual_seed(11), dtype=F64), spec, batch.Z)
    assert out.shape == (3,) and torch.isfinite(out).all()


# ---------------------------------------------------------------------- the fast forward equals this one
_HEAD_MIXES = {
    "linear": (HeadSpec("linear"),),
    "linear x2": (HeadSpec("linear"), HeadSpec("linear")),
    "exp": (HeadSpec("kernel", "exp"),),
    "softmax+relu": (HeadSpec("kernel", "softmax"), HeadSpec("kernel", "relu")),
    "linear-kernel+rbf": (HeadSpec("kernel", "linear"), HeadSpec("kernel", "rbf:0.5")),
    "linear-attn+exp": (HeadSpec("linear"), HeadSpec("kernel", "exp")),
}


@pytest.mark.parametrize("mix", list(_HEAD_MIXES))
def test_stacked_predict_equals_forward_on_a_grid(mix: str) -> None:
    """The fused training forward (experiment.train.stacked_predict) is checked against forward, the
    source of truth, over d ∈ {1, 2, 4}, n ∈ {1, 3, 8}, L ∈ {1, 2, 3}, per-seed and shared prompts."""
    from landscape.experiment.train import stacked_predict
    from landscape.tolerances import ALGORITHM_RTOL

    g = torch.Generator().manual_seed(40)
    S, B = 2, 3
    for d in (1, 2, 4):
        for n in (1, 3, 8):
            for L in (1, 2, 3):
                spec = ModelSpec(d, L, _HEAD_MIXES[mix])
                params = init_params(spec, g, std=0.15, seeds=S, dtype=F64)
                for shared in (False, True):
                    Z = 0.7 * torch.randn(((B,) if shared else (S, B)) + (d + 1, n + 1), generator=g, dtype=F64)
                    Z[..., -1, -1] = 0.0
                    out = stacked_predict(params, spec, Z)
                    for i in range(S):
                        p = {k: v[i] for k, v in params.items()}
                        ref = -forward(p, spec, Z if shared else Z[i])[..., -1, -1]
                        scale = max(1.0, float(ref.abs().max()))
                        assert bool(torch.isfinite(ref).all()) and scale < 1e3  # a well-conditioned comparison
                        assert float((out[i] - ref).abs().max()) <= ALGORITHM_RTOL * 100 * scale, (d, n, L, shared)
