"""Held entries (TrainConfig.fixed) and the paper presets of landscape.recipe.preset.

References: the held values themselves (exact equality after training, weight decay included),
the one-layer optimum of Ahn et al. (2023) Theorem 1 for Σ = I, A* = n/(n+d+1)·I, reached by
training the Lemma-1 form P = diag(0, 1), Q = −diag(A, 0), and the config hashes of configs
without held entries (unchanged: tests/test_recipe.py holds the reference digests).
"""

from __future__ import annotations

import pytest
import torch

from landscape import recipe
from landscape.experiment.store import config_hash
from landscape.experiment.train import TrainConfig, free_mask, held_entries, init_state, train


def _check_ahn_form(params: dict[str, torch.Tensor], d: int, *, p_block_zero: bool) -> None:
    for key, W in params.items():
        if key.endswith(".P"):
            assert torch.equal(W[:, d, d], torch.ones_like(W[:, d, d])), key  # P_{d+1,d+1} == 1 exactly
            assert torch.equal(W[:, d, :d], torch.zeros_like(W[:, d, :d])) and torch.equal(W[:, :d, d], torch.zeros_like(W[:, :d, d]))
            if p_block_zero:
                assert torch.equal(W[:, :d, :d], torch.zeros_like(W[:, :d, :d])), key
        else:  # Q: the covariate block only
            assert torch.equal(W[:, d, :], torch.zeros_like(W[:, d, :])) and torch.equal(W[:, :d, d], torch.zeros_like(W[:, :d, d]))


@pytest.mark.parametrize("engine", ["stacked", "auto"])
def test_ahn2023_preset_holds_the_value_scale_and_trains_the_blocks(engine: str) -> None:
    d = 3
    cfg = TrainConfig(**recipe.preset("ahn2023"), d=d, n=10, layers=2, seeds=2, steps=60, batch=64, lr=3e-3,
                      optimizer="adamw", weight_decay=0.1, dtype="float64", engine=engine, log_every=60,
                      checkpoint_every=0, eval_batch=512)
    init = init_state(cfg).params
    _check_ahn_form(init, d, p_block_zero=False)
    free = init["layer0.head0.P"][:, :d, :d]
    assert 0 < float(free.abs().max()) < 1e-3  # N(0, 1e-4^2) entries
    res = train(cfg, None, progress=False)
    _check_ahn_form(res.params, d, p_block_zero=False)
    for key in ("layer0.head0.P", "layer0.head0.Q", "layer1.head0.Q"):
        moved = (res.params[key][:, :d, :d] - init[key][:, :d, :d]).abs().max()
        assert float(moved) > 1e-2, key  # the d×d blocks train
    assert not bool(res.diverged.any())


def test_ahn2023_p0_preset_reaches_the_one_layer_optimum_of_theorem_1() -> None:
    d, n = 2, 10
    cfg = TrainConfig(**recipe.preset("ahn2023-p0"), d=d, n=n, layers=1, seeds=2, steps=300, batch=512, lr=0.02,
                      schedule="cosine", dtype="float64", engine="stacked", log_every=300, checkpoint_every=0,
                      eval_batch=256)
    res = train(cfg, None, progress=False)
    _check_ahn_form(res.params, d, p_block_zero=True)
    A = -res.params["layer0.head0.Q"][:, :d, :d]
    a_star = n / (n + d + 1)  # Ahn et al. Theorem 1, Σ = I: A* = ((n+1)/n Σ + tr(Σ)/n I)^{-1}
    eye = torch.eye(d, dtype=torch.float64)
    err = (A - a_star * eye).flatten(1).norm(dim=1) / (a_star * d**0.5)
    assert bool((err < 0.03).all()), err  # measured 0.8-0.9 %


def test_held_entries_stay_out_of_existing_hashes_and_round_trip() -> None:
    base = dict(d=3, n=6, steps=5, batch=8)
    plain = TrainConfig(**base)
    assert "fixed" not in plain.to_dict()
    held = TrainConfig(**base, fixed=[("P", "corner", 1.0)])
    stored = held.to_dict()
    assert stored["fixed"] == [["P", "corner", 1.0]]
    assert config_hash(stored) != config_hash(plain.to_dict())
    back = TrainConfig.from_dict(stored)
    assert back.fixed == (("P", "corner", 1.0),) and config_hash(back.to_dict()) == config_hash(stored)
    h, v = held_entries(held)
    assert int(h["layer0.head0.P"].sum()) == 1 and float(v["layer0.head0.P"][3, 3]) == 1.0
    assert not bool(free_mask(held)["layer0.head0.P"][3, 3]) and bool(free_mask(plain)["layer0.head0.P"][3, 3])


@pytest.mark.parametrize("kw, exc, match", [
    (dict(fixed=[("P", "middle", 1.0)]), ValueError, "covariate"),
    (dict(fixed=[("W", "corner", 1.0)]), ValueError, "'P'"),
    (dict(fixed=[("P", "corner")]), ValueError, r"\(letter, block, value\)"),
    (dict(fixed=[("P", "corner", 1.0), ("P", "corner", 2.0)]), ValueError, "twice"),
    (dict(fixed="P.corner=1"), TypeError, "sequence of"),
    (dict(fixed=[("V", "corner", 1.0)]), ValueError, r"linear attention has the weights \['P', 'Q'\]"),
])
def test_bad_fixed_is_one_line(kw: dict, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match) as info:
        TrainConfig(d=3, n=6, **kw)
    assert "\n" not in str(info.value)


def test_unknown_preset_lists_the_names() -> None:
    with pytest.raises(ValueError, match="'ahn2023', 'ahn2023-p0'"):
        recipe.preset("ahn2024")
