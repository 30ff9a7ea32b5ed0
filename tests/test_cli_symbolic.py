"""``landscape families`` / ``landscape solve`` and the shared problem arguments."""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest
import sympy
import torch

from landscape.cli._args import add_problem_args, parse_sigma, problem_from_args
from landscape.cli import main
from landscape.theory.families import known_families
from landscape.core.tasks import KernelGP, LinearRegression, random_covariance


def _run_json(capsys, argv: list[str]) -> tuple[int, dict]:
    code = main(argv + ["--json"])
    out = capsys.readouterr().out.strip().splitlines()
    return code, json.loads(out[-1])


def test_families_json_lists_statements(capsys):
    code, obj = _run_json(capsys, ["families"])
    assert code == 0
    names = [f["name"] for f in obj["families"]]
    for required in ("pgd", "pgd-relaxed", "fgd", "fgd-full"):
        assert required in names
    known = known_families()
    assert {f["name"]: f["statement"] for f in obj["families"]} == known
    assert {f["name"]: f["attention"] for f in obj["families"]}["fgd"] == "kernel"


def test_families_text(capsys):
    assert main(["families"]) == 0
    out = capsys.readouterr().out
    assert "pgd-relaxed" in out and "Theorem 4" in out


def test_solve_pgd_one_layer_json(capsys):
    code, obj = _run_json(capsys, ["solve", "pgd", "--layers", "1", "--d", "5", "--n", "20"])
    assert code == 0
    a = sympy.Symbol("a0")
    assert sympy.expand(sympy.sympify(obj["loss"]) - (sympy.Rational(13, 2) * a**2 - 10 * a + 5)) == 0
    (pt,) = obj["stationary_points"]
    assert pt["kind"] == "min"
    assert sympy.sympify(pt["exact"]["a0"]) == sympy.Rational(20, 26)
    assert pt["values"]["a0"] == pytest.approx(20 / 26, rel=1e-12)
    assert pt["loss"] == pytest.approx(5 * 6 / 26, rel=1e-12)
    assert obj["family"] == "pgd" and obj["route"] == "wishart"
    # the optimal 1-step loss d(d+1)/(n+d+1) = 30/26, exact, with the step n/(n+d+1)
    assert obj["optimal_gd"]["loss_exact"] == "15/13" and obj["optimal_gd"]["steps"] == ["10/13"]
    assert obj["search"]["method"] == "linear" and obj["search"]["exhaustive"] and obj["search"]["certified"]
    assert pt["exhaustive"] and pt["certified"] and pt["morse_index"] == 0 and pt["loss_exact"] == "15/13"


def test_solve_pgd_full_theorem1_random_sigma(capsys):
    code, obj = _run_json(capsys, ["solve", "pgd-full", "--d", "3", "--n", "5", "--sigma", "random:2"])
    assert code == 0
    (pt,) = obj["stationary_points"]
    S = parse_sigma("random:2", 3).numpy()
    A = np.array([[pt["values"][f"A{min(i, j)}{max(i, j)}"] for j in range(3)] for i in range(3)])
    expected = np.linalg.inv(6 / 5 * S + np.trace(S) / 5 * np.eye(3))
    assert np.abs(A - expected).max() <= 1e-10 * np.abs(expected).max()
    assert pt["kind"] == "min"


def test_solve_noisy_one_layer_is_exact(capsys):
    """--noise 0.5 on pgd-full (Σ = I, d = 2, n = 3): exact one-layer route (no Monte-Carlo fallback);
    by hand A* = n/(n+d+1+s²) I = 12/25 I, loss d + s² - d n/(n+d+1+s²) = 129/100."""
    code, obj = _run_json(capsys, ["solve", "pgd-full", "--d", "2", "--n", "3", "--noise", "0.5"])
    assert code == 0 and obj["route"] == "one-layer" and obj["exact"]
    (pt,) = obj["stationary_points"]
    assert sympy.sympify(pt["exact"]["A00"]) == sympy.Rational(12, 25) and sympy.sympify(pt["exact"]["A01"]) == 0
    assert pt["loss_exact"] == "129/100" and pt["certified"] and obj["search"]["exhaustive"]


def test_solve_text_output(capsys):
    assert main(["solve", "pgd", "--layers", "2", "--d", "2", "--n", "3"]) == 0
    out = capsys.readouterr().out
    assert "critical sets (2)" in out and "[saddle]" in out and "general (symbolic in d, n)" in out
    assert "optimal 2-step preconditioned GD loss (exact): " in out
    assert "EXHAUSTIVE" in out and "orbit=2" in out and "permutation a0→a1, a1→a0" in out


USER_FAMILY = '''
import sympy

def good(problem):
    """one-layer preconditioned GD with A = a I"""
    D = problem.d + 1
    a = sympy.Symbol("a", real=True)
    P = sympy.zeros(D, D); P[D - 1, D - 1] = 1
    Q = sympy.zeros(D, D); Q[:D - 1, :D - 1] = -a * sympy.eye(problem.d)
    return {"layer0.head0.P": P, "layer0.head0.Q": Q}

def three_heads(problem):
    """three rank-one key/query heads: Q_h = -k_h q_h e_h e_hᵀ"""
    D = problem.d + 1
    out = {}
    for h in range(3):
        k, q = sympy.Symbol(f"k{h}", real=True), sympy.Symbol(f"q{h}", real=True)
        P = sympy.zeros(D, D); P[D - 1, D - 1] = 1
        Q = sympy.zeros(D, D); Q[h, h] = -k * q
        out[f"layer0.head{h}.P"] = P
        out[f"layer0.head{h}.Q"] = Q
    return out

def raises(problem):
    raise RuntimeError("boom")

def wrong_shape(problem):
    return {"layer0.head0.P": sympy.eye(2)}
'''


@pytest.fixture()
def family_file(tmp_path):
    p = tmp_path / "fam.py"
    p.write_text(USER_FAMILY)
    return p


def test_solve_user_family(capsys, family_file):
    code, obj = _run_json(capsys, ["solve", f"{family_file}:good", "--d", "2", "--n", "3"])
    assert code == 0
    (pt,) = obj["stationary_points"]
    assert sympy.sympify(pt["exact"]["a"]) == sympy.Rational(3, 6)


def test_solve_three_heads_exhaustive_json(capsys, family_file):
    """Three rank-one key/query heads, Σ = I, d = 3, n = 4. By hand: f = Σ_h g(k_h q_h) with
    g(γ) = (n+d+1)/n γ² - 2γ + 1 = 2γ² - 2γ + 1, γ* = 1/2, drop 1/2 per head; critical sets: for each
    set S of heads "on" (k_h q_h = 1/2) the others off (k_h = q_h = 0): loss 3 - |S|/2, dimension |S|,
    Morse index 3 - |S|. Σ = I makes the heads (and k ↔ q) exchangeable, so the 2³ sets come as
    4 listings of C(3, |S|) sets each; the sign-flip components add 2^|S| per set."""
    code, obj = _run_json(capsys, ["solve", f"{family_file}:three_heads", "--d", "3", "--n", "4", "--heads", "3"])
    assert code == 0
    search = obj["search"]
    assert search["method"] == "exhaustive" and search["exhaustive"] and search["certified"]
    pts = obj["stationary_points"]
    assert [(sympy.Rational(p["loss_exact"]), p["dimension"], p["morse_index"], p["kind"]) for p in pts] == [
        (3 - sympy.Rational(m, 2), m, 3 - m, "min" if m == 3 else "saddle") for m in (3, 2, 1, 0)]
    # gauge-fixed points behind each listing: C(3, m) sets × 2^m sign components
    assert [p["orbit"] for p in pts] == [math.comb(3, m) * 2**m for m in (3, 2, 1, 0)]
    assert all(p["exhaustive"] and p["certified"] and p["method"] == "exhaustive" for p in pts)
    assert sum(math.comb(3, p["dimension"]) for p in pts) == 8
    for p in pts:
        on = [h for h in range(3) if p["values"][f"k{h}"] != 0]
        assert len(on) == p["dimension"]
        for h in on:  # the balanced representative k = q = 1/√2, inside its certified box
            assert sympy.sympify(p["exact"][f"k{h}"]) == sympy.sqrt(2) / 2
            lo, hi = (sympy.Rational(x) for x in p["certificate"]["box_exact"][f"k{h}"])
            assert lo**2 <= sympy.Rational(1, 2) <= hi**2
    code, obj = _run_json(capsys, ["solve", f"{family_file}:three_heads", "--d", "3", "--n", "4", "--heads", "3",
                                   "--method", "multistart", "--starts", "2"])
    assert code == 0 and not obj["search"]["exhaustive"] and "NOT exhaustive" in obj["search"]["note"]
    assert all(not p["exhaustive"] and p["method"] == "multistart" for p in obj["stationary_points"])


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["solve", "nope"], "unknown family 'nope'"),
        (["solve", "pgd", "--layers", "0"], "--layers must be an integer >= 1"),
        (["solve", "pgd", "--sigma", "diag:1,-1,1,1,1"], "not positive definite"),
        (["solve", "pgd", "--sigma", "diag:1,2"], "expected d = 5"),
        (["solve", "pgd", "--sigma", "bogus"], "not a known form"),
        (["solve", "pgd", "--activation", "exp"], "--activation applies to kernel attention"),
        (["solve", "pgd", "--data", "classification"], "--data must be"),
        (["solve", "fgd", "--activation", "linear", "--d", "2", "--n", "3", "--method", "exhaustive"],
         "--method exhaustive needs an exact polynomial loss"),
        (["solve", "pgd", "--layers", "4", "--d", "2", "--n", "3", "--method", "exhaustive"],
         "exhaustive enumeration is not possible"),
    ],
)
def test_solve_errors_are_json(capsys, argv, needle):
    code, obj = _run_json(capsys, argv)
    assert code == 2
    assert needle in obj["error"]


def test_solve_errors_from_user_files_and_matrices(capsys, family_file, tmp_path):
    code, obj = _run_json(capsys, ["solve", f"{family_file}:raises", "--d", "2", "--n", "3"])
    assert code == 2 and "raised RuntimeError: boom" in obj["error"]
    code, obj = _run_json(capsys, ["solve", f"{family_file}:wrong_shape", "--d", "2", "--n", "3"])
    assert code == 2 and "shape" in obj["error"] and "layer0.head0.P" in obj["error"]
    bad = tmp_path / "bad.npy"
    np.save(bad, np.array([[1.0, 2.0], [2.0, 1.0]]))  # eigenvalues 3, -1
    code, obj = _run_json(capsys, ["solve", "pgd", "--d", "2", "--n", "3", "--sigma", str(bad)])
    assert code == 2 and "not positive definite" in obj["error"]
    code = main(["solve", "nope"])
    assert code == 2 and "unknown family" in capsys.readouterr().err


def test_parse_sigma_forms(tmp_path):
    assert parse_sigma("identity", 3) is None
    S = parse_sigma("random:3", 5)
    assert torch.equal(S, random_covariance(5, torch.Generator().manual_seed(3)))
    # diag: is exactly the diagonal matrix (it used to be a randomly rotated spectrum)
    D = parse_sigma("diag:2,1,0.5", 3, seed=1)
    assert torch.equal(D, torch.tensor([[2.0, 0, 0], [0, 1.0, 0], [0, 0, 0.5]], dtype=torch.float64))
    # spectrum: is that spectrum under the Haar rotation of the seed: U^T diag(l) U
    R = parse_sigma("spectrum:2,1,0.5", 3, seed=1)
    assert torch.equal(R, random_covariance(3, torch.Generator().manual_seed(1), spectrum=[2.0, 1.0, 0.5]))
    assert torch.allclose(torch.linalg.eigvalsh(R), torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64), rtol=1e-12)
    assert not torch.allclose(R, torch.diag(torch.diagonal(R)))  # rotated
    assert torch.equal(parse_sigma("spectrum:2,1,0.5:1", 3, seed=9), R)  # explicit SEED wins
    M = np.array([[2.0, 0.3], [0.3, 1.0]])
    np.save(tmp_path / "m.npy", M)
    np.savetxt(tmp_path / "m.txt", M)
    for f in ("m.npy", "m.txt"):
        assert np.allclose(parse_sigma(str(tmp_path / f), 2).numpy(), M, rtol=0, atol=1e-15)
    with pytest.raises(ValueError, match="shape"):
        parse_sigma(str(tmp_path / "m.npy"), 3)
    with pytest.raises(ValueError, match="SEED"):
        parse_sigma("random:x", 3)
    with pytest.raises(ValueError, match="numbers"):
        parse_sigma("diag:a,b", 2)


def test_problem_from_args_defaults():
    parser = add_problem_args(argparse.ArgumentParser())
    prob, data = problem_from_args(parser.parse_args(["--d", "3", "--n", "4", "--sigma", "random:1"]), family="pgd")
    assert prob.attention == "linear" and isinstance(data, LinearRegression)
    assert data.task_cov == "inverse" and data.covariates == "gaussian"
    prob, data = problem_from_args(parser.parse_args(["--d", "3", "--n", "4"]), family="pgd-full")
    assert data.task_cov is None
    prob, data = problem_from_args(parser.parse_args(["--d", "3", "--n", "4", "--activation", "softmax"]), family="fgd")
    assert prob.attention == "kernel" and isinstance(data, KernelGP)
    assert data.kernel.name == "exp" and data.covariates == "sphere"
    prob, data = problem_from_args(parser.parse_args(["--data", "gp:relu", "--activation", "relu,linear"]))
    assert prob.attention == "kernel" and len(prob.activations) == 2 and data.kernel.name == "relu"


def test_solve_kernel_family_json(capsys):
    """fgd with the linear kernel: label-exact Monte-Carlo loss, a minimum modulo the two weight symmetries,
    the loss there equal to the named-coefficient polynomial at the same draws."""
    code, obj = _run_json(capsys, ["solve", "fgd", "--activation", "linear", "--d", "2", "--n", "3",
                                   "--samples", "128", "--starts", "1"])
    assert code == 0 and obj["route"] == "label-exact" and not obj["exact"]
    assert obj["search"]["method"] == "multistart" and not obj["search"]["exhaustive"]
    assert "NOT exhaustive" in obj["search"]["note"]
    assert all(not p["exhaustive"] and not p["certified"] for p in obj["stationary_points"])
    mins = [p for p in obj["stationary_points"] if p["kind"] == "min"]
    assert mins and mins[0]["symmetry_dims"] == 2 and mins[0]["loss_se"] > 0
    co = {k: v[0] for k, v in obj["coefficients"].items()}
    expr = sympy.sympify(obj["loss"], locals={k: sympy.Symbol(k) for k in co})
    vals = {sympy.Symbol(k): v for k, v in {**co, **mins[0]["values"]}.items()}
    assert float(expr.subs(vals)) == pytest.approx(mins[0]["loss"], rel=1e-10)
