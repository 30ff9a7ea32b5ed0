r"""``landscape store check|repair DIR``: inspect a run store, or re-index its tensor files.

``check`` opens the store read-only (nothing on disk changes) and lists its runs with their status,
checkpoints and final weights; a damaged database, a database of another program, or tensor files
the database does not list (a lost or emptied ``store.sqlite``, e.g. copied without its ``-wal``
file) are reported as one-line errors (exit 2). ``repair`` re-indexes such tensor files: runs are
re-created from the self-description in their files (their metrics and results are not
recoverable), a damaged database is renamed aside first; files that cannot be indexed (older
copies, files that do not load) are moved into an ``unindexed/`` folder; nothing is deleted.

Exit status: 0 when the store opened (``check``) or was re-indexed (``repair``); 2 on bad arguments
and on a store that cannot be read (damaged, foreign, lost rows — the one-line error says which).

Examples::

    landscape store check runs/ahn
    landscape store repair runs/ahn --json
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``landscape store``."""
    from landscape.cli._args import add_command

    p = add_command(
        subparsers, "store",
        help="check a run store (read-only) or repair it (re-index its tensor files)",
        doc=__doc__,
        paragraph=1,
    )
    p.add_argument("action", choices=("check", "repair"),
                   help="check: list runs, report damage (read-only); repair: re-index tensor files")
    p.add_argument("run_dir", type=Path, help="run store directory (holds store.sqlite and tensors/)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Check or repair; print what was found or done (exit 0), errors are one line (exit 2)."""
    from landscape.cli import emit_json
    from landscape.experiment.store import repair_store
    from landscape.experiment.tables import open_store

    root = Path(args.run_dir).expanduser()
    if args.action == "repair":
        rep = repair_store(root)
        if args.json:
            emit_json({"root": str(rep.root), "runs_restored": list(rep.runs_restored),
                       "files_indexed": list(rep.files_indexed),
                       "files_left": [{"file": f, "reason": why} for f, why in rep.files_left],
                       "moved_aside": list(rep.moved_aside)})
            return 0
        for name in rep.moved_aside:
            print(f"moved the damaged database aside: {rep.root / name}")
        print(f"{rep.root}: re-indexed {len(rep.files_indexed)} tensor file(s); "
              f"re-created {len(rep.runs_restored)} run(s){': ' + ', '.join(rep.runs_restored) if rep.runs_restored else ''}")
        for f, why in rep.files_left:
            print(f"not indexed, moved into its run folder's unindexed/: {f}: {why}")
        return 0
    with open_store(root) as store:
        runs = []
        for r in store.list_runs():
            steps = store.checkpoints(r)
            runs.append({"name": r.name, "id": r.id, "status": r.status, "reason": r.reason,
                         "checkpoints": steps, "final": store.has_final(r)})
    if args.json:
        emit_json({"root": str(store.root), "ok": True, "runs": runs})
        return 0
    print(f"{store.root}: ok, {len(runs)} run(s)")
    for r in runs:
        why = f" ({r['reason']})" if r["reason"] else ""
        print(f"  {r['name']}: {r['status']}{why}; checkpoints at steps {r['checkpoints'] or 'none'}; "
              f"final weights: {'yes' if r['final'] else 'no'}")
    return 0
