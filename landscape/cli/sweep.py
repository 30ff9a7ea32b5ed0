r"""``landscape sweep FILE``: train a grid of configs × seeds into one run store.

``FILE`` is a TOML or YAML sweep (``base`` config, ``grid`` of lists, optional ``seeds``; see
:mod:`landscape.experiment.sweep`). Every grid point is validated before anything trains; points already
finished in the store are skipped. ``--executor ray`` runs one Ray task per grid point
(``--address`` of a cluster, or none / ``local`` to start a local one).

Progress goes to stderr: a line per grid point as it starts and finishes (``sweep NAME: cell
3/12 (layers=2; 4 seeds) trained in 4.1 s -> run-…; 3/12 done, ETA 30 s``) and, with the local
executor, each point's training progress (a bar on a terminal, a line every 10 s otherwise).
``--quiet`` silences it; stdout (the per-point lines, the summary or the JSON) is unchanged.

Exit status: 0 when every point trained or was already finished; 1 when a point failed or
every seed of a trained point diverged; 2 on a bad or empty sweep file, bad arguments, or an error
of the file system or the run store.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from landscape.cli._args import add_command, positive_int
from landscape.experiment.executors import EXECUTORS

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``landscape sweep``."""
    p = add_command(
        subparsers, "sweep",
        help="train a grid of configs x seeds (local or Ray) into a run store",
        doc=__doc__,
        paragraph=1,
    )
    p.add_argument("file", type=Path, help="sweep file (.toml, .yaml or .yml)")
    p.add_argument("--executor", choices=EXECUTORS, default="local",
                   help="where grid points train: in this process (local) or as Ray tasks (ray)")
    p.add_argument("--address", default=None,
                   help="Ray cluster address (executor ray); omit or 'local' to start a local cluster")
    p.add_argument("--num-cpus", type=positive_int, default=None,
                   help="CPUs of a local Ray cluster (default: all)")
    p.add_argument("--out", type=Path, default=None,
                   help="run store directory (default: runs/<sweep name>)")
    p.add_argument("--dry-run", action="store_true",
                   help="validate and list the grid points without training")
    p.add_argument("--progress", action="store_true",
                   help="(the default now: progress is always on stderr; --quiet silences it)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.set_defaults(func=run)
    return p


def _line(r: PointResult) -> str:
    label = ", ".join(f"{k}={v}" for k, v in r.overrides.items()) or "base"
    extra = f" ({r.seconds:.1f} s)" if r.status == "trained" else ""
    err = f": {r.error.splitlines()[0]}" if r.error else ""
    return f"[{r.index}] {label}: {r.status} -> {r.run}{extra}{err}"


def run(args: argparse.Namespace) -> int:
    """Run the sweep; print a line per grid point (or one JSON object with ``--json``)."""
    from landscape.experiment.sweep import expand_grid, load_sweep, run_sweep

    from landscape.cli import emit_json

    spec = load_sweep(args.file)
    out = args.out if args.out is not None else Path("runs") / spec.name
    if args.executor == "local" and args.address is not None:
        raise ValueError("--address is only used with --executor ray")
    if args.dry_run:
        points = expand_grid(spec)
        if args.json:
            emit_json({"name": spec.name, "root": str(out), "size": len(points),
                       "points": [{"index": p.index, "overrides": dict(p.overrides)} for p in points]})
        else:
            print(f"sweep {spec.name!r}: {len(points)} grid points, store {out}")
            for p in points:
                print(f"[{p.index}] {p.label()}")
        return 0
    on_point = None if args.json else (lambda r: print(_line(r), flush=True))
    result = run_sweep(spec, out, executor=args.executor, address=args.address,
                       num_cpus=args.num_cpus, progress=True, on_point=on_point)
    if args.json:
        emit_json(result.to_dict())
    else:
        c = result.counts()
        print(f"sweep {result.name!r} ({result.executor}): {c['trained']} trained, {c['skipped']} skipped, "
              f"{c['failed']} failed in {result.seconds:.1f} s; store {result.root}")
        for r in result.points:
            if r.status == "failed" and r.error:
                print(f"[{r.index}] failed:\n{r.error}", file=sys.stderr)
    diverged = [r.index for r in result.points
                if r.status == "trained" and r.summary.get("diverged") and all(r.summary["diverged"])]
    if diverged:
        print(f"landscape sweep: every seed diverged at grid point(s) {', '.join(map(str, diverged))}",
              file=sys.stderr)
    return 0 if result.ok and not diverged else 1
