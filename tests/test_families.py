"""User families: reserved and duplicate symbol names, and stored runs that never import a family file.

Reference for the loss checks: for the one-layer family ``P = diag(0, 1)``, ``Q = -diag(a I, 0)``
with ``x ~ N(0, I_d)``, ``w* ~ N(0, I_d)`` and noiseless labels, the prediction is
``a w*ᵀ S x_q`` with ``S = (1/n) Σ_i x_i x_iᵀ``, so
``f(a) = E|(I - a S) ...|² = d - 2 a d + a² d (n + d + 1) / n`` (Wishart moments
``E S = I``, ``E S² = (n + d + 1)/n I``); its minimum is at ``a* = n / (n + d + 1)`` with
``f(a*) = d (d + 1) / (n + d + 1)``.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import sympy

from landscape._expr import parse_expression
from landscape.cli import main
from landscape.theory.families import Problem, family_from_function, get_family, load_family
from landscape.symbolic.loss import family_loss
from landscape.symbolic.whitened import D_SYMBOL, N_SYMBOL
from landscape.core.tasks import LinearRegression
from landscape.experiment.train import TrainConfig

FAMILY_FILE = '''
import sympy


def one_step(problem, symbol=None):
    """one GD step: Q = -diag(a I, 0)"""
    D = problem.d + 1
    a = symbol if symbol is not None else sympy.Symbol("{name}", {assumptions})
    P = sympy.zeros(D, D)
    P[D - 1, D - 1] = 1
    Q = sympy.zeros(D, D)
    for i in range(problem.d):
        Q[i, i] = -a
    return {{"layer0.head0.P": P, "layer0.head0.Q": Q}}


def two_names(problem):
    D = problem.d + 1
    P = sympy.zeros(D, D)
    P[D - 1, D - 1] = 1
    Q = sympy.zeros(D, D)
    Q[0, 0] = -sympy.Symbol("a", real=True)
    Q[1, 1] = -sympy.Symbol("a")
    return {{"layer0.head0.P": P, "layer0.head0.Q": Q}}
'''


def _family_file(tmp_path: Path, name: str = "a0", assumptions: str = "real=True") -> Path:
    f = tmp_path / f"fam_{name}.py"
    f.write_text(FAMILY_FILE.format(name=name, assumptions=assumptions))
    return f


def _one_step(name: str, **assumptions: bool):
    def fn(problem: Problem) -> dict[str, sympy.Matrix]:
        D = problem.d + 1
        a = sympy.Symbol(name, **assumptions)
        P, Q = sympy.zeros(D, D), sympy.zeros(D, D)
        P[D - 1, D - 1] = 1
        for i in range(problem.d):
            Q[i, i] = -a
        return {"layer0.head0.P": P, "layer0.head0.Q": Q}

    fn.__name__ = f"one_step_{name}"
    return fn


PROBLEM = Problem(d=2, layers=1, n=5, attention="linear")


# ---------------------------------------------------------------------- reserved and duplicate names
@pytest.mark.parametrize("name, assumptions, what", [
    ("n", {"real": True}, "context length"),
    ("n", {"positive": True, "integer": True}, "context length"),  # exactly N_SYMBOL
    ("d", {}, "dimension"),
    ("d", {"positive": True, "integer": True}, "dimension"),  # exactly D_SYMBOL
])
def test_a_symbol_named_like_the_problem_is_rejected(name: str, assumptions: dict, what: str) -> None:
    with pytest.raises(ValueError, match=rf"symbol name '{name}' is reserved: it is the problem's {what} in the "
                                         rf"symbolic layer and would be merged with it; rename it, e\.g\. {name}0"):
        family_from_function(_one_step(name, **assumptions), PROBLEM)


@pytest.mark.parametrize("name", ["lambda1", "lambda12", "m__a__q", "_xi0_0", "_eta1", "_eps0", "_a", "sigma_eps2"])
def test_names_the_symbolic_layer_uses_internally_are_rejected(name: str) -> None:
    with pytest.raises(ValueError, match=rf"symbol name '{name}' is reserved: the symbolic layer uses d, n, "
                                         r"sigma_eps2, lambda<k>, m__\* and names starting with '_'"):
        family_from_function(_one_step(name, real=True), PROBLEM)


def test_similar_but_free_names_are_accepted() -> None:
    for name in ("n0", "dd", "lam", "lambda_1", "m_a", "a_"):
        fam = family_from_function(_one_step(name, real=True), PROBLEM)
        assert fam.names == (name,)


def test_two_symbols_with_one_name_and_bad_names_are_clear_errors(tmp_path: Path) -> None:
    f = _family_file(tmp_path)
    with pytest.raises(ValueError, match=r"family 'two_names': two different symbols are both named 'a' "
                                         r"\(Symbol\('a'\) and Symbol\('a', real=True\), which differ in their "
                                         r"assumptions\); give every symbol its own name"):
        load_family(f"{f}:two_names", PROBLEM)
    with pytest.raises(ValueError, match=r"symbol name 'a b' is not an identifier"):
        family_from_function(_one_step("a b", real=True), PROBLEM)


def test_solve_rejects_a_family_symbol_named_n_and_solves_the_renamed_family(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["--attention", "linear", "--layers", "1", "--d", "2", "--n", "5", "--json"]
    # Symbol("n", positive=True, integer=True) is the symbolic layer's own n: before, the general
    # loss silently became d**2*n + d*n**2 - d*n + d
    bad = _family_file(tmp_path, "n", "positive=True, integer=True")
    assert main(["solve", f"{bad}:one_step", *common]) == 2
    err = json.loads(capsys.readouterr().out)["error"]
    assert "symbol name 'n' is reserved" in err and "context length" in err
    assert main(["solve", f"{_family_file(tmp_path, 'd', '')}:one_step", *common]) == 2
    assert "symbol name 'd' is reserved" in json.loads(capsys.readouterr().out)["error"]
    assert main(["solve", f"{_family_file(tmp_path, 'dup')}:two_names", *common]) == 2
    assert "two different symbols are both named 'a'" in json.loads(capsys.readouterr().out)["error"]

    assert main(["solve", f"{_family_file(tmp_path, 'a0')}:one_step", *common]) == 0
    out = json.loads(capsys.readouterr().out)
    d, n = 2, 5
    a = sympy.Symbol("a0", real=True)
    got = parse_expression(out["loss"], {"a0": a})
    assert sympy.expand(got - (d - 2 * a * d + a**2 * d * sympy.Rational(n + d + 1, n))) == 0
    (best,) = [p for p in out["stationary_points"] if p["kind"] == "min"]
    assert best["loss"] == pytest.approx(d * (d + 1) / (n + d + 1), rel=1e-12)
    assert best["values"]["a0"] == pytest.approx(n / (n + d + 1), rel=1e-12)


def test_general_loss_keeps_the_family_symbol_apart_from_n_and_d() -> None:
    fam = family_from_function(_one_step("a0", real=True), PROBLEM)
    loss = family_loss(fam, LinearRegression(2, 5))
    a = fam.symbols[0]
    d, n = D_SYMBOL, N_SYMBOL
    assert sympy.simplify(loss.general - (d - 2 * a * d + a**2 * d * (n + d + 1) / n)) == 0


# ---------------------------------------------------------------------- stored runs never import a family file
def test_plot_of_a_stored_run_never_imports_its_family_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    f = _family_file(tmp_path)
    root = tmp_path / "store"
    argv = ["train", "--attention", "linear", "--data", "linear", "--family", f"{f}:one_step", "--d", "2",
            "--n", "4", "--seeds", "1", "--steps", "2", "--batch", "4", "--eval-batch", "8", "--log-every", "1",
            "--dtype", "float64", "--device", "cpu", "--out", str(root), "--no-progress", "--json"]
    assert main(argv) == 0
    run = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["run"]
    # the file now does something when imported: reading the store must not import it
    f.write_text(f.read_text() + "\nopen('MARK', 'w').close()\n")
    assert main(["plot", str(root), "--kind", "loss", "--kind", "heatmap", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [fig["name"] for fig in out["figures"]] == ["loss"]
    (skip,) = out["skipped"]
    assert skip["kind"] == "heatmap" and skip["run"] == run
    assert "names the user family file" in skip["reason"] and "never read by importing code" in skip["reason"]
    assert not (tmp_path / "MARK").exists()

    from landscape.experiment.store import RunStore

    with RunStore(root) as store:
        config = TrainConfig.from_dict({**store.get_run(run).config, "device": "cpu"})
    assert not (tmp_path / "MARK").exists()
    with pytest.raises(ValueError, match=r"build the family explicitly: get_family\("):
        config.make_family()
    # asking for it explicitly is the user running their own file
    fam = get_family(f"{f}:one_step", config.problem())
    assert fam.names == ("a0",) and (tmp_path / "MARK").exists()
