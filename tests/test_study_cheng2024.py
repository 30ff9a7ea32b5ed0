"""Cheng, Chen, Sra (2024) study: its building blocks against references, and the quick run's claims."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from analysis import cheng2024 as ch
from analysis._study import StudyContext, execute
from landscape.tolerances import CONSTRUCTION_RTOL, RTOL
from landscape.theory.families import Problem, get_family
from landscape.core.model import ModelSpec, init_params, predict
from landscape.experiment.store import RunStore
from landscape.core.tasks import KernelGP

F64 = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------ building blocks
@pytest.mark.parametrize("activation", ["linear", "relu", "exp", "softmax"])
def test_construction_is_functional_gd_for_every_activation(activation: str) -> None:
    err = ch.functional_gd_identity(3, 5, 3, activation, 8, _gen(1))
    assert set(err) == {"query", "residuals", "covariates"}
    assert max(err.values()) <= CONSTRUCTION_RTOL


def test_composite_kernel_is_the_written_formula() -> None:
    K = ch.composite_data_kernel(5)
    g = _gen(2)
    U, W = torch.randn(3, 5, 4, generator=g, dtype=F64), torch.randn(3, 5, 6, generator=g, dtype=F64)
    direct = torch.exp(0.5 * U[:, :2].mT @ W[:, :2]) + U[:, 2:4].mT @ W[:, 2:4]
    torch.testing.assert_close(K.gram(U, W), direct, rtol=RTOL[F64], atol=0.0)
    assert ch.composite_identity(5, 6, 3, 8, _gen(3)) <= CONSTRUCTION_RTOL
    with pytest.raises(ValueError, match="d must be an integer >= 4"):
        ch.composite_data_kernel(3)


def test_construction_depth_curve_tends_to_the_posterior_mean() -> None:
    # linear kernel, n = 6 > d = 3: K_nn has rank 3, functional GD converges to the min-norm
    # interpolant = the GP posterior mean, so the gap to it vanishes geometrically with L
    # (slowest rate (1 - r λ_min/n)^L over the prompts).
    c = ch.construction_depth_curve("linear", 3, 6, (1, 2, 4, 16, 128, 8192), 300, _gen(4))
    assert c.construction_error <= 1e3 * RTOL[F64]
    assert all(b <= a * (1 + 1e-12) for a, b in zip(c.excess, c.excess[1:]))
    assert c.excess[-1] < 1e-12 * c.excess[0]
    assert c.step == pytest.approx(1.0)  # 1 / sup_{|x|=1} x.x
    assert c.bayes_variance < 1e-6  # noiseless linear GP with n > d: the query label is determined
    with pytest.raises(ValueError, match="PSD"):
        ch.construction_depth_curve("relu", 3, 6, (1, 2), 10, _gen(5))
    with pytest.raises(ValueError, match="increasing"):
        ch.construction_depth_curve("exp", 3, 6, (2, 2), 10, _gen(5))


def test_value_structure_distance_vanishes_on_the_full_value_family() -> None:
    prob = Problem(4, 2, n=5, activations=("exp",))
    fam = get_family("fgd-full", prob)
    vals = torch.randn(fam.dim, generator=_gen(6), dtype=F64)
    on = ch.value_structure_distance(fam.params(vals), prob.spec)
    assert on.shape == (2, 1) and float(on.abs().max()) < 1e-15
    p = init_params(prob.spec, _gen(7), dtype=F64)
    off = ch.value_structure_distance(p, prob.spec)
    # scale invariant, in (0, 1]
    torch.testing.assert_close(ch.value_structure_distance({k: 3.0 * v for k, v in p.items()}, prob.spec), off)
    assert bool((off > 0.3).all()) and bool((off <= 1).all())


def test_multihead_config_trains_on_the_composite_kernel() -> None:
    # the multi-head comparison names K° in its TrainConfig: the task the trainer builds draws GP
    # labels with K° (its Gram is the written formula) and the run is a two-head kernel model
    from landscape.experiment.train import make_task

    s = ch.QUICK
    ctx = StudyContext(quick=True, out=Path("unused"))
    cfg = ch._config(s, ctx, None, ch.composite_data_kernel(s.d), ("exp", "linear"), s.n, s.layers, 3)
    task = make_task(cfg)
    g = _gen(8)
    U, W = torch.randn(2, s.d, 3, generator=g, dtype=F64), torch.randn(2, s.d, 4, generator=g, dtype=F64)
    direct = torch.exp(0.5 * U[:, :2].mT @ W[:, :2]) + U[:, 2:4].mT @ W[:, 2:4]
    torch.testing.assert_close(task.kernel.gram(U, W), direct, rtol=RTOL[F64], atol=0.0)
    assert cfg.spec == ModelSpec.kernel(s.d, s.layers, ["exp", "linear"])
    assert cfg.mask == "paper" and cfg.dtype == "float64"


def test_model_losses_match_a_per_seed_loop() -> None:
    spec = ModelSpec.kernel(3, 2, "exp")
    p = init_params(spec, _gen(9), seeds=3, dtype=F64, std=0.3)
    task = KernelGP(3, 4, "exp")
    b = task.sample(50, _gen(10))
    m = task.bayes_prediction(b)
    loss, gap = ch.model_losses(p, spec, b, m)
    for s in range(3):
        pred = predict({k: v[s] for k, v in p.items()}, spec, b.Z)
        assert float(loss[s]) == pytest.approx(float(((pred - b.target) ** 2).mean()), rel=1e-12)
        assert float(gap[s]) == pytest.approx(float(((pred - m) ** 2).mean()), rel=1e-12)


# ------------------------------------------------------------------------------ the quick study
@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("cheng2024")
    result, report = execute("cheng2024", ch.run, StudyContext(quick=True, out=out, seed=0))
    return result, report, out


EXPECTED = {"prop1_construction_is_functional_gd", "prop3_multihead_composite_kernel", "prop2_depth_to_bayes",
            "matched_activation_wins_linear", "matched_activation_wins_relu", "matched_activation_wins_exp",
            "softmax_close_to_exp", "depth_lowers_loss", "context_lowers_loss", "training_approaches_family",
            "fgd_family_stationary", "multihead_wins_on_composite"}


@pytest.mark.slow
def test_quick_claims_constructions_and_depth(quick) -> None:
    result, _, _ = quick
    c = {x.name: x for x in result.claims}
    assert set(c) == EXPECTED
    assert c["prop1_construction_is_functional_gd"].holds
    assert c["prop1_construction_is_functional_gd"].measured["max_rel_error"] <= CONSTRUCTION_RTOL
    assert c["prop3_multihead_composite_kernel"].measured["max_rel_error"] <= CONSTRUCTION_RTOL
    p2 = c["prop2_depth_to_bayes"]
    assert p2.holds
    L0, L1 = ch.QUICK.prop2_depths[0], ch.QUICK.prop2_depths[-1]
    for k in ("linear", "exp", "exp(x12)+lin(x34)"):
        assert p2.measured[f"{k}: excess L={L1}"] < 0.05 * p2.measured[f"{k}: excess L={L0}"]
        assert p2.measured[f"{k}: closed form vs construction"] <= 1e3 * RTOL[F64]


@pytest.mark.slow
def test_quick_matching_activation_wins_on_its_own_data(quick) -> None:
    result, _, _ = quick
    c = {x.name: x for x in result.claims}
    for dk, acts in ch.MATCHED.items():
        m = c[f"matched_activation_wins_{dk}"].measured
        assert c[f"matched_activation_wins_{dk}"].holds
        best_matched = min(m[f"loss[{a}]"] for a in acts)
        others = [m[f"loss[{a}]"] for a in ch.QUICK.activations if a not in acts]
        assert best_matched < min(others)
        assert m["relative_margin"] == pytest.approx(min(others) / best_matched - 1)
        # nothing beats the Bayes predictor (same held-out prompts; 2% Monte-Carlo slack)
        assert best_matched >= 0.98 * m["bayes"]
    # linear data: linear attention is several times better than any non-linear one
    assert c["matched_activation_wins_linear"].measured["relative_margin"] > 0.5
    sm = c["softmax_close_to_exp"]
    assert sm.holds and all(0.8 <= v <= 1.25 for v in sm.measured.values())


@pytest.mark.slow
def test_quick_depth_context_and_multihead(quick) -> None:
    result, _, _ = quick
    c = {x.name: x for x in result.claims}
    d, n = c["depth_lowers_loss"].measured, c["context_lowers_loss"].measured
    L0, L1 = ch.QUICK.depths[0], ch.QUICK.depths[-1]
    n0, n1 = ch.QUICK.context_lengths[0], ch.QUICK.context_lengths[-1]
    for dk in ch.QUICK.data_kernels:
        assert d[f"{dk}: loss L={L1}"] < d[f"{dk}: loss L={L0}"]
        assert d[f"{dk}: loss L={L1}"] >= 0.98 * d[f"{dk}: bayes"]
        assert n[f"{dk}: loss n={n1}"] < n[f"{dk}: loss n={n0}"]
    mh = c["multihead_wins_on_composite"].measured
    assert mh["loss[exp+linear]"] < min(mh["loss[exp]"], mh["loss[linear]"])
    assert mh["loss[exp+linear]"] >= 0.98 * mh["bayes"]


@pytest.mark.slow
def test_quick_training_approaches_the_stationary_family(quick) -> None:
    result, _, _ = quick
    c = {x.name: x for x in result.claims}
    t = c["training_approaches_family"].measured
    assert c["training_approaches_family"].holds
    assert t["whitened_final"] < 0.5 * t["whitened_initial"]
    assert t["whitened_final"] < 0.5 * t["raw_final"]  # Σ^{1/2}BᵀCΣ^{1/2} ∝ I, BᵀC is not
    assert t["value_offblock_final"] < t["value_offblock_initial"]
    cert = c["fgd_family_stationary"]
    assert cert.holds
    assert cert.measured["control_p_value"] < 1e-3 < cert.measured["fgd_p_value"]


@pytest.mark.slow
def test_quick_report_figures_and_store(quick) -> None:
    result, report, out = quick
    text = report.read_text()
    for cl in result.claims:
        assert cl.statement in text
    names = {f.name for f in result.figures}
    for stem in ("cheng2024_prop2_depth", "cheng2024_grid", "cheng2024_distance", "cheng2024_depth_exp",
                 "cheng2024_context_relu"):
        assert {f"{stem}.png", f"{stem}.svg"} <= names
    assert all(f.is_file() and f.stat().st_size > 1000 for f in result.figures)
    with RunStore(out) as store:
        runs = store.list_runs()
        study = [r for r in runs if r.name.startswith("study-cheng2024")]
        assert len(study) == 1
        res = store.results(study[0])
        assert all(res[f"claim.{n}"]["holds"] for n in EXPECTED)
        trained = [r for r in runs if r.config.get("attention") == "kernel"]
        # 12 grid cells + matching-activation depth and context sweeps + the distance run + 3 multi-head models
        assert len(trained) == 12 + 2 * len(ch.QUICK.data_kernels) + 1 + 3
        assert all(r.status == "finished" for r in trained)
