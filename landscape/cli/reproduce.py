r"""``landscape reproduce STUDY``: run one paper study end to end and write its report.

A study is a module ``analysis/<STUDY>.py`` exposing ``run(ctx) -> StudyResult`` (see
:mod:`analysis._study`); the known studies are the keys of :data:`analysis.STUDIES`. This command
imports the study lazily (only the one asked for), runs it with :func:`analysis._study.execute`
— which records the claims, tables and figures in the run store under ``--out`` and writes
``<out>/report.md`` — and prints where the report is together with a one-line summary per claim.

Progress goes to stderr: a line when the study starts and when it ends, a line as each section
of the study is done (``reproduce huang2023: section 'train' done in 12.3 s (1/7)``, from
:class:`analysis._study.Sections`), the training progress of every run it trains (a bar on a
terminal, a line every 10 s otherwise) and, off a terminal, a ``running, N s`` line whenever
nothing else was printed for 10 s. ``--quiet`` silences it; stdout (the summary or the JSON) is
unchanged.

``report.md`` opens with the command that reproduces the run
(``landscape reproduce NAME [--quick] --seed S --out OUT``) and names it under every figure, with
the figure's data file when one was written beside it.

Exit status: 0 if every claim of the study holds, 1 if at least one does not (a disagreement
with the paper is a finding, reported with its numbers), 2 on bad arguments (unknown study,
negative seed, ...).
"""

from __future__ import annotations

import argparse
import importlib
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "run", "load_study", "known_studies"]


def known_studies() -> dict[str, str]:
    """Study name → what it reproduces (:data:`analysis.STUDIES`)."""
    from analysis import STUDIES

    return dict(STUDIES)


def load_study(name: str) -> Callable[..., Any]:
    """Import ``analysis.<name>`` and return its ``run(ctx) -> StudyResult``.

    Args:
        name: a key of :data:`analysis.STUDIES`.

    Returns:
        The study's ``run`` function.

    Raises:
        ValueError: unknown study (the message lists the known ones), or a known study whose module
            is missing or has no callable ``run``.
    """
    studies = known_studies()
    if not isinstance(name, str) or name not in studies:
        listing = "; ".join(f"{k} ({v})" for k, v in studies.items())
        raise ValueError(f"unknown study {name!r}; known studies: {listing}")
    try:
        mod = importlib.import_module(f"analysis.{name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"analysis.{name}":
            raise ValueError(f"study {name!r} is listed in analysis.STUDIES but analysis/{name}.py is missing") from None
        raise
    fn = getattr(mod, "run", None)
    if not callable(fn):
        raise ValueError(f"analysis/{name}.py has no function run(ctx) -> StudyResult")
    return fn


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``landscape reproduce``."""
    from landscape.cli._args import add_command, seed_int

    names = ", ".join(known_studies())
    p = add_command(
        subparsers, "reproduce",
        help="run a paper study end to end and write report.md",
        description="Run one study of analysis/ (symbolic stationary points, certificates, constructions, "
                    "seed-parallel training, distances, figures) and write <out>/report.md plus a run store. "
                    f"Studies: {names}. Exit 0 if every claim holds, 1 otherwise.",
    )
    p.add_argument("study", metavar="STUDY", help=f"study name ({names})")
    p.add_argument("--quick", action="store_true",
                   help="small sizes (a few minutes on a 2-core CPU) instead of the papers' sizes")
    p.add_argument("--out", type=Path, default=None, help="output directory (default runs/<STUDY>)")
    p.add_argument("--seed", type=seed_int, default=0, help="master seed (default 0)")
    p.add_argument("--device", default=None,
                   help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--progress", action="store_true",
                   help="(the default now: progress is always on stderr; --quiet silences it)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the summary")
    p.set_defaults(func=run)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def run(args: argparse.Namespace) -> int:
    """Run the study; print the report path and the claims. Returns 0 if all claims hold, else 1.

    Raises:
        ValueError: unknown study, negative seed, or a device torch does not know.
    """
    import time

    import torch

    from analysis._study import StudyContext, execute
    from landscape._progress import Heartbeat, enabled, note

    from landscape._checks import check_int

    study = load_study(args.study)  # validates the name before any work
    check_int("--seed", args.seed, minimum=0)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"unknown --device {device!r}: {exc}") from None
    out = args.out if args.out is not None else Path("runs") / args.study
    ctx = StudyContext(quick=bool(args.quick), out=Path(out), seed=args.seed, device=device,
                       progress=enabled())
    desc = f"reproduce {args.study} ({'quick' if ctx.quick else 'full'} size, seed {ctx.seed})"
    note(f"{desc}: started, output in {ctx.out}")
    t0 = time.perf_counter()
    with Heartbeat(desc):
        result, report = execute(args.study, study, ctx)
    n_ok = sum(c.holds for c in result.claims)
    note(f"{desc}: done in {time.perf_counter() - t0:.1f} s, {n_ok}/{len(result.claims)} claims hold")
    if args.json:
        from landscape.cli import emit_json

        emit_json({
            "study": args.study, "quick": ctx.quick, "seed": ctx.seed, "report": str(report),
            "all_hold": result.all_hold,
            "claims": [{"name": c.name, "holds": c.holds, "statement": c.statement, "criterion": c.criterion,
                        "measured": dict(c.measured)} for c in result.claims],
            "figures": [str(f) for f in result.figures],
        })
    else:
        print(f"report: {report}")
        print(f"{args.study}: {n_ok}/{len(result.claims)} claims hold ({'quick' if ctx.quick else 'full'} size, "
              f"seed {ctx.seed})")
        for c in result.claims:
            meas = ", ".join(f"{k}={_fmt(v)}" for k, v in list(c.measured.items())[:4])
            print(f"  [{'ok' if c.holds else 'FAIL'}] {c.name}: {c.criterion}  ({meas})")
    return 0 if result.all_hold else 1
