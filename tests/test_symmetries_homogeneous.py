"""Rescaling symmetries of positively homogeneous kernels: declared, exact on the forward pass, quotiented."""

from __future__ import annotations

import pytest
import torch

from landscape.theory.families import Problem, default_symmetries, get_family
from landscape.core.kernels import get_kernel
from landscape.core.model import ModelSpec, init_params, predict
from landscape.symbolic import family_loss, stationary_points
from landscape.core.tasks import LinearRegression

F64 = torch.float64


def _prompts(d: int, n: int, g: torch.Generator) -> torch.Tensor:
    return LinearRegression(d, n).sample(32, g).Z.to(F64)


def _names(spec: ModelSpec) -> list[str]:
    return [s.name.split("@")[0] for s in default_symmetries(spec)]


@pytest.mark.parametrize("kernel, degree", [("linear", 1), ("relu", 1), ({"name": "polynomial", "degree": 3,
                                                                          "offset": 0.0}, 3)])
def test_declared_scalings_leave_predictions_unchanged(kernel, degree):
    """h̃(u, tw) = t^k h̃(u, w) (t > 0): V → e^{kt}V, C → e^{-t}C is declared and the forward pass (every
    entry of V, B, C random, two layers) is unchanged to round-off; the same move with the wrong power
    changes the prediction, so the degree is what makes it a symmetry."""
    k = get_kernel(kernel["name"], degree=kernel["degree"], offset=kernel["offset"]) if isinstance(kernel, dict) \
        else get_kernel(kernel)
    spec = ModelSpec.kernel(2, 2, [k])
    assert _names(spec) == ["BC-gl", "VC-scale"] * 2
    g = torch.Generator().manual_seed(3)
    params = init_params(spec, g, std=0.5, dtype=F64)
    Z = _prompts(2, 4, g)
    ref = predict(params, spec, Z)
    t = torch.tensor(0.37, dtype=F64)
    for sym in default_symmetries(spec):
        moved = predict(sym.act(params, t if sym.dim == 1 else t * torch.ones(sym.dim, dtype=F64)), spec, Z)
        assert torch.allclose(moved, ref, rtol=1e-10, atol=1e-12), sym.name
    wrong = dict(params)
    wrong["layer0.head0.V"] = params["layer0.head0.V"] * torch.exp((degree + 1) * t)
    wrong["layer0.head0.C"] = params["layer0.head0.C"] * torch.exp(-t)
    assert not torch.allclose(predict(wrong, spec, Z), ref, rtol=1e-6)


@pytest.mark.parametrize("kernel", ["exp", "softmax", {"name": "polynomial", "degree": 2, "offset": 1.0}])
def test_non_homogeneous_kernels_get_no_value_scaling(kernel):
    """exp, softmax and (s + 1)²: no V/C scaling is declared, and indeed V → e^{t}V, C → e^{-t}C changes
    the prediction."""
    k = get_kernel(kernel["name"], degree=kernel["degree"], offset=kernel["offset"]) if isinstance(kernel, dict) \
        else get_kernel(kernel)
    spec = ModelSpec.kernel(2, 1, [k])
    assert "VC-scale" not in _names(spec)
    g = torch.Generator().manual_seed(5)
    params = init_params(spec, g, std=0.5, dtype=F64)
    Z = _prompts(2, 4, g)
    moved = dict(params)
    moved["layer0.head0.V"] = params["layer0.head0.V"] * 1.5
    moved["layer0.head0.C"] = params["layer0.head0.C"] / 1.5
    assert not torch.allclose(predict(moved, spec, Z), predict(params, spec, Z), rtol=1e-6)


def test_relu_one_layer_optimum_is_a_minimum_modulo_both_scalings():
    """fgd with ReLU, one layer (V = diag(0, r), B = bI, C = cI): the prediction depends on r·b·c only
    (ReLU is positively homogeneous), so the minimum is a 2-dimensional set; with both scalings declared
    the solver quotients them out and reports a strict minimum (it was 'degenerate' with the B/C
    scaling alone)."""
    fam = get_family("fgd", Problem(d=2, layers=1, n=3, attention="kernel", activations=("relu",)))
    fl = family_loss(fam, samples=256, seed=4)
    pts = stationary_points(fl, starts=1, seed=0)
    best = pts[0]
    assert best.kind == "min" and best.symmetry_dims == 2 and best.morse_index == 0
    assert best.values["r0"] * best.values["b0"] * best.values["c0"] != 0
