"""Shared checks of a study's figures: run a quick study keeping its Figures, and compare a figure's data file with its axes.

A study saves each figure through :meth:`analysis._study.Findings.figure`, with the numbers it
draws beside it (``<stem>.json``, recorded by :class:`landscape.views.record.DrawnPanel`).
:func:`run_keeping_figures` runs a study once and keeps the ``Figure`` objects it saved, so a test
can read their artists (:func:`quick_study_fixture` makes it a module fixture); :func:`assert_data_is_drawn` checks, line by line (matched by gid), that
the data file holds exactly what the axes draw, and returns the recorded numbers for the test to
compare with the study's tables and claims.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from analysis._study import Findings, StudyContext, execute


def run_keeping_figures(name: str, run: Callable[[StudyContext], Any], out: Path) -> tuple[Any, Path, Path, dict[str, Any]]:
    """Run the quick study ``name`` once into ``out``, keeping every figure it saves.

    Args:
        name: the study's name (``"huang2023"``).
        run: its ``run`` function.
        out: the output folder.

    Returns:
        ``(result, report, out, figures)``: the study's result and report, the folder, and
        stem → the ``Figure`` saved under that stem.
    """
    figures: dict[str, Any] = {}
    save = Findings.figure

    def keep(self: Findings, fig: Any, stem: str, data: Any = None) -> Any:
        figures[stem] = fig
        return save(self, fig, stem, data=data)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Findings, "figure", keep)
        result, report = execute(name, run, StudyContext(quick=True, out=out))
    return result, report, out, figures


def quick_study_fixture(name: str, run: Callable[[StudyContext], Any], *, fixture: str = "quick") -> Any:
    """A module-scoped fixture ``fixture`` giving :func:`run_keeping_figures` of the quick study ``name``.

    In a test file: ``quick = quick_study_fixture("huang2023", h.run)``; the study runs once per module.

    Args:
        name: the study's name.
        run: its ``run`` function.
        fixture: the fixture's name (the argument name of the tests that use it).

    Returns:
        The pytest fixture.
    """

    @pytest.fixture(scope="module", name=fixture)
    def quick(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path, Path, dict[str, Any]]:
        return run_keeping_figures(name, run, tmp_path_factory.mktemp(name))

    quick.__doc__ = f"The quick {name} study, run once: (result, report, output folder, stem → saved Figure)."
    return quick


def floats(values: Any) -> np.ndarray:
    """A JSON list of numbers as a float64 array, ``null`` (a non-finite value) as ``nan``."""
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def assert_data_is_drawn(fig: Any, data: Mapping[str, Any], *, relabelled: Collection[str] = ()
                         ) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], dict[str, float | None]]:
    """Assert that a figure's data (as read back from its JSON file) is what its axes draw.

    Per panel (in the order of ``fig.axes``): the title, axis labels and every scale the panel
    records equal the axes'; the gids of the axes' lines are exactly the recorded curve and
    reference ids; each curve's x and y equal its line's data exactly (``null`` ↔ ``nan``); a
    line shown in the legend carries the recorded label (except the gids in ``relabelled``,
    whose legend entry names a group of lines); a reference is a horizontal line at its value.
    With a ``"title"`` in ``data``, it is the figure's suptitle.

    Args:
        fig: the ``Figure``.
        data: its data, ``{["title"], "panels": [...]}``, parsed from JSON.
        relabelled: curve ids whose line was given another legend label after it was recorded.

    Returns:
        ``(curves, references)``: id → ``(x, y)`` float64 arrays (``nan`` for ``null``), and
        id → value, over all panels.
    """
    if "title" in data:
        assert data["title"] == fig.get_suptitle()
    assert len(data["panels"]) == len(fig.axes)
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    refs: dict[str, float | None] = {}
    for ax, panel in zip(fig.axes, data["panels"]):
        assert (panel["title"], panel["xlabel"], panel["ylabel"]) == (ax.get_title(), ax.get_xlabel(), ax.get_ylabel())
        for scale in ("xscale", "yscale"):
            if scale in panel:
                assert panel[scale] == getattr(ax, f"get_{scale}")(), (panel["title"], scale)
        lines = {ln.get_gid(): ln for ln in ax.get_lines()}
        assert len(lines) == len(ax.get_lines()), "two lines share a gid"
        references = panel.get("reference", [])
        assert set(lines) == {c["id"] for c in panel["curves"]} | {r["id"] for r in references}
        for c in panel["curves"]:
            ln = lines[c["id"]]
            x, y = floats(c["x"]), floats(c["y"])
            np.testing.assert_array_equal(x, np.asarray(ln.get_xdata(), dtype=np.float64))
            np.testing.assert_array_equal(y, np.asarray(ln.get_ydata(), dtype=np.float64))
            if not ln.get_label().startswith("_") and c["id"] not in relabelled:
                assert ln.get_label() == c["label"], c["id"]
            curves[c["id"]] = (x, y)
        for r in references:
            value = np.nan if r["value"] is None else r["value"]
            np.testing.assert_array_equal(np.asarray(lines[r["id"]].get_ydata(), dtype=np.float64), [value, value])
            refs[r["id"]] = r["value"]
    return curves, refs
