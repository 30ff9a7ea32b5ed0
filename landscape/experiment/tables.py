r"""Results out of a run store: the runs, their configs, and one tidy table of every logged metric.

A store holds per-seed scalars under metric keys (:mod:`landscape.experiment.metrics`). Everything
after a run — pandas, R, a spreadsheet, a plotting script of one's own — wants them as one *tidy*
table, one observation per row:

.. code-block:: text

    run  config_hash  seed  step  metric  name  layer  head  value
    r1   3f…          0     100   dist_identity.layer1.head0  dist_identity  1  0  0.0813

``metric`` is the key as logged; ``name``, ``layer`` and ``head`` are its parts
(:func:`~landscape.experiment.metrics.parse_metric_key`, empty where the key has none), so a
grouping by layer needs no string parsing. ``value`` is the stored float, NaN where the store holds
none (a diverged seed). Rows are ordered by run (creation order), then metric, step, seed.

:func:`metrics_table` returns the columns as plain lists (no dependency), :func:`to_dataframe` a
:class:`pandas.DataFrame`, :func:`write_table` a CSV or Parquet file written atomically (a partial
file never appears under the target name). :func:`runs_table` lists the runs,
:func:`config_diff` compares two stored configs key by key. Everything opens the store read-only.

A run's preset (:func:`landscape.recipe.preset`) is provenance, not part of its config: it is a
column of :func:`runs_table` (:attr:`RunRow.preset`), not of the metric table, whose rows join it
by ``run``::

    runs = pd.DataFrame([dataclasses.asdict(r) for r in runs_table(store)])
    df = to_dataframe(store).merge(runs[["name", "preset"]], left_on="run", right_on="name")
"""

from __future__ import annotations

import csv
import importlib.util
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from landscape.experiment.metrics import parse_metric_key

if TYPE_CHECKING:  # pragma: no cover
    from landscape.experiment.store import RunStore

__all__ = [
    "COLUMNS",
    "FORMATS",
    "RunRow",
    "open_store",
    "runs_table",
    "select_runs",
    "config_diff",
    "metrics_table",
    "to_dataframe",
    "write_table",
]

COLUMNS: tuple[str, ...] = ("run", "config_hash", "seed", "step", "metric", "name", "layer", "head", "value")
"""Columns of the tidy metric table, in order."""

FORMATS: dict[str, str] = {".csv": "csv", ".parquet": "parquet"}
"""File suffix → table format :func:`write_table` writes."""


@dataclass(frozen=True)
class RunRow:
    """One run of a store, as listed by :func:`runs_table`.

    Attributes:
        name: the run's name.
        id: its id in the store.
        status: ``running``, ``finished``, ``failed`` or ``interrupted``.
        config_hash: the stored config's hash (64 hex digits).
        created_at: creation time, seconds since the epoch.
        seeds: ``config["seeds"]`` where the config has it, else ``None``.
        steps: ``config["steps"]`` where the config has it, else ``None``.
        metrics: number of metric keys logged.
        final: whether final weights are stored.
        preset: the paper preset the run was started from
            (:func:`~landscape.experiment.train.stored_preset`: provenance, not in the config or
            its hash), ``None`` for fields given one by one or a run stored before it was recorded.
    """

    name: str
    id: int
    status: str
    config_hash: str
    created_at: float
    seeds: int | None
    steps: int | None
    metrics: int
    final: bool
    preset: str | None = None


def open_store(store: str | os.PathLike[str]) -> RunStore:
    """The run store in the folder ``store``, opened read-only: the one way a folder named by a user is opened to be read.

    Nothing on disk changes, whatever the folder holds (no folder or database is created). A folder
    with a ``tensors/`` folder but no ``store.sqlite`` is a store that lost its database: it is opened
    so that :class:`~landscape.experiment.store.RunStore` reports it with what to do
    (``landscape store repair``).

    Args:
        store: the store's folder (``~`` expanded).

    Returns:
        An open, read-only :class:`~landscape.experiment.store.RunStore` (a context manager; close it).

    Raises:
        ValueError: ``store`` is not a folder, or holds neither ``store.sqlite`` nor ``tensors/``;
            one line naming the folder and what a run store holds.
        StoreError: a lost, damaged or foreign database (see :class:`~landscape.experiment.store.RunStore`).
    """
    from landscape.experiment.store import RunStore

    root = Path(store).expanduser()
    if not (root / "store.sqlite").exists() and not (root / "tensors").exists():
        why = ("no such folder" if not root.exists() else "it is a file" if not root.is_dir()
               else "no store.sqlite in it")
        raise ValueError(f"{str(store)!r} is not a run store ({why}; a run store is a folder holding store.sqlite)")
    return RunStore(root, read_only=True)


def _open(store: Any) -> tuple[RunStore, bool]:
    """``(store, whether to close it)``: an open :class:`RunStore` as it is, a folder by :func:`open_store`."""
    from landscape.experiment.store import RunStore

    if isinstance(store, RunStore):
        return store, False
    return open_store(store), True


def select_runs(store: Any, runs: Sequence[str | int] | None) -> list[Any]:
    """The runs of an open store named in ``runs`` (all of them for ``None``), in the order given.

    A run is given by its name, or by its id (an int, or a string of digits that is not a run's name).

    Raises:
        ValueError: an unknown name or id (the message lists the store's runs).
        TypeError: ``runs`` given as one string.
    """
    all_runs = store.list_runs()
    if runs is None:
        return all_runs
    if isinstance(runs, str):
        raise TypeError(f"runs must be a sequence of run names, got the string {runs!r} (write [{runs!r}])")
    by_name = {r.name: r for r in all_runs}
    by_id = {r.id: r for r in all_runs}

    def find(ref: str | int) -> Any:
        if isinstance(ref, str) and ref in by_name:
            return by_name[ref]
        if isinstance(ref, int) and not isinstance(ref, bool) or isinstance(ref, str) and ref.isdigit():
            return by_id.get(int(ref))
        return None

    found = [(ref, find(ref)) for ref in runs]
    missing = [ref for ref, r in found if r is None]
    if missing:
        known = ", ".join(f"{r.name} (id {r.id})" for r in all_runs) or "none"
        raise ValueError(f"unknown run(s) {', '.join(map(repr, missing))} in {store.root} (runs: {known})")
    return list({r.id: r for _, r in found}.values())


def runs_table(store: Any) -> list[RunRow]:
    """The runs of a store in creation order.

    Args:
        store: a :class:`~landscape.experiment.store.RunStore` or the store's folder (opened read-only).

    Returns:
        One :class:`RunRow` per run.

    Raises:
        ValueError: ``store`` is not a run store (:func:`open_store`).
        StoreError: a lost, damaged or foreign database.
    """
    from landscape.experiment.train import stored_preset

    s, close = _open(store)
    try:
        out = []
        for r in s.list_runs():
            cfg = r.config if isinstance(r.config, Mapping) else {}
            seeds, steps = cfg.get("seeds"), cfg.get("steps")
            out.append(RunRow(r.name, r.id, r.status, r.config_hash, r.created_at,
                              seeds if isinstance(seeds, int) else None, steps if isinstance(steps, int) else None,
                              len(s.metrics(r)), s.has_final(r), stored_preset(s, r)))
        return out
    finally:
        if close:
            s.close()


def _flatten(cfg: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(cfg, Mapping):
        out: dict[str, Any] = {}
        for k in sorted(cfg):
            out.update(_flatten(cfg[k], f"{prefix}{k}."))
        return out
    return {prefix[:-1]: cfg}


def config_diff(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """The keys where two configs differ.

    Nested mappings are compared key by key under dotted names (``"family_options.tol"``); a key
    missing on one side shows as the marker string ``"<absent>"`` there.

    Args:
        a, b: configs (e.g. ``Run.config``).

    Returns:
        ``{key: (value in a, value in b)}`` for every differing key, sorted by key.

    Raises:
        TypeError: ``a`` or ``b`` is not a mapping.
    """
    for name, c in (("a", a), ("b", b)):
        if not isinstance(c, Mapping):
            raise TypeError(f"config {name} must be a mapping, got {type(c).__name__}")
    fa, fb = _flatten(a), _flatten(b)
    absent = "<absent>"
    return {k: (fa.get(k, absent), fb.get(k, absent)) for k in sorted(set(fa) | set(fb))
            if fa.get(k, absent) != fb.get(k, absent)}


def metrics_table(store: Any, runs: Sequence[str] | None = None,
                  metrics: Iterable[str] | None = None) -> dict[str, list[Any]]:
    r"""Every logged metric of the chosen runs as one tidy table (module docstring).

    Args:
        store: a :class:`~landscape.experiment.store.RunStore` or the store's folder (opened read-only).
        runs: run names (default: every run).
        metrics: keep only these metric keys, or keys whose name part (without layer/head) is one of
            them (default: all).

    Returns:
        ``{column: list}`` for the columns of :data:`COLUMNS`, all lists of one length; ``layer`` and
        ``head`` hold ``None`` where the key has none, ``value`` NaN where nothing is stored.

    Raises:
        ValueError: not a run store (:func:`open_store`), or an unknown run (the known ones are listed).
        StoreError: a lost, damaged or foreign database.
        TypeError: ``runs`` given as one string.
    """
    s, close = _open(store)
    try:
        chosen = select_runs(s, runs)
        keep = None if metrics is None else set(metrics)
        cols: dict[str, list[Any]] = {c: [] for c in COLUMNS}
        for r in chosen:
            for row in s.metrics_long(r):
                parts = parse_metric_key(row.key)
                if keep is not None and row.key not in keep and parts.name not in keep:
                    continue
                for c, v in zip(COLUMNS, (r.name, r.config_hash, int(row.seed), int(row.step), row.key,
                                          parts.name, parts.layer, parts.head, float(row.value))):
                    cols[c].append(v)
        return cols
    finally:
        if close:
            s.close()


def _pandas() -> Any:
    try:
        import pandas
    except ImportError:  # pragma: no cover - pandas comes with seaborn, a dependency
        raise ImportError("the DataFrame and Parquet export need pandas: pip install pandas") from None
    return pandas


def to_dataframe(store: Any, runs: Sequence[str] | None = None, metrics: Iterable[str] | None = None) -> Any:
    """:func:`metrics_table` as a :class:`pandas.DataFrame` (``layer``/``head`` nullable integers).

    Example (long → one column per metric, rows (run, seed, step))::

        df = to_dataframe("runs/ahn2023")
        wide = df.pivot_table(index=["run", "seed", "step"], columns="metric", values="value")

    Raises:
        ValueError, TypeError: as :func:`metrics_table`.
        ImportError: pandas is not installed.
    """
    return _frame(metrics_table(store, runs, metrics))


def _frame(cols: Mapping[str, list[Any]]) -> Any:
    pd = _pandas()
    df = pd.DataFrame(dict(cols), columns=list(COLUMNS))
    for c in ("layer", "head"):
        df[c] = df[c].astype("Int64")
    for c in ("seed", "step"):
        df[c] = df[c].astype("int64")
    df["value"] = df["value"].astype("float64")
    return df


def write_table(store: Any, path: str | Path, runs: Sequence[str] | None = None,
                metrics: Iterable[str] | None = None, *, format: str | None = None) -> int:
    """Write :func:`metrics_table` to a CSV or Parquet file, atomically.

    CSV is written by the standard library (empty cells for absent layer/head, ``nan`` for a missing
    value; floats as ``repr``, so they read back exactly); Parquet through pandas and pyarrow. The
    table goes to a temporary file beside ``path`` that replaces ``path`` only when complete.

    Args:
        store: a run store or its folder.
        path: the output file; its suffix picks the format (:data:`FORMATS`) unless ``format`` is given.
        runs, metrics: as :func:`metrics_table`.
        format: ``"csv"`` or ``"parquet"``.

    Returns:
        The number of rows written (the header not counted).

    Raises:
        ValueError: unknown format or suffix, a missing output folder, or as :func:`metrics_table` —
            all before anything is written.
        ImportError: Parquet without pandas/pyarrow.
    """
    path = Path(path).expanduser()
    if format is None:
        if path.suffix.lower() not in FORMATS:
            raise ValueError(f"cannot tell the format of {str(path)!r} from its suffix; accepted: "
                             f"{', '.join(FORMATS)} (or give the format)")
        format = FORMATS[path.suffix.lower()]
    if format not in FORMATS.values():
        raise ValueError(f"unknown table format {format!r}; accepted: {', '.join(FORMATS.values())}")
    if not path.parent.is_dir():
        raise ValueError(f"output folder {str(path.parent)!r} does not exist")
    if format == "parquet":
        _pandas()
        if importlib.util.find_spec("pyarrow") is None:
            raise ImportError("Parquet export needs pyarrow: pip install pyarrow (or write a .csv)")
    cols = metrics_table(store, runs, metrics)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        if format == "csv":
            with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
                w = csv.writer(f)
                w.writerow(COLUMNS)
                for row in zip(*(cols[c] for c in COLUMNS)):
                    w.writerow(["" if v is None else (repr(v) if isinstance(v, float) and math.isfinite(v)
                                                      else ("nan" if isinstance(v, float) else v)) for v in row])
        else:
            os.close(fd)
            _frame(cols).to_parquet(tmp, index=False)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return len(cols["run"])
