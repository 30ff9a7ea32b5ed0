"""Tests of landscape/_checks.py: one exception type per kind of error.

A dtype or device mismatch is a ``TypeError`` wherever it is detected (the shared check, the
forward pass, the reference algorithms that call the shared check); the ``meta`` device stands in
for a second device on a CPU-only machine.
"""

from __future__ import annotations

import pytest
import torch

from landscape._checks import check_same_dtype_device
from landscape.core.model import ModelSpec, forward, init_params
from landscape.theory.algorithms import gd

F64 = torch.float64


def test_device_mismatch_is_a_type_error() -> None:
    a = torch.zeros(2, dtype=F64)
    with pytest.raises(TypeError, match=r"^b is on device meta but a is on cpu; all tensor inputs must be on one device$"):
        check_same_dtype_device("a", a, b=torch.zeros(2, dtype=F64, device="meta"))
    with pytest.raises(TypeError, match=r"^b has dtype torch.float32 but a has dtype torch.float64; "):
        check_same_dtype_device("a", a, b=torch.zeros(2))
    check_same_dtype_device("a", a, b=torch.ones(3, dtype=F64), c=None)  # same kind: no error


def test_every_route_raises_the_same_type() -> None:
    X = torch.zeros(1, 2, 3, dtype=F64)
    with pytest.raises(TypeError, match=r"y is on device meta but X is on cpu"):
        gd(X, torch.zeros(1, 3, dtype=F64, device="meta"), torch.ones(1, dtype=F64))
    spec = ModelSpec.linear(2, 1)
    p = init_params(spec, torch.Generator().manual_seed(0), dtype=F64)
    with pytest.raises(TypeError, match=r"Z is on device meta but params is on cpu"):
        forward(p, spec, torch.zeros(1, 3, 4, dtype=F64, device="meta"))
