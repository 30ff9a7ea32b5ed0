"""Tests of landscape/core/kernels.py.

References: every built-in's sympy expression evaluated by sympy itself (``lambdify`` to ``math``)
pair by pair; the softmax definition (columns over sources sum to one); central finite
differences; built-in kernels equal to user kernels written by hand; and the shared
:class:`~base_suites.KernelSuite` over every kernel.
"""

from __future__ import annotations

import math

import pytest
import sympy
import torch
from base_suites import ALL_KERNELS, CUBIC, LAPLACE_BY_HAND, F64, KernelSuite, kernel_id, rel_err

from landscape.tolerances import ATOL, FD_RTOL, FD_STEP, RTOL
from landscape.core.kernels import INVARIANTS, Kernel, SumKernel, get_kernel, known_kernels, max_diagonal
from landscape.core.model import ModelSpec, init_params, predict


class TestAllKernels(KernelSuite):
    """The shared suite over :data:`base_suites.ALL_KERNELS` (add a kernel there to test it)."""

    @pytest.fixture(params=ALL_KERNELS, ids=kernel_id)
    def kernel(self, request: pytest.FixtureRequest) -> Kernel:
        return get_kernel(request.param)


class TestSuiteBySubclass(KernelSuite):
    """The one-line subclass route for a new kernel."""

    KERNEL = Kernel.from_sympy("exp(-r2/2) + s", name="rbf-plus-linear", psd=True)


# ---------------------------------------------------------------------- torch Gram = sympy expression
def _sympy_gram(kernel: Kernel, U: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """``[expr(s, r2, uu, ww)]_{ij}`` evaluated by sympy's ``math`` printer, one pair at a time."""
    f = sympy.lambdify(INVARIANTS, kernel.expr, modules=["math"])
    out = torch.empty(U.shape[1], W.shape[1], dtype=F64)
    for i in range(U.shape[1]):
        for j in range(W.shape[1]):
            u, w = U[:, i].tolist(), W[:, j].tolist()
            s = math.fsum(a * b for a, b in zip(u, w))
            r2 = math.fsum((a - b) ** 2 for a, b in zip(u, w))
            uu = math.fsum(a * a for a in u)
            ww = math.fsum(b * b for b in w)
            out[i, j] = float(f(s, r2, uu, ww))
    return out


@pytest.mark.parametrize("name", known_kernels() + ("exp:0.5", "rbf:2", "laplace:0.7", "polynomial:3"))
def test_builtin_gram_equals_sympy_expression(name: str) -> None:
    k = get_kernel(name)
    g = torch.Generator().manual_seed(1)
    U = torch.randn(3, 5, generator=g, dtype=F64)
    W = torch.randn(3, 4, generator=g, dtype=F64)
    ref = _sympy_gram(k, U, W)
    if k.normalised:
        assert rel_err(k.scores(U, W), ref) <= RTOL[F64]
        ref = ref / ref.sum(0, keepdim=True)
    assert rel_err(k.gram(U, W), ref) <= RTOL[F64]


def test_builtin_expressions_are_the_documented_formulas() -> None:
    s, r2, uu, ww = INVARIANTS
    expected = {
        "linear": s, "relu": sympy.Max(s, 0), "exp": sympy.exp(s), "softmax": sympy.exp(s),
        "rbf": sympy.exp(-r2 / 2), "laplace": sympy.exp(-sympy.sqrt(r2)), "polynomial": (s + 1) ** 2,
    }
    assert set(expected) == set(known_kernels())
    for name, e in expected.items():
        diff = sympy.simplify(get_kernel(name).expr - e)
        assert diff == 0 or abs(float(diff.subs({s: 0.3, r2: 0.7, uu: 1.1, ww: 0.9}))) < 1e-14, name


@pytest.mark.parametrize("expr", ["exp(-sqrt(r2)) * (uu + ww) + s**2", "1/(1 + r2) - cos(s) * ww",
                                  "(1 + sqrt(3*r2)) * exp(-sqrt(3*r2))"])  # sympy splits sqrt(3*r2)
def test_user_kernel_gram_equals_sympy_expression(expr: str) -> None:
    k = Kernel.from_sympy(expr, name="mixed")
    g = torch.Generator().manual_seed(2)
    U, W = torch.randn(2, 4, generator=g, dtype=F64), torch.randn(2, 3, generator=g, dtype=F64)
    assert rel_err(k.gram(U, W), _sympy_gram(k, U, W)) <= RTOL[F64]


@pytest.mark.parametrize("expr", ["Max(s, 0) + r2", "Min(s, 1)"])
def test_user_kernel_with_max_min(expr: str) -> None:
    k = Kernel.from_sympy(expr, name="piecewise")
    g = torch.Generator().manual_seed(2)
    U, W = torch.randn(2, 4, generator=g, dtype=F64), torch.randn(2, 3, generator=g, dtype=F64)
    assert rel_err(k.gram(U, W), _sympy_gram(k, U, W)) <= RTOL[F64]


# ---------------------------------------------------------------------- softmax, batching
def test_softmax_columns_sum_to_one_over_sources() -> None:
    k = get_kernel("softmax")
    g = torch.Generator().manual_seed(3)
    U = torch.randn(4, 3, 7, generator=g, dtype=F64) * 3  # (batch, k, sources)
    W = torch.randn(4, 3, 5, generator=g, dtype=F64) * 3  # (batch, k, receivers)
    G = k.gram(U, W)
    assert G.shape == (4, 7, 5)
    assert float((G.sum(-2) - 1).abs().max()) <= ATOL[F64]
    assert bool((G > 0).all())
    # each column is the softmax of its own receiver's scores: shifting one receiver leaves others alone
    W2 = torch.cat([W[..., :1] * 2, W[..., 1:]], dim=-1)
    assert torch.equal(k.gram(U, W2)[..., 1:], G[..., 1:])


def test_softmax_in_the_model_normalises_over_the_n_sources_only() -> None:
    # Z0 with query last: the query must not be a source; the query's own score is excluded.
    g = torch.Generator().manual_seed(4)
    d, n = 2, 4
    Z = torch.randn(1, d + 1, n + 1, generator=g, dtype=F64)
    spec = ModelSpec.kernel(d, 1, "softmax")
    eye = torch.eye(d + 1, dtype=F64)
    V = torch.zeros(d + 1, d + 1, dtype=F64)
    V[d, d] = 1.0
    params = {"layer0.head0.V": V, "layer0.head0.B": eye, "layer0.head0.C": eye}
    out = predict(params, spec, Z)
    scores = torch.exp(Z[0, :, :n].T @ Z[0, :, n])
    expected = -(Z[0, d, n] + (Z[0, d, :n] @ (scores / scores.sum())) / n)
    assert rel_err(out, expected.reshape(1)) <= RTOL[F64]


def test_gram_batches_like_a_loop() -> None:
    g = torch.Generator().manual_seed(5)
    U = torch.randn(6, 3, 4, generator=g, dtype=F64)
    W = torch.randn(6, 3, 5, generator=g, dtype=F64)
    for name in known_kernels():
        k = get_kernel(name)
        batched = k.gram(U, W)
        loop = torch.stack([k.gram(U[b], W[b]) for b in range(6)])
        assert rel_err(batched, loop) <= RTOL[F64], name


# ---------------------------------------------------------------------- Laplace and derivatives
@pytest.mark.parametrize("kernel", [get_kernel("laplace"), LAPLACE_BY_HAND], ids=["laplace", "by-hand"])
def test_laplace_gradient_finite_at_coincident_points(kernel: Kernel) -> None:
    g = torch.Generator().manual_seed(6)
    U = torch.randn(3, 4, generator=g, dtype=F64, requires_grad=True)
    K = kernel.gram(U, U)  # diagonal has r2 = 0 exactly
    assert torch.allclose(torch.diagonal(K), torch.ones(4, dtype=F64), rtol=0, atol=RTOL[F64])
    (grad,) = torch.autograd.grad(K.sum(), U)
    assert torch.isfinite(grad).all()
    # off the diagonal the gradient is the true one: compare with central differences
    W = torch.randn(3, 3, generator=g, dtype=F64)
    f = lambda X: kernel.gram(X, W).sum()  # noqa: E731
    X0 = U.detach()
    (gX,) = torch.autograd.grad(f(X0.requires_grad_()), X0)
    h = FD_STEP[F64]
    E = torch.zeros_like(X0)
    E[1, 2] = h
    fd = (f(X0.detach() + E) - f(X0.detach() - E)) / (2 * h)
    assert abs(float(gX[1, 2] - fd)) <= FD_RTOL[F64] * max(1.0, abs(float(fd)))


def test_user_kernels_equal_their_builtin_twins_in_the_model() -> None:
    g = torch.Generator().manual_seed(7)
    d = 3
    Z = torch.randn(10, d + 1, 6, generator=g, dtype=F64) / d**0.5
    pairs = [
        (Kernel.from_sympy("exp(-r2/2)", name="rbf-by-hand"), get_kernel("rbf")),
        (LAPLACE_BY_HAND, get_kernel("laplace")),
        (CUBIC, get_kernel("polynomial", degree=3, offset=1.0)),
        (Kernel.from_sympy("exp(s/2)"), get_kernel("exp:0.5")),
    ]
    for user, builtin in pairs:
        spec_u, spec_b = ModelSpec.kernel(d, 2, user), ModelSpec.kernel(d, 2, builtin)
        params = init_params(spec_u, torch.Generator().manual_seed(8), std=0.4, dtype=F64)
        out_u, out_b = predict(params, spec_u, Z), predict(params, spec_b, Z)
        assert rel_err(out_u, out_b) <= RTOL[F64], user.name
        assert float(out_b.abs().max()) > 1e-3  # not trivially zero


# ---------------------------------------------------------------------- composite kernels, helpers
def test_sum_kernel_is_the_weighted_sum_of_projected_kernels() -> None:
    g = torch.Generator().manual_seed(9)
    G1 = torch.eye(4, dtype=F64)[:2]
    G2 = torch.randn(3, 4, generator=g, dtype=F64)
    K = SumKernel(((0.5, get_kernel("exp"), G1), (2.0, get_kernel("linear"), G2)))
    U, W = torch.randn(4, 5, generator=g, dtype=F64), torch.randn(4, 6, generator=g, dtype=F64)
    ref = 0.5 * torch.exp((G1 @ U).T @ (G1 @ W)) + 2.0 * (G2 @ U).T @ (G2 @ W)
    assert rel_err(K.gram(U, W), ref) <= RTOL[F64]
    assert K.psd is True


def test_max_diagonal_is_sup_of_the_diagonal_on_the_sphere() -> None:
    g = torch.Generator().manual_seed(10)
    U = torch.randn(5, 200, generator=g, dtype=F64)
    U = 1.5 * U / U.norm(dim=0, keepdim=True)
    for name in ("exp", "linear", "polynomial", "rbf"):
        k = get_kernel(name)
        diag = torch.diagonal(k.gram(U, U))
        assert abs(float(diag.max()) - max_diagonal(k, 1.5)) <= RTOL[F64] * max_diagonal(k, 1.5), name


# ---------------------------------------------------------------------- bad input
def test_unknown_activation_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown activation/kernel 'tanh'; known: linear, relu, exp, softmax"):
        get_kernel("tanh")
    with pytest.raises(ValueError, match="unknown activation/kernel"):
        ModelSpec.kernel(3, 1, ["exp", "gelu"])


def test_user_kernel_with_other_free_symbols_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"unknown name 'ell'; accepted: numbers, the symbols \[r2, s, uu, ww\]"):
        Kernel.from_sympy("exp(-r2 / ell)")
    with pytest.raises(ValueError, match=r"unknown name 'a'"):
        Kernel.from_sympy("a * s + b")
    ell, a, b = sympy.symbols("ell a b")
    s, r2 = INVARIANTS[0], INVARIANTS[1]
    with pytest.raises(ValueError, match=r"free symbols \['ell'\]; a kernel may only use its arguments "
                                         r"\['s', 'r2', 'uu', 'ww'\]"):
        Kernel.from_sympy(sympy.exp(-r2 / ell))
    with pytest.raises(ValueError, match=r"\['a', 'b'\]"):
        Kernel.from_sympy(a * s + b)


def test_unparseable_kernel_and_bad_constants() -> None:
    with pytest.raises(ValueError, match="cannot parse kernel expression"):
        Kernel.from_sympy("exp(s")
    with pytest.raises(ValueError, match="lengthscale must be > 0"):
        get_kernel("rbf:-1")
    with pytest.raises(ValueError, match="takes no constant"):
        get_kernel("relu:2")
    with pytest.raises(TypeError, match="kernel must be a name or a Kernel"):
        get_kernel(3)  # type: ignore[arg-type]


# ---------------------------------------------------------------------- user kernels checked at parse time
@pytest.mark.parametrize("text, why", [
    ("foo(s)", r"cannot parse kernel expression 'foo\(s\)': unknown function 'foo'; accepted: .*the functions "
               r"\[exp, log, sqrt"),
    ("1/0", r"kernel expression '1/0' is not finite: it evaluates to zoo"),
    ("zoo", r"cannot parse kernel expression 'zoo': unknown name 'zoo'"),
    ("s/0", r"is not finite: it evaluates to"),
    ("log(s)", r"kernel 'sympy:log\(s\)': log\(s\) is not finite at s=0, r2=0.5, uu=0.25, ww=0.25; a kernel must "
               r"be real, finite and differentiable wherever attention evaluates it \(probe points: .*s in \[-4, 4\], "
               r"r2 in \[0, 16\], uu, ww in \[0.25, 4\]\)"),
    ("sqrt(s)", r"sqrt\(s\) is not real at s=-0.125"),
    ("s**(1/3)", r"is not real at s=-0.125"),
    ("1/s", r"is not finite at s=0"),
    ("exp(1000*s)", r"is not finite at s=1"),
    ("exp(-r2**0.5)", r"has no finite derivative in r2 at s=0.25, r2=0, uu=0.25, ww=0.25 \(write sqrt\(r2\)"),
    ("Abs(s)**0.5", r"has no finite derivative in s at s=0"),
])
def test_bad_user_kernels_fail_at_parse_time_with_one_line(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why) as exc:
        get_kernel("sympy:" + text)
    assert "\n" not in str(exc.value)
    with pytest.raises(ValueError):  # the Python API and the model spec check the same way
        ModelSpec.kernel(2, 1, ["sympy:" + text])


def test_a_sympy_kernel_with_an_undefined_function_is_rejected() -> None:
    s = INVARIANTS[0]
    with pytest.raises(ValueError, match=r"unknown function\(s\) \['foo'\] in foo\(s\); a kernel may call exp, log"):
        Kernel.from_sympy(sympy.Function("foo")(s))
    with pytest.raises(ValueError, match=r"unknown function\(s\) \['sinh'\]"):
        Kernel.from_sympy(sympy.sinh(s))


def test_probe_points_are_invariants_of_real_pairs_and_every_builtin_passes() -> None:
    from landscape.core.kernels import PROBE_POINTS, _probe_failure

    pts = torch.tensor(PROBE_POINTS, dtype=F64)
    s, r2, uu, ww = pts.T
    # r2 = |u - w|^2 = uu + ww - 2 s, and Cauchy-Schwarz |s| <= |u||w|: the points are realisable
    assert torch.allclose(r2, uu + ww - 2 * s, atol=1e-15) and bool((s.abs() <= (uu * ww).sqrt() + 1e-15).all())
    assert (float(s.min()), float(s.max()), float(r2.min()), float(r2.max())) == (-4.0, 4.0, 0.0, 16.0)
    assert (float(uu.min()), float(uu.max())) == (0.25, 4.0)
    for name in known_kernels():
        assert _probe_failure(get_kernel(name).expr) is None, name
    # the user kernels of the docs and tests pass, and their values are the formulas
    for text in ("(1+sqrt(3.0*r2))*exp(-sqrt(3.0*r2))", "exp(-r2/2) + s", "(s + 1)**3", "max(s, 0)",
                 "log(1 + exp(s))", "s/sqrt(uu*ww)", "tanh(s) + erf(r2) - Min(uu, ww)"):
        k = get_kernel("sympy:" + text)
        U = torch.tensor([[1.0, 0.0], [0.5, 2.0]], dtype=F64)
        W = torch.tensor([[0.3, -1.0], [0.2, 0.7]], dtype=F64)
        got = k.gram(U, W)
        for i in range(2):
            for j in range(2):
                u, w = U[:, i], W[:, j]
                vals = {INVARIANTS[0]: float(u @ w), INVARIANTS[1]: float((u - w) @ (u - w)),
                        INVARIANTS[2]: float(u @ u), INVARIANTS[3]: float(w @ w)}
                assert abs(float(got[i, j]) - float(k.expr.subs(vals))) <= 1e-12, text
