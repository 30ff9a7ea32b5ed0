r"""``landscape export``: every logged metric of a store as one tidy CSV or Parquet table.

Examples::

    landscape export runs/ahn2023 --out metrics.csv
    landscape export runs/ahn2023 --out metrics.parquet --run NAME --metric dist_identity_whitened

One row per (run, seed, step, metric): columns ``run, config_hash, seed, step, metric, name,
layer, head, value`` (:mod:`landscape.experiment.tables`). The file is written atomically; the
store is opened read-only. From Python: ``landscape.experiment.tables.to_dataframe(store)``.

Exit status: 0 written; 2 not a run store, an unknown run, an unknown suffix or a missing
output folder (one line on stderr, nothing written); 1 an internal error.
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``landscape export``."""
    from landscape.cli._args import add_command

    p = add_command(
        subparsers, "export",
        help="write every logged metric of a store as one tidy CSV or Parquet table",
        doc=__doc__,
    )
    p.add_argument("store", type=Path, help="run store directory (holds store.sqlite)")
    p.add_argument("--out", type=Path, required=True, help="output file: .csv or .parquet")
    p.add_argument("--run", action="append", default=None, dest="runs", metavar="NAME",
                   help="only this run (repeatable; default: every run)")
    p.add_argument("--metric", action="append", default=None, dest="metrics", metavar="KEY",
                   help="only this metric key or name, e.g. eval_loss or dist_identity (repeatable)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Write the table; print where and how many rows (exit 0); bad input is a one-line error (exit 2)."""
    from landscape.cli import emit_json
    from landscape.experiment.tables import write_table

    rows = write_table(args.store, args.out, args.runs, args.metrics)
    if args.json:
        emit_json({"out": str(args.out), "rows": rows})
    else:
        print(f"wrote {rows} rows to {args.out}")
    return 0
