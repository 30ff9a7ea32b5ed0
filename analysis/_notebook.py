"""Displaying a :class:`~analysis._study.StudyResult` in a notebook (claims, tables, figures, notes).

Every study notebook runs its study at quick size and then shows the result with these helpers, so
the notebooks differ only in their prose and the study they run.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from IPython.display import Image, Markdown, display

from ._study import StudyResult

__all__ = ["claims_markdown", "table_markdown", "show_claims", "show_tables", "show_figures", "show_notes"]


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


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


def show_claims(result: StudyResult) -> None:
    """Display :func:`claims_markdown` of ``result``."""
    display(Markdown(claims_markdown(result)))


def show_tables(result: StudyResult) -> None:
    """Display every table of ``result`` under its title."""
    for title, rows in result.tables.items():
        display(Markdown(f"### {title}\n\n{table_markdown(rows)}"))


def show_figures(result: StudyResult) -> None:
    """Display the PNG figures of ``result``."""
    for f in result.figures:
        if f.suffix == ".png":
            display(Image(filename=str(f)))


def show_notes(result: StudyResult) -> None:
    """Display the study's notes (settings, disagreements with the paper) as a list."""
    display(Markdown("\n".join(f"- {n}" for n in result.notes)))
