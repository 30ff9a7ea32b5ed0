r"""``landscape solve``: the population loss of a family and every stationary point found.

The loss is exact (sympy) where a route exists — whitening + Wishart moments (``pgd``,
``pgd-relaxed``; any L), the one-layer closed form (any P, Q; any Σ), Wick pairings (sparse heads,
any Σ, L <= 3, e.g. ``pgd-identity``), or the expansion in the data entries (small sizes) — and
label-exact Monte-Carlo otherwise (kernel families). Stationary points
are solved exactly where sympy can (linear, univariate, bivariate systems) and numerically from
many seeded starts otherwise, then classified by the family Hessian modulo weight symmetries.

Examples::

    landscape solve pgd --layers 1 --d 5 --n 20
    landscape solve pgd-full --d 3 --n 5 --sigma random:0 --json
    landscape solve pgd --layers 3 --sigma spectrum:1,1,0.25,0.0625,1 --json
    landscape solve fgd --activation exp --layers 1 --d 3 --n 4 --samples 2048
    landscape solve my_family.py:family --layers 2 --d 2 --n 3

With ``--json`` one object is printed: ``family``, ``loss`` (the expression as a string), ``method``,
``exact`` and ``stationary_points`` — a list of ``{values, exact, loss, kind, ...}``.

Exit status: 0 when the loss was derived (whether or not stationary points were found), 2 on bad
arguments (every numeric option is checked when the command line is parsed) or, for linear
attention, sizes whose estimated memory (:data:`SOLVE_MEMORY_FACTOR`) does not fit.
"""

from __future__ import annotations

import argparse

from .._cli_args import add_problem_args, int_arg, positive_float, positive_int, problem_from_args

__all__ = ["add_parser", "run"]

_MAX_PRINT = 4000
"""Expressions longer than this many characters are summarised in text output."""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``landscape solve``."""
    doc = __doc__ or ""
    p = subparsers.add_parser(
        "solve",
        help="exact family loss and its stationary points (min/saddle/max/degenerate)",
        description=doc.split("\n\nExamples")[0],
        epilog="Examples" + doc.split("Examples", 1)[1] if "Examples" in doc else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("family", metavar="FAMILY",
                   help="a built-in family (see `landscape families`) or path/to/file.py:NAME")
    add_problem_args(p)
    s = p.add_argument_group("solver")
    s.add_argument("--method", choices=("auto", "wishart", "one-layer", "wick", "expansion", "label-exact"), default="auto",
                   help="loss route (default auto: the first exact route that applies)")
    s.add_argument("--spectrum", choices=("numeric", "symbolic"), default="numeric",
                   help="one-layer route: keep the eigenvalues of Σ symbolic in the general expression")
    s.add_argument("--samples", type=int_arg(2), default=2048,
                   help="covariate draws of the Monte-Carlo route (default 2048)")
    s.add_argument("--starts", type=positive_int, default=None,
                   help="random starts of the numerical search (default 24; 3 for Monte-Carlo losses)")
    s.add_argument("--scale", type=positive_float, default=1.0, help="spread of the random starts (default 1)")
    s.add_argument("--no-exact", action="store_true", help="skip the exact (sympy) solvers")
    p.set_defaults(func=run)
    return p


SOLVE_MEMORY_FACTOR = 4.0
"""Peak bytes of the exact linear-attention routes per ``8 (d+1)^4 L^2`` (float64-sized entries),
measured for ``pgd``: 2.8 (d 40), 3.9 (d 80 and 120; 6.7 GB at d 120), 3.9 (d 40, 3 layers)."""


def check_solve_memory(d: int, layers: int) -> None:
    """Refuse linear-attention sizes whose exact loss cannot fit in memory (before any sympy work).

    Raises:
        ValueError: the estimate ``SOLVE_MEMORY_FACTOR × 8 B × (d+1)^4 × layers^2`` exceeds the
            available memory.
    """
    from .._checks import check_memory

    check_memory(f"--d {d} --layers {layers}", int(SOLVE_MEMORY_FACTOR * 8 * (d + 1) ** 4 * layers**2),
                 f"{SOLVE_MEMORY_FACTOR:g} × 8 B × (d+1)^4 × layers^2")


def _fmt(x: float) -> str:
    return f"{x:.6g}"


def _coefficients(loss: object, points: object) -> dict[str, tuple[float, float]] | None:
    """Named coefficient estimates (mean, SE) at the lowest stationary point, when the family has gains."""
    if not points:
        return None
    try:
        return loss.coefficients(points[0].values).as_dict()  # type: ignore[attr-defined,index]
    except ValueError:
        return None


def run(args: argparse.Namespace) -> int:
    """Derive the loss, solve the stationary equations, print them."""
    from ..cli import emit_json
    from ..families import get_family
    from ..symbolic.loss import family_loss
    from ..symbolic.solve import stationary_points

    problem, data = problem_from_args(args, family=args.family)
    if problem.attention == "linear":
        check_solve_memory(problem.d, problem.layers)
    family = get_family(args.family, problem)
    loss = family_loss(family, data, method=args.method, spectrum=args.spectrum, samples=args.samples, seed=args.seed)
    starts = args.starts if args.starts is not None else (24 if loss.exact else 3)
    points = stationary_points(loss, starts=starts, seed=args.seed, exact=False if args.no_exact else "auto",
                               scale=args.scale)
    general = loss.general if (loss.exact and loss.general is not None) else None
    if args.json:
        out = {
            "family": family.name,
            "statement": family.statement,
            "problem": problem.describe(),
            "symbols": list(family.names),
            "method": loss.method,
            "exact": loss.exact,
            "description": loss.description,
            "loss": str(loss.expr),
            "loss_general": None if general is None else str(general),
            "latex": loss.latex(),
            "free": [s.name for s in loss.free_symbols()],
            "stationary_points": [p.as_dict() for p in points],
        }
        if not loss.exact:
            out["samples"] = loss.estimator.samples  # type: ignore[union-attr]
            out["coefficients"] = _coefficients(loss, points)
        emit_json(out)
        return 0
    print(family.describe())
    print(f"data: {type(data).__name__}; loss route: {loss.method} ({'exact' if loss.exact else 'Monte-Carlo'})")
    print(f"  {loss.description}")
    text = str(loss.expr)
    print("loss:" if loss.exact else "loss (polynomial in the label gains; m__A__B = covariate expectations):")
    print("  " + (text if len(text) <= _MAX_PRINT else text[:_MAX_PRINT] + f" ... ({len(text)} characters)"))
    if general is not None and general != loss.expr:
        g = str(general)
        extra = sorted(str(x) for x in general.free_symbols - set(family.symbols))
        print(f"general (symbolic in {', '.join(extra)}):")
        print("  " + (g if len(g) <= _MAX_PRINT else g[:_MAX_PRINT] + f" ... ({len(g)} characters)"))
    if not loss.exact:
        co = _coefficients(loss, points)
        if co:
            print("coefficient estimates at the lowest point (mean ± SE):")
            print("  " + ", ".join(f"{k} = {_fmt(m)} ± {_fmt(e)}" for k, (m, e) in co.items()))
    if not points:
        print("no stationary point found")
        return 0
    print(f"stationary points ({len(points)}):")
    for p in points:
        vals = ", ".join(f"{k}={_fmt(v)}" for k, v in p.values.items())
        se = f" ± {_fmt(p.loss_se)}" if p.loss_se else ""
        print(f"  [{p.kind}] loss={_fmt(p.loss)}{se}  {vals}")
        if p.exact:
            print("        exact: " + ", ".join(f"{k}={v}" for k, v in p.exact.items()))
        if p.free:
            print("        free (loss does not depend on): " + ", ".join(p.free))
    return 0
