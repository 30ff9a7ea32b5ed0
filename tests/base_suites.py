"""Shared test suites every kernel and every parameter family must pass.

A new kernel gets the whole :class:`KernelSuite` by one line — add it to :data:`ALL_KERNELS`
(run by ``tests/test_kernels.py``), or subclass in any test file::

    class TestMyKernel(KernelSuite):
        KERNEL = Kernel.from_sympy("exp(-r2/2) + s", name="mine", psd=True)

Likewise a family gets :class:`FamilySuite` by adding ``(name, problem)`` to :data:`ALL_FAMILIES`
(run by ``tests/test_model.py``), or by a subclass with ``FAMILY = ...`` and ``PROBLEM = ...``. Every test compares a real number against an independent reference: the
reference algorithm, a Python loop, central finite differences, float64, or the family's sympy
matrices evaluated by sympy.
"""

from __future__ import annotations


import pytest
import sympy
import torch

import landscape.theory.algorithms as alg
from landscape.tolerances import CONSTRUCTION_RTOL, FD_RTOL, FD_STEP, RTOL
from landscape.theory.constructions import functional_gd_construction
from landscape.theory.families import Family, Problem, get_family
from landscape.core.kernels import Kernel, get_kernel, known_kernels
from landscape.core.model import (
    ModelSpec,
    flatten_params,
    init_params,
    param_shapes,
    predict,
    unflatten_params,
    unstack_params,
)
from landscape.core.tasks import LinearRegression, random_covariance

F64 = torch.float64
F32 = torch.float32


# ---------------------------------------------------------------------- helpers shared by the test files
def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """Normwise relative error ``max|a - b| / max|b|`` (absolute when ``b == 0``)."""
    scale = expected.abs().max()
    diff = (actual - expected).abs().max()
    return float(diff / scale) if scale > 0 else float(diff)


def regression_inputs(
    d: int, n: int, batch: int, g: torch.Generator, dtype: torch.dtype = F64
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``X (batch, d, n)``, ``y (batch, n)``, ``x_query (batch, d)``, covariates scaled by ``1/sqrt(d)``."""
    X = torch.randn(batch, d, n, generator=g, dtype=dtype) / d**0.5
    y = torch.randn(batch, n, generator=g, dtype=dtype)
    xq = torch.randn(batch, d, generator=g, dtype=dtype) / d**0.5
    return X, y, xq


def kernel_id(k: Kernel | str) -> str:
    return k if isinstance(k, str) else f"{k.name}[{k.expr}]"


# ---------------------------------------------------------------------- kernels
LAPLACE_BY_HAND = Kernel.from_sympy("exp(-sqrt(r2))", name="laplace-by-hand", psd=True)
CUBIC = Kernel.from_sympy("(s + 1)**3", name="cubic", psd=True)

ALL_KERNELS: list[Kernel | str] = [*known_kernels(), LAPLACE_BY_HAND, CUBIC]
"""Every kernel that must pass :class:`KernelSuite`: the built-ins and two user sympy kernels."""


class KernelSuite:
    """Tests every attention kernel must pass (GPyTorch-style base class).

    Subclasses set ``KERNEL`` (a name or a :class:`Kernel`) or override the ``kernel`` fixture
    (e.g. parametrised over a list).
    """

    KERNEL: Kernel | str | None = None
    d: int = 3
    n: int = 6
    layers: int = 3
    batch: int = 8

    @pytest.fixture
    def kernel(self) -> Kernel:
        if self.KERNEL is None:
            pytest.fail("a KernelSuite subclass must set KERNEL or override the `kernel` fixture")
        return get_kernel(self.KERNEL)

    # -- the construction (Cheng et al. Prop. 1) equals functional GD, state by state
    def test_construction_equals_functional_gd(self, kernel: Kernel) -> None:
        g = torch.Generator().manual_seed(11)
        X, y, xq = regression_inputs(self.d, self.n, self.batch, g)
        steps = [0.7, -0.4, 0.3][: self.layers]
        c = functional_gd_construction(self.d, steps, kernel)
        states = c.forward(c.embed(X, y, xq), return_states=True)
        ref = alg.functional_gd(X, y, xq, kernel.scores, steps, normalise=kernel.normalised, return_iterates=True)
        assert len(states) == self.layers + 1
        for l, Z in enumerate(states):
            assert torch.equal(Z[:, : self.d, :], states[0][:, : self.d, :]), f"X_{l} != X_0"
            if l == 0:
                continue
            assert rel_err(Z[:, -1, : self.n], ref.residuals[:, l]) <= CONSTRUCTION_RTOL
            assert rel_err(-Z[:, -1, self.n], ref.query_values[:, l]) <= CONSTRUCTION_RTOL
        assert rel_err(c(X, y, xq), ref.prediction) <= CONSTRUCTION_RTOL

    # -- vmap over stacked parameter sets equals a Python loop, bit for bit
    def test_vmap_over_seeds_equals_loop(self, kernel: Kernel) -> None:
        g = torch.Generator().manual_seed(12)
        spec = ModelSpec.kernel(self.d, 2, [kernel, "linear"])
        stacked = init_params(spec, g, std=0.3, seeds=8, dtype=F64)
        Z = torch.randn(5, self.d + 1, self.n + 1, generator=g, dtype=F64)
        vm = torch.func.vmap(lambda p: predict(p, spec, Z, validate=False))(stacked)
        loop = torch.stack([predict(p, spec, Z) for p in unstack_params(stacked)])
        assert vm.shape == (8, 5)
        assert torch.equal(vm, loop)

    # -- torch.func.grad of the in-context loss equals central finite differences
    def test_grad_matches_finite_differences(self, kernel: Kernel) -> None:
        g = torch.Generator().manual_seed(13)
        spec = ModelSpec.kernel(self.d, 2, kernel)
        theta = flatten_params(init_params(spec, g, std=0.4, dtype=F64), spec)
        Z = torch.randn(16, self.d + 1, self.n + 1, generator=g, dtype=F64) / self.d**0.5
        target = torch.randn(16, generator=g, dtype=F64)

        def loss(v: torch.Tensor) -> torch.Tensor:
            return ((predict(unflatten_params(v, spec), spec, Z, validate=False) - target) ** 2).mean()

        grad = torch.func.grad(loss)(theta)
        assert torch.isfinite(grad).all()
        h = FD_STEP[F64]
        for _ in range(3):
            u = torch.randn(theta.shape, generator=g, dtype=F64)
            u = u / u.norm()
            fd = (loss(theta + h * u) - loss(theta - h * u)) / (2 * h)
            assert abs(float(grad @ u - fd)) <= FD_RTOL[F64] * float(grad.norm()), (float(grad @ u), float(fd))

    # -- float32 forward agrees with float64 to float32 accuracy
    def test_float32_close_to_float64(self, kernel: Kernel) -> None:
        g = torch.Generator().manual_seed(14)
        spec = ModelSpec.kernel(self.d, 2, kernel)
        p64 = init_params(spec, g, std=0.3, dtype=F64)
        Z64 = torch.randn(16, self.d + 1, self.n + 1, generator=g, dtype=F64) / self.d**0.5
        out64 = predict(p64, spec, Z64)
        out32 = predict({k: v.to(F32) for k, v in p64.items()}, spec, Z64.to(F32))
        assert out32.dtype == F32
        assert rel_err(out32.to(F64), out64) <= RTOL[F32]

    # -- a PSD kernel has a symmetric PSD Gram; a kernel flagged non-PSD has a negative eigenvalue
    def test_gram_symmetry_and_psd_flag(self, kernel: Kernel) -> None:
        if kernel.normalised or kernel.psd is None:
            pytest.skip(f"kernel {kernel.name!r} is normalised or its PSD property is unknown")
        g = torch.Generator().manual_seed(15)
        U = torch.randn(self.d, 12, generator=g, dtype=F64)
        K = kernel.gram(U, U)
        scale = float(K.abs().max())
        assert float((K - K.T).abs().max()) <= RTOL[F64] * scale
        ev = torch.linalg.eigvalsh((K + K.T) / 2)
        if kernel.psd:
            assert float(ev.min()) >= -RTOL[F64] * scale
        else:
            assert float(ev.min()) < -1e-3 * scale, "kernel flagged non-PSD but the Gram is PSD"


# ---------------------------------------------------------------------- families
def _prompts_for(problem: Problem, batch: int, g: torch.Generator) -> torch.Tensor:
    task = LinearRegression(problem.d, problem.n, sigma=problem.sigma)
    return task.sample(batch, g).Z


class FamilySuite:
    """Tests every parameter family must pass.

    Subclasses set ``FAMILY`` (a name or :class:`Family`) and ``PROBLEM`` (a :class:`Problem`), or
    override the ``family`` fixture.
    """

    FAMILY: Family | str | None = None
    PROBLEM: Problem | None = None

    @pytest.fixture
    def family(self) -> Family:
        if self.FAMILY is None or self.PROBLEM is None:
            pytest.fail("a FamilySuite subclass must set FAMILY and PROBLEM or override the `family` fixture")
        return get_family(self.FAMILY, self.PROBLEM)

    @staticmethod
    def _values(family: Family, seed: int, lead: tuple[int, ...] = ()) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return 0.2 + 0.6 * torch.rand(lead + (family.dim,), generator=g, dtype=F64)

    def test_params_shapes(self, family: Family) -> None:
        shapes = param_shapes(family.spec)
        p = family.params(self._values(family, 1))
        assert list(p) == list(shapes)
        assert all(tuple(p[k].shape) == shapes[k] for k in shapes)
        stacked = family.params(self._values(family, 2, (4,)))
        assert all(tuple(stacked[k].shape) == (4,) + shapes[k] for k in shapes)
        named = family.params(dict(zip(family.names, self._values(family, 1).tolist())))
        assert all(torch.equal(named[k], p[k]) for k in shapes)

    def test_params_equal_sympy_blocks(self, family: Family) -> None:
        v = self._values(family, 3)
        p = family.params(v)
        subs = dict(zip(family.symbols, v.tolist()))
        for key, M in family.sympy_params().items():
            ref = torch.tensor([[float(sympy.N(e.subs(subs))) for e in row] for row in M.tolist()], dtype=F64)
            if ref.abs().max() > 0:
                assert rel_err(p[key], ref) <= RTOL[F64], key
            else:
                assert torch.equal(p[key], ref), key

    def test_tangent_basis_equals_finite_differences(self, family: Family) -> None:
        v = self._values(family, 4)
        J = family.tangent_basis(v)
        assert J.shape == (flatten_params(family.params(v), family.spec).shape[-1], family.dim)
        h = FD_STEP[F64]
        for i in range(family.dim):
            e = torch.zeros(family.dim, dtype=F64)
            e[i] = h
            fd = (family.flat(v + e) - family.flat(v - e)) / (2 * h)
            assert float((J[:, i] - fd).abs().max()) <= FD_RTOL[F64] * max(float(fd.abs().max()), 1.0)

    def test_symmetries_leave_predictions_invariant(self, family: Family) -> None:
        g = torch.Generator().manual_seed(5)
        Z = _prompts_for(family.problem, 12, g)
        p = family.params(self._values(family, 6))
        base = predict(p, family.spec, Z)
        assert family.symmetries, "a family of a transformer always has the head scalings as symmetries"
        for sym in family.symmetries:
            moved = sym.act(p, torch.full((sym.dim,), 0.37, dtype=F64) if sym.dim > 1 else torch.tensor(0.37, dtype=F64))
            assert any(not torch.equal(moved[k], p[k]) for k in p), f"{sym.name} did not move the weights"
            assert rel_err(predict(moved, family.spec, Z), base) <= RTOL[F64], sym.name


_SIGMA3 = random_covariance(3, torch.Generator().manual_seed(2024))

ALL_FAMILIES: list[tuple[str, Problem]] = [
    ("pgd", Problem(3, 2, n=5, sigma=_SIGMA3, attention="linear")),
    ("pgd-relaxed", Problem(3, 2, n=5, sigma=_SIGMA3, attention="linear")),
    ("pgd-full", Problem(3, 1, n=5, sigma=_SIGMA3, attention="linear")),
    ("pgd-identity", Problem(3, 2, n=5, sigma=_SIGMA3, attention="linear")),
    ("fgd", Problem(3, 2, n=5, sigma=_SIGMA3, attention="kernel", activations=("exp",))),
    ("fgd", Problem(3, 1, n=5, sigma=_SIGMA3, attention="kernel", activations=("exp", "linear"))),
    ("fgd-full", Problem(3, 2, n=5, sigma=_SIGMA3, attention="kernel", activations=("relu",))),
    ("fgd-identity", Problem(3, 2, n=5, sigma=_SIGMA3, attention="kernel", activations=("softmax",))),
]
"""Every built-in family on a small anisotropic problem, for :class:`FamilySuite`."""


def family_id(item: tuple[str, Problem]) -> str:
    name, prob = item
    return f"{name}-{prob.attention}-L{prob.layers}-" + "+".join(a.name for a in prob.activations) \
        if prob.attention == "kernel" else f"{name}-L{prob.layers}"
