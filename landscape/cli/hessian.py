r"""``landscape hessian``: the curvature of the loss at a point.

The point is either a **family point** (``--family NAME`` with the problem options of
:mod:`landscape.cli._args`; ``--point a0=...`` or, by default, the family's best point fitted on
the loss) or a **trained seed** (``--run STORE[:RUN] --seed K``: its final weights, read-only): the
point options of :func:`landscape.cli._args.add_point_args`, shared with ``slice`` and ``llc``.
The loss is the exact population loss where the symbolic layer has one for the setting
(``--exact auto``), otherwise a Monte-Carlo loss on ``--samples`` fixed prompts.

Printed (or one JSON object with ``--json``): the loss and gradient norm, the top and bottom
``--k`` Hessian eigenpairs by Lanczos (:func:`landscape.numeric.spectrum.eigenpairs`: eigenvalue,
true residual, converged flag), the trace by Hutch++ with its standard error (and exactly, from
the dense Hessian, when ``P <= --dense-max``), a stochastic Lanczos quadrature spectral density
(``--plot FILE`` draws it with the views' spectrum figure, :func:`landscape.views.pictures.plot_density`:
the dense eigenvalues as a histogram and rug when available, and writes the curve beside it, suffix ``.json``), per-block spectra
(``--blocks layer,kind,tangent``: per layer, ``P`` vs ``Q`` / ``V``, ``B``, ``C``, tangent vs normal to
the family) and the inertia modulo the model's symmetries.

Exit status 0, or 2 on bad input.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from landscape.cli._args import Point, add_point_args, check_point_args, resolve_point

__all__ = ["add_parser", "run", "add_point_args", "resolve_point", "Point", "block_list"]

BLOCK_KINDS = ("layer", "head", "kind", "param", "tangent")


def block_list(text: str) -> tuple[str, ...]:
    """argparse type: comma-separated block groupings from :data:`BLOCK_KINDS` (``none`` for none)."""
    items = tuple(x.strip() for x in str(text).split(",") if x.strip())
    if items == ("none",):
        return ()
    bad = [x for x in items if x not in BLOCK_KINDS]
    if bad or not items:
        raise argparse.ArgumentTypeError(f"must be 'none' or comma-separated from {', '.join(BLOCK_KINDS)}, "
                                         f"got {text!r}")
    return items


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``landscape hessian``."""
    from landscape.cli._args import add_command, int_arg, positive_int

    p = add_command(
        subparsers, "hessian",
        help="Hessian spectrum at a family point or a trained seed: eigenpairs, trace, density, blocks, inertia",
        description="Curvature of the loss at a point: top/bottom eigenpairs (Lanczos, with residuals and "
                    "converged flags), Hutch++ trace with its standard error, stochastic Lanczos quadrature "
                    "spectral density, per-block spectra and the inertia modulo symmetries. Exit 0, 2 on bad input.",
    )
    add_point_args(p)
    g = p.add_argument_group("spectrum")
    g.add_argument("--k", type=positive_int, default=3, help="top and bottom eigenpairs (default 3)")
    g.add_argument("--matvecs", type=int_arg(4), default=60, help="Hutch++ operator products (default 60)")
    g.add_argument("--probes", type=positive_int, default=8, help="SLQ probe vectors (default 8)")
    g.add_argument("--steps", type=positive_int, default=30, help="SLQ Lanczos steps per probe (default 30, at most P)")
    g.add_argument("--blocks", type=block_list, default=("layer", "kind", "tangent"),
                   help="block spectra: comma-separated from layer, head, kind (P vs Q), param, tangent "
                        "(tangent vs normal to the family), or none (default layer,kind,tangent)")
    g.add_argument("--dense-max", type=int_arg(0), default=2000,
                   help="form the dense Hessian (P vmapped HVPs) when P <= this (default 2000): then the iterative "
                        "methods run on it, and the exact trace, inertia and blocks are reported; above it, "
                        "everything is matrix-free on HVPs")
    g.add_argument("--plot", default=None, metavar="FILE", help="draw the spectral density to FILE (.png or .svg)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Compute and print the spectrum."""
    check_point_args(args)
    if args.plot is not None:
        from landscape.views.save import figure_path

        figure_path(args.plot, "--plot")
    import torch

    from landscape.cli import emit_json
    from landscape.core.model import num_params
    from landscape.numeric.derivatives import gradient, hessian, symmetry_generators
    from landscape.numeric.spectrum import (
        block_spectra,
        eigenpairs,
        hessian_operator,
        hutchpp_trace,
        inertia_modulo_symmetries,
        matrix_operator,
        spectral_density,
    )

    pt = resolve_point(args)
    P = num_params(pt.spec)
    k = min(args.k, P)
    steps = min(args.steps, P)
    H = hessian(pt.oracle, pt.flat) if P <= args.dense_max else None
    # with the dense Hessian at hand (P vmapped HVPs), every method runs on it: same operator, cheaper products
    op = matrix_operator(H, "dense Hessian") if H is not None else hessian_operator(pt.oracle, pt.flat)
    gen = torch.Generator().manual_seed(args.sample_seed)
    loss = float(pt.oracle(pt.flat))
    gnorm = float(gradient(pt.oracle, pt.flat).norm())
    top = eigenpairs(op, k, which="LA", generator=gen)
    bottom = eigenpairs(op, k, which="SA", generator=gen)
    tr = hutchpp_trace(op, args.matvecs, gen)
    sd = spectral_density(op, gen, probes=args.probes, steps=steps)
    out: dict[str, Any] = {"point": pt.label, "loss_kind": pt.oracle_desc, "num_params": P, "loss": loss,
                           "grad_norm": gnorm, "top": top.summary(), "bottom": bottom.summary(),
                           "trace": tr.summary(), "density": sd.summary(), "operator": op.name}
    if H is not None:
        ev = torch.linalg.eigvalsh(H)
        out["exact_trace"] = float(ev.sum())
        syms = getattr(pt.family, "symmetries", ()) if pt.family is not None else ()
        iner = inertia_modulo_symmetries(H, pt.flat, spec=pt.spec, symmetries=syms)
        out["inertia"] = iner.summary()
        blocks: dict[str, list[dict[str, Any]]] = {}
        for by in args.blocks:
            if by == "tangent":
                if pt.family is None or pt.family_values is None:
                    continue
                T = pt.family.tangent_basis(pt.family_values.to(torch.float64))
                blocks[by] = [b.summary() for b in block_spectra(H, by="tangent", tangent=T)]
            else:
                blocks[by] = [b.summary() for b in block_spectra(H, pt.spec, by=by)]
        out["blocks"] = blocks
        out["num_symmetries"] = int(symmetry_generators(pt.spec, pt.flat, syms or None).shape[1])
    if args.plot is not None:
        from landscape.views.pictures import plot_density
        from landscape.views.save import figure_path

        path = figure_path(args.plot, "--plot")
        plot_density(sd, path, eigenvalues=None if H is None else torch.linalg.eigvalsh(H),
                     title=f"Hessian spectrum at {pt.label}",
                     formats=(path.suffix.lower().lstrip("."),))
        out["plot"] = args.plot
    if args.json:
        emit_json(out)
    else:
        _print(out)
    return 0


def _print(out: dict[str, Any]) -> None:
    w = sys.stdout.write
    w(f"point    {out['point']}\n")
    w(f"loss     {out['loss']:.6g}  ({out['loss_kind']}), |grad| {out['grad_norm']:.3g}, P = {out['num_params']}; "
      f"products with the {out['operator']}\n")
    for key in ("top", "bottom"):
        e = out[key]
        w(f"{key:<8} " + "  ".join(f"{v:.6g} (res {r:.1e}{'' if c else ', NOT converged'})"
                                   for v, r, c in zip(e["eigenvalues"], e["residuals"], e["converged"])) +
          f"   [{e['iterations']} Lanczos steps]\n")
    t = out["trace"]
    line = f"trace    Hutch++ {t['value']:.6g} ± {t['se']:.2g} (95% CI [{t['ci95'][0]:.6g}, {t['ci95'][1]:.6g}], " \
           f"{t['matvecs']} products)"
    if "exact_trace" in out:
        line += f"; dense {out['exact_trace']:.6g}"
    w(line + "\n")
    d = out["density"]
    w(f"density  SLQ {d['probes']} probes × {d['steps']} steps: nodes in [{d['min_node']:.4g}, {d['max_node']:.4g}], "
      f"trace {d['trace']:.6g} ± {d['trace_se']:.2g}\n")
    if "inertia" in out:
        i = out["inertia"]
        w(f"inertia  n_pos {i['n_pos']}, n_zero {i['n_zero']}, n_neg {i['n_neg']} (zero: |λ| <= {i['zero_tol']:.2g})")
        if i.get("n_symmetry"):
            w(f"; modulo {i['n_symmetry']} symmetry directions: n_pos {i['reduced_n_pos']}, "
              f"n_zero {i['reduced_n_zero']}, n_neg {i['reduced_n_neg']}")
        w(f" -> {i['classification']}\n")
    for by, rows in out.get("blocks", {}).items():
        w(f"blocks by {by}:\n")
        for b in rows:
            w(f"  {b['block']:<14} size {b['size']:>4}  eig in [{b['min_eig']:.4g}, {b['max_eig']:.4g}]  "
              f"trace {b['trace']:.4g}  (+{b['n_pos']} 0:{b['n_zero']} -{b['n_neg']})\n")
    if "plot" in out:
        w(f"plot     {out['plot']}\n")
