"""``landscape llc``: the SGLD local learning coefficient at a family point or a trained seed.

Reference: at the pgd family's minimum of the exact one-layer loss (d = 2, n = 8: a0 = n/(n+d+1) = 8/11)
the local quadratic model has Hessian rank 8 of P = 18 (the other ten directions are flat at the
sampler's scale), and the estimator's expectation for that quadratic at the command's settings is
:func:`landscape.numeric.llc.quadratic_llc` of the dense Hessian's eigenvalues (computed here, not
read from the command). The command's estimate must agree within 3 standard errors.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from landscape.cli import main

F64 = torch.float64
POINT = ["--family", "pgd", "--d", "2", "--n", "8", "--layers", "1", "--point", f"a0={8 / 11!r}"]


def _json(capsys: pytest.CaptureFixture[str]) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def _pgd_minimum() -> tuple[object, torch.Tensor]:
    from landscape.core.tasks import LinearRegression
    from landscape.numeric.oracles import exact_loss_oracle
    from landscape.theory.families import Problem, get_family

    problem = Problem(d=2, layers=1, n=8, attention="linear")
    fam = get_family("pgd", problem)
    return exact_loss_oracle(problem, LinearRegression(2, 8, dtype=F64)), fam.flat(torch.tensor([8 / 11], dtype=F64))


def test_llc_at_the_pgd_minimum_agrees_with_the_quadratic_expectation(capsys: pytest.CaptureFixture[str]) -> None:
    from landscape.numeric.derivatives import hessian
    from landscape.numeric.llc import quadratic_llc

    oracle, theta = _pgd_minimum()
    ev = torch.linalg.eigvalsh(hessian(oracle, theta))
    n, gamma = 10_000, 100.0
    eps = 0.2 / (n / math.log(n) * float(ev.max()) + gamma)
    assert main(["llc", *POINT, "--sample-size", str(n), "--gamma", str(gamma), "--step-size", repr(eps),
                 "--steps", "600", "--chains", "8", "--json"]) == 0
    res = _json(capsys)
    ref = quadratic_llc(ev.clamp(min=0), n=n, gamma=gamma, step_size=eps)
    assert res["loss_kind"] == "exact population loss" and res["num_params"] == 18
    assert res["loss_star"] == pytest.approx(float(oracle(theta)), rel=1e-12)
    assert 0 < res["se"] < 0.5
    assert abs(res["llc"] - ref) <= 3 * res["se"], (res["llc"], res["se"], ref)
    # not the count of parameters: the ten flat directions add nothing
    assert abs(res["llc"] - 18 / 2) > 3 * res["se"]
    # the settings are reported as used
    assert res["beta"] == pytest.approx(1 / math.log(n), rel=1e-15) and res["beta_default"] is True
    assert (res["n"], res["gamma"], res["step_size"], res["chains"], res["steps"], res["burn_in"]) == \
        (n, gamma, pytest.approx(eps, rel=1e-15), 8, 600, 150)
    # the command's own quadratic reference is the same number, and the rank is 8
    assert res["reference"]["hessian_rank"] == 8 and res["reference"]["half_rank"] == 4
    assert res["reference"]["quadratic_llc"] == pytest.approx(ref, rel=1e-9)


def test_llc_text_report_names_estimate_and_settings(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["llc", *POINT, "--gamma", "50", "--step-size", "1e-5", "--steps", "8", "--chains", "2",
                 "--burn-in", "2", "--beta", "0.25", "--dense-max", "0"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.strip().splitlines()}
    assert "±" in lines["llc"] and "2 chains" in lines["llc"]
    sgld = lines["SGLD"]
    for part in ("n = 10000", "beta = 0.25", "n*beta = 2500", "gamma = 50", "step size = 1e-05",
                 "2 chains x 8 steps (burn-in 2)"):
        assert part in sgld, (part, sgld)
    assert "quadratic" not in lines  # --dense-max 0: no dense Hessian


@pytest.mark.parametrize("extra, message", [
    (["--burn-in", "10", "--steps", "10"], "--burn-in 10 must be below --steps 10"),
    (["--chains", "1"], "--chains must be an integer >= 2"),
    (["--step-size", "0"], "--step-size must be a finite number > 0"),
    (["--gamma", "-1"], "--gamma must be a finite number >= 0"),
    (["--beta", "nan"], "--beta must be a finite number > 0"),
    (["--point", "a0"], "--point takes SYMBOL=VALUE"),
])
def test_llc_bad_input_is_one_line_before_any_work(extra, message, capsys, monkeypatch) -> None:
    import landscape.cli._args as cli_args

    def no_work(args):  # noqa: ARG001
        raise AssertionError("the point was resolved before the input was checked")

    monkeypatch.setattr(cli_args, "resolve_point", no_work)
    args = ["llc", "--family", "pgd", "--d", "2", *extra]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("landscape llc: error: ") and message in err and "\n" not in err, err


def test_llc_needs_one_point_and_a_real_store(tmp_path, capsys) -> None:
    assert main(["llc", "--d", "2"]) == 2
    assert "exactly one of --run STORE[:RUN]" in capsys.readouterr().err
    assert main(["llc", "--run", str(tmp_path / "nowhere"), "--json"]) == 2
    err = _json(capsys)
    assert err["error"].startswith("--run: no run store") and err["command"] == "llc"


def test_llc_on_a_trained_seed_uses_the_seed_and_its_exact_loss(tmp_path, capsys) -> None:
    from landscape.experiment.store import RunStore
    from landscape.experiment.train import TrainConfig, make_task, train
    from landscape.numeric.oracles import exact_loss_oracle
    from landscape.numeric.points import load_trained

    root = tmp_path / "store"
    cfg = TrainConfig(task="linear", d=2, n=6, attention="linear", layers=1, family="pgd", seeds=2, steps=20,
                      batch=64, lr=0.05, dtype="float64", seed=0, device="cpu", eval_batch=64, log_every=20,
                      distance_every=0, checkpoint_every=0)
    with RunStore(root) as s:
        train(cfg, s, progress=False)
    assert main(["llc", "--run", str(root), "--seed", "1", "--gamma", "100", "--step-size", "1e-6", "--steps", "20",
                 "--chains", "2", "--json"]) == 0
    res = _json(capsys)
    tr = load_trained(root)
    oracle = exact_loss_oracle(cfg.problem(), make_task(cfg))
    assert res["point"].endswith("seed 1") and res["loss_kind"] == "exact population loss"
    assert res["loss_star"] == pytest.approx(float(oracle(tr.final[1])), rel=1e-12)
    assert res["loss_star"] != pytest.approx(float(oracle(tr.final[0])), rel=1e-6)
    assert math.isfinite(res["llc"]) and res["se"] > 0
    assert main(["llc", "--run", str(root), "--seed", "2", "--steps", "4"]) == 2
    assert "--seed 2: run" in capsys.readouterr().err
