r"""``landscape verify FAMILY``: a stationarity certificate for a parameter family.

Builds the problem and its prompt distribution from the shared options of
:mod:`landscape.cli._args` (``--d --n --layers --sigma --activation --data --task-cov ...``) and the
family (a built-in name or ``path/to/file.py:NAME``), then runs
:func:`landscape.numeric.certify_stationary`: with the symbolic layer's exact loss when one exists
for the setting (one-layer linear attention on Gaussian regression data) — a float64 tolerance
verdict — and otherwise a Monte-Carlo verdict: by default the sequential design (looks of 1000,
4000, 16000, ... prompts per sample until the verdict is decisive or ``DEFAULT_BUDGET_PROMPTS`` are
spent, alpha spending over the looks); with ``--samples T`` the fixed sizes ``T/16, T/4, T``; with
``--budget`` the sequential design from ``T/16`` within that budget. The gradient is over every
entry (``--mask all``) or over the paper's sparse parameterisation (``--mask blocks``: the blocks
where the family has free symbols; Ahn et al.'s Theorem 3 is stated for the gradient w.r.t. the
blocks :math:`A_l`).

Trained weights: ``--params FILE`` (a ``.npz``/``.pt`` parameter dict) or ``--run STORE[:RUN] --seed K``
(the final weights of seed ``K`` of a stored run, the store opened read-only; the problem is the
run's). Both are projected onto the family modulo the model's symmetries with the projection
training logs (:func:`landscape.experiment.distance.project_onto_family`, one start — so the
relative distance printed is the run's stored ``family_distance``), and the certificate tests the
nearest family point; ``--max-distance D`` refuses weights farther than ``D``.

Exit status 0 for ``stationary``, 1 for ``not_stationary`` / ``inconclusive``, 2 on bad input.
With ``--json`` one JSON object is printed, with at least ``verdict, point, loss,
grad_norm_tangent(_se), grad_norm_normal(_se), hessian {n_pos, n_neg, n_zero, min_eig, max_eig}``,
``task`` (the task, the prior of w* and Σ: :func:`landscape.recipe.describe_task`; the text report
prints it as its last line) and, with ``--params`` / ``--run``, ``weights {source, family_distance[,
stored_family_distance, stored_family]}``; or ``{"error": ...}`` on bad input. A user family file may
declare ``PRIOR`` and ``ATTENTION`` (:mod:`landscape.recipe`); ``--task-cov auto`` follows the declaration.

``--plot FILE`` (``.png`` or ``.svg``) draws the Monte-Carlo certificate just computed
(:func:`landscape.views.evidence.certificate_figure`: the normal-gradient norm against the sample
size of each look, its noise floor, the confidence bounds and ``tol``) and writes it with the
numbers drawn beside it as ``FILE`` without suffix + ``.json``
(:func:`landscape.views.save.save_figure`). The file name, its folder and the method are checked
before any sampling: an exact certificate has no sample sizes and is refused. The JSON output then
has ``plot`` (the figure file) and the text report a last ``plot`` line.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["add_parser", "run", "parse_point", "parse_budget", "build_problem", "load_run_weights",
           "DEFAULT_BUDGET_PROMPTS"]

DEFAULT_SAMPLES = 16000
DEFAULT_BUDGET_PROMPTS = 2_000_000
"""Prompt budget of the default (sequential) Monte-Carlo design, used when neither ``--samples`` nor
``--budget`` is given: looks of 1000, 4000, 16000, 64000, 256000 prompts per sample at most. Measured
(docs/tutorial_verify.md): Ahn et al.'s two-layer setting on its blocks and the exp-attention ``fgd``
family on its blocks need 64 000 prompts per sample to bound their normal gradient below the default
tolerance; neither the fixed sizes up to 16 000 nor the quasi-random samplers (no variance reduction
on these cases, ``benchmarks/bench_variance.py``) get there."""


# ---------------------------------------------------------------------- argument helpers
def parse_point(text: str) -> dict[str, float]:
    """``--point a0=0.5,a1=0.3`` → ``{"a0": 0.5, "a1": 0.3}`` (NaN values are kept, and rejected later)."""
    out: dict[str, float] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        name, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--point takes SYMBOL=VALUE pairs separated by commas, got {item!r}")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise ValueError(f"--point value for {name.strip()!r} is not a number: {value!r}") from None
    if not out:
        raise ValueError("--point is empty")
    return out


def _load_params(path: str) -> dict[str, torch.Tensor]:
    import torch

    p = Path(path)
    if not p.is_file():
        raise ValueError(f"--params file {path!r} does not exist")
    if p.suffix == ".npz":
        import numpy as np

        with np.load(p) as z:
            return {k: torch.as_tensor(z[k], dtype=torch.float64) for k in z.files}
    if p.suffix in (".pt", ".pth"):
        obj = torch.load(p, map_location="cpu", weights_only=True)
        if not isinstance(obj, dict):
            raise ValueError(f"--params file {path!r} must hold a dict of parameter tensors")
        return {str(k): torch.as_tensor(v, dtype=torch.float64) for k, v in obj.items()}
    raise ValueError(f"--params must be a .npz or .pt file of the parameter dict, got {path!r}")


def _check_finite(params: dict[str, torch.Tensor], what: str) -> dict[str, torch.Tensor]:
    import torch

    bad = sorted(k for k, v in params.items() if not bool(torch.isfinite(v).all()))
    if bad:
        raise ValueError(f"{what} has NaN or infinite entries in {bad[:3]}")
    return params


def load_run_weights(text: str, seed: int) -> tuple[Any, dict[str, torch.Tensor], Any, str]:
    """``--run STORE[:RUN] --seed K``: the stored config, the final weights of seed ``K`` and the
    ``family_distance`` training stored for it, read from a store opened read-only.

    ``RUN`` is a run name or id; it may be left out when the store holds one run.

    Returns:
        ``(config, params, stored_family_distance or None, run name)``.

    Raises:
        ValueError: a missing store, run, final weights or seed (one line each).
    """
    import torch

    from landscape.cli._args import trained_seed
    from landscape.core.model import unflatten_params

    tr, seed = trained_seed(text, seed)
    params = _check_finite({k: v.detach().to("cpu", torch.float64).contiguous()
                            for k, v in unflatten_params(tr.final[seed], tr.spec).items()},
                           f"seed {seed} of run {tr.run!r}")
    stored = None if tr.family_distance is None else float(tr.family_distance[seed])
    return tr.config, params, stored, tr.run


def _problem_from_run(args: argparse.Namespace, config: Any) -> tuple[Any, Any, Any]:
    """``(problem, family, task)`` of a stored run's config, the family named on the command line."""
    from landscape.experiment.train import make_task
    from landscape.theory.families import get_family

    sigma = config.sigma_matrix()
    problem = config.problem(sigma)
    return problem, get_family(args.family, problem), make_task(config, sigma)


def build_problem(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """``(problem, family, task)`` from the parsed arguments (:mod:`landscape.cli._args` options).

    Raises:
        ValueError: inconsistent arguments (unknown family, wrong attention, bad sigma ...).
    """
    from landscape import recipe
    from landscape.cli._args import problem_from_args

    problem, task = problem_from_args(args, args.family)
    family = recipe.family(args.family, problem)
    return problem, family, task


# ---------------------------------------------------------------------- command
def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    from landscape.cli._args import add_command, add_problem_args, float_arg, int_arg, nonneg_int, positive_float

    p = add_command(
        subparsers, "verify",
        help="stationarity certificate: is the family's best point a stationary point of the loss?",
        description="Stationarity certificate for a parameter family: fit the family's scalars, split the "
        "gradient into components tangent and normal to the family, and decide whether the normal component "
        "vanishes (exact loss: float64 tolerance; Monte-Carlo: a split-sample test at sizes T/16, T/4, T). "
        "Exit status 0 = stationary, 1 = not stationary or inconclusive, 2 = bad input.",
    )
    p.add_argument("family", help="built-in family (pgd, pgd-relaxed, pgd-full, pgd-identity, fgd, fgd-full, "
                   "fgd-identity) or path/to/file.py:NAME")
    p.add_argument("--samples", type=int_arg(16), default=None,
                   help="Monte-Carlo sample size T: the fixed design T/16, T/4, T, or with --budget the first "
                   "look T/16 (default 16000); without --samples and --budget the sequential design runs "
                   f"from T = 1000 with a budget of {DEFAULT_BUDGET_PROMPTS} prompts")
    p.add_argument("--mask", default="all", choices=("all", "blocks", "paper"),
                   help="entries the gradient is over (blocks = the paper's sparse parameterisation)")
    p.add_argument("--point", default=None, help="test this point, e.g. a0=0.8,a1=0.7 (default: fit the family)")
    p.add_argument("--params", default=None,
                   help="full weights (.npz/.pt dict): test the family point nearest to them modulo the model's "
                   "symmetries, and report their distance to the family (the one train logs)")
    p.add_argument("--run", default=None, metavar="STORE[:RUN]",
                   help="as --params, with the final weights of a stored training run (store opened read-only; "
                   "RUN = name or id, optional when the store holds one run); the problem is the run's, "
                   "--seed K picks its seed K (0-based) and seeds the Monte-Carlo samples")
    p.add_argument("--max-distance", type=positive_float, default=None,
                   help="with --params/--run: refuse weights farther than this relative distance from the family")
    p.add_argument("--exact", default="auto", choices=("auto", "yes", "no"),
                   help="use the exact population loss (auto: when the symbolic layer has one)")
    p.add_argument("--alpha", type=float_arg(0.0, 1.0, lo_open=True, hi_open=True), default=1e-3,
                   help="test level, in (0, 1) (default 1e-3)")
    p.add_argument("--test", default="directional", choices=("directional", "standardized", "norm"))
    p.add_argument("--tol", type=positive_float, default=None,
                   help="Monte-Carlo: tolerance on |N^T grad f| that a 'stationary' verdict certifies (default: "
                   "2%% of |grad f| at the family's zero point, over the free entries)")
    p.add_argument("--budget", default=None,
                   help="Monte-Carlo, sequential: grow the sample (T/16, T/4, T, 4T, ...) until decisive or the "
                   "budget is spent: PROMPTS, SECONDSs, or both as PROMPTS,SECONDSs (e.g. 2000000,600s)")
    p.add_argument("--sampler", default=None, choices=("mc", "qmc", "antithetic"),
                   help="Monte-Carlo: how prompts are drawn: mc (i.i.d.), qmc (scrambled Sobol points, one "
                   "scrambling per replicate batch), antithetic (label-sign pairs); default: "
                   "landscape.numeric.certificate.SAMPLER")
    p.add_argument("--hessian-samples", type=nonneg_int, default=1024,
                   help="prompts for the Monte-Carlo Hessian inertia (0: skip)")
    p.add_argument("--plot", default=None, metavar="FILE",
                   help="Monte-Carlo: draw the certificate (normal gradient vs sample size, noise floor, confidence "
                   "bounds, tol) to FILE (.png or .svg; the numbers drawn go beside it as .json)")
    add_problem_args(p)
    p.set_defaults(func=run)
    return p


def _sizes(T: int) -> tuple[int, ...]:
    if T < 16:
        raise ValueError(f"--samples T = {T} is too small: the certificate uses T/16, T/4 and T prompts")
    return (T // 16, T // 4, T)


def parse_budget(text: str) -> dict[str, float]:
    """``--budget 2000000,600s`` → ``{"prompts": 2000000, "seconds": 600.0}`` (either part may be left out)."""
    out: dict[str, float] = {}
    for item in text.split(","):
        item = item.strip().lower()
        if not item:
            continue
        key, num = ("seconds", item[:-1]) if item.endswith("s") else ("prompts", item)
        if key in out:
            raise ValueError(f"--budget gives the {key} twice: {text!r}")
        try:
            val = float(num) if key == "seconds" else int(num)
        except ValueError:
            raise ValueError(f"--budget takes PROMPTS, SECONDSs or PROMPTS,SECONDSs (e.g. 2000000,600s), got {text!r}") \
                from None
        if not math.isfinite(val) or val <= 0:
            raise ValueError(f"--budget values must be positive, got {text!r}")
        out[key] = val
    if not out:
        raise ValueError("--budget is empty")
    return out


def _summary(cert: Any) -> dict[str, Any]:
    out = cert.to_dict()
    h = out.get("hessian")
    if h is None:
        out["hessian"] = {"n_pos": None, "n_neg": None, "n_zero": None, "min_eig": None, "max_eig": None}
    return out


def run(args: argparse.Namespace) -> int:
    """Run the certificate; print a report or one JSON object."""
    import torch

    from landscape import recipe
    from landscape.cli import emit_json
    from landscape.numeric import certify_stationary, exact_loss_oracle
    from landscape.views.save import figure_path

    budget = parse_budget(args.budget) if args.budget is not None else None
    plot = figure_path(args.plot, "--plot") if getattr(args, "plot", None) is not None else None
    given = [f"--{name}" for name in ("point", "params", "run") if getattr(args, name, None) is not None]
    if len(given) > 1:
        raise ValueError(f"give at most one of --point, --params and --run (got {' and '.join(given)})")
    if args.max_distance is not None and args.params is None and args.run is None:
        raise ValueError("--max-distance applies to weights given by --params or --run")
    weights: dict[str, Any] | None = None
    samples = args.samples if args.samples is not None else DEFAULT_SAMPLES
    if args.samples is None and budget is None:
        budget = {"prompts": DEFAULT_BUDGET_PROMPTS}
    point: Any = None
    if args.run is not None:
        config, params, stored, run_name = load_run_weights(args.run, args.seed)
        problem, family, task = _problem_from_run(args, config)
        sigma_spec = getattr(config, "sigma", None)
        weights = {"source": f"run {run_name} seed {args.seed}", "stored_family_distance": stored,
                   "stored_family": config.family}
    else:
        problem, family, task = build_problem(args)
        sigma_spec = getattr(args, "sigma", None)
        if args.params is not None:
            params = _check_finite(_load_params(args.params), f"--params file {args.params!r}")
            weights = {"source": f"file {args.params}"}
    if args.point is not None:
        point = parse_point(args.point)
    elif weights is not None:
        point, weights = _nearest_point(params, family, weights, args.max_distance)
    exact = None
    if args.exact != "no":
        exact = exact_loss_oracle(problem, task)
        if exact is None and args.exact == "yes":
            raise ValueError("no exact population loss is known for this setting (the symbolic layer covers one "
                             "layer of linear attention on Gaussian/spherical regression data); use --exact no")
    if plot is not None and exact is not None:
        raise ValueError("--plot draws a Monte-Carlo certificate against its sample sizes; this setting has an "
                         "exact loss (no sample sizes): add --exact no, or leave out --plot")
    data = exact if exact is not None else task
    kwargs: dict[str, Any] = dict(point=point, mask=None if args.mask == "all" else args.mask, alpha=args.alpha,
                                  generator=torch.Generator().manual_seed(args.seed))
    if exact is None:
        kwargs.update(samples=_sizes(samples), test=args.test, hessian_samples=args.hessian_samples,
                      tol=args.tol, budget=budget, progress=_progress)
        if args.sampler is not None:
            kwargs["sampler"] = args.sampler
    cert = certify_stationary(family, data, **kwargs)
    record = recipe.describe_task(task, sigma_spec)
    if plot is not None:
        _draw(cert, plot, record)
    if args.json:
        out = {**_summary(cert), "task": record}
        if weights is not None:
            out["weights"] = weights
        if plot is not None:
            out["plot"] = str(plot)
        emit_json(out)
    else:
        if weights is not None:
            sys.stdout.write(_weights_line(weights, cert.family) + "\n")
        _print_report(cert)
        sys.stdout.write(recipe.task_line(record) + "\n")
        if plot is not None:
            sys.stdout.write(f"plot     {plot}\n")
    return 0 if cert.verdict == "stationary" else 1


def _draw(cert: Any, path: Path, task: dict[str, Any]) -> None:
    """Draw the certificate (:func:`landscape.views.evidence.certificate_figure`) and write it with its numbers."""
    from landscape.views.evidence import certificate_figure
    from landscape.views.save import save_figure

    fig = certificate_figure(cert, title=f"Stationarity certificate of {cert.family}: {_verdict_line(cert)} "
                                         f"({cert.problem})")
    data = {"family": cert.family, "verdict": cert.verdict, "tol": cert.tol, "alpha": cert.alpha,
            "mask": cert.mask, "test": cert.test, "task": task,
            "per_sample_size": [{"samples": r.samples, "normal": r.normal.value,
                                 "noise_floor": r.normal.noise_floor,
                                 "lower": None if r.bounds is None else r.bounds.lower,
                                 "upper": None if r.bounds is None else r.bounds.upper,
                                 "alpha": r.alpha, "p_value": r.p_value} for r in cert.per_sample_size]}
    save_figure(fig, path, formats=(path.suffix.lower().lstrip("."),), data=data)


def _nearest_point(params: dict[str, torch.Tensor], family: Any, weights: dict[str, Any],
                   max_distance: float | None) -> tuple[dict[str, float], dict[str, Any]]:
    """The family scalars nearest to ``params`` modulo the model's symmetries, by the projection
    training logs (:func:`landscape.experiment.distance.project_onto_family` with one start, as
    :func:`landscape.experiment.train.train` measures ``family_distance``)."""
    from landscape.experiment.distance import project_onto_family

    proj = project_onto_family(params, family, starts=1)
    if max_distance is not None and not proj.distance <= max_distance:
        raise ValueError(f"the weights ({weights['source']}) are at relative distance {proj.distance:.3g} from "
                         f"family {family.name!r} modulo its symmetries, above --max-distance {max_distance:g}")
    return dict(proj.values), {**weights, "family_distance": proj.distance}


def _weights_line(weights: dict[str, Any], family: str) -> str:
    line = (f"weights  {weights['source']}: relative distance {weights['family_distance']:.6g} to family {family} "
            "modulo its symmetries; the point tested is the nearest family point")
    stored = weights.get("stored_family_distance")
    if stored is not None:
        line += f" (train stored {stored:.6g} for family {weights.get('stored_family')})"
    return line


def _progress(message: str) -> None:
    from landscape._progress import note

    note(f"[verify] {message}")  # stderr; silenced by --quiet


def _verdict_line(cert: Any) -> str:
    """``STATIONARY within tol = … at confidence 1 − alpha = …`` (Monte-Carlo) — never a bare "stationary"."""
    if cert.method == "exact":
        return f"{cert.verdict.upper()} (exact loss, float64 tolerance {cert.tolerance:.1g})"
    conf = f"confidence 1 - alpha = {cert.confidence:g}"
    if cert.verdict == "stationary":
        return f"STATIONARY within tol = {cert.tol:.3g} at {conf}"
    if cert.verdict == "not_stationary":
        return f"NOT_STATIONARY at level alpha = {cert.alpha:g}"
    return f"INCONCLUSIVE (tol = {cert.tol:.3g}, {conf})"


def _print_report(cert: Any) -> None:
    w = sys.stdout.write
    w(f"family   {cert.family}  ({cert.problem}; gradient over {cert.mask} entries: {cert.free} free, "
      f"normal dimension {cert.normal_dim})\n")
    w(f"method   {cert.method}" + (f", {cert.test} test at alpha = {cert.alpha:g}, {cert.sampler} sampler\n"
                                   if cert.method != "exact"
                                   else f", tolerance {cert.tolerance:.1g}\n"))
    w("point    " + ", ".join(f"{k} = {v:.6g}" for k, v in cert.point.items()) + "\n")
    w(f"loss     {cert.loss:.6g}" + (f" ± {cert.loss_se:.2g}\n" if cert.loss_se else "\n"))
    t, nrm = cert.grad_norm_tangent, cert.grad_norm_normal
    w(f"|grad| tangent {t.value:.3g}" + (f" ± {t.se:.2g}" if t.se else "") +
      f"   normal {nrm.value:.3g}" + (f" ± {nrm.se:.2g} (noise floor {nrm.noise_floor:.2g})" if nrm.se else "") + "\n")
    for r in cert.per_sample_size:
        w(f"  T = {r.samples:>7d}: |N^T g| = {r.normal.value:.3g} (floor {r.normal.noise_floor:.2g}), "
          f"{cert.test} statistic {r.statistic:.3g}, p = {r.p_value:.3g} (level {r.alpha:.2g}); "
          f"|N^T grad f| in [{r.bounds.lower:.3g}, {r.bounds.upper:.3g}]\n")
    if cert.method != "exact":
        w(f"bounds   |N^T grad f| in [{cert.normal_lower:.3g}, {cert.normal_upper:.3g}] "
          f"(each side at its look's level; {cert.design} design: {cert.stop})\n")
        w(f"tol      {cert.tol:.3g} ({cert.tol_source})\n")
        if math.isfinite(cert.slope):
            w(f"slope    log|normal| vs log T: {cert.slope:.2f} ± {cert.slope_se:.2f} (pure noise: -0.5; diagnostic)\n")
    if cert.hessian is not None:
        h = cert.hessian
        w(f"hessian  n_pos {h.n_pos}, n_zero {h.n_zero}, n_neg {h.n_neg}, eig in [{h.min_eig:.3g}, {h.max_eig:.3g}]")
        if h.reduced is not None and h.n_symmetry:
            r = h.reduced
            w(f"; modulo {h.n_symmetry} symmetry directions: n_pos {r.n_pos}, n_zero {r.n_zero}, n_neg {r.n_neg}")
        w(f" -> {h.classification}\n")
    reason = cert.reason
    if cert.verdict == "stationary" and reason.startswith("stationary within tol") and ": " in reason:
        reason = reason.split(": ", 1)[1]  # the verdict line already states tol and confidence
    w(f"verdict  {_verdict_line(cert)}: {reason}\n")
    if getattr(cert, "caveat", ""):
        w(f"caveat   {cert.caveat}\n")
