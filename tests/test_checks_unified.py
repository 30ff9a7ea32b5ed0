"""Integer and real arguments are checked by landscape._checks everywhere: a value of the wrong Python
type is a ``TypeError``, a value out of range a ``ValueError``, and both name the argument."""

from __future__ import annotations

import pytest
import torch

F64 = torch.float64


def _quadratic():
    from landscape.core.model import ModelSpec, flatten_params, num_params

    spec = ModelSpec.linear(d=1, layers=1)
    return (lambda params: (flatten_params(params, spec) ** 2).sum()), spec, torch.zeros(num_params(spec), dtype=F64)


@pytest.mark.parametrize("kwargs, kind, message", [
    (dict(gamma=float("nan")), ValueError, "gamma must be finite"),
    (dict(gamma=-1.0), ValueError, "gamma must be >= 0"),
    (dict(gamma="1"), TypeError, "gamma must be a real number, got str"),
    (dict(step_size=0.0), ValueError, "step_size must be > 0"),
    (dict(beta=True), TypeError, "beta must be a real number, got bool"),
    (dict(chains=2.0), TypeError, "chains must be an int >= 2, got float"),
])
def test_llc_constants(kwargs, kind, message) -> None:
    from landscape.numeric.llc import local_learning_coefficient

    loss, spec, w = _quadratic()
    with pytest.raises(kind, match=message):
        local_learning_coefficient(loss, w, torch.Generator(), steps=4, spec=spec, **kwargs)


@pytest.mark.parametrize("value, kind", [(1.5, TypeError), (True, TypeError), (0, ValueError)])
def test_optimal_gd_loss_sizes(value, kind) -> None:
    from landscape.symbolic.whitened import optimal_gd_loss

    with pytest.raises(kind, match=r"^n must be an int >= 1, got "):
        optimal_gd_loss(1, value, 2)


@pytest.mark.parametrize("value, kind", [(2.0, TypeError), (0, ValueError)])
def test_store_keep_checkpoints(value, kind, tmp_path) -> None:
    from landscape.experiment.store import RunStore

    with pytest.raises(kind, match=r"^keep_checkpoints must be an int >= 1, got "):
        RunStore(tmp_path / "s", keep_checkpoints=value)
    assert not (tmp_path / "s").exists() or not any((tmp_path / "s").iterdir())


def test_stationary_points_starts_and_scale() -> None:
    from landscape.symbolic import family_loss
    from landscape.symbolic.solve import stationary_points
    from landscape.theory.families import Problem, get_family

    fl = family_loss(get_family("pgd", Problem(d=2, layers=1, n=3, attention="linear")))
    with pytest.raises(TypeError, match=r"^starts must be an int >= 1, got float$"):
        stationary_points(fl, starts=2.5)
    with pytest.raises(ValueError, match=r"^starts must be an int >= 1, got 0$"):
        stationary_points(fl, starts=0)
    with pytest.raises(TypeError, match=r"^scale must be a real number, got str$"):
        stationary_points(fl, scale="1")
    with pytest.raises(ValueError, match=r"^scale must be finite, got inf$"):
        stationary_points(fl, scale=float("inf"))


def test_a_device_mismatch_is_a_type_error_everywhere() -> None:
    """One exception type per kind: a tensor on another device is a TypeError in the shared check, in the
    algorithms and in the constructions (the ``meta`` device stands in for a second device on any machine)."""
    from landscape._checks import check_same_dtype_device
    from landscape.theory.algorithms import gd
    from landscape.theory.constructions import embed_regression

    X = torch.zeros(2, 3, 4, dtype=F64)
    y_meta = torch.zeros(2, 4, dtype=F64, device="meta")
    with pytest.raises(TypeError, match="y is on device meta but X is on cpu"):
        check_same_dtype_device("X", X, y=y_meta)
    with pytest.raises(TypeError, match="device"):
        gd(X, torch.zeros(2, 4, dtype=F64), [0.1], w0=torch.zeros(2, 3, dtype=F64, device="meta"))
    with pytest.raises(TypeError, match="y is on meta but the first input is on cpu"):
        embed_regression(X, y_meta, torch.zeros(2, 3, dtype=F64))
