"""``landscape verify``: JSON output, exit codes and clear errors on bad input.

References: the one-layer optimum of Ahn et al.'s Theorem 1 in whitened coordinates,
:math:`a^* = n/(n+d+1)` with loss :math:`d(d+1)/(n+d+1)` (docs/theory.md §2); the control family must be
rejected; every bad input must give a JSON object with an ``error`` field and exit status 2.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from landscape.cli import main

BASE = ["--d", "3", "--n", "20", "--sigma", "random:1"]


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict]:
    rc = main(["verify", *argv])
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1, out
    return rc, json.loads(out[0])


def test_exact_verdict_json(capsys: pytest.CaptureFixture[str]) -> None:
    rc, obj = _run(capsys, "pgd", *BASE, "--json")
    if obj["method"] != "exact":
        pytest.skip("no exact loss available from the symbolic layer")
    assert rc == 0 and obj["verdict"] == "stationary"
    assert abs(obj["point"]["a0"] - 20 / 24) < 1e-10
    assert abs(obj["loss"] - 3 * 4 / 24) < 1e-10
    assert obj["grad_norm_normal"] < 1e-10 and obj["grad_norm_normal_se"] == 0
    assert obj["grad_norm_tangent"] < 1e-10 and "grad_norm_tangent_se" in obj
    for key in ("n_pos", "n_neg", "n_zero", "min_eig", "max_eig"):
        assert key in obj["hessian"]
    assert obj["hessian"]["n_neg"] == 0


def test_control_rejected_and_text_report(capsys: pytest.CaptureFixture[str]) -> None:
    rc, obj = _run(capsys, "pgd-identity", *BASE, "--json")
    assert rc == 1 and obj["verdict"] == "not_stationary" and obj["grad_norm_normal"] > 1e-2
    rc = main(["verify", "pgd-identity", *BASE])
    text = capsys.readouterr().out
    assert rc == 1 and "NOT_STATIONARY" in text and "|grad| tangent" in text


def test_user_family_file(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "fam.py"
    f.write_text(
        "import sympy\n"
        "def ahn(problem):\n"
        "    d = problem.d\n"
        "    a = sympy.Symbol('a0')\n"
        "    P = sympy.zeros(d + 1, d + 1); P[d, d] = 1\n"
        "    Q = sympy.zeros(d + 1, d + 1); Q[:d, :d] = -a * problem.sigma_power(-1)\n"
        "    return {'layer0.head0.P': P, 'layer0.head0.Q': Q}\n"
        "def broken(problem):\n"
        "    raise RuntimeError('boom')\n")
    rc, obj = _run(capsys, f"{f}:ahn", *BASE, "--attention", "linear", "--task-cov", "inverse", "--json")
    if obj.get("method") == "exact":
        assert rc == 0 and obj["verdict"] == "stationary" and abs(obj["point"]["a0"] - 20 / 24) < 1e-10
    rc, obj = _run(capsys, f"{f}:broken", *BASE, "--attention", "linear", "--json")
    assert rc == 2 and "boom" in obj["error"]
    rc, obj = _run(capsys, f"{tmp_path / 'missing.py'}:ahn", *BASE, "--json")
    assert rc == 2 and "does not exist" in obj["error"]


def test_bad_points_and_sizes(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, obj = _run(capsys, "pgd", *BASE, "--point", "a0=nan", "--json")
    assert rc == 2 and "NaN" in obj["error"]
    rc, obj = _run(capsys, "pgd", *BASE, "--point", "b7=1", "--json")
    assert rc == 2 and "a0" in obj["error"]
    # full weights that are not in the family
    from landscape.theory.families import Problem, get_family
    from landscape.core.tasks import random_covariance
    import torch

    sig = random_covariance(3, torch.Generator().manual_seed(1))
    fam = get_family("pgd", Problem(d=3, layers=1, n=20, sigma=sig, attention="linear"))
    w = {k: v.numpy() for k, v in fam.params({"a0": 0.5}).items()}
    w["layer0.head0.P"] = w["layer0.head0.P"] + 0.1
    np.savez(tmp_path / "w.npz", **w)
    rc, obj = _run(capsys, "pgd", *BASE, "--params", str(tmp_path / "w.npz"), "--max-distance", "1e-6", "--json")
    assert rc == 2 and "above --max-distance" in obj["error"]
    w["layer0.head0.P"][0, 0] = np.nan
    np.savez(tmp_path / "nan.npz", **w)
    rc, obj = _run(capsys, "pgd", *BASE, "--params", str(tmp_path / "nan.npz"), "--json")
    assert rc == 2 and "NaN" in obj["error"]
    rc, obj = _run(capsys, "pgd", "--layers", "2", *BASE, "--samples", "320", "--json")
    assert rc == 2 and "too small" in obj["error"]
    rc, obj = _run(capsys, "pgd", *BASE, "--sigma", "diag:1,2", "--json")
    assert rc == 2 and "eigenvalues" in obj["error"]
    rc, obj = _run(capsys, "pgd", *BASE, "--tol", "-1", "--json")
    assert rc == 2 and "--tol" in obj["error"]
    for bad in ("lots", "10s,20s", "0", "0s", ","):
        rc, obj = _run(capsys, "pgd", *BASE, "--budget", bad, "--json")
        assert rc == 2 and "--budget" in obj["error"], (bad, obj)


def test_parse_budget() -> None:
    from landscape.cli.verify import parse_budget

    assert parse_budget("2000000,600s") == {"prompts": 2000000, "seconds": 600.0}
    assert parse_budget("90s") == {"seconds": 90.0} and parse_budget("5000") == {"prompts": 5000}


@pytest.mark.slow
def test_monte_carlo_control_rejected(capsys: pytest.CaptureFixture[str]) -> None:
    rc, obj = _run(capsys, "pgd-identity", "--layers", "2", *BASE, "--mask", "blocks", "--samples", "2400",
                   "--hessian-samples", "128", "--json")
    assert obj["method"] == "monte_carlo" and [r["samples"] for r in obj["per_sample_size"]] == [150, 600, 2400]
    assert rc == 1 and obj["verdict"] == "not_stationary", obj["reason"]
    assert obj["grad_norm_normal_se"] > 0 and obj["loss_se"] > 0
    assert obj["hessian"]["n_pos"] is not None
    assert obj["design"] == "fixed" and obj["grad_norm_normal_lower"] > 0 and obj["tol"] > 0
    assert [r["alpha"] for r in obj["per_sample_size"]] == pytest.approx([1e-3 / 3] * 3)


@pytest.mark.slow
def test_monte_carlo_text_report_names_tol_and_confidence(capsys: pytest.CaptureFixture[str]) -> None:
    """A Monte-Carlo 'stationary' is printed with its tolerance and confidence, never bare; the
    sequential design (--budget) records every look in the JSON."""
    args = ["pgd", "--layers", "2", *BASE, "--mask", "blocks", "--samples", "3200", "--hessian-samples", "0",
            "--tol", "0.5", "--alpha", "0.01"]
    rc = main(["verify", *args])
    text = capsys.readouterr().out
    assert rc == 0 and "verdict  STATIONARY within tol = 0.5 at confidence 1 - alpha = 0.99" in text, text
    rc, obj = _run(capsys, *args, "--budget", "100000", "--json")
    assert rc == 0 and obj["design"] == "sequential" and obj["verdict"] == "stationary"
    assert obj["stop"].startswith("decisive at look") and len(obj["per_sample_size"]) >= 1
    assert [r["samples"] for r in obj["per_sample_size"]] == [200 * 4**k for k in range(len(obj["per_sample_size"]))]
