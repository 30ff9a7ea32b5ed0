r"""``landscape plot RUN_DIR``: draw the figures of a run store (PNG and SVG; the store is only read).

Per training run: ``distance`` (distance to the construction vs step, median and IQR over seeds,
one curve per layer), ``loss`` (held-out loss of every seed up to the last step, with the
Bayes-optimal line), ``heatmap`` (learned vs construction matrices of seed 0) and ``spectrum``
(Hessian eigenvalues at seed 0's trained weights; computed, so made only when asked for). Across
runs: ``depth`` / ``context`` (final loss vs layers / context length per activation, with the Bayes
line), ``grid`` (activation × data kernel, final loss over Bayes loss), ``seeds`` (the final
distance of every seed, one box per run) and ``distance-depth`` / ``distance-context`` (final
distance vs layers / context length, one line per activation with the seed band). ``all``
(default) makes every one the data supports but ``spectrum`` (and a grid of one cell) and lists the
others with the reason they were skipped. Titles name the task, attention, family and seeds.
Figures go to ``RUN_DIR/figures`` (or ``--out``). The store is opened read-only: plotting writes
the figure files and nothing else.

Exit status: 0 when at least one figure was written, 1 when none could be, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from landscape.views.kinds import PLOT_KINDS

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``landscape plot``."""
    from landscape.cli._args import add_command

    p = add_command(
        subparsers, "plot",
        help="draw the figures of a run store (distance, loss, heatmap, depth, context, grid, seeds, spectrum, ...)",
        doc=__doc__,
        paragraph=1,
    )
    p.add_argument("run_dir", type=Path, help="run store directory (holds store.sqlite)")
    p.add_argument("--kind", action="append", choices=(*PLOT_KINDS, "all"), default=None,
                   help="figure kind (repeatable; default: all, which leaves out spectrum)")
    p.add_argument("--run", action="append", default=None, dest="runs",
                   help="only this run (name; repeatable; default: every finished training run)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: RUN_DIR/figures)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Make the figures; print their paths (or one JSON object with ``--json``)."""
    from landscape.cli import emit_json
    from landscape.views.plots import plot_store
    from landscape.experiment.tables import open_store

    kinds = args.kind or ["all"]
    # Read-only: plotting never changes the store (no schema, no cleanup, no cached results).
    with open_store(args.run_dir) as store:
        report = plot_store(store, kinds, runs=args.runs, out=args.out)
    if args.json:
        emit_json({
            "figures": [{"name": f.name, "runs": list(f.runs), "files": [str(p) for p in f.paths]}
                        for f in report.figures],
            "skipped": [{"kind": k, "run": r, "reason": why} for k, r, why in report.skipped],
        })
    else:
        for f in report.figures:
            who = f.runs[0] if len(f.runs) == 1 else f"{len(f.runs)} runs"
            print(f"{f.name} ({who}): {f.png} {f.svg}")
        for k, r, why in report.skipped:
            print(f"skipped {k}{' for ' + r if r else ''}: {why}")
    return 0 if report.figures else 1
