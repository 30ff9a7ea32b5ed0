r"""``landscape runs``: the runs of a store — list them, show one, diff two configs (read-only).

Examples::

    landscape runs runs/ahn2023                    # one line per run
    landscape runs runs/ahn2023 --show NAME        # a run's status, metrics and full config
    landscape runs runs/ahn2023 --diff A B         # the config keys where two runs differ (names or ids)
    landscape runs runs/ahn2023 --json

With ``--json`` one object is printed: ``{"runs": [...]}``, ``{"run": {...}}`` or
``{"diff": {key: [a, b]}, "preset": [a, b]}``.

A run started from a paper preset (``landscape train --preset NAME``) shows its name: ``preset`` of
each listed run, a ``preset:`` line of ``--show`` and a ``preset`` line of ``--diff`` where the two
differ. It is provenance recorded beside the run, not part of its config or hash
(:func:`landscape.experiment.train.stored_preset`): ``none`` means the fields were given one by
one, ``not recorded`` a run stored before presets were recorded; ``--show`` also names the preset's
fields the run was given otherwise (:func:`landscape.experiment.train.preset_overrides`).

Exit status: 0 listed, shown or compared; 2 not a run store or an unknown run (one line on
stderr, naming the store's runs); 1 an internal error.
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``landscape runs``."""
    from landscape.cli._args import add_command

    p = add_command(
        subparsers, "runs",
        help="list the runs of a store, show one, or diff two configs (read-only)",
        doc=__doc__,
    )
    p.add_argument("store", type=Path, help="run store directory (holds store.sqlite)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--show", metavar="RUN", help="one run (name or id): status, metric keys, results and its config")
    g.add_argument("--diff", nargs=2, metavar=("A", "B"), help="the config keys where runs A and B (names or ids) differ")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """List, show or diff (exit 0); an unknown store or run is a one-line error (exit 2)."""
    import dataclasses
    import json

    from landscape.cli import emit_json
    from landscape.experiment.tables import config_diff, open_store, runs_table, select_runs
    from landscape.experiment.train import PRESET_OVERRIDES_RESULT, PRESET_RESULT, stored_preset

    with open_store(args.store) as store:
        if args.diff is not None:
            a, b = (select_runs(store, [ref])[0] for ref in args.diff)
            diff = config_diff(a.config, b.config)
            presets = [stored_preset(store, a), stored_preset(store, b)]
            if args.json:
                emit_json({"a": a.name, "b": b.name, "diff": {k: list(v) for k, v in diff.items()},
                           "preset": presets})
                return 0
            if not diff:
                print(f"{a.name} and {b.name}: the same config (hash {a.config_hash[:12]})")
            for k, (va, vb) in diff.items():
                print(f"{k}: {json.dumps(va)} -> {json.dumps(vb)}")
            if presets[0] != presets[1]:
                print(f"preset (provenance, not in the config hash): {json.dumps(presets[0])} -> "
                      f"{json.dumps(presets[1])}")
            return 0
        if args.show is not None:
            (r,) = select_runs(store, [args.show])
            row = next(x for x in runs_table(store) if x.name == r.name)
            info = {**dataclasses.asdict(row), "reason": r.reason, "metric_keys": list(store.metrics(r)),
                    "results": store.results(r), "config": r.config}
            if args.json:
                emit_json({"run": info})
                return 0
            print(f"{r.name} (id {r.id}): {r.status}{' (' + r.reason + ')' if r.reason else ''}; "
                  f"config hash {r.config_hash}")
            recorded = PRESET_RESULT in info["results"]
            over = info["results"].get(PRESET_OVERRIDES_RESULT)
            given = (f"; fields given otherwise: {', '.join(map(str, over))}" if isinstance(over, list) and over
                     else "")
            print(f"preset: {row.preset if row.preset is not None else 'none' if recorded else 'not recorded'} "
                  f"(provenance, not in the config hash{given})")
            print(f"metrics: {', '.join(info['metric_keys']) or 'none'}")
            for k, v in info["results"].items():
                if k not in (PRESET_RESULT, PRESET_OVERRIDES_RESULT):
                    print(f"result {k}: {json.dumps(v)}")
            print("config:")
            for k, v in sorted(r.config.items()):
                print(f"  {k}: {json.dumps(v)}")
            return 0
        rows = runs_table(store)
    if args.json:
        emit_json({"root": str(args.store), "runs": [dataclasses.asdict(r) for r in rows]})
        return 0
    print(f"{args.store}: {len(rows)} run(s)")
    width = max((len(r.name) for r in rows), default=0)
    for r in rows:
        size = f"{r.seeds} seeds x {r.steps} steps" if r.seeds is not None and r.steps is not None else "-"
        print(f"  {r.name:<{width}}  {r.status:<11} {size:<22} {r.metrics} metric keys  "
              f"final weights: {'yes' if r.final else 'no'}  {r.config_hash[:12]}"
              + (f"  preset {r.preset}" if r.preset is not None else ""))
    return 0
