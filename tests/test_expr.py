"""The safe expression parser (``landscape._expr``) and every way user text reaches it.

Kernel strings (``"sympy:EXPR"``) come from the Python API, the CLI, sweep files and stored run
configs; none of them may execute the text. The payload below runs a shell command if anything
hands it to ``eval`` / ``sympy.sympify``; each test runs in a temporary working directory and
checks that the command's file was not created.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
import sympy
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from landscape._expr import FUNCTIONS, MAX_DEPTH, MAX_LENGTH, parse_expression
from landscape.cli import main
from landscape.core.kernels import INVARIANTS, PROBE_POINTS, Kernel, get_kernel

PAYLOAD = "__import__('os').system('touch MARK')*0 + s"
SYMS = {str(x): x for x in INVARIANTS}
s, r2, uu, ww = INVARIANTS


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


# ---------------------------------------------------------------------- the parser itself
def test_parser_builds_the_expression_it_reads() -> None:
    # each text against the expression written with sympy's constructors
    cases = {
        "exp(-r2/2) + s": sympy.exp(-r2 / 2) + s,
        "(s + 1)**3": (s + 1) ** 3,
        "1/3*s": sympy.Rational(1, 3) * s,
        "-s**2": -(s**2),
        "2**-1": sympy.Rational(1, 2),
        "max(s, 0) + Min(uu, ww, 1)": sympy.Max(s, 0) + sympy.Min(uu, ww, 1),
        "abs(s) * Abs(r2)": sympy.Abs(s) * sympy.Abs(r2),
        "sqrt(r2) + log(uu) + sin(s) + cos(s) + tanh(s) + erf(s)":
            sympy.sqrt(r2) + sympy.log(uu) + sympy.sin(s) + sympy.cos(s) + sympy.tanh(s) + sympy.erf(s),
        "pi * E**s": sympy.pi * sympy.exp(s),
        "1.5e-1 * +s": sympy.Float(0.15) * s,
    }
    for text, want in cases.items():
        assert parse_expression(text, SYMS) == want, text
    # the symbols are the caller's (with their assumptions), not fresh ones
    assert parse_expression("s", SYMS) is s and s.is_real


@pytest.mark.parametrize("text, token", [
    (PAYLOAD, "attribute access '.system'"),
    ("__import__('os')", "unknown function '__import__'"),
    ("s.__class__", r"attribute access s.__class__"),
    ("__builtins__", "unknown name '__builtins__'"),
    ("s[0]", "subscript s[0]"),
    ("(lambda: s)()", "not a call of a named function"),
    ("lambda: s", "lambda lambda: s"),
    ("[s for s in uu]", "comprehension"),
    ("'s'", "string literal 's'"),
    ("exp(s, x=1)", r"keyword argument x= in exp\(\)"),
    ("exp(**{})", r"keyword argument \*\* in exp\(\)"),
    ("foo(s)", "unknown function 'foo'"),
    ("ell * s", "unknown name 'ell'"),
    ("zoo", "unknown name 'zoo'"),
    ("I*s", "unknown name 'I'"),
    ("s if s else r2", "conditional expression"),
    ("s < 1", "comparison"),
    ("s ^ 2", r"write powers as \*\*"),
    ("s // 2", "the operator in s // 2"),
    ("log(s, 2)", r"log\(\) takes 1 argument\(s\), got 2"),
    ("Max(s)", r"Max\(\) takes at least 2 argument\(s\), got 1"),
    ("exp", "the function 'exp' must be called"),
    ("1e999", "the number 1e999 is not finite"),
    ("9**9**9", "is too large"),
    ("exp(s", "invalid syntax"),
    ("s = 1", "invalid syntax"),
    ("", "is empty"),
])
def test_parser_rejects_with_the_offending_token_and_the_accepted_language(text: str, token: str) -> None:
    with pytest.raises(ValueError) as exc:
        parse_expression(text, SYMS, what="kernel expression")
    msg = str(exc.value)
    assert "\n" not in msg
    assert token.replace("\\", "") in msg or __import__("re").search(token, msg), msg
    if text.strip() and "is not finite" not in token and "too large" not in token:
        assert "accepted: numbers, the symbols [r2, s, uu, ww]" in msg and "the functions [exp, log" in msg


def test_parser_caps_length_nesting_and_rejects_non_finite_results() -> None:
    with pytest.raises(ValueError, match=f"more than the limit {MAX_LENGTH}"):
        parse_expression("s" + "+s" * MAX_LENGTH, SYMS)
    with pytest.raises(ValueError, match=f"nests brackets deeper than the limit {MAX_DEPTH}"):
        parse_expression("(" * (MAX_DEPTH + 1) + "s" + ")" * (MAX_DEPTH + 1), SYMS)
    # deep trees without brackets: unary minus and powers
    with pytest.raises(ValueError, match="deeper than the limit"):
        parse_expression("-" * (MAX_DEPTH + 5) + "s", SYMS)
    assert parse_expression("(" * MAX_DEPTH + "s" + ")" * MAX_DEPTH, SYMS) == s
    with pytest.raises(ValueError, match="deeper than the limit"):
        parse_expression("**".join(["s"] * (MAX_DEPTH + 2)), SYMS)
    # a long chain of + - * / is one level, whatever its length
    assert parse_expression(" + ".join(["s"] * 400) + " - r2/2/uu*ww", SYMS) == 400 * s - r2 * ww / (2 * uu)
    for text in ("1/0", "0**-1", "s/0"):
        with pytest.raises(ValueError, match="is not finite: it evaluates to"):
            parse_expression(text, SYMS)
    with pytest.raises(ValueError, match="cannot be a symbol"):
        parse_expression("s", {"__class__": s})
    with pytest.raises(TypeError, match="must be a string"):
        parse_expression(3, SYMS)  # type: ignore[arg-type]


# ---------------------------------------------------------------------- property: sstr round trip
_LEAVES = st.one_of(
    st.sampled_from(INVARIANTS),
    st.integers(-5, 5).map(sympy.Integer),
    st.tuples(st.integers(-7, 7), st.integers(1, 6)).map(lambda t: sympy.Rational(*t)),
    # floats that 15 significant digits represent exactly (sstr prints 15)
    st.tuples(st.integers(-64, 64), st.integers(0, 6)).map(lambda t: sympy.Float(t[0] / 2 ** t[1])),
)
_UNARY = [FUNCTIONS[f][0] for f in ("exp", "log", "sqrt", "Abs", "sin", "cos", "tanh", "erf")]


def _apply(fn, *args: sympy.Expr) -> sympy.Expr:
    try:
        return fn(*args)
    except (ValueError, TypeError, ZeroDivisionError):  # e.g. Max(zoo, s): "not comparable"
        return sympy.nan


_BINARY = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b, "/": lambda a, b: a / b,
           "max": sympy.Max, "min": sympy.Min}


def _extend(children: st.SearchStrategy[sympy.Expr]) -> st.SearchStrategy[sympy.Expr]:
    binary = st.tuples(st.sampled_from(sorted(_BINARY)), children, children).map(
        lambda t: _apply(_BINARY[t[0]], t[1], t[2]))
    power = st.tuples(children, st.sampled_from([2, 3, -1, sympy.Rational(1, 2), sympy.Rational(3, 2)])).map(
        lambda t: _apply(lambda a, b: a**b, t[0], t[1]))
    unary = st.tuples(st.sampled_from(_UNARY), children).map(lambda t: _apply(t[0], t[1]))
    return st.one_of(binary, power, unary)


KERNEL_EXPRS = st.recursive(_LEAVES, _extend, max_leaves=12)


@settings(max_examples=300, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(KERNEL_EXPRS)
def test_parsing_sstr_of_a_kernel_expression_gives_it_back(expr: sympy.Expr) -> None:
    """``parse(sstr(e))`` is ``e``: structurally equal in the common case. Two exceptions are
    sympy's, not the parser's: floats print with 15 digits (``exp(0.5)`` evaluates to a float), and
    automatic evaluation depends on the order of construction (``Abs(1/r2)**2`` stays
    ``Abs(r2**-2)``, while the text ``Abs(r2**(-2))`` evaluates to ``r2**-2``). Then the text of the
    parse is a fixed point and both agree as functions at every kernel probe point (1e-12)."""
    assume(not expr.has(sympy.zoo, sympy.oo, -sympy.oo, sympy.nan, sympy.I))
    text = sympy.sstr(expr)
    assume(len(text) <= MAX_LENGTH)
    back = parse_expression(text, SYMS)
    if back == expr:
        return
    again = sympy.sstr(back)
    assert parse_expression(again, SYMS) == back or back.atoms(sympy.Float), (text, again)
    f, g = (sympy.lambdify(INVARIANTS, e, modules="mpmath") for e in (expr, back))
    for p in PROBE_POINTS:
        try:
            a = complex(f(*p))
        except (ZeroDivisionError, ValueError, OverflowError, TypeError):
            continue
        b = complex(g(*p))
        assert abs(a - b) <= 1e-12 * max(1.0, abs(a)), (text, p, a, b)


def test_sstr_round_trip_is_structural_for_plain_kernels() -> None:
    for expr in (sympy.exp(-r2 / 2) + s, (s + 1) ** 3, sympy.Max(s, 0), sympy.exp(-sympy.sqrt(r2) / 2),
                 (1 + sympy.sqrt(3) * sympy.sqrt(r2)) * sympy.exp(-sympy.sqrt(3) * sympy.sqrt(r2)),
                 s / sympy.sqrt(uu * ww), sympy.Rational(1, 3) * sympy.tanh(s) - sympy.erf(r2) ** 2):
        assert parse_expression(sympy.sstr(expr), SYMS) == expr


# ---------------------------------------------------------------------- item: text is never executed
def test_payload_through_get_kernel_is_rejected_and_not_run(in_tmp: Path) -> None:
    for make in (lambda: get_kernel("sympy:" + PAYLOAD), lambda: Kernel.from_sympy(PAYLOAD),
                 lambda: Kernel("k", PAYLOAD)):  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=r"cannot parse kernel expression .*attribute access '\.system' "
                                             r"is not allowed; accepted: numbers"):
            make()
    assert not (in_tmp / "MARK").exists()


def test_payload_in_a_sweep_file_is_rejected_by_dry_run_and_not_run(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = in_tmp / "evil.toml"
    f.write_text(
        '[base]\ntask = "linear"\nattention = "kernel"\nd = 2\nn = 4\nsteps = 2\ndevice = "cpu"\n\n'
        f'[grid]\nactivations = [["exp"], ["sympy:{PAYLOAD}"]]\n'
    )
    assert main(["sweep", str(f), "--dry-run", "--json", "--out", str(in_tmp / "o")]) == 2
    err = json.loads(capsys.readouterr().out)["error"]
    assert "grid point 1" in err and "attribute access '.system' is not allowed" in err
    assert not (in_tmp / "MARK").exists() and not (in_tmp / "o").exists()


def test_payload_in_a_stored_config_is_rejected_by_plot_and_not_run(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = in_tmp / "store"
    argv = ["train", "--attention", "kernel", "--activation", "exp", "--data", "linear", "--d", "2", "--n", "4",
            "--seeds", "1", "--steps", "2", "--batch", "4", "--eval-batch", "8", "--log-every", "1",
            "--dtype", "float64", "--device", "cpu", "--out", str(root), "--no-progress", "--json"]
    assert main(argv) == 0
    capsys.readouterr()
    # the store is edited behind the library's back: the run's activation becomes the payload
    db = sqlite3.connect(root / "store.sqlite")
    (rid, text), = db.execute("SELECT id, config FROM runs").fetchall()
    config = json.loads(text)
    assert config["activations"] == ["exp"]
    config["activations"] = ["sympy:" + PAYLOAD]
    db.execute("UPDATE runs SET config = ? WHERE id = ?", (json.dumps(config), rid))
    db.commit()
    db.close()
    assert main(["plot", str(root), "--kind", "loss", "--json"]) == 2
    err = json.loads(capsys.readouterr().out)["error"]
    assert "stored config is rejected" in err and "attribute access '.system' is not allowed" in err
    assert not (in_tmp / "MARK").exists()
