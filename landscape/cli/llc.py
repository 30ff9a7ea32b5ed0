r"""``landscape llc``: the local learning coefficient of the loss at a point, by SGLD.

The point and its loss are those of ``landscape hessian`` (:func:`landscape.cli._args.add_point_args`):
a **family point** (``--family NAME`` with the problem options; ``--point a0=...`` or the family's
best point fitted on the loss) or a **trained seed** (``--run STORE[:RUN] --seed K``, read-only), on
the exact population loss where the symbolic layer has one (``--exact auto``), else a Monte-Carlo
loss on ``--samples`` fixed prompts.

:func:`landscape.numeric.llc.local_learning_coefficient` samples the localised tempered posterior
:math:`p(w) \propto \exp(-n\beta L(w) - \frac{\gamma}{2}\lVert w - w^*\rVert^2)` by Langevin steps
of size :math:`\epsilon` in ``--chains`` independent chains and reports
:math:`\hat\lambda = n\beta(\overline{L(w_t)} - L(w^*))` with its standard error over chains
(Lau et al. 2023; as devinterp). ``--sample-size`` is the nominal :math:`n` (temperature
:math:`n\beta`, :math:`\beta = 1/\log n` unless ``--beta``), ``--gamma`` the localisation,
``--step-size`` :math:`\epsilon` (stable when :math:`\epsilon(n\beta\lambda_{\max}(H) + \gamma) < 4`),
``--steps`` and ``--burn-in`` the draws per chain and those discarded.

With the dense Hessian at hand (``P <= --dense-max``), the report adds the reference of the local
quadratic model: the Hessian rank :math:`r` (:math:`\lambda = r/2` for a quadratic whose other
directions are flat) and the estimator's exact expectation for that quadratic at these settings
(:func:`landscape.numeric.llc.quadratic_llc`), when the Hessian has no negative eigenvalue.

Printed: the estimate ± standard error, the settings (β, γ, step size, chains, steps) and the
reference; ``--json`` prints one object with the same. Exit status 0, or 2 on bad input (checked
before any work).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``landscape llc``."""
    from landscape.cli._args import add_command, add_point_args, float_arg, int_arg, nonneg_float, positive_float, seed_int

    p = add_command(
        subparsers, "llc",
        help="local learning coefficient (SGLD, with its standard error) at a family point or a trained seed",
        description="Local learning coefficient of the loss at a point, estimated by SGLD on the localised "
                    "tempered posterior (Lau et al. 2023), with its standard error over chains, the sampler's "
                    "settings and, for small models, the quadratic reference from the dense Hessian. "
                    "Exit 0, 2 on bad input.",
    )
    add_point_args(p)
    g = p.add_argument_group("SGLD")
    g.add_argument("--sample-size", type=int_arg(2), default=10_000,
                   help="nominal sample size n of the tempered posterior (temperature n*beta; default 10000)")
    g.add_argument("--beta", type=positive_float, default=None, help="inverse temperature (default 1/log n)")
    g.add_argument("--gamma", type=nonneg_float, default=100.0, help="localisation strength gamma (default 100)")
    g.add_argument("--step-size", type=float_arg(0.0, lo_open=True), default=1e-4,
                   help="SGLD step size epsilon (default 1e-4); stable when epsilon (n beta lambda_max + gamma) < 4")
    g.add_argument("--steps", type=int_arg(2), default=2000, help="SGLD steps per chain (default 2000)")
    g.add_argument("--burn-in", type=int_arg(0), default=None, help="steps discarded per chain (default steps/4)")
    g.add_argument("--chains", type=int_arg(2), default=8, help="independent chains (default 8, at least 2)")
    g.add_argument("--chain-seed", type=seed_int, default=0, help="seed of the Langevin noise (default 0)")
    g.add_argument("--dense-max", type=int_arg(0), default=500,
                   help="form the dense Hessian for the quadratic reference when P <= this (default 500; 0: never)")
    p.set_defaults(func=run)
    return p


def _check(args: argparse.Namespace) -> None:
    from landscape.cli._args import check_point_args

    check_point_args(args)
    if args.burn_in is not None and args.burn_in >= args.steps:
        raise ValueError(f"--burn-in {args.burn_in} must be below --steps {args.steps}")


def run(args: argparse.Namespace) -> int:
    """Estimate and print the local learning coefficient."""
    _check(args)
    import math

    import torch

    from landscape.cli import emit_json
    from landscape.cli._args import resolve_point
    from landscape.core.model import num_params
    from landscape.numeric.derivatives import hessian
    from landscape.numeric.llc import local_learning_coefficient, quadratic_llc
    from landscape.tolerances import ZERO_EIG

    pt = resolve_point(args)
    est = local_learning_coefficient(pt.oracle, pt.flat, torch.Generator().manual_seed(args.chain_seed),
                                     n=args.sample_size, beta=args.beta, gamma=args.gamma,
                                     step_size=args.step_size, steps=args.steps, burn_in=args.burn_in,
                                     chains=args.chains)
    P = num_params(pt.spec)
    out: dict[str, Any] = {"point": pt.label, "loss_kind": pt.oracle_desc, "num_params": P, **est.summary(),
                           "beta_default": args.beta is None, "chain_seed": args.chain_seed}
    if P <= args.dense_max:
        ev = torch.linalg.eigvalsh(hessian(pt.oracle, pt.flat))
        tol = ZERO_EIG[ev.dtype] * max(float(ev.abs().max()), 1.0)
        ref: dict[str, Any] = {"hessian_rank": int((ev > tol).sum()), "n_neg": int((ev < -tol).sum()),
                               "max_eig": float(ev.max()), "min_eig": float(ev.min())}
        ref["half_rank"] = ref["hessian_rank"] / 2
        if ref["n_neg"] == 0:
            lam = ev.clamp(min=0.0)
            try:
                ref["quadratic_llc"] = quadratic_llc(lam, n=args.sample_size, beta=est.beta, gamma=args.gamma,
                                                     step_size=args.step_size)
            except ValueError as exc:  # an unstable step for this Hessian: say so, the estimate stands as run
                ref["quadratic_llc"] = None
                ref["note"] = str(exc)
            ref["quadratic_llc_diffusion"] = quadratic_llc(lam, n=args.sample_size, beta=est.beta, gamma=args.gamma)
        else:
            ref["note"] = f"the Hessian has {ref['n_neg']} negative eigenvalue(s): not a minimum, no quadratic reference"
        stab = args.step_size * (args.sample_size * est.beta * max(ref["max_eig"], 0.0) + args.gamma)
        ref["stability"] = stab
        out["reference"] = ref
    if args.json:
        emit_json(out)
        return 0
    w = sys.stdout.write
    w(f"point    {pt.label}\n")
    w(f"loss     {est.loss_star:.6g}  ({pt.oracle_desc}), P = {P}\n")
    w(f"llc      {est.value:.4g} ± {est.se:.2g} (standard error over {out['chains']} chains"
      + (f"; {est.diverged} diverged and left out" if est.diverged else "") + ")\n")
    beta_txt = f"{est.beta:.4g}" + (" (1/log n)" if args.beta is None else "")
    w(f"SGLD     n = {est.n}, beta = {beta_txt}, n*beta = {est.n * est.beta:.4g}, gamma = {est.gamma:g}, "
      f"step size = {est.step_size:.3g}, {out['chains']} chains x {est.steps} steps (burn-in {est.burn_in}), "
      f"noise seed {args.chain_seed}\n")
    ref = out.get("reference")
    if ref is not None:
        line = f"quadratic Hessian rank {ref['hessian_rank']} of {P} (r/2 = {ref['half_rank']:g})"
        if ref.get("quadratic_llc") is not None:
            line += (f"; the estimator's expectation for the local quadratic at these settings "
                     f"{ref['quadratic_llc']:.4g} (diffusion limit {ref['quadratic_llc_diffusion']:.4g})")
        if "note" in ref:
            line += f"; {ref['note']}"
        w(line + "\n")
        if not math.isfinite(ref["stability"]) or ref["stability"] >= 4:
            w(f"warning  step size x (n beta lambda_max + gamma) = {ref['stability']:.3g} >= 4: the chain is unstable; "
              "lower --step-size\n")
    return 0
