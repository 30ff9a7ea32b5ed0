"""Shared machinery of the studies: claims with numbers, a report, the run store, figures.

A study is a module ``analysis/<name>.py`` exposing ``run(ctx: StudyContext) -> StudyResult``.
It measures each paper claim and records a :class:`Claim` with the numbers behind it and
whether the reproduction agrees (a disagreement is a finding, reported as such, not hidden).
:func:`execute` runs a study into a run store: the result table goes in as results, figures as
artifacts, and a self-contained ``report.md`` is written next to them.

Every study is written the same way: a frozen ``Settings`` dataclass with ``QUICK`` and ``FULL``
sizes, then one function per section (constructions, training, distances, claims, figures), each
adding what it finds to one :class:`Findings`; ``run`` calls the sections top to bottom, each
through one :class:`Sections` (a progress line as each is done), inside :func:`study_threads`. The pieces every study needs live here once: :class:`Findings`, the
thread setting, figure saving (:func:`save`, PNG + SVG through
:func:`landscape.views.plots.save_figure`; human labels come from :mod:`landscape.views.labels`), the
seed band legend (:func:`label_seed_band`), the sections of ``run`` with their progress lines
(:class:`Sections`), the layer-by-layer probe figure and its
medians over seeds (:func:`merge_probes`, :func:`probe_medians`, :func:`probe_figure`, on
:func:`landscape.numeric.probe.probe`), and the Markdown rendering of claims and tables used by the
report and the notebooks (:func:`claims_markdown`, :func:`table_markdown`); and the command that
reproduces a run (:func:`reproduce_command`), written at the top of the report and under each figure.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import torch

from landscape._checks import check_int
from landscape.experiment.store import RunStore

__all__ = [
    "Claim",
    "StudyResult",
    "StudyContext",
    "Findings",
    "Sections",
    "reproduce_command",
    "save",
    "label_seed_band",
    "intra_op_threads",
    "study_threads",
    "finite_min",
    "seed_list",
    "merge_probes",
    "probe_medians",
    "probe_figure",
    "claims_markdown",
    "table_markdown",
    "execute",
    "study_main",
    "write_report",
]


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


class Findings:
    """What a study has found so far: claims, tables, figures and notes, in the order they were added.

    Each section of a study adds to one ``Findings``; :meth:`result` freezes it into the
    :class:`StudyResult`.
    """

    def __init__(self, out: Path) -> None:
        """Args:
            out: the directory figures are written to (created if missing).
        """
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.claims: list[Claim] = []
        self.tables: dict[str, list[dict[str, Any]]] = {}
        self.figures: list[Path] = []
        self.notes: list[str] = []

    def claim(self, claim: Claim) -> Claim:
        """Record ``claim``; return it."""
        self.claims.append(claim)
        return claim

    def table(self, title: str, rows: Iterable[Mapping[str, Any]]) -> None:
        """Record a table (rows sharing the first row's keys) under ``title``."""
        self.tables[title] = [dict(r) for r in rows]

    def figure(self, fig: Any, stem: str, data: Mapping[str, Any] | None = None) -> None:
        """Write ``fig`` as ``<out>/<stem>.png`` and ``.svg`` (:func:`save`) and record both files.

        The numbers it shows go beside it as ``<out>/<stem>.json``: ``data`` when given, else what
        the array function of :mod:`landscape.views` that drew it recorded
        (:func:`landscape.views.plots.figure_data`); a figure drawn otherwise, without ``data``,
        gets no data file.
        """
        self.figures += save(fig, self.out, stem, data=data)

    def note(self, *notes: str) -> None:
        """Record free-text notes (settings chosen, disagreements with the paper)."""
        self.notes += notes

    def result(self, study: str) -> StudyResult:
        """The frozen :class:`StudyResult` of ``study``."""
        return StudyResult(study, tuple(self.claims), dict(self.tables), tuple(self.figures), tuple(self.notes))


# ----------------------------------------------------------------------------------- threads
@contextlib.contextmanager
def intra_op_threads(n: int | None) -> Iterator[None]:
    """Run with ``n`` intra-op threads (restored afterwards); ``None`` leaves torch's setting alone.

    Args:
        n: thread count ``>= 1`` or ``None``.

    Raises:
        TypeError: ``n`` neither ``None`` nor an integer.
        ValueError: ``n < 1``.
    """
    if n is None:
        yield
        return
    check_int("n", n, minimum=1)
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def study_threads(ctx: "StudyContext") -> contextlib.AbstractContextManager[None]:
    """The thread setting of every study: one intra-op thread at quick size, torch's default otherwise.

    The quick studies' tensors are tiny: torch's thread pool only adds synchronisation overhead
    there, which on a busy 2-core machine made training an order of magnitude slower than one thread.
    """
    return intra_op_threads(1 if ctx.quick else None)


# ----------------------------------------------------------------------------------- sections
class Sections:
    """The sections of a study's ``run``, called one by one, each reported when it is done.

    A study declares its sections up front (the names of its section functions without the
    leading ``_``, in the order ``run`` calls them) and calls each through this object::

        sec = Sections(ctx, "huang2023", ("train", "check_balanced", "figures"))
        trajs = sec(_train, ctx, s, tasks)

    After each call one progress line goes to stderr through :func:`landscape._progress.note`
    (so ``--quiet`` silences it and a :class:`~landscape._progress.Heartbeat` stays silent while
    sections report)::

        reproduce huang2023: section 'train' done in 12.3 s (1/3)

    Lines are printed only when the study's context asks for progress (:attr:`StudyContext.progress`,
    set by ``landscape reproduce`` and ``python -m analysis.NAME`` unless ``--quiet``). The wall time of every section is kept in :attr:`times`.
    """

    def __init__(self, ctx: "StudyContext", study: str, names: Sequence[str]) -> None:
        """Args:
            ctx: the study's context (its ``progress`` switch).
            study: the study's name, for the lines.
            names: the sections ``run`` will call, in order (a section skipped at this size is left
                out), each the name of its function without the leading underscore.

        Raises:
            ValueError: no names, or a name given twice.
        """
        names = tuple(names)
        if not names or len(set(names)) != len(names):
            raise ValueError(f"Sections needs distinct section names, got {names}")
        self.ctx, self.study, self.names = ctx, study, names
        self.times: dict[str, float] = {}

    def __call__(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call the section ``fn(*args, **kwargs)``, report it, and return what it returns.

        Raises:
            ValueError: ``fn`` is not one of the declared sections, or it already ran (raised before
                the section runs).
        """
        from landscape._progress import note

        name = fn.__name__.lstrip("_")
        if name not in self.names:
            raise ValueError(f"{self.study}: section {name!r} is not declared; declared: {', '.join(self.names)}")
        if name in self.times:
            raise ValueError(f"{self.study}: section {name!r} already ran")
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        self.times[name] = dt = time.perf_counter() - t0
        note(f"reproduce {self.study}: section {name!r} done in {dt:.1f} s ({len(self.times)}/{len(self.names)})",
             progress=self.ctx.progress)
        return out


# ------------------------------------------------------------------------------------ figures
def save(fig: Any, out: Path, stem: str, *, data: Mapping[str, Any] | None = None) -> list[Path]:
    """Write ``fig`` as ``<out>/<stem>.png`` and ``<out>/<stem>.svg``, and its numbers as ``<out>/<stem>.json``.

    Through :func:`landscape.views.plots.save_figure` (reproducible bytes, atomic writes). The
    data file holds ``data``, else :func:`landscape.views.plots.figure_data` of ``fig`` (what the
    views' array function that drew it recorded); with neither, none is written.

    Returns:
        The two figure paths, PNG first (the data file is not listed).
    """
    from landscape.views.plots import figure_data, save_figure

    return list(save_figure(fig, out, stem, data=figure_data(fig) if data is None else data).paths)


def label_seed_band(fig: Any, seeds: int, *, what: str = "shaded") -> None:
    """Add a legend entry ``"<what>: interquartile range over <seeds> seeds"`` to every axes with a legend.

    The figures of :mod:`landscape.views.plots` draw the median over seeds with the inter-quartile
    band (shaded, or error bars) but label only the median lines.

    Args:
        fig: a figure whose axes carry legends.
        seeds: the number of seeds the band is taken over.
        what: how the band is drawn (``"shaded"``, ``"bars"``).
    """
    from matplotlib.patches import Patch

    for ax in fig.axes:
        leg = ax.get_legend()
        if leg is None:
            continue
        handles, labels = ax.get_legend_handles_labels()
        handles.append(Patch(facecolor="0.6", alpha=0.4, lw=0))
        labels.append(f"{what}: interquartile range over {seeds} seeds")
        ax.legend(handles, labels, fontsize="small")


# ------------------------------------------------------------------------------ seed summaries
def finite_min(values: Iterable[float]) -> float:
    """Smallest value, non-finite ones counting as ``inf`` (a diverged seed)."""
    return min((v if math.isfinite(v) else math.inf) for v in values)


def seed_list(values: Iterable[float]) -> str:
    """Per-seed values as one table cell: ``"0.1234, 0.2345"``."""
    return ", ".join(f"{v:.4g}" for v in values)


# --------------------------------------------------------------------------------------- probes
def merge_probes(parts: Sequence[tuple[Any, Mapping[str, str]]]) -> Any:
    """One probe result from several probes of the same seeds, each algorithm under a human label.

    :func:`landscape.numeric.probe.probe` fits one kernel per call (functional GD's); a study that
    compares functional GD with two kernels and plain GD probes twice and merges the results here,
    so that one figure (:func:`probe_figure`) and one table show them side by side.

    Args:
        parts: ``(result, {algorithm name in result: label})`` pairs, in the order the merged
            algorithms are to appear; every result must hold the same seeds and layers.

    Returns:
        A :class:`~landscape.numeric.probe.ProbeResult` whose ``algorithms`` are the labels (metrics
        concatenated along the algorithm axis, ``fitted`` keyed by label, ``kernel`` the kernels joined
        by ``"; "``).

    Raises:
        ValueError: no parts, results of different seeds / layers / sample sizes, an algorithm a
            result does not hold, or a label used twice.
    """
    from landscape.numeric.probe import ProbeResult

    if not parts:
        raise ValueError("merge_probes needs at least one (result, labels) pair")
    first = parts[0][0]
    labels: list[str] = []
    idx: list[tuple[Any, int]] = []
    for res, names in parts:
        if (res.seeds, res.layers, res.fit_samples, res.eval_samples) != (
                first.seeds, first.layers, first.fit_samples, first.eval_samples):
            raise ValueError("merge_probes: the results probe different seeds, layers or sample sizes")
        for name, lab in names.items():
            if name not in res.algorithms:
                raise ValueError(f"merge_probes: the result holds {list(res.algorithms)}, not {name!r}")
            if lab in labels:
                raise ValueError(f"merge_probes: label {lab!r} used twice")
            labels.append(lab)
            idx.append((res, res.algorithms.index(name)))

    def cat(attr: str) -> torch.Tensor | None:
        parts_ = [getattr(r, attr) for r, _ in idx]
        if any(p is None for p in parts_):
            return None
        return torch.stack([p[:, a] for p, (_, a) in zip(parts_, idx)], dim=1)

    fitted = {lab: r.fitted[r.algorithms[a]] for lab, (r, a) in zip(labels, idx)}
    kernels = "; ".join(dict.fromkeys(r.kernel for r, _ in parts))
    return ProbeResult(tuple(labels), first.layers, cat("cosine"), cat("relative_error"), fitted,
                       first.fit_samples, first.eval_samples, kernels, cat("weight_cosine"),
                       cat("weight_relative_error"))


def probe_medians(result: Any) -> dict[str, torch.Tensor]:
    """Median over seeds (:func:`landscape.experiment.summary.seed_median`) of a probe's metrics.

    Args:
        result: a :class:`~landscape.numeric.probe.ProbeResult`.

    Returns:
        ``{"relative_error", "cosine"}`` → ``(algorithms, layers)`` tensors (column ``l`` is layer ``l + 1``).
    """
    from landscape.experiment.summary import seed_median

    return {"relative_error": seed_median(result.relative_error, dim=0), "cosine": seed_median(result.cosine, dim=0)}


def probe_figure(result: Any, out: Path, stem: str, title: str) -> list[Path]:
    """The probe figure (:func:`landscape.views.pictures.plot_probe`) as ``<out>/<stem>.png`` and ``.svg``.

    Relative error (log scale) and cosine similarity per layer, one line per algorithm (median over
    seeds) with the inter-quartile band.

    Returns:
        The two paths, PNG first.
    """
    from landscape.views.pictures import plot_probe

    return [Path(p) for p in plot_probe(result, Path(out) / stem, title=title)]


# ---------------------------------------------------------------------------------- rendering
def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return f"{v:.4g}"
    return str(v)


def claims_markdown(result: StudyResult) -> str:
    """The claims as a Markdown table (statement, verdict, criterion, measured numbers).

    Args:
        result: a study's result.

    Returns:
        Markdown text.
    """
    lines = ["| claim | holds | criterion | measured |", "|---|---|---|---|"]
    for c in result.claims:
        measured = ", ".join(f"{k} = {_fmt(v)}" for k, v in c.measured.items())
        lines.append(f"| {c.statement} | {'yes' if c.holds else '**no**'} | {c.criterion} | {measured} |")
    return "\n".join(lines)


def table_markdown(rows: Iterable[Mapping[str, Any]]) -> str:
    """Rows (dicts sharing the first row's keys) as a Markdown table.

    Args:
        rows: the table's rows.

    Returns:
        Markdown text; an empty string for no rows.
    """
    rows = list(rows)
    if not rows:
        return ""
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def reproduce_command(name: str, ctx: StudyContext) -> str:
    """The command line that reproduces a study run: ``landscape reproduce NAME [--quick] --seed S --out OUT``.

    ``--device D`` is added when the run was not on the CPU. Arguments are shell-quoted.

    >>> reproduce_command("huang2023", StudyContext(quick=True, out=Path("runs/huang2023"), seed=3))
    'landscape reproduce huang2023 --quick --seed 3 --out runs/huang2023'

    Args:
        name: the study (a key of :data:`analysis.STUDIES`).
        ctx: the run's context.

    Returns:
        The command, one line.
    """
    import shlex

    parts = ["landscape", "reproduce", name] + (["--quick"] if ctx.quick else [])
    parts += ["--seed", str(ctx.seed), "--out", str(ctx.out)]
    if str(ctx.device) != "cpu":
        parts += ["--device", str(ctx.device)]
    return " ".join(shlex.quote(p) for p in parts)


def _relative(f: Path, root: Path) -> Path:
    f = f.resolve()
    return f.relative_to(root) if f.is_relative_to(root) else f


def write_report(result: StudyResult, out: Path, elapsed: float | None = None, *,
                 command: str | None = None) -> Path:
    """Write ``report.md`` (command, claims table, tables, figures, notes) into ``out``; return its path.

    With ``command`` (:func:`reproduce_command`), the report opens with it, and under each figure a
    caption names the figure, its SVG, the command that made it and the figure's data file
    (``<stem>.json`` beside the PNG) when one exists. Figure links are relative to ``out`` (the
    report and its figures move together).

    Args:
        result: the study's result.
        out: the directory of the report (created if missing).
        elapsed: the study's run time in seconds, reported when given.
        command: the command that reproduces the run.

    Returns:
        The path of ``report.md`` (written atomically).
    """
    out.mkdir(parents=True, exist_ok=True)
    lines = [f"# Study: {result.study}", ""]
    if command is not None:
        lines += ["Reproduce this run with:", "", "```", command, "```", ""]
    if elapsed is not None:
        lines += [f"Run time: {elapsed:.1f} s.", ""]
    lines += ["## Claims", "", claims_markdown(result)]
    for name, rows in result.tables.items():
        lines += ["", f"## {name}", ""]
        lines.append(table_markdown(rows) or "(empty)")
    if result.figures:
        lines += ["", "## Figures", ""]
        root = out.resolve()
        for f in result.figures:
            if f.suffix != ".png":
                continue
            rel = _relative(f, root)
            lines += [f"![{f.stem}]({rel.as_posix()})", ""]
            caption = [f"*Figure `{f.stem}`*"]
            svg = f.with_suffix(".svg")
            if svg.is_file():
                caption.append(f"([SVG]({_relative(svg, root).as_posix()}))")
            if command is not None:
                caption.append(f"— made by `{command}`")
            data = f.with_suffix(".json")
            if data.is_file():
                caption.append(f"— data: [{data.name}]({_relative(data, root).as_posix()})")
            lines += [" ".join(caption) + ".", ""]
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
    report = write_report(result, ctx.out, elapsed, command=reproduce_command(name, ctx))
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
    """``python -m analysis.<name> [--quick] [--out DIR] [--seed S] [--json] [--quiet]``; exit 1 if a claim fails.

    As ``landscape reproduce NAME``, progress goes to stderr (a line as each section is done, the
    training progress lines); ``--quiet`` silences it (:func:`landscape._progress.quieted`).
    """
    p = argparse.ArgumentParser(prog=f"python -m analysis.{name}", description=(run.__doc__ or "").strip().splitlines()[0] if run.__doc__ else None)
    p.add_argument("--quick", action="store_true", help="small sizes (a few minutes on a 2-core CPU)")
    p.add_argument("--out", type=Path, default=Path("runs") / name, help="output directory (run store + report)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", action="store_true", help="print the claims as one JSON object")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    args = p.parse_args(argv)
    from landscape._progress import enabled, quieted

    with quieted(args.quiet):
        ctx = StudyContext(quick=args.quick, out=args.out, seed=args.seed, device=args.device, progress=enabled())
        result, report = execute(name, run, ctx)
    if args.json:
        print(json.dumps({"study": name, "report": str(report), "all_hold": result.all_hold,
                          "claims": [asdict(c) | {"measured": dict(c.measured)} for c in result.claims]}))
    else:
        print(report.read_text())
    return 0 if result.all_hold else 1
