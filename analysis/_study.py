"""Shared machinery of the studies: claims with numbers, a report, and the run store.

A study is a module ``analysis/<name>.py`` exposing ``run(ctx: StudyContext) -> StudyResult``.
It measures each paper claim and records a :class:`Claim` with the numbers behind it and
whether the reproduction agrees (a disagreement is a finding, reported as such, not hidden).
:func:`execute` runs a study into a run store: the result table goes in as results, figures as
artifacts, and a self-contained ``report.md`` is written next to them.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from landscape.experiment.store import RunStore

__all__ = ["Claim", "StudyResult", "StudyContext", "execute", "study_main", "write_report"]


@dataclass(frozen=True)
class Claim:
    """One checked statement.

    Attributes:
        name: short identifier (``"thm3_whitened_distance"``).
        statement: the paper's claim in words, with its source.
        holds: whether the measured numbers support it.
        measured: the numbers (name → value).
        criterion: the test applied to them, in words (``"dist_white < 0.5 * dist_raw"``).
    """

    name: str
    statement: str
    holds: bool
    measured: Mapping[str, float]
    criterion: str


@dataclass(frozen=True)
class StudyResult:
    """What a study found.

    Attributes:
        study: its name.
        claims: the checked statements.
        tables: name → list of rows (dicts) written to the report.
        figures: files written (PNG/SVG).
        notes: free text (settings chosen, disagreements with the paper).
    """

    study: str
    claims: tuple[Claim, ...]
    tables: Mapping[str, Sequence[Mapping[str, Any]]] = field(default_factory=dict)
    figures: tuple[Path, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def all_hold(self) -> bool:
        return all(c.holds for c in self.claims)


@dataclass(frozen=True)
class StudyContext:
    """Settings handed to a study's ``run``.

    Attributes:
        quick: small sizes (CI, a few minutes on 2 CPU cores) instead of the papers' sizes.
        out: directory for figures and the report.
        seed: master seed; every generator in the study derives from it.
        device: torch device.
        progress: show progress bars.
    """

    quick: bool
    out: Path
    seed: int = 0
    device: str = "cpu"
    progress: bool = False

    def generator(self, offset: int = 0) -> torch.Generator:
        """A fresh generator seeded with ``seed + offset`` on :attr:`device`."""
        g = torch.Generator(device=self.device)
        g.manual_seed(self.seed + offset)
        return g


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return f"{v:.4g}"
    return str(v)


def write_report(result: StudyResult, out: Path, elapsed: float | None = None) -> Path:
    """Write ``report.md`` (claims table, tables, figures, notes) into ``out``; return its path."""
    out.mkdir(parents=True, exist_ok=True)
    lines = [f"# Study: {result.study}", ""]
    if elapsed is not None:
        lines += [f"Run time: {elapsed:.1f} s.", ""]
    lines += ["## Claims", "", "| claim | holds | criterion | measured |", "|---|---|---|---|"]
    for c in result.claims:
        meas = ", ".join(f"{k} = {_fmt(v)}" for k, v in c.measured.items())
        lines.append(f"| {c.statement} | {'yes' if c.holds else '**no**'} | {c.criterion} | {meas} |")
    for name, rows in result.tables.items():
        rows = list(rows)
        lines += ["", f"## {name}", ""]
        if not rows:
            lines.append("(empty)")
            continue
        cols = list(rows[0])
        lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for r in rows:
            lines.append("| " + " | ".join(_fmt(r.get(c, "")) for c in cols) + " |")
    if result.figures:
        lines += ["", "## Figures", ""]
        for f in result.figures:
            if f.suffix == ".png":
                rel = f.relative_to(out) if f.is_relative_to(out) else f
                lines.append(f"![{f.stem}]({rel})")
    if result.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in result.notes]
    path = out / "report.md"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(path)
    return path


def execute(
    name: str,
    run: Callable[[StudyContext], StudyResult],
    ctx: StudyContext,
    store_root: Path | None = None,
) -> tuple[StudyResult, Path]:
    """Run a study, record it in the run store under ``store_root`` (default ``ctx.out``), write the report.

    Returns:
        The result and the path of ``report.md``.
    """
    ctx.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    result = run(ctx)
    elapsed = time.perf_counter() - t0
    report = write_report(result, ctx.out, elapsed)
    with RunStore(store_root or ctx.out) as store:
        r = store.create_run({"study": name, "quick": ctx.quick, "seed": ctx.seed}, name=f"study-{name}-{'quick' if ctx.quick else 'full'}-{ctx.seed}")
        for c in result.claims:
            store.log_result(r, f"claim.{c.name}", {"holds": c.holds, "measured": dict(c.measured),
                                                    "criterion": c.criterion, "statement": c.statement})
        for tname, rows in result.tables.items():
            store.log_result(r, f"table.{tname}", [dict(x) for x in rows])
        for f in result.figures:
            store.add_artifact(r, "figure", f)
        store.add_artifact(r, "report", report)
        store.set_status(r, "finished")
    return result, report


def study_main(name: str, run: Callable[[StudyContext], StudyResult], argv: Sequence[str] | None = None) -> int:
    """``python -m analysis.<name> [--quick] [--out DIR] [--seed S] [--json]``; exit 1 if a claim fails."""
    p = argparse.ArgumentParser(prog=f"python -m analysis.{name}", description=(run.__doc__ or "").strip().splitlines()[0] if run.__doc__ else None)
    p.add_argument("--quick", action="store_true", help="small sizes (a few minutes on a 2-core CPU)")
    p.add_argument("--out", type=Path, default=Path("runs") / name, help="output directory (run store + report)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", action="store_true", help="print the claims as one JSON object")
    args = p.parse_args(argv)
    ctx = StudyContext(quick=args.quick, out=args.out, seed=args.seed, device=args.device)
    result, report = execute(name, run, ctx)
    if args.json:
        print(json.dumps({"study": name, "report": str(report), "all_hold": result.all_hold,
                          "claims": [asdict(c) | {"measured": dict(c.measured)} for c in result.claims]}))
    else:
        print(report.read_text())
    return 0 if result.all_hold else 1
