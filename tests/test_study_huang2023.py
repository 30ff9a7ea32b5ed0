"""Huang, Cheng, Liang (2023) study: exact per-feature statistics and the quick study's claims."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from analysis import huang2023 as h
from figure_checks import assert_data_is_drawn, quick_study_fixture
from landscape.tolerances import ALGORITHM_RTOL, MC_NUM_SE
from landscape.experiment.store import RunStore
from landscape.core.tasks import OrthonormalFeatures


def _gen(seed: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def test_count_vectors_enumerate_the_multinomial() -> None:
    N, K = 7, 3
    C = h.count_vectors(N, K)
    assert C.shape == (math.comb(N + K - 1, K - 1), K)
    assert torch.all(C.sum(-1) == N)
    assert len({tuple(r) for r in C.tolist()}) == C.shape[0]
    task = OrthonormalFeatures(3, N, (0.5, 0.3, 0.2))
    en = h._Enumeration(task, torch.float64, "cpu")
    assert abs(float(en.logP.exp().sum()) - 1.0) < ALGORITHM_RTOL


def test_statistics_at_zero_match_multinomial_moments() -> None:
    # Q = 0: mass_m = c_m / N, so L_k = ½[(1-p_k)² + p_k(1-p_k)/N + Σ_{m≠k} (p_m² + p_m(1-p_m)/N)].
    probs, N = (0.55, 0.25, 0.15, 0.05), 12
    task = OrthonormalFeatures(5, N, probs)
    st = h.feature_statistics(torch.zeros(5, 5, dtype=torch.float64), task)
    p = torch.tensor(probs, dtype=torch.float64)
    second = p**2 + p * (1 - p) / N  # E (c_m/N)^2
    expected = 0.5 * ((1 - p) ** 2 + p * (1 - p) / N + (second.sum() - second))
    torch.testing.assert_close(st.loss, expected, rtol=ALGORITHM_RTOL, atol=0.0)
    torch.testing.assert_close(st.mass, p, rtol=ALGORITHM_RTOL, atol=0.0)
    assert float(st.total_loss) == pytest.approx(float((p * expected).sum()), rel=ALGORITHM_RTOL)


def test_w_integrated_per_feature_loss_matches_monte_carlo() -> None:
    # Exact per-feature loss (counts enumerated, w integrated out) vs the plain Monte-Carlo loss with
    # sampled w, at a random non-symmetric Q in a random orthonormal feature basis.
    g = _gen(11)
    d, N, probs = 5, 9, (0.6, 0.25, 0.15)
    F, _ = torch.linalg.qr(torch.randn(d, 3, generator=g, dtype=torch.float64))
    task = OrthonormalFeatures(d, N, probs, features=F)
    Q = 1.5 * torch.randn(d, d, generator=g, dtype=torch.float64)
    st = h.feature_statistics(Q, task)
    batch = task.sample(60_000, g)
    mc = h.monte_carlo_loss(Q, batch)
    fq = batch.latent["feature"][:, -1]
    for k in range(3):
        sel = mc[fq == k]
        se = float(sel.std()) / math.sqrt(len(sel))
        z = abs(float(sel.mean()) - float(st.loss[k])) / se
        assert z < MC_NUM_SE, (k, float(sel.mean()), float(st.loss[k]), se)
    # the w-integrated per-prompt loss has the same mean (and far less variance)
    wi = h.w_integrated_loss(Q, batch.X)
    assert float(wi.var()) < 0.5 * float(mc.var())
    assert abs(float(wi.mean()) - float(mc.mean())) < MC_NUM_SE * float(mc.std()) / math.sqrt(len(mc))


def test_attention_is_context_only_softmax() -> None:
    g = _gen(3)
    X = torch.randn(4, 3, 6, generator=g, dtype=torch.float64)
    Q = torch.randn(3, 3, generator=g, dtype=torch.float64)
    a = h.attention_weights(Q, X)
    s = torch.einsum("bdi,de,be->bi", X[..., :5], Q, X[..., 5])
    torch.testing.assert_close(a, torch.softmax(s, -1), rtol=ALGORITHM_RTOL, atol=0.0)
    y = torch.randn(4, 6, generator=g, dtype=torch.float64)
    torch.testing.assert_close(h.prediction(Q, X, y), (a * y[:, :5]).sum(-1), rtol=ALGORITHM_RTOL, atol=0.0)


def test_bad_input_is_rejected() -> None:
    X = torch.zeros(2, 3, 5, dtype=torch.float64)
    with pytest.raises(ValueError, match="Q must have shape"):
        h.attention_weights(torch.zeros(2, 2, dtype=torch.float64), X)
    with pytest.raises(TypeError, match="dtype"):
        h.attention_weights(torch.zeros(3, 3, dtype=torch.float32), X)
    with pytest.raises(ValueError, match="lr"):
        h.train_gd(OrthonormalFeatures(3, 4, (0.5, 0.5)), steps=2, lr=-1.0, batch=4, generator=_gen(0))
    with pytest.raises(ValueError, match="N must be"):
        h.count_vectors(0, 2)


def test_bad_input_follows_the_library_checks() -> None:
    """One exception type per kind of error (landscape._checks): a value of the wrong type is a
    TypeError, an out-of-range value a ValueError, a dtype mismatch a TypeError naming both."""
    task = OrthonormalFeatures(3, 4, (0.5, 0.5))
    with pytest.raises(TypeError, match="K must be an int >= 1, got float"):
        h.count_vectors(3, 2.0)
    with pytest.raises(TypeError, match="steps must be an int >= 1, got bool"):
        h.train_gd(task, steps=True, lr=0.1, batch=4, generator=_gen(0))
    with pytest.raises(ValueError, match="dense_until must be an int >= 0, got -1"):
        h.train_gd(task, steps=2, lr=0.1, batch=4, generator=_gen(0), dense_until=-1)
    with pytest.raises(ValueError, match="lr must be finite"):
        h.train_gd(task, steps=2, lr=float("inf"), batch=4, generator=_gen(0))
    with pytest.raises(TypeError, match="lr must be a real number, got str"):
        h.train_gd(task, steps=2, lr="0.1", batch=4, generator=_gen(0))
    X = torch.zeros(2, 3, 5, dtype=torch.float64)
    with pytest.raises(TypeError, match="Q has dtype torch.float32 but X has dtype torch.float64"):
        h.attention_weights(torch.zeros(3, 3, dtype=torch.float32), X)
    with pytest.raises(ValueError, match=r"X has N\+1 = 1"):
        h.attention_weights(torch.zeros(3, 3, dtype=torch.float64), X[..., :1])
    with pytest.raises(TypeError, match="Q must be a torch.Tensor"):
        h.feature_statistics([[0.0]], task)


quick = quick_study_fixture("huang2023", h.run)
"""The quick study, run once for the tests below; every figure it saves is kept (stem → Figure) to read its artists."""


@pytest.mark.slow
def test_quick_study_claims(quick) -> None:
    result, report, tmp_path, _ = quick
    claims = {c.name: c for c in result.claims}
    assert set(claims) == {"w_integrated_loss_matches_monte_carlo", "balanced_converges",
                           "imbalanced_stagewise", "imbalanced_rare_learned_later"}

    mc = claims["w_integrated_loss_matches_monte_carlo"]
    assert mc.holds and mc.measured["max_z"] < MC_NUM_SE

    bal = claims["balanced_converges"]
    assert bal.holds
    assert bal.measured["final_over_initial"] < 0.01
    assert bal.measured["min_final_same_feature_mass"] > 0.95

    imb = claims["imbalanced_stagewise"]
    assert imb.holds
    assert imb.measured["t_half_dominant"] < 0.5 * imb.measured["t_half_rare_first"]
    assert imb.measured["dominant_final"] < 0.1 * imb.measured["dominant_initial"]

    rare = claims["imbalanced_rare_learned_later"]
    assert rare.holds
    assert rare.measured["rare_final"] < 0.1 * rare.measured["rare_initial"]
    assert rare.measured["rare_final"] >= rare.measured["rare_floor"]  # the floor is a true lower bound

    assert report.is_file() and "huang2023" in report.read_text()
    with RunStore(tmp_path) as store:
        (run,) = store.list_runs()
        figs = [a.path for a in store.artifacts(run, "figure")]
        assert {p.name for p in figs} >= {"huang2023_balanced.png", "huang2023_balanced.svg",
                                           "huang2023_imbalanced.png", "huang2023_imbalanced.svg"}
        assert all(p.is_file() and p.stat().st_size > 0 for p in figs)
        assert store.results(run)["claim.imbalanced_stagewise"]["holds"] is True


@pytest.mark.slow
def test_quick_figures_carry_the_numbers_they_draw(quick) -> None:
    """Beside each figure, <stem>.json holds exactly what its axes draw (every line under its gid) and
    those numbers are the study's own: the trajectory tables and the claims' measured values."""
    result, report, _, figures = quick
    pngs = [f for f in result.figures if f.suffix == ".png"]
    assert sorted(f.stem for f in pngs) == sorted(figures) == ["huang2023_balanced", "huang2023_imbalanced"]
    text = report.read_text()
    claims = {c.name: c.measured for c in result.claims}
    s = h.QUICK
    for png in pngs:
        assert f"data: [{png.stem}.json]({png.stem}.json)" in text
        data = json.loads(png.with_suffix(".json").read_text(encoding="utf-8"))
        fig = figures[png.stem]
        assert len(data["panels"]) == 4 and "title" in data
        assert all("yscale" in p and "reference" in p for p in data["panels"])
        curves, refs = assert_data_is_drawn(fig, data)
        assert len(curves) == 4 * s.K + 2
        np.testing.assert_array_equal(curves["train_loss"][0], np.arange(s.steps))
        steps = curves["total_loss"][0]  # every exact statistic is drawn at the recorded steps
        assert all(np.array_equal(x, steps) for gid, (x, _) in curves.items() if gid != "train_loss")

        # the numbers are the trajectory's: its table rows at their steps ...
        name = png.stem.removeprefix("huang2023_")
        rows = result.tables[f"{name} trajectory"]
        assert len(rows) > 2
        for row in rows:
            (i,) = np.flatnonzero(steps == row["step"])
            at = {gid: float(y[i]) for gid, (x, y) in curves.items() if gid != "train_loss"}
            assert (at["total_loss"], at["off_target_weight:v1"]) == (row["total_loss"], row["B1"])
            for k in range(1, s.K + 1):
                assert (at[f"loss:v{k}"], at[f"mass:v{k}"], at[f"target_weight:v{k}"]) == (
                    row[f"L{k}"], row[f"mass{k}"], row[f"A{k}"])
        # ... and the claims' measured values
        total, loss = curves["total_loss"][1], [curves[f"loss:v{k}"][1] for k in range(1, s.K + 1)]
        if name == "balanced":
            bal = claims["balanced_converges"]
            assert (bal["initial_loss"], bal["final_loss"]) == (total[0], total[-1])
            assert bal["min_final_same_feature_mass"] == min(curves[f"mass:v{k}"][1][-1] for k in range(1, s.K + 1))
        else:
            imb, rare = claims["imbalanced_stagewise"], claims["imbalanced_rare_learned_later"]
            assert (imb["dominant_initial"], imb["dominant_final"]) == (loss[0][0], loss[0][-1])
            assert imb["rare_final"] == rare["rare_final"] == max(y[-1] for y in loss[1:])
            assert rare["rare_floor"] == refs["floor:v2"] == pytest.approx(0.5 * (1 - s.rare_p) ** s.N, rel=1e-12)
            assert imb["t_half_dominant"] == steps[np.flatnonzero(loss[0] <= 0.5 * loss[0][0])[0]]
