"""Cheng, Chen, Sra (2024) study: its building blocks against references, and the quick run's claims."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from analysis import cheng2024 as ch
from analysis._study import StudyContext, execute
from landscape.tolerances import CONSTRUCTION_RTOL, RTOL
from landscape.theory.families import Problem, get_family
from landscape.core.model import ModelSpec, init_params, predict
from landscape.experiment.store import RunStore
from landscape.core.tasks import KernelGP, random_covariance

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
    with pytest.raises(ValueError, match="d must be an int >= 4"):
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
    with pytest.raises(TypeError, match="each depth must be an int"):  # 2.5 was silently truncated to 2
        ch.construction_depth_curve("exp", 3, 6, (1, 2.5), 10, _gen(5))
    with pytest.raises(ValueError, match="each depth must be an int >= 1"):
        ch.construction_depth_curve("exp", 3, 6, (0, 2), 10, _gen(5))


def test_composite_kernel_refuses_a_non_integer_dimension() -> None:
    with pytest.raises(TypeError, match="d must be an int"):
        ch.composite_data_kernel(4.0)


def test_family_distance_curves_are_the_trainers_projection(tmp_path: Path) -> None:
    # a short run with the family configured: the curves are read back by their keys, the last
    # family_distance is project_stacked on the final weights, the key–query curves are
    # identity_distances of the final weights (mean over layers)
    from landscape.experiment.distance import identity_distances, project_stacked
    from landscape.experiment.train import train

    s = replace(ch.QUICK, log_every=5)  # the family is projected at the logged steps divisible by distance_every
    sigma = random_covariance(s.d, _gen(11), spectrum=s.spectrum)
    ctx = StudyContext(quick=True, out=tmp_path)
    cfg = ch._config(s, ctx, sigma, "exp", ("exp",), 4, 2, 20, seeds=2, family="fgd-full", distance_every=10)
    with RunStore(tmp_path) as store:
        res = train(cfg, store)
        curves = ch.family_distance_curves(store.metrics(res.run_name), 2)
    steps, fam = curves["family"]
    assert steps == [0, 10, 20] and fam.shape == (3, 2)
    final = {k: v.to(F64) for k, v in res.params.items()}
    proj = project_stacked(final, cfg.make_family(sigma), starts=1)
    # the same projection (one start); they agree to the least-squares solver's stopping tolerance
    torch.testing.assert_close(fam[-1], proj.distance, rtol=1e-6, atol=0.0)
    torch.testing.assert_close(fam[-1], res.family_distance.to(F64), rtol=1e-12, atol=0.0)
    ids = identity_distances(final, cfg.spec, sigma)
    wsteps, white = curves["whitened"]
    assert wsteps[-1] == 20
    torch.testing.assert_close(white[-1], ids.whitened[..., 0].mean(-1), rtol=1e-12, atol=0.0)
    torch.testing.assert_close(curves["raw"][1][-1], ids.raw[..., 0].mean(-1), rtol=1e-12, atol=0.0)


def test_control_family_ignores_sigma() -> None:
    # fgd-full built for Σ = I: its key–query blocks are multiples of I; a point of fgd-full (Σ ≠ I),
    # also after B ↦ GB, C ↦ G^-ᵀC with a random G, is at distance 0 from fgd-full but not from the control
    from landscape.experiment.distance import project_onto_family

    d = 4
    sigma = random_covariance(d, _gen(12), spectrum=(1.0, 0.5, 0.25, 0.1))
    prob = Problem(d, 1, n=5, sigma=sigma, activations=("exp",))
    ctl = ch.control_family(prob)
    assert ctl.problem.sigma is None and ctl.names == get_family("fgd-full", prob).names
    v = torch.tensor([0.7, 1.3, 0.9, -0.4], dtype=F64)  # a0, b0, c0, r0
    B = ctl.params(v)["layer0.head0.B"]
    torch.testing.assert_close(B[:d, :d], 1.3 * torch.eye(d, dtype=F64), rtol=0.0, atol=1e-15)
    fam = get_family("fgd-full", prob)
    p = {k: t.clone() for k, t in fam.params(v).items()}
    G = torch.eye(d + 1, dtype=F64) + 0.3 * torch.randn(d + 1, d + 1, generator=_gen(13), dtype=F64)
    p["layer0.head0.B"] = G @ p["layer0.head0.B"]
    p["layer0.head0.C"] = torch.linalg.inv(G).mT @ p["layer0.head0.C"]
    assert project_onto_family(p, fam).distance < 1e-8
    assert project_onto_family(p, ctl).distance > 0.05


def test_data_kernel_in_x_is_the_gp_kernel_on_the_whitened_inputs() -> None:
    d = 5
    sigma = random_covariance(d, _gen(14), spectrum=ch.QUICK.spectrum)
    g = _gen(15)
    xi, xi2 = torch.randn(3, d, 4, generator=g, dtype=F64), torch.randn(3, d, 6, generator=g, dtype=F64)
    half = torch.linalg.cholesky(sigma)  # any factor with LLᵀ = Σ: xᵀΣ⁻¹x' = ξᵀξ'
    K = ch.data_kernel_in_x(sigma).gram(half @ xi, half @ xi2)
    torch.testing.assert_close(K, torch.exp(xi.mT @ xi2), rtol=1e-12, atol=0.0)


def test_probe_recovers_functional_gd_in_the_data_kernel_on_its_construction() -> None:
    # heads with B = C = Σ^{-1/2} run functional GD in exp(xᵀΣ⁻¹x'): the probe recovers it to
    # round-off with the construction's steps, while the two controls do not match
    from landscape.core.tasks import sqrtm_psd

    d, n = 4, 6
    sigma = random_covariance(d, _gen(16), spectrum=(1.0, 0.5, 0.25, 0.1))
    steps = [0.4, 0.7]
    c = ch.functional_gd_construction(d, steps, ["exp"], projections=[sqrtm_psd(sigma, -0.5)], weights=[1.0])
    task = KernelGP(d, n, "exp", sigma)
    stacked = {k: torch.stack([v, v]) for k, v in c.params.items()}
    res = ch.probe_layers(stacked, c.spec, task, sigma, StudyContext(quick=True, out=Path("unused")),
                          fit_samples=64, eval_samples=64)
    assert res.algorithms == tuple(ch.PROBE_LABELS[k] for k in ("fgd_data", "fgd_raw", "gd"))
    assert float(res.relative_error[:, 0].max()) < 1e-9
    fitted = torch.stack([p.reshape(()) for p in res.fitted[ch.PROBE_LABELS["fgd_data"]][0]])
    torch.testing.assert_close(fitted, torch.tensor(steps, dtype=F64), rtol=1e-9, atol=0.0)
    assert float(res.relative_error[:, 1:].min()) > 1e-3


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
            "layers_are_functional_gd", "fgd_family_stationary", "multihead_wins_on_composite"}


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


def _distance_run(out: Path):
    from landscape.numeric.points import load_trained

    with RunStore(out, read_only=True) as store:
        (run,) = [r for r in store.list_runs() if r.config.get("family") == "fgd-full"]
        metrics = store.metrics(run)
    return load_trained(out, run.name), metrics


@pytest.mark.slow
def test_quick_training_approaches_the_stationary_family(quick) -> None:
    # the claim's numbers are the medians of what the trainer logged (family_distance, the library's
    # projection) and of project_stacked onto the control family, recomputed here from the store
    from landscape.experiment.distance import project_stacked
    from landscape.experiment.summary import seed_median

    result, _, out = quick
    c = {x.name: x for x in result.claims}
    claim = c["training_approaches_family"]
    t = claim.measured
    trained, metrics = _distance_run(out)
    curves = ch.family_distance_curves(metrics, ch.QUICK.distance_layers)
    fam, white, raw = curves["family"][1], curves["whitened"][1], curves["raw"][1]
    assert fam.shape[1] == ch.QUICK.distance_seeds == t["seeds"]
    assert t["family_initial"] == pytest.approx(float(seed_median(fam[0])), rel=1e-12)
    assert t["family_final"] == pytest.approx(float(seed_median(fam[-1])), rel=1e-12)
    assert t["whitened_BtC_final"] == pytest.approx(float(seed_median(white[-1])), rel=1e-12)
    assert t["raw_BtC_final"] == pytest.approx(float(seed_median(raw[-1])), rel=1e-12)
    # the stored final distance is the projection of the stored final weights (one definition)
    from landscape.core.model import unflatten_params

    final = unflatten_params(trained.final, trained.spec)
    torch.testing.assert_close(trained.family_distance, project_stacked(final, trained.family, starts=1).distance,
                               rtol=1e-6, atol=0.0)
    control = ch.control_family(trained.config.problem(trained.sigma))
    ctl = project_stacked(final, control, starts=1).distance
    assert t["control_final"] == pytest.approx(float(seed_median(ctl)), rel=1e-6)
    r = ch.FAMILY_RATIO
    expected = t["family_final"] < r * t["family_initial"] and t["family_final"] < r * t["control_final"]
    assert claim.holds == expected
    assert claim.holds
    # the key–query products: whitened → multiple of I, raw not (Σ ≠ I)
    assert t["whitened_BtC_final"] < 0.5 * t["raw_BtC_final"]
    cert = c["fgd_family_stationary"]
    assert cert.holds
    assert cert.measured["control_p_value"] < 1e-3 < cert.measured["fgd_p_value"]


@pytest.mark.slow
def test_quick_probe_claim_is_the_probes_output(quick) -> None:
    # recompute the probe from the stored weights with landscape.numeric.probe.probe itself
    from landscape.core.model import unflatten_params
    from landscape.experiment.summary import seed_median
    from landscape.numeric.probe import probe

    result, _, out = quick
    claim = {x.name: x for x in result.claims}["layers_are_functional_gd"]
    trained, _ = _distance_run(out)
    seeds = [unflatten_params(f, trained.spec) for f in trained.final]
    ctx = StudyContext(quick=True, out=out, seed=0)
    kw = {"fit_samples": ch.QUICK.probe_fit, "eval_samples": ch.QUICK.probe_eval}
    data = probe(seeds, trained.spec, trained.task, ctx.generator(ch.PROBE_OFFSET), algorithms=("functional_gd", "gd"),
                 kernel=ch.data_kernel_in_x(trained.sigma), **kw)
    raw = probe(seeds, trained.spec, trained.task, ctx.generator(ch.PROBE_OFFSET), algorithms=("functional_gd",),
                kernel="exp", **kw)
    f, g = seed_median(data.relative_error, dim=0), seed_median(raw.relative_error, dim=0)
    cos = seed_median(data.cosine, dim=0)
    m = claim.measured
    ok = True
    for l in range(ch.QUICK.distance_layers):
        assert m[f"layer{l + 1}: FGD data kernel rel. error"] == pytest.approx(float(f[0, l]), rel=1e-8)
        assert m[f"layer{l + 1}: GD rel. error"] == pytest.approx(float(f[1, l]), rel=1e-8)
        assert m[f"layer{l + 1}: FGD exp(xᵀx′) rel. error"] == pytest.approx(float(g[0, l]), rel=1e-8)
        assert m[f"layer{l + 1}: FGD data kernel cosine"] == pytest.approx(float(cos[0, l]), rel=1e-8)
        ok &= bool(f[0, l] < ch.PROBE_GD_RATIO * f[1, l] and f[0, l] < g[0, l] and cos[0, l] > ch.PROBE_COSINE)
    assert claim.holds == ok
    assert claim.holds


@pytest.mark.slow
def test_quick_report_figures_and_store(quick) -> None:
    result, report, out = quick
    text = report.read_text()
    for cl in result.claims:
        assert cl.statement in text
    names = {f.name for f in result.figures}
    for stem in ("cheng2024_prop2_depth", "cheng2024_grid", "cheng2024_distance", "cheng2024_probe",
                 "cheng2024_depth_exp", "cheng2024_context_relu"):
        assert {f"{stem}.png", f"{stem}.svg"} <= names
    assert all(f.is_file() and f.stat().st_size > 1000 for f in result.figures)
    with RunStore(out) as store:
        runs = store.list_runs()
        study = [r for r in runs if r.name.startswith("study-cheng2024")]
        assert len(study) == 1
        res = store.results(study[0])
        assert all(res[f"claim.{n}"]["holds"] for n in EXPECTED)
        trained = [r for r in runs if r.config.get("attention") == "kernel"]
        # 12 grid cells + the matching-activation depth and context sweeps (their point at (n, L) is a
        # grid cell) + the distance run + 3 multi-head models
        q = ch.QUICK
        sweeps = (len(q.depths) - 1 + len(q.context_lengths) - 1) * len(q.data_kernels)
        assert len(trained) == 12 + sweeps + 1 + 3
        assert all(r.status == "finished" for r in trained)
