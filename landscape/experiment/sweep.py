r"""Sweeps: a grid of training configs × seeds, run in-process or as Ray tasks, into one run store.

A sweep file (TOML, read with :mod:`tomllib`, or YAML) holds::

    name = "depth"                      # optional: label of the sweep
    seeds = 4                           # optional: seeds trained together (vmapped) per grid point

    [base]                              # keyword arguments of TrainConfig shared by all points
    d = 5
    n = 20
    steps = 2000

    attention = "kernel"

    [grid]                              # each key: a list of values; the grid is their product
    layers = [1, 2, 3]
    activations = ["linear", "exp"]     # one kernel head of this activation (a list of names: heads)

The grid is the Cartesian product of the ``grid`` lists, in file order, the last key varying
fastest; each point is ``base`` updated with the point's values (and ``seeds``) and becomes one
:class:`landscape.experiment.train.TrainConfig` (the keys are its fields; names and specs — ``sigma``,
``task``, ``activations``, ``data_kernel`` terms, ``family`` — are read by :mod:`landscape.recipe`). **Every** point is validated before anything runs; a bad key
or value raises :class:`ValueError`/:class:`TypeError` naming the point, the key and the value.

Each grid point is one run of the store; its seeds train together (vmapped) through
:func:`landscape.experiment.train.train`. Executors:

* ``"local"`` — in this process, one point after the other;
* ``"ray"`` — one Ray task per point; each task opens the same store directory (SQLite in WAL mode
  with a busy timeout serialises the writers) and trains. ``address=None`` or ``"local"`` starts a
  local cluster (:func:`ray.init` with ``num_cpus``) and shuts it down afterwards; an already
  initialised Ray session is used as it is.

Training is deterministic given the config (explicit generators), so both executors store the same
numbers. Points whose run is already ``"finished"`` in the store are skipped (resume): rerunning a
sweep after an interruption trains only what is missing.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import time
import tomllib
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from landscape.experiment.executors import EXECUTORS
from landscape.experiment.store import RunStore

__all__ = [
    "EXECUTORS",
    "SweepSpec",
    "GridPoint",
    "PointResult",
    "SweepResult",
    "load_sweep",
    "parse_sweep",
    "expand_grid",
    "run_sweep",
]


_TOP_KEYS = ("name", "base", "grid", "seeds")
_SUFFIXES = {".toml": "toml", ".yaml": "yaml", ".yml": "yaml"}


# ----------------------------------------------------------------------------------------------
# Integration with landscape.experiment.train (the only place that knows its API)
# ----------------------------------------------------------------------------------------------


def _train_api() -> Any:
    import landscape.experiment.train as train

    return train


def _config_fields() -> tuple[str, ...]:
    """Names of the TrainConfig fields (the keys a sweep may set)."""
    return tuple(f.name for f in dataclasses.fields(_train_api().TrainConfig) if not f.name.startswith("_"))


def _make_config(values: Mapping[str, Any]) -> Any:
    """Build and validate a TrainConfig from keyword values: its declarative checks, then
    :meth:`~landscape.experiment.train.TrainConfig.build` (Σ, task and family built through
    :mod:`landscape.recipe`), so a point that cannot train fails before any point runs."""
    config = _train_api().TrainConfig(**values)
    config.build(device="cpu")
    return config


def _store_config(config: Any) -> dict[str, Any]:
    """The JSON dict under which :func:`landscape.experiment.train.train` records ``config`` in the store."""
    return dict(config.to_dict())


def _train_point(config: Any, store: RunStore, progress: bool) -> dict[str, Any]:
    """Train one grid point into ``store`` and record its Bayes-optimal loss
    (:func:`landscape.experiment.bayes.record_bayes_loss`: the reference line of the depth,
    context and grid figures, which only read it) and the minimum over its family
    (:func:`landscape.experiment.bayes.record_family_minimum`, the loss plot's family line); return its JSON summary (run name, per-seed
    losses)."""
    from landscape.experiment.bayes import record_bayes_loss, record_family_minimum

    result = _train_api().train(config, store, progress=progress)
    if result.run_name is not None:
        record_bayes_loss(store, result.run_name)
        record_family_minimum(store, result.run_name)
    return dict(result.summary())


# ----------------------------------------------------------------------------------------------
# Spec and expansion
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SweepSpec:
    """A parsed sweep file.

    Attributes:
        base: keyword values shared by every point.
        grid: key ↦ tuple of values, in file order.
        seeds: number of seeds ``S`` trained together at every point (``TrainConfig.seeds``), or
            None to keep the base config's.
        name: label of the sweep (default: the file stem, or ``"sweep"``).
        source: the file it was read from, if any.
    """

    base: Mapping[str, Any]
    grid: Mapping[str, tuple[Any, ...]]
    seeds: int | None = None
    name: str = "sweep"
    source: Path | None = None

    @property
    def size(self) -> int:
        """Number of grid points (product of the grid list lengths; 1 for an empty grid)."""
        size = 1
        for values in self.grid.values():
            size *= len(values)
        return size


@dataclass(frozen=True)
class GridPoint:
    """One point of the grid.

    Attributes:
        index: position in the grid (row-major, last key fastest).
        overrides: the grid values of this point (key ↦ value).
        config: the validated :class:`landscape.experiment.train.TrainConfig`.
    """

    index: int
    overrides: Mapping[str, Any]
    config: Any = field(repr=False)

    def label(self) -> str:
        """``"key=value, ..."`` of the overrides (``"base"`` for an empty grid)."""
        return ", ".join(f"{k}={v}" for k, v in self.overrides.items()) or "base"


@dataclass(frozen=True)
class PointResult:
    """What happened to one grid point.

    Attributes:
        index: grid position.
        overrides: its grid values.
        status: ``"trained"``, ``"skipped"`` (already finished in the store) or ``"failed"``.
        run: name of its run in the store (None if it failed before the run was created).
        summary: JSON summary returned by training (run name, final loss per seed).
        seconds: wall time spent on it (0 for a skipped point).
        error: the error message of a failed point.
    """

    index: int
    overrides: Mapping[str, Any]
    status: str
    run: str | None
    summary: Mapping[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None


@dataclass(frozen=True)
class SweepResult:
    """Outcome of :func:`run_sweep`.

    Attributes:
        name: the sweep's name.
        root: the run store directory.
        executor: ``"local"`` or ``"ray"``.
        points: one :class:`PointResult` per grid point, in grid order.
        seconds: total wall time.
    """

    name: str
    root: Path
    executor: str
    points: tuple[PointResult, ...]
    seconds: float

    @property
    def ok(self) -> bool:
        """True when no point failed."""
        return all(p.status != "failed" for p in self.points)

    def counts(self) -> dict[str, int]:
        """Number of points per status."""
        out = {"trained": 0, "skipped": 0, "failed": 0}
        for p in self.points:
            out[p.status] += 1
        return out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable summary."""
        return {
            "name": self.name,
            "root": str(self.root),
            "executor": self.executor,
            "seconds": self.seconds,
            "counts": self.counts(),
            "points": [dataclasses.asdict(p) | {"overrides": dict(p.overrides)} for p in self.points],
        }


def _check_seeds(seeds: object, where: str) -> int:
    if isinstance(seeds, bool) or not isinstance(seeds, int):
        raise TypeError(
            f"{where}: seeds must be an int S (the number of seeds trained together per grid point), "
            f"got {seeds!r}; to train separate stacks from several master seeds put e.g. "
            "seed = [0, 1] in the grid"
        )
    if seeds < 1:
        raise ValueError(f"{where}: seeds = {seeds}; the number of seeds must be >= 1")
    return int(seeds)


def parse_sweep(data: Mapping[str, Any], *, source: str | os.PathLike[str] | None = None) -> SweepSpec:
    """Check the structure of a sweep mapping (as read from a file) and return its :class:`SweepSpec`.

    Only the structure is checked here (allowed top-level keys, ``grid`` values are non-empty
    lists, seeds, at least one config value); the values themselves are checked by
    :func:`expand_grid`.

    Args:
        data: mapping with keys among ``name``, ``base``, ``grid``, ``seeds``.
        source: the file it came from (for messages and the default name).

    Returns:
        The spec.

    Raises:
        TypeError: a section of the wrong type.
        ValueError: unknown top-level keys, an empty or non-list grid entry, seeds both at the
            top level and in ``base``/``grid``, bad seeds, or a sweep that sets nothing (no
            ``base`` values, no ``grid`` and no ``seeds``: an empty file is not one default run).
    """
    where = str(source) if source is not None else "sweep"
    if not isinstance(data, Mapping):
        raise TypeError(f"{where}: a sweep must be a mapping with keys {list(_TOP_KEYS)}, got {type(data).__name__}")
    unknown = sorted(set(data) - set(_TOP_KEYS))
    if unknown:
        raise ValueError(f"{where}: unknown top-level keys {unknown}; accepted: {list(_TOP_KEYS)}")
    base = data.get("base", {}) or {}
    if not isinstance(base, Mapping):
        raise TypeError(f"{where}: 'base' must be a table/mapping of config values, got {type(base).__name__}")
    grid_in = data.get("grid", {}) or {}
    if not isinstance(grid_in, Mapping):
        raise TypeError(f"{where}: 'grid' must be a table/mapping key -> list of values, got {type(grid_in).__name__}")
    grid: dict[str, tuple[Any, ...]] = {}
    for key, values in grid_in.items():
        if not isinstance(key, str):
            raise TypeError(f"{where}: grid key {key!r} must be a str")
        if not isinstance(values, (list, tuple)):
            raise ValueError(
                f"{where}: grid[{key!r}] = {values!r} must be a list of values (write [{values!r}] for one value)"
            )
        if not values:
            raise ValueError(f"{where}: grid[{key!r}] is an empty list; give at least one value")
        grid[key] = tuple(values)
    if "seeds" in base and "seeds" in data:
        raise ValueError(f"{where}: seeds given both at the top level and in 'base'; keep one")
    if "seeds" in grid and "seeds" in data:
        raise ValueError(f"{where}: seeds given both at the top level and in 'grid'; keep one")
    seeds = _check_seeds(data["seeds"], where) if data.get("seeds") is not None else None
    if not base and not grid and seeds is None:
        raise ValueError(
            f"{where}: the sweep sets no config values (no [base] values, no [grid], no seeds); "
            "write e.g. [base] with the TrainConfig fields and [grid] with lists of values"
        )
    default_name = Path(source).stem if source is not None else "sweep"
    name = data.get("name", default_name)
    if not isinstance(name, str) or not name:
        raise TypeError(f"{where}: 'name' must be a non-empty str, got {name!r}")
    return SweepSpec(
        base=dict(base), grid=grid, seeds=seeds, name=name, source=Path(source) if source is not None else None
    )


def load_sweep(path: str | os.PathLike[str]) -> SweepSpec:
    """Read a sweep file (``.toml`` with :mod:`tomllib`, ``.yaml``/``.yml`` with PyYAML).

    Args:
        path: the file.

    Returns:
        The :class:`SweepSpec` (structure checked; values are checked by :func:`expand_grid`).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: unknown extension, a syntax error (with the parser's message), bad structure.
    """
    p = Path(path).expanduser()
    kind = _SUFFIXES.get(p.suffix.lower())
    if kind is None:
        raise ValueError(f"sweep file {p} has extension {p.suffix!r}; accepted: {sorted(_SUFFIXES)}")
    if not p.is_file():
        raise FileNotFoundError(f"sweep file {p} does not exist")
    text = p.read_text(encoding="utf-8")
    if not text.strip():
        raise ValueError(f"sweep file {p} is empty; a sweep needs [base] values and/or a [grid]")
    if kind == "toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"sweep file {p} is not valid TOML: {exc}") from None
    else:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ValueError(f"sweep file {p} is not valid YAML: {exc}") from None
        if data is None:
            raise ValueError(f"sweep file {p} is empty; a sweep needs [base] values and/or a [grid]")
    return parse_sweep(data, source=p)


def expand_grid(spec: SweepSpec) -> list[GridPoint]:
    """Expand a sweep into validated configs: the Cartesian product of the grid lists.

    Point ``k`` has values ``grid[key_0][i_0], …`` with ``k`` the row-major index of
    ``(i_0, i_1, …)`` (last key fastest); its config is ``TrainConfig(**(base | point | seeds))``.
    All points are built (and so validated) before this returns.

    Args:
        spec: the sweep.

    Returns:
        ``spec.size`` :class:`GridPoint` objects, in grid order.

    Raises:
        ValueError: a key that is not a TrainConfig field (the accepted fields are listed), a value
            rejected by TrainConfig (the message names the point, key and value), or two points
            with the same config.
        TypeError: a value of the wrong type (rejected by TrainConfig; named likewise).
    """
    fields = _config_fields()
    where = str(spec.source) if spec.source is not None else spec.name
    for section, keys in (("base", spec.base), ("grid", spec.grid)):
        bad = [k for k in keys if k not in fields]
        if bad:
            raise ValueError(f"{where}: {section} has unknown config keys {bad}; accepted: {list(fields)}")
    if spec.seeds is not None and "seeds" not in fields:
        raise ValueError(f"{where}: TrainConfig has no 'seeds' field; accepted keys: {list(fields)}")
    keys = list(spec.grid)
    points: list[GridPoint] = []
    seen: dict[str, int] = {}
    for index, combo in enumerate(itertools.product(*(spec.grid[k] for k in keys))):
        overrides = dict(zip(keys, combo))
        values = dict(spec.base) | overrides
        if spec.seeds is not None:
            values["seeds"] = spec.seeds
        try:
            config = _make_config(values)
        except (ValueError, TypeError) as exc:
            label = ", ".join(f"{k}={v!r}" for k, v in overrides.items()) or "base"
            raise type(exc)(f"{where}: grid point {index} ({label}) is invalid: {exc}") from exc
        digest = json.dumps(_store_config(config), sort_keys=True)
        if digest in seen:
            raise ValueError(
                f"{where}: grid points {seen[digest]} and {index} give the same config; "
                "remove the duplicate values from the grid"
            )
        seen[digest] = index
        points.append(GridPoint(index, overrides, config))
    return points


# ----------------------------------------------------------------------------------------------
# Execution
# ----------------------------------------------------------------------------------------------


def _finished_runs(root: Path, points: Sequence[GridPoint]) -> dict[int, str]:
    """Grid index ↦ run name for the points whose run is already finished in the store."""
    from landscape.experiment.store import config_hash

    with RunStore(root) as store:
        done = {r.config_hash: r.name for r in store.list_runs() if r.status == "finished"}
    out: dict[int, str] = {}
    for p in points:
        h = config_hash(_store_config(p.config))
        if h in done:
            out[p.index] = done[h]
    return out


def _execute_point(root: str, values: dict[str, Any], progress: bool) -> dict[str, Any]:
    """Train one point into the store at ``root`` (runs in this process or in a Ray worker)."""
    config = _make_config(values)
    with RunStore(root) as store:
        return _train_point(config, store, progress)


def _config_values(config: Any) -> dict[str, Any]:
    """Keyword values that rebuild ``config`` (sent to Ray workers instead of the object)."""
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}


def _run_local(
    root: Path, todo: Sequence[GridPoint], progress: bool, report: Callable[[PointResult], None],
    on_start: Callable[[GridPoint], None] = lambda _p: None,
) -> list[PointResult]:
    out: list[PointResult] = []
    for p in todo:
        on_start(p)
        t0 = time.perf_counter()
        try:
            with RunStore(root) as store:
                summary = _train_point(p.config, store, progress)
            res = PointResult(p.index, p.overrides, "trained", summary.get("run"), summary,
                              time.perf_counter() - t0)
        except Exception as exc:  # one failed point must not lose the others
            res = PointResult(p.index, p.overrides, "failed", None, {}, time.perf_counter() - t0,
                              f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=5)}")
        report(res)
        out.append(res)
    return out


class _CellProgress:
    """The per-point progress lines of a sweep on stderr (:func:`landscape._progress.note`)."""

    def __init__(self, name: str, points: Sequence[GridPoint], to_train: int, progress: bool) -> None:
        self.name, self.total, self.to_train, self.progress = name, len(points), to_train, progress
        self.labels = {p.index: p.label() for p in points}
        self.seeds = {p.index: getattr(p.config, "seeds", None) for p in points}
        self.done = 0
        self.t0 = time.perf_counter()

    def _cell(self, index: int) -> str:
        seeds = self.seeds.get(index)
        who = self.labels[index] + (f"; {seeds} seeds" if seeds is not None else "")
        return f"sweep {self.name}: cell {index + 1}/{self.total} ({who})"

    def started(self, p: GridPoint) -> None:
        from landscape._progress import note

        note(f"{self._cell(p.index)} training", progress=self.progress)

    def finished(self, r: PointResult) -> None:
        from landscape._progress import note

        if r.status == "skipped":
            note(f"{self._cell(r.index)} already finished -> {r.run} (skipped)", progress=self.progress)
            return
        self.done += 1
        left = self.to_train - self.done
        elapsed = time.perf_counter() - self.t0
        eta = f", ETA {elapsed / self.done * left:.0f} s" if left else ""
        what = f"trained in {r.seconds:.1f} s -> {r.run}" if r.status == "trained" else \
            f"failed after {r.seconds:.1f} s: {(r.error or '').splitlines()[0] if r.error else ''}"
        note(f"{self._cell(r.index)} {what}; {self.done}/{self.to_train} done{eta}",
             progress=self.progress)


def _package_parent() -> str:
    return str(Path(__file__).resolve().parent.parent)


def _run_ray(
    root: Path,
    todo: Sequence[GridPoint],
    address: str | None,
    num_cpus: int | None,
    report: Callable[[PointResult], None],
) -> list[PointResult]:
    try:
        import ray
    except ImportError:
        raise ValueError("executor 'ray' needs Ray: pip install 'ray[default]'") from None
    started = False
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        if address in (None, "local"):
            kwargs["num_cpus"] = num_cpus if num_cpus is not None else (os.cpu_count() or 1)
        else:
            kwargs["address"] = address
        ray.init(**kwargs)
        started = True
    try:
        # Workers must import this package: put its source folder on their PYTHONPATH (works
        # whether or not it is pip-installed; a no-op cost for an installed package).
        path = os.pathsep.join(p for p in (_package_parent(), os.environ.get("PYTHONPATH", "")) if p)
        task = ray.remote(num_cpus=1, max_retries=0)(_execute_point).options(
            runtime_env={"env_vars": {"PYTHONPATH": path}}
        )
        t0 = time.perf_counter()
        refs = {task.remote(str(root), _config_values(p.config), False): p for p in todo}
        results: dict[int, PointResult] = {}
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            ref = ready[0]
            p = refs[ref]
            try:
                summary = ray.get(ref)
                res = PointResult(p.index, p.overrides, "trained", summary.get("run"), summary,
                                  time.perf_counter() - t0)
            except Exception as exc:
                res = PointResult(p.index, p.overrides, "failed", None, {}, time.perf_counter() - t0,
                                  f"{type(exc).__name__}: {exc}")
            report(res)
            results[p.index] = res
        return [results[p.index] for p in todo]
    finally:
        if started:
            ray.shutdown()


def run_sweep(
    sweep: SweepSpec | str | os.PathLike[str],
    root: str | os.PathLike[str],
    *,
    executor: str = "local",
    address: str | None = None,
    num_cpus: int | None = None,
    progress: bool = False,
    on_point: Callable[[PointResult], None] | None = None,
) -> SweepResult:
    """Run every grid point of a sweep into the run store at ``root``, skipping finished ones.

    All points are expanded and validated first (:func:`expand_grid`); then the points whose run
    is already ``"finished"`` in the store are skipped and the rest are trained by the executor.
    A point that fails is reported (status ``"failed"`` with its error) and does not stop the
    others.

    Args:
        sweep: a :class:`SweepSpec` or the path of a sweep file.
        root: run store directory (created if missing).
        executor: ``"local"`` (in-process) or ``"ray"`` (one Ray task per point).
        address: Ray cluster address; None or ``"local"`` starts a local cluster (ignored when
            Ray is already initialised, and by the local executor).
        num_cpus: CPUs of a local Ray cluster (default: all).
        progress: report progress on stderr (:mod:`landscape._progress`; silenced by ``--quiet``):
            a line per grid point as it starts and as it finishes (``"sweep: cell 3/12
            (layers=2) trained in 4.1 s -> run-…; 1 of 4 left, ETA 12 s"``), and the training
            progress of each point (a bar on a terminal, periodic lines otherwise; local executor).
        on_point: called with each :class:`PointResult` as it completes (skipped ones first).

    Returns:
        A :class:`SweepResult`.

    Raises:
        ValueError, TypeError: bad executor or sweep (before anything runs).
    """
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {list(EXECUTORS)}; got {executor!r}")
    if executor == "local" and address is not None:
        raise ValueError("address is only used by executor 'ray'")
    if num_cpus is not None and (isinstance(num_cpus, bool) or not isinstance(num_cpus, int) or num_cpus < 1):
        raise ValueError(f"num_cpus must be an int >= 1 or None; got {num_cpus!r}")
    spec = sweep if isinstance(sweep, SweepSpec) else load_sweep(sweep)
    points = expand_grid(spec)
    store_root = Path(root).expanduser().resolve()
    t0 = time.perf_counter()
    done = _finished_runs(store_root, points)
    cells = _CellProgress(spec.name, points, len(points) - len(done), progress)
    user_report = on_point or (lambda _r: None)

    def report(r: PointResult) -> None:
        cells.finished(r)
        user_report(r)

    results: dict[int, PointResult] = {}
    for p in points:
        if p.index in done:
            results[p.index] = PointResult(p.index, p.overrides, "skipped", done[p.index])
            report(results[p.index])
    todo = [p for p in points if p.index not in done]
    if todo:
        if executor == "local":
            ran = _run_local(store_root, todo, progress, report, cells.started)
        else:
            ran = _run_ray(store_root, todo, address, num_cpus, report)
        results.update((r.index, r) for r in ran)
    return SweepResult(
        name=spec.name,
        root=store_root,
        executor=executor,
        points=tuple(results[p.index] for p in points),
        seconds=time.perf_counter() - t0,
    )
