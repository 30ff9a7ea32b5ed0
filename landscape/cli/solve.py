r"""``landscape solve``: the population loss of a family and every stationary point found.

The loss is exact (sympy) where a route exists — whitening + Wishart moments (``pgd``,
``pgd-relaxed``, ``pgd-tied``; any L), the one-layer closed form (any P, Q; any Σ), Wick pairings (sparse heads,
any Σ, L <= 3, e.g. ``pgd-identity``), the expansion in the data entries (small sizes), one ReLU or
exp-kernel head on Gaussian covariates — and label-exact Monte-Carlo otherwise (kernel families);
``--route`` picks one. Stationary points
(``--method``, default auto): an exact linear solve when the equations are linear; otherwise, for a
polynomial loss within the limits of the exhaustive method (at most 8 unknowns, gradient degree
<= 7, Bézout bound <= 729), EXHAUSTIVE enumeration — Gröbner basis, root counts from the trace
form, rational univariate representation — listing every real critical point and critical
scaling orbit once modulo the loss's sign flips and permutations, each with an exact algebraic
value, an interval box, its dimension and Morse index; otherwise a multi-start search from
seeded random starts, which is NOT exhaustive and says so.

Examples::

    landscape solve pgd --layers 1 --d 5 --n 20
    landscape solve pgd-full --d 3 --n 5 --sigma random:0 --json
    landscape solve pgd --layers 3 --sigma spectrum:1,1,0.25,0.0625,1 --json
    landscape solve fgd --activation exp --layers 1 --d 3 --n 4 --samples 2048
    landscape solve my_family.py:family --layers 2 --d 2 --n 3
    landscape solve pgd --layers 2 --d 3 --n 10 --method multistart

With ``--json`` one object is printed: ``family``, ``task`` (the task, the prior of w* and Σ:
:func:`landscape.recipe.describe_task`), ``loss`` (the expression as a string), ``route``
(the loss route), ``routes_skipped`` (the routes tried before it and why each did not apply),
``exact`` (exact loss?), ``optimal_gd`` (pgd-type Wishart losses: the exact
optimal L-step preconditioned GD loss, a rational, its step sizes; else null), ``search`` (``method``, ``exhaustive``, ``certified``,
``note``, ``symmetries``) and ``stationary_points`` — a list of ``{values, exact, loss, kind,
morse_index, dimension, orbit, method, exhaustive, certified, box, certificate, ...}``.

Exit status: 0 when the loss was derived (whether or not stationary points were found), 2 on bad
arguments (every numeric option is checked when the command line is parsed) or, for linear
attention, sizes whose estimated memory (:data:`SOLVE_MEMORY_FACTOR`) does not fit.
"""

from __future__ import annotations

import argparse

from landscape.cli._args import add_command, add_problem_args, int_arg, positive_float, positive_int, problem_from_args

__all__ = ["add_parser", "run"]

ROUTE_CHOICES = ("auto", "wishart", "one-layer", "wick", "expansion", "relu-one-layer", "relu-anisotropic", "exp-one-layer", "exp-gp-one-layer", "label-exact",
                 "monte-carlo")
"""``--route`` values: ``auto`` and the routes of :data:`landscape.symbolic.routes.ROUTES` (kept literal so that
parsing the command line imports nothing heavy; a test checks they agree)."""

_MAX_PRINT = 4000
"""Expressions longer than this many characters are summarised in text output."""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``landscape solve``."""
    p = add_command(
        subparsers, "solve",
        help="exact family loss and its stationary points (min/saddle/max/degenerate)",
        doc=__doc__,
        epilog_from="Examples",
    )
    p.add_argument("family", metavar="FAMILY",
                   help="a built-in family (see `landscape families`) or path/to/file.py:NAME")
    add_problem_args(p)
    s = p.add_argument_group("solver")
    s.add_argument("--route", choices=ROUTE_CHOICES, default="auto",
                   help="loss route (default auto: the first route of the registry that applies; the others' "
                        "reasons are in --json 'routes_skipped')")
    s.add_argument("--method", choices=("auto", "exhaustive", "multistart"), default="auto",
                   help="stationary-point search: exhaustive (certified enumeration, polynomial losses within the "
                        "limits), multistart (seeded random starts, not exhaustive), auto (exhaustive where it "
                        "applies; default)")
    s.add_argument("--query-sigma", default=None, metavar="SPEC",
                   help="covariate shift: covariance of the query covariate (same forms as --sigma; one-layer "
                        "route only); the loss is the test loss on shifted queries")
    s.add_argument("--spectrum", choices=("numeric", "symbolic"), default="numeric",
                   help="one-layer route: keep the eigenvalues of Σ symbolic in the general expression")
    s.add_argument("--samples", type=int_arg(2), default=2048,
                   help="covariate draws of the Monte-Carlo route (default 2048)")
    s.add_argument("--starts", type=positive_int, default=None,
                   help="random starts of the numerical search (default 24; 3 for Monte-Carlo losses)")
    s.add_argument("--scale", type=positive_float, default=1.0, help="spread of the random starts (default 1)")
    s.add_argument("--no-exact", action="store_true", help="skip the exact (sympy) solvers (same as --method multistart)")
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
    from landscape._checks import check_memory

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
    import torch

    from landscape import recipe
    from landscape.cli import emit_json
    from landscape.symbolic.loss import family_loss
    from landscape.symbolic.solve import optimal_gd, stationary_points

    problem, data = problem_from_args(args, family=args.family)
    if problem.attention == "linear":
        check_solve_memory(problem.d, problem.layers)
    family = recipe.family(args.family, problem)
    if args.no_exact and args.method == "exhaustive":
        raise ValueError("--no-exact and --method exhaustive contradict each other")
    if args.method == "exhaustive" and args.route == "label-exact":
        raise ValueError("--method exhaustive needs an exact polynomial loss; --route label-exact is Monte-Carlo")
    query_sigma = None
    if args.query_sigma is not None:
        query_sigma = recipe.covariance(args.query_sigma, problem.d, args.seed)
        if query_sigma is None:
            query_sigma = torch.eye(problem.d, dtype=torch.float64)
    loss = family_loss(family, data, method=args.route, spectrum=args.spectrum, samples=args.samples, seed=args.seed,
                       query_sigma=query_sigma)
    if args.method == "exhaustive" and not loss.exact:
        raise ValueError(f"--method exhaustive needs an exact polynomial loss; the {loss.method!r} route is "
                         "Monte-Carlo (use --method multistart or auto)")
    starts = args.starts if args.starts is not None else (24 if loss.exact else 3)
    method = "multistart" if args.no_exact else args.method
    points = stationary_points(loss, starts=starts, seed=args.seed, scale=args.scale, method=method)
    general = loss.general if (loss.exact and loss.general is not None) else None
    opt = optimal_gd(loss)
    record = recipe.describe_task(data, args.sigma)
    if args.json:
        out = {
            "family": family.name,
            "statement": family.statement,
            "problem": problem.describe(),
            "task": record,
            "symbols": list(family.names),
            "route": loss.method,
            "routes_skipped": [{"route": r, "reason": why} for r, why in loss.skipped],
            "query_sigma": args.query_sigma,
            "exact": loss.exact,
            "search": points.summary(),
            "description": loss.description,
            "loss": str(loss.expr),
            "loss_general": None if general is None else str(general),
            "latex": loss.latex(),
            "free": [s.name for s in loss.free_symbols()],
            "stationary_points": [p.as_dict() for p in points],
            "optimal_gd": opt,
        }
        if not loss.exact:
            out["samples"] = loss.estimator.samples  # type: ignore[union-attr]
            out["coefficients"] = _coefficients(loss, points)
        emit_json(out)
        return 0
    print(family.describe())
    print(f"data: {type(data).__name__}; loss route: {loss.method} ({'exact' if loss.exact else 'Monte-Carlo'})")
    print(recipe.task_line(record))
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
    if opt is not None:
        if opt["realisable"]:
            print(f"optimal {opt['layers']}-step preconditioned GD loss (exact): {opt['loss_exact']} "
                  f"≈ {_fmt(opt['loss'])}; steps " + ", ".join(_fmt(v) for v in opt["step_values"]))
        else:
            print(f"optimal {opt['layers']}-step GD polynomial has non-real roots: {opt['lower_bound']} is only a "
                  "lower bound on the family loss")
    verdict = "EXHAUSTIVE" if points.exhaustive else "NOT exhaustive"
    print(f"search: {points.method} ({verdict}{', certified' if points.certified else ''}): {points.note}")
    if points.symmetries:
        print("  symmetries of the loss quotiented out: " + "; ".join(points.symmetries))
    if not points:
        print("no stationary point found" + (" (there is none)" if points.exhaustive else ""))
        return 0
    label = "critical sets" if points.method == "exhaustive" else "stationary points"
    print(f"{label} ({len(points)}):")
    for p in points:
        vals = ", ".join(f"{k}={_fmt(v)}" for k, v in p.values.items())
        se = f" ± {_fmt(p.loss_se)}" if p.loss_se else ""
        extra = ""
        if p.morse_index is not None:
            extra = f" index={p.morse_index} dim={p.dimension}" + (f" orbit={p.orbit}" if p.orbit > 1 else "")
        exact_loss = f" (= {p.loss_exact})" if p.loss_exact and len(p.loss_exact) <= 60 else ""
        print(f"  [{p.kind}] loss={_fmt(p.loss)}{exact_loss}{se}{extra}  {vals}")
        if p.exact:
            print("        exact: " + ", ".join(f"{k}={v}" for k, v in p.exact.items()))
        if p.free:
            print("        free (loss does not depend on): " + ", ".join(p.free))
    return 0
