"""One median over seeds: the mean of the two middle values, equal to the figures' statistic."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from landscape.experiment.summary import seed_median
from landscape.views.plots import seed_quantiles

F64 = torch.float64


def test_two_seeds_give_their_mean_not_the_minimum() -> None:
    v = torch.tensor([0.080, 0.288], dtype=F64)
    assert float(seed_median(v)) == pytest.approx(0.184, abs=1e-15)
    assert float(torch.median(v)) == pytest.approx(0.080)  # what the old tables printed


def test_seed_median_equals_the_figure_median_and_a_sorted_reference() -> None:
    g = torch.Generator().manual_seed(3)
    for S in (1, 2, 3, 4, 7, 8):
        vals = torch.rand(5, S, generator=g, dtype=F64)
        vals[1, 0] = float("nan")  # a diverged seed
        _, _, fig_med, _ = seed_quantiles(vals.numpy())
        ours = seed_median(vals, dim=-1)
        for i in range(5):
            row = np.sort(vals[i].numpy()[~np.isnan(vals[i].numpy())])
            k = row.size
            if k:
                ref = row[k // 2] if k % 2 else 0.5 * (row[k // 2 - 1] + row[k // 2])
                assert float(ours[i]) == pytest.approx(ref, abs=1e-15)
        np.testing.assert_allclose(ours[~torch.isnan(ours)].numpy(), fig_med, atol=1e-15)


def test_all_nan_gives_nan_and_bad_input_is_refused() -> None:
    assert torch.isnan(seed_median(torch.full((3,), float("nan"), dtype=F64)))
    with pytest.raises(TypeError, match="floating-point tensor"):
        seed_median(torch.tensor([1, 2, 3]))
