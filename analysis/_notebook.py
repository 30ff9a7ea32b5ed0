"""Displaying a :class:`~analysis._study.StudyResult` in a notebook (claims, tables, figures, notes).

Every study notebook runs its study at quick size and then shows the result with these helpers, so
the notebooks differ only in their prose and the study they run. The Markdown rendering is the
report's own (:func:`analysis._study.claims_markdown`, :func:`analysis._study.table_markdown`).
"""

from __future__ import annotations

from IPython.display import Image, Markdown, display

from ._study import StudyResult, claims_markdown, table_markdown

__all__ = ["claims_markdown", "table_markdown", "show_claims", "show_tables", "show_figures", "show_notes"]


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
