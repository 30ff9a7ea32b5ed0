"""The per-dtype tolerance tables of :mod:`landscape.tolerances` and their one lookup."""

from __future__ import annotations

import pytest
import torch

from landscape import tolerances as T
from landscape.core.model import ModelSpec, num_params
from landscape.numeric.derivatives import finite_difference_gradient

TABLES = {name: getattr(T, name) for name in dir(T) if name.isupper() and isinstance(getattr(T, name), dict)}


@pytest.mark.parametrize("name", sorted(TABLES))
def test_every_table_has_both_verification_dtypes_and_float32_is_looser(name: str) -> None:
    table = TABLES[name]
    assert set(table) == {torch.float32, torch.float64}
    assert T.per_dtype(table, torch.float64) == table[torch.float64]
    assert table[torch.float32] > table[torch.float64]  # single precision never gets the tighter bound


def test_rtol_atol_read_their_tables_and_name_what_is_accepted() -> None:
    assert T.rtol(torch.float64) == T.RTOL[torch.float64] and T.atol(torch.float32) == T.ATOL[torch.float32]
    for lookup in (T.rtol, T.atol, lambda dt: T.per_dtype(T.FD_STEP, dt)):
        with pytest.raises(TypeError, match=r"unsupported dtype torch.float16; accepted: \['torch.float32', 'torch.float64'\]"):
            lookup(torch.float16)


def test_finite_differences_refuse_an_unsupported_dtype_with_the_tables_message() -> None:
    spec = ModelSpec.linear(2, 1)
    x = torch.ones(num_params(spec), dtype=torch.float16)
    with pytest.raises(TypeError, match="unsupported dtype torch.float16"):  # it was a bare KeyError
        finite_difference_gradient(lambda v: (v.double() ** 2).sum(), x, spec=spec)
