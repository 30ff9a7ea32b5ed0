r"""Embedded run store: SQLite (standard-library :mod:`sqlite3`) plus tensor files. No server.

A *run* is one configuration (a JSON-serialisable dict) trained over one or several seeds; it is
identified by :func:`config_hash`, the SHA-256 of the config's canonical JSON (sorted keys, no
whitespace, no NaN). One store holds many runs. Seed-parallel training writes per-seed metrics and
checkpoints here; sweeps, plots and reports read them back.

Layout on disk::

    root/
      store.sqlite                 the database (WAL mode: also store.sqlite-wal, store.sqlite-shm)
      tensors/
        run-000001/
          step-000000000100-<token>.pt     checkpoint files (torch.save)
          final-<token>.pt                 final weights
          .<name>.<host>.<pid>.<token>.tmp a file being written (removed on open if its writer died)

Schema (``PRAGMA user_version`` = :data:`SCHEMA_VERSION`)::

    runs(id INTEGER PRIMARY KEY, name TEXT UNIQUE, config_hash TEXT UNIQUE, config TEXT  -- canonical JSON,
         created_at REAL, updated_at REAL, status TEXT CHECK IN ('running','finished','failed','interrupted'))
    metrics(run_id, step INTEGER >= 0, seed INTEGER >= -1, key TEXT, value REAL  -- NULL encodes NaN,
            PRIMARY KEY (run_id, key, step, seed)) WITHOUT ROWID
    checkpoints(run_id, kind TEXT CHECK IN ('checkpoint','final'), step INTEGER  -- NULL allowed for final,
                file TEXT UNIQUE  -- relative to root, sha256 TEXT, nbytes INTEGER, created_at REAL)
        UNIQUE (run_id, step) WHERE kind = 'checkpoint';  UNIQUE (run_id) WHERE kind = 'final'
    artifacts(id INTEGER PRIMARY KEY, run_id, kind TEXT, path TEXT  -- relative to root when inside it,
              meta TEXT  -- JSON, created_at REAL, UNIQUE (run_id, path))
    results(run_id, key TEXT, value TEXT  -- JSON, updated_at REAL, PRIMARY KEY (run_id, key))

The metric primary key is the uniqueness constraint ``UNIQUE(run_id, step, seed, key)`` (column
order chosen so that reading one key is an index range scan); rows are written with
``INSERT OR REPLACE``, so replaying steps after a resume overwrites and never duplicates. A metric
logged as a scalar without seeds (shared by all seeds, e.g. a learning rate) is stored under the
seed :data:`SHARED_SEED` ``= -1``; a scalar logged with seeds is broadcast to each of them.

Consistency (after SQLite's atomic commit, https://www.sqlite.org/atomiccommit.html and
https://www.sqlite.org/wal.html):

* every write is one ``BEGIN IMMEDIATE`` … ``COMMIT`` transaction with ``synchronous=FULL``, so a
  process killed with SIGKILL leaves either all or none of it; ``busy_timeout`` makes concurrent
  writers (threads or processes) wait for each other instead of failing;
* a tensor file is written to a temporary file in its final folder, fsynced, then — while holding
  the database write lock — moved into place with :func:`os.replace` and recorded by a row in the
  same transaction. Hence a row never points to a missing file. A crash can leave only a temporary
  file or an unreferenced file; both are removed (under the write lock) when a store is opened and
  after each checkpoint. Temporary files of writers that are still alive are left alone;
* each file's SHA-256 is stored and checked on load.

Single host, local filesystem: SQLite's WAL mode does not work over network filesystems.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import operator
import os
import re
import secrets
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

__all__ = [
    "SCHEMA_VERSION",
    "SHARED_SEED",
    "STATUSES",
    "Artifact",
    "MetricRow",
    "MetricSeries",
    "Run",
    "RunStore",
    "config_hash",
]

SCHEMA_VERSION: int = 1
"""Version of the on-disk schema, stored in ``PRAGMA user_version``."""

STATUSES: tuple[str, ...] = ("running", "finished", "failed", "interrupted")
"""Accepted run statuses."""

SHARED_SEED: int = -1
"""Seed under which a scalar metric logged with ``seeds=None`` is stored (shared by all seeds)."""

_DB_NAME = "store.sqlite"
_TENSOR_DIR = "tensors"
_MAX_SEED = 2**63 - 1
_TMP_RE = re.compile(
    r"^\.(?P<target>.+)\.(?P<host>[A-Za-z0-9_-]+)\.(?P<pid>\d+)\.(?P<token>[0-9a-f]{16})\.tmp$"
)
_TENSOR_FILE_RE = re.compile(r"^(step-\d{12}|final)-[0-9a-f]{16}\.pt$")
_RUN_DIR_RE = re.compile(r"^run-\d{6,}$")

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS runs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT    NOT NULL UNIQUE,
    config_hash TEXT    NOT NULL UNIQUE,
    config      TEXT    NOT NULL,
    created_at  REAL    NOT NULL,
    updated_at  REAL    NOT NULL,
    status      TEXT    NOT NULL CHECK (status IN ({", ".join(repr(s) for s in STATUSES)}))
);
CREATE TABLE IF NOT EXISTS metrics (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    step   INTEGER NOT NULL CHECK (step >= 0),
    seed   INTEGER NOT NULL CHECK (seed >= {SHARED_SEED}),
    key    TEXT    NOT NULL,
    value  REAL,
    PRIMARY KEY (run_id, key, step, seed)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS checkpoints (
    run_id     INTEGER NOT NULL REFERENCES runs(id),
    kind       TEXT    NOT NULL CHECK (kind IN ('checkpoint', 'final')),
    step       INTEGER CHECK (step >= 0),
    file       TEXT    NOT NULL UNIQUE,
    sha256     TEXT    NOT NULL,
    nbytes     INTEGER NOT NULL,
    created_at REAL    NOT NULL,
    CHECK (kind = 'final' OR step IS NOT NULL)
);
CREATE UNIQUE INDEX IF NOT EXISTS checkpoints_step ON checkpoints(run_id, step)
    WHERE kind = 'checkpoint';
CREATE UNIQUE INDEX IF NOT EXISTS checkpoints_final ON checkpoints(run_id)
    WHERE kind = 'final';
CREATE TABLE IF NOT EXISTS artifacts (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id     INTEGER NOT NULL REFERENCES runs(id),
    kind       TEXT    NOT NULL,
    path       TEXT    NOT NULL,
    meta       TEXT    NOT NULL,
    created_at REAL    NOT NULL,
    UNIQUE (run_id, path)
);
CREATE TABLE IF NOT EXISTS results (
    run_id     INTEGER NOT NULL REFERENCES runs(id),
    key        TEXT    NOT NULL,
    value      TEXT    NOT NULL,
    updated_at REAL    NOT NULL,
    PRIMARY KEY (run_id, key)
);
"""


# ----------------------------------------------------------------------------------------------
# Public value types
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """One run of a store, as read at the time of the call.

    Attributes:
        id: integer id, unique within the store.
        name: unique human-readable name.
        config: the config as stored (canonical JSON decoded: tuples come back as lists).
        config_hash: :func:`config_hash` of ``config``.
        created_at: creation time, seconds since the Unix epoch.
        status: one of :data:`STATUSES`.
    """

    id: int
    name: str
    config: dict[str, Any] = field(hash=False)
    config_hash: str
    created_at: float
    status: str


@dataclass(frozen=True)
class MetricSeries:
    """One metric of one run as a dense (step × seed) table.

    Attributes:
        key: the metric name.
        steps: int64 array ``(n_steps,)``, increasing.
        seeds: int64 array ``(n_seeds,)``, increasing (:data:`SHARED_SEED` for a shared scalar).
        values: float64 array ``(n_steps, n_seeds)``; ``values[i, j]`` is the value at
            ``steps[i]`` for ``seeds[j]``, NaN where nothing (or NaN) was logged.
    """

    key: str
    steps: np.ndarray
    seeds: np.ndarray
    values: np.ndarray


class MetricRow(NamedTuple):
    """One row of the long metric table."""

    step: int
    seed: int
    key: str
    value: float


@dataclass(frozen=True)
class Artifact:
    """A file (figure, report, table) attached to a run.

    Attributes:
        kind: free-form category, e.g. ``"figure"`` or ``"report"``.
        path: absolute path of the file.
        meta: JSON metadata given to :meth:`RunStore.add_artifact`.
        created_at: registration time, seconds since the Unix epoch.
    """

    kind: str
    path: Path
    meta: dict[str, Any] = field(hash=False)
    created_at: float


# ----------------------------------------------------------------------------------------------
# Config hashing and validation helpers
# ----------------------------------------------------------------------------------------------


def _fmt_path(path: str, key: object) -> str:
    return f"{path}[{key!r}]"


def _check_json(obj: object, path: str, *, allow_nan: bool) -> None:
    """Raise TypeError/ValueError naming the first non-JSON-serialisable entry under ``path``."""
    if obj is None or isinstance(obj, (bool, int, str)):
        return
    if isinstance(obj, float):
        if not allow_nan and not math.isfinite(obj):
            raise ValueError(f"{path} = {obj!r} is not finite; canonical JSON has no NaN/inf")
        return
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            if not isinstance(k, str):
                raise TypeError(
                    f"{path} has key {k!r} of type {type(k).__name__}; JSON object keys must be str"
                )
            _check_json(v, _fmt_path(path, k), allow_nan=allow_nan)
        return
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_json(v, f"{path}[{i}]", allow_nan=allow_nan)
        return
    raise TypeError(
        f"{path} has type {type(obj).__name__}, which is not JSON-serialisable; accepted: "
        "dict with str keys, list, tuple, str, int, float, bool, None"
    )


def _canonical_json(config: Mapping[str, Any]) -> str:
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a dict, got {type(config).__name__}")
    _check_json(config, "config", allow_nan=False)
    return json.dumps(
        config, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def config_hash(config: Mapping[str, Any]) -> str:
    r"""Stable identifier of a run config.

    ``sha256(canonical_json(config))`` as 64 hex digits, where the canonical JSON has sorted keys,
    separators ``","``/``":"``, UTF-8 text and no NaN/inf. Key order and tuple-vs-list do not
    change the hash; any value change does.

    Args:
        config: dict with str keys whose values are dicts, lists, tuples, str, int, float
            (finite), bool or None.

    Returns:
        The lowercase hex SHA-256 digest.

    Raises:
        TypeError: if ``config`` (or a nested entry, named in the message) is not JSON-serialisable
            or has a non-str key.
        ValueError: if a float entry is NaN or infinite (named in the message).
    """
    return hashlib.sha256(_canonical_json(config).encode("utf-8")).hexdigest()


def _check_step(step: object) -> int:
    if isinstance(step, bool):
        raise TypeError("step must be an int, got bool")
    try:
        s = operator.index(step)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"step must be an int, got {type(step).__name__}") from None
    if s < 0:
        raise ValueError(f"step must be >= 0, got {s}")
    return s


def _check_name(what: str, value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, got {type(value).__name__}")
    if not value:
        raise ValueError(f"{what} must be a non-empty str")
    return value


def _to_jsonable(obj: object, path: str) -> object:
    """Convert numpy/torch values to plain Python (lists, floats) for JSON results."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().tolist()
    if isinstance(obj, (np.ndarray, np.generic)):
        return obj.tolist()
    if isinstance(obj, Mapping):
        return {k: _to_jsonable(v, _fmt_path(path, k)) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_jsonable(v, f"{path}[{i}]") for i, v in enumerate(obj)]
    return obj


def _metric_array(key: str, value: object) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        if value.is_complex():
            raise TypeError(f"metric {key!r} is complex; metrics are real scalars per seed")
        arr = value.detach().to(device="cpu", dtype=torch.float64).numpy()
    elif isinstance(value, (np.ndarray, np.generic, float, int)) and not isinstance(value, str):
        raw = np.asarray(value)
        if raw.dtype.kind not in "biuf":
            raise TypeError(f"metric {key!r} has dtype {raw.dtype}; accepted: real numbers")
        arr = raw.astype(np.float64)
    else:
        raise TypeError(
            f"metric {key!r} has type {type(value).__name__}; accepted: torch.Tensor, "
            "numpy.ndarray, float, int (a scalar or a vector over seeds)"
        )
    if arr.ndim > 1:
        raise ValueError(
            f"metric {key!r} has shape {tuple(arr.shape)}; accepted: a scalar or a vector over seeds"
        )
    return arr


def _check_seeds(seeds: Sequence[int] | torch.Tensor | np.ndarray | None) -> list[int] | None:
    if seeds is None:
        return None
    if isinstance(seeds, (torch.Tensor, np.ndarray)):
        seeds = seeds.tolist()
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Sequence):
        raise TypeError(f"seeds must be a sequence of ints or None, got {type(seeds).__name__}")
    out: list[int] = []
    for s in seeds:
        if isinstance(s, bool):
            raise TypeError("seeds must be ints, got bool")
        try:
            i = operator.index(s)
        except TypeError:
            raise TypeError(f"seeds must be ints, got {type(s).__name__}") from None
        if not 0 <= i <= _MAX_SEED:
            raise ValueError(f"seed {i} out of range; accepted: 0 <= seed <= 2**63 - 1")
        out.append(i)
    if len(set(out)) != len(out):
        raise ValueError(f"seeds must be distinct, got {out}")
    if not out:
        raise ValueError("seeds must be non-empty (or None)")
    return out


def _prepare_state(obj: object, path: str) -> object:
    """Validate a checkpoint state and return a copy with tensors detached on the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu").clone()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, Mapping):
        out: dict[object, object] = {}
        for k, v in obj.items():
            if not isinstance(k, (str, int)) or isinstance(k, bool):
                raise TypeError(f"{path} has key {k!r}; accepted keys: str, int")
            out[k] = _prepare_state(v, _fmt_path(path, k))
        return out
    if isinstance(obj, list):
        return [_prepare_state(v, f"{path}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, tuple):
        return tuple(_prepare_state(v, f"{path}[{i}]") for i, v in enumerate(obj))
    raise TypeError(
        f"{path} has type {type(obj).__name__}; accepted in a checkpoint state: torch.Tensor, "
        "dict, list, tuple, int, float, bool, str, None (convert arrays with torch.as_tensor)"
    )


def _host_tag() -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:64] or "host"


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (conservatively True when unsure)."""
    if os.name != "posix" or pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fsync_dir(path: Path) -> None:
    if os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------------------------
# The store
# ----------------------------------------------------------------------------------------------


class RunStore:
    """An embedded store of runs: configs, per-seed metrics, checkpoints, artifacts, results.

    Open it as a context manager (``with RunStore(root) as store: ...``); the store is also open
    right after construction and closed by :meth:`close`. One instance may be shared by threads;
    processes each open their own instance (not across ``fork``). See the module docstring for
    the schema and the consistency guarantees.

    Args:
        root: the run directory; created (with parents) if missing.
        keep_checkpoints: how many step checkpoints to keep per run (the highest steps); older
            ones are deleted when a new one is saved. Final weights are kept separately.
        timeout: seconds a writer waits for another writer's lock (SQLite ``busy_timeout``).

    Raises:
        ValueError: if ``root`` (or ``root/tensors``) exists and is not a directory, if
            ``root/store.sqlite`` is not a run store or has a newer schema, or if
            ``keep_checkpoints < 1`` or ``timeout <= 0``.
        TypeError: if ``keep_checkpoints`` is not an int.
    """

    def __init__(
        self, root: str | os.PathLike[str], *, keep_checkpoints: int = 2, timeout: float = 30.0
    ) -> None:
        if isinstance(keep_checkpoints, bool) or not isinstance(keep_checkpoints, int):
            raise TypeError(f"keep_checkpoints must be an int, got {type(keep_checkpoints).__name__}")
        if keep_checkpoints < 1:
            raise ValueError(f"keep_checkpoints must be >= 1, got {keep_checkpoints}")
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        self.root = Path(root).expanduser().resolve()
        self.keep_checkpoints = keep_checkpoints
        self._timeout = float(timeout)
        self._lock = threading.RLock()
        self._pid = os.getpid()
        self._host = _host_tag()
        self._conn: sqlite3.Connection | None = None

        if self.root.exists() and not self.root.is_dir():
            raise ValueError(f"run store root {self.root} exists and is not a directory")
        self.root.mkdir(parents=True, exist_ok=True)
        tensors = self.root / _TENSOR_DIR
        if tensors.exists() and not tensors.is_dir():
            raise ValueError(f"{tensors} exists and is not a directory")
        tensors.mkdir(exist_ok=True)
        db = self.root / _DB_NAME
        if db.exists() and not db.is_file():
            raise ValueError(f"{db} exists and is not a file")

        conn = sqlite3.connect(
            db, timeout=self._timeout, isolation_level=None, check_same_thread=False
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self._timeout * 1000)}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise ValueError(
                    f"could not put {db} in WAL mode (got {mode!r}); use a local filesystem"
                )
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
            self._conn = conn
            with self._write() as c:
                version = c.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise ValueError(
                        f"{db} has schema version {version}; this code reads up to {SCHEMA_VERSION}"
                    )
                for stmt in _SCHEMA.split(";"):
                    if stmt.strip():
                        c.execute(stmt)
                c.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            self._collect_garbage(None)
        except sqlite3.DatabaseError as exc:
            self._conn = None
            conn.close()
            raise ValueError(f"{db} is not a usable run store: {exc}") from exc
        except BaseException:
            self._conn = None
            conn.close()
            raise

    # -- lifecycle ------------------------------------------------------------------------------

    def __enter__(self) -> RunStore:
        self._connection()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the database connection (idempotent)."""
        with self._lock:
            if self._conn is not None:
                conn, self._conn = self._conn, None
                if os.getpid() == self._pid:
                    conn.close()

    def __repr__(self) -> str:
        state = "open" if self._conn is not None else "closed"
        return f"RunStore({str(self.root)!r}, {state})"

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError(f"run store {self.root} is closed")
        if os.getpid() != self._pid:
            raise RuntimeError(
                "a RunStore cannot be used across fork(); open a new RunStore in each process"
            )
        return self._conn

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` … ``COMMIT`` transaction holding the database write lock."""
        with self._lock:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _query(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._connection().execute(sql, params).fetchall()

    # -- runs -----------------------------------------------------------------------------------

    @staticmethod
    def _row_to_run(row: tuple[Any, ...]) -> Run:
        rid, name, chash, config, created, status = row
        return Run(int(rid), name, json.loads(config), chash, float(created), status)

    _RUN_COLS = "id, name, config_hash, config, created_at, status"

    def create_run(
        self, config: Mapping[str, Any], name: str | None = None, *, exist_ok: bool = True
    ) -> Run:
        """Create the run of ``config``, or return it if it already exists (resume).

        Args:
            config: JSON-serialisable dict (see :func:`config_hash`).
            name: unique run name; default ``"run-" + config_hash[:12]``. For an existing config
                it must be ``None`` or the stored name.
            exist_ok: if False, an already stored config is an error.

        Returns:
            The new or existing :class:`Run` (a new run has status ``"running"``).

        Raises:
            TypeError: if the config is not JSON-serialisable (the message names the entry) or
                ``name`` is not a str.
            ValueError: if ``name`` is used by a run with another config (both hashes are named),
                if the config is stored under another name, or if it exists and not ``exist_ok``.
        """
        text = _canonical_json(config)
        chash = hashlib.sha256(text.encode("utf-8")).hexdigest()
        if name is not None:
            _check_name("name", name)
        with self._write() as c:
            row = c.execute(
                f"SELECT {self._RUN_COLS} FROM runs WHERE config_hash = ?", (chash,)
            ).fetchone()
            if row is not None:
                run = self._row_to_run(row)
                if not exist_ok:
                    raise ValueError(
                        f"run {run.name!r} with config hash {chash} already exists "
                        "(pass exist_ok=True to resume it)"
                    )
                if name is not None and name != run.name:
                    raise ValueError(
                        f"config hash {chash} is already stored as run {run.name!r}, not {name!r}; "
                        f"pass name={run.name!r} or name=None to resume it"
                    )
                return run
            run_name = name if name is not None else f"run-{chash[:12]}"
            other = c.execute(
                "SELECT config_hash FROM runs WHERE name = ?", (run_name,)
            ).fetchone()
            if other is not None:
                raise ValueError(
                    f"run name {run_name!r} in {self.root} holds another config: stored hash "
                    f"{other[0]}, given hash {chash}; choose another name or root"
                )
            now = time.time()
            cur = c.execute(
                "INSERT INTO runs (name, config_hash, config, created_at, updated_at, status) "
                "VALUES (?, ?, ?, ?, ?, 'running')",
                (run_name, chash, text, now, now),
            )
            rid = cur.lastrowid
        assert rid is not None
        return Run(int(rid), run_name, json.loads(text), chash, now, "running")

    def get_run(self, name_or_id: str | int) -> Run:
        """The run with this name (str) or id (int).

        Raises:
            ValueError: if no such run exists (the message lists known names).
            TypeError: if ``name_or_id`` is neither str nor int.
        """
        if isinstance(name_or_id, str):
            rows = self._query(f"SELECT {self._RUN_COLS} FROM runs WHERE name = ?", (name_or_id,))
        elif isinstance(name_or_id, int) and not isinstance(name_or_id, bool):
            rows = self._query(f"SELECT {self._RUN_COLS} FROM runs WHERE id = ?", (name_or_id,))
        else:
            raise TypeError(
                f"run must be a Run, a name (str) or an id (int), got {type(name_or_id).__name__}"
            )
        if not rows:
            names = [r[0] for r in self._query("SELECT name FROM runs ORDER BY id LIMIT 21")]
            shown = ", ".join(map(repr, names[:20])) + (", ..." if len(names) > 20 else "")
            raise ValueError(f"unknown run {name_or_id!r} in {self.root}; known runs: [{shown}]")
        return self._row_to_run(rows[0])

    def list_runs(self) -> list[Run]:
        """All runs, in creation order."""
        return [
            self._row_to_run(r) for r in self._query(f"SELECT {self._RUN_COLS} FROM runs ORDER BY id")
        ]

    def set_status(self, run: Run | str | int, status: str) -> Run:
        """Set a run's status.

        Args:
            run: the run, its name or its id.
            status: one of :data:`STATUSES`.

        Returns:
            The updated :class:`Run`.

        Raises:
            ValueError: for an unknown run or status.
        """
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}; accepted: {list(STATUSES)}")
        r = self._resolve(run)
        with self._write() as c:
            c.execute(
                "UPDATE runs SET status = ?, updated_at = ? WHERE id = ?", (status, time.time(), r.id)
            )
        return Run(r.id, r.name, r.config, r.config_hash, r.created_at, status)

    def _resolve(self, run: Run | str | int) -> Run:
        if isinstance(run, Run):
            stored = self.get_run(run.id)
            if stored.config_hash != run.config_hash:
                raise ValueError(
                    f"run {run.name!r} (hash {run.config_hash}) does not belong to the store at "
                    f"{self.root} (its run id {run.id} has hash {stored.config_hash})"
                )
            return stored
        return self.get_run(run)

    # -- metrics --------------------------------------------------------------------------------

    def log_metrics(
        self,
        run: Run | str | int,
        step: int,
        metrics: Mapping[str, torch.Tensor | np.ndarray | float],
        seeds: Sequence[int] | None = None,
    ) -> None:
        """Record per-seed scalar metrics at ``step`` (one transaction; replays overwrite).

        Each value is either a vector over seeds (``value[j]`` belongs to ``seeds[j]``; with
        ``seeds=None`` the seeds are ``0, …, S-1``) or a scalar (broadcast to every given seed, or
        stored once under :data:`SHARED_SEED` when ``seeds=None``). NaN is stored and read back
        as NaN.

        Args:
            run: the run, its name or its id.
            step: training step, ``>= 0``.
            metrics: metric name ↦ tensor/array/float.
            seeds: the seed of each vector entry: distinct ints in ``[0, 2**63)``.

        Raises:
            ValueError: negative step, vector length not matching ``seeds``, an array of more than
                one dimension, bad seeds, unknown run.
            TypeError: non-numeric values, non-int step or seeds, non-str keys.
        """
        r = self._resolve(run)
        step = _check_step(step)
        seed_list = _check_seeds(seeds)
        if not isinstance(metrics, Mapping):
            raise TypeError(f"metrics must be a mapping name -> value, got {type(metrics).__name__}")
        rows: list[tuple[int, int, int, str, float | None]] = []
        for key, value in metrics.items():
            _check_name("metric key", key)
            arr = _metric_array(key, value)
            if arr.ndim == 0:
                # A scalar is broadcast over the given seeds, or shared by all seeds.
                keyed_seeds = [SHARED_SEED] if seed_list is None else seed_list
                arr = np.full(len(keyed_seeds), float(arr))
            else:
                keyed_seeds = list(range(arr.shape[0])) if seed_list is None else seed_list
                if arr.shape[0] != len(keyed_seeds):
                    raise ValueError(
                        f"metric {key!r} has {arr.shape[0]} entries but {len(keyed_seeds)} seeds "
                        "were given; one entry per seed is required"
                    )
            for s, v in zip(keyed_seeds, arr.tolist()):
                rows.append((r.id, step, s, key, None if math.isnan(v) else v))
        if not rows:
            return
        with self._write() as c:
            c.executemany(
                "INSERT OR REPLACE INTO metrics (run_id, step, seed, key, value) VALUES (?, ?, ?, ?, ?)",
                rows,
            )

    def _metric_rows(self, run: Run | str | int, key: str | None) -> list[tuple[Any, ...]]:
        r = self._resolve(run)
        if key is None:
            return self._query(
                "SELECT key, step, seed, value FROM metrics WHERE run_id = ? ORDER BY key, step, seed",
                (r.id,),
            )
        _check_name("metric key", key)
        rows = self._query(
            "SELECT key, step, seed, value FROM metrics WHERE run_id = ? AND key = ? "
            "ORDER BY step, seed",
            (r.id, key),
        )
        if not rows:
            known = [
                k for (k,) in self._query(
                    "SELECT DISTINCT key FROM metrics WHERE run_id = ? ORDER BY key", (r.id,)
                )
            ]
            raise ValueError(f"run {r.name!r} has no metric {key!r}; logged metrics: {known}")
        return rows

    def metrics(self, run: Run | str | int, key: str | None = None) -> dict[str, MetricSeries]:
        """Metrics of a run as dense (step × seed) tables.

        Args:
            run: the run, its name or its id.
            key: one metric name, or None for all.

        Returns:
            ``{key: MetricSeries}`` sorted by key (a single entry when ``key`` is given; empty when
            nothing was logged and ``key`` is None).

        Raises:
            ValueError: unknown run, or ``key`` never logged for this run (known keys are listed).
        """
        rows = self._metric_rows(run, key)
        out: dict[str, MetricSeries] = {}
        start = 0
        while start < len(rows):
            k = rows[start][0]
            stop = start
            while stop < len(rows) and rows[stop][0] == k:
                stop += 1
            block = rows[start:stop]
            step_col = np.fromiter((b[1] for b in block), dtype=np.int64, count=len(block))
            seed_col = np.fromiter((b[2] for b in block), dtype=np.int64, count=len(block))
            val_col = np.fromiter(
                (np.nan if b[3] is None else b[3] for b in block), dtype=np.float64, count=len(block)
            )
            steps, si = np.unique(step_col, return_inverse=True)
            seeds, sj = np.unique(seed_col, return_inverse=True)
            values = np.full((steps.size, seeds.size), np.nan, dtype=np.float64)
            values[si, sj] = val_col
            out[k] = MetricSeries(k, steps, seeds, values)
            start = stop
        return out

    def metrics_long(self, run: Run | str | int, key: str | None = None) -> list[MetricRow]:
        """Metrics of a run in long format, sorted by (key, step, seed); NaN for NULL.

        Raises:
            ValueError: as :meth:`metrics`.
        """
        return [
            MetricRow(int(st), int(se), k, math.nan if v is None else float(v))
            for k, st, se, v in self._metric_rows(run, key)
        ]

    # -- tensor files ---------------------------------------------------------------------------

    def _run_dir(self, run_id: int) -> Path:
        return self.root / _TENSOR_DIR / f"run-{run_id:06d}"

    def _commit_file(
        self, run_id: int, kind: str, step: int | None, stem: str, state: Mapping[str, Any]
    ) -> None:
        """Write ``state`` atomically, then record it (file first, row second, under one lock)."""
        if not isinstance(state, Mapping):
            raise TypeError(f"state must be a dict, got {type(state).__name__}")
        for k in state:
            if not isinstance(k, str):
                raise TypeError(f"state has key {k!r}; top-level keys must be str")
        prepared = _prepare_state(state, "state")
        buf = io.BytesIO()
        torch.save(prepared, buf)
        payload = buf.getvalue()
        digest = hashlib.sha256(payload).hexdigest()

        folder = self._run_dir(run_id)
        folder.mkdir(parents=True, exist_ok=True)
        token = secrets.token_hex(8)
        target = folder / f"{stem}-{token}.pt"
        tmp = folder / f".{target.name}.{self._host}.{os.getpid()}.{secrets.token_hex(8)}.tmp"
        rel = target.relative_to(self.root).as_posix()
        try:
            with open(tmp, "xb") as f:
                f.write(payload)
                f.flush()
                os.fsync(f.fileno())
            with self._write() as c:
                os.replace(tmp, target)
                _fsync_dir(folder)
                if kind == "final":
                    c.execute("DELETE FROM checkpoints WHERE run_id = ? AND kind = 'final'", (run_id,))
                else:
                    c.execute(
                        "DELETE FROM checkpoints WHERE run_id = ? AND kind = 'checkpoint' AND step = ?",
                        (run_id, step),
                    )
                c.execute(
                    "INSERT INTO checkpoints (run_id, kind, step, file, sha256, nbytes, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (run_id, kind, step, rel, digest, len(payload), time.time()),
                )
                if kind == "checkpoint":
                    c.execute(
                        "DELETE FROM checkpoints WHERE run_id = ? AND kind = 'checkpoint' AND step "
                        "NOT IN (SELECT step FROM checkpoints WHERE run_id = ? AND kind = 'checkpoint' "
                        "ORDER BY step DESC LIMIT ?)",
                        (run_id, run_id, self.keep_checkpoints),
                    )
        finally:
            tmp.unlink(missing_ok=True)
        self._collect_garbage(run_id)

    def _collect_garbage(self, run_id: int | None) -> None:
        """Remove dead writers' temp files and unreferenced tensor files (under the write lock)."""
        base = self.root / _TENSOR_DIR
        folders = (
            [self._run_dir(run_id)]
            if run_id is not None
            else [p for p in base.iterdir() if p.is_dir() and _RUN_DIR_RE.match(p.name)]
        )
        with self._write() as c:
            referenced = {f for (f,) in c.execute("SELECT file FROM checkpoints")}
            for folder in folders:
                if not folder.is_dir():
                    continue
                for entry in folder.iterdir():
                    name = entry.name
                    m = _TMP_RE.match(name)
                    if m is not None:
                        if m["host"] == self._host and not _pid_alive(int(m["pid"])):
                            entry.unlink(missing_ok=True)
                    elif _TENSOR_FILE_RE.match(name):
                        if entry.relative_to(self.root).as_posix() not in referenced:
                            entry.unlink(missing_ok=True)

    def _load_file(
        self, run: Run, kind: str, step: int | None, map_location: str | torch.device | None
    ) -> dict[str, Any] | None:
        """Load the file of a checkpoint row; None if the row does not exist."""
        if kind == "final":
            sql = "SELECT file, sha256 FROM checkpoints WHERE run_id = ? AND kind = 'final'"
            params: tuple[object, ...] = (run.id,)
        else:
            sql = (
                "SELECT file, sha256 FROM checkpoints WHERE run_id = ? AND kind = 'checkpoint' "
                "AND step = ?"
            )
            params = (run.id, step)
        for _ in range(5):
            rows = self._query(sql, params)
            if not rows:
                return None
            rel, digest = rows[0]
            try:
                payload = (self.root / rel).read_bytes()
            except FileNotFoundError:
                # Replaced by a concurrent writer between the query and the read: look again.
                if self._query(sql, params) == rows:
                    raise RuntimeError(
                        f"run store {self.root} is inconsistent: {kind} row of run {run.name!r} "
                        f"points to missing file {rel}"
                    ) from None
                continue
            if hashlib.sha256(payload).hexdigest() != digest:
                raise RuntimeError(f"tensor file {self.root / rel} is corrupt (SHA-256 mismatch)")
            state = torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)
            return state  # type: ignore[no-any-return]
        raise RuntimeError(f"could not read the {kind} of run {run.name!r}: it kept changing")

    # -- checkpoints ----------------------------------------------------------------------------

    def save_checkpoint(self, run: Run | str | int, step: int, state: Mapping[str, Any]) -> None:
        """Save a training checkpoint atomically; keep only the last ``keep_checkpoints``.

        Tensors are stored detached on the CPU with :func:`torch.save`, bit-exactly. Saving the
        same step again replaces it. "Last" means the highest steps.

        Args:
            run: the run, its name or its id.
            step: training step, ``>= 0``.
            state: dict with str keys of tensors, nested dicts (str/int keys), lists, tuples,
                int, float, bool, str, None (e.g. a generator state ``g.get_state()``).

        Raises:
            ValueError: negative step, unknown run.
            TypeError: a state entry of another type (the message names it).
        """
        r = self._resolve(run)
        s = _check_step(step)
        self._commit_file(r.id, "checkpoint", s, f"step-{s:012d}", state)

    def checkpoints(self, run: Run | str | int) -> list[int]:
        """Steps of the stored checkpoints of a run, increasing."""
        r = self._resolve(run)
        return [
            int(s)
            for (s,) in self._query(
                "SELECT step FROM checkpoints WHERE run_id = ? AND kind = 'checkpoint' ORDER BY step",
                (r.id,),
            )
        ]

    def latest_checkpoint(
        self, run: Run | str | int, *, map_location: str | torch.device | None = "cpu"
    ) -> tuple[int, dict[str, Any]] | None:
        """The checkpoint with the highest step, as ``(step, state)``, or None if there is none.

        Args:
            run: the run, its name or its id.
            map_location: passed to :func:`torch.load` (tensors come back on the CPU by default).

        Raises:
            ValueError: unknown run.
            RuntimeError: the file is corrupt or missing (external tampering).
        """
        r = self._resolve(run)
        for _ in range(5):
            steps = self.checkpoints(r)
            if not steps:
                return None
            state = self._load_file(r, "checkpoint", steps[-1], map_location)
            if state is not None:
                return steps[-1], state
        raise RuntimeError(f"could not read the latest checkpoint of run {r.name!r}: it kept changing")

    def load_checkpoint(
        self, run: Run | str | int, step: int, *, map_location: str | torch.device | None = "cpu"
    ) -> dict[str, Any]:
        """The state saved at ``step``.

        Raises:
            ValueError: unknown run, negative step, or no checkpoint at ``step`` (stored steps
                are listed).
            RuntimeError: the file is corrupt or missing (external tampering).
        """
        r = self._resolve(run)
        s = _check_step(step)
        state = self._load_file(r, "checkpoint", s, map_location)
        if state is None:
            raise ValueError(
                f"run {r.name!r} has no checkpoint at step {s}; stored steps: {self.checkpoints(r)}"
            )
        return state

    def save_final(
        self, run: Run | str | int, state: Mapping[str, Any], *, step: int | None = None
    ) -> None:
        """Save the final weights of a run (replacing earlier final weights; never pruned).

        Args:
            run: the run, its name or its id.
            state: as in :meth:`save_checkpoint`.
            step: optional step at which training ended (recorded only).

        Raises:
            ValueError, TypeError: as :meth:`save_checkpoint`.
        """
        r = self._resolve(run)
        s = None if step is None else _check_step(step)
        self._commit_file(r.id, "final", s, "final", state)

    def load_final(
        self, run: Run | str | int, *, map_location: str | torch.device | None = "cpu"
    ) -> dict[str, Any]:
        """The final weights saved by :meth:`save_final`.

        Raises:
            ValueError: unknown run, or no final weights saved.
            RuntimeError: the file is corrupt or missing (external tampering).
        """
        r = self._resolve(run)
        state = self._load_file(r, "final", None, map_location)
        if state is None:
            raise ValueError(f"run {r.name!r} has no final weights; save them with save_final")
        return state

    # -- artifacts ------------------------------------------------------------------------------

    def add_artifact(
        self,
        run: Run | str | int,
        kind: str,
        path: str | os.PathLike[str],
        meta: Mapping[str, Any] | None = None,
    ) -> Artifact:
        """Attach an existing file (figure, report, table) to a run; re-adding a path updates it.

        Paths inside the store root are recorded relative to it, so the store can be moved.

        Args:
            run: the run, its name or its id.
            kind: category, e.g. ``"figure"``.
            path: the file.
            meta: JSON-serialisable metadata.

        Returns:
            The recorded :class:`Artifact`.

        Raises:
            ValueError: unknown run, empty kind, or ``path`` is not an existing file.
            TypeError: non-JSON-serialisable ``meta`` (the entry is named).
        """
        r = self._resolve(run)
        _check_name("artifact kind", kind)
        p = Path(path).expanduser().resolve()
        if not p.is_file():
            raise ValueError(f"artifact path {p} is not an existing file")
        meta_dict = dict(meta) if meta is not None else {}
        _check_json(meta_dict, "meta", allow_nan=True)
        try:
            stored = p.relative_to(self.root).as_posix()
        except ValueError:
            stored = str(p)
        now = time.time()
        with self._write() as c:
            c.execute(
                "INSERT INTO artifacts (run_id, kind, path, meta, created_at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (run_id, path) DO UPDATE SET kind = excluded.kind, "
                "meta = excluded.meta, created_at = excluded.created_at",
                (r.id, kind, stored, json.dumps(meta_dict, sort_keys=True), now),
            )
        return Artifact(kind, p, json.loads(json.dumps(meta_dict)), now)

    def artifacts(self, run: Run | str | int, kind: str | None = None) -> list[Artifact]:
        """Artifacts of a run (optionally of one kind), in registration order."""
        r = self._resolve(run)
        sql = "SELECT kind, path, meta, created_at FROM artifacts WHERE run_id = ?"
        params: tuple[object, ...] = (r.id,)
        if kind is not None:
            sql += " AND kind = ?"
            params = (r.id, kind)
        rows = self._query(sql + " ORDER BY id", params)
        return [Artifact(k, self.root / p, json.loads(m), float(t)) for k, p, m, t in rows]

    # -- results --------------------------------------------------------------------------------

    def log_result(self, run: Run | str | int, key: str, value: object) -> None:
        """Record a summary result (JSON; re-logging a key replaces it).

        Args:
            run: the run, its name or its id.
            key: result name.
            value: float, int, str, bool, None, or lists/dicts of them; numpy values and tensors
                are converted with ``tolist()``. NaN/inf are kept.

        Raises:
            ValueError: unknown run, empty key.
            TypeError: a non-JSON-serialisable value (the entry is named).
        """
        r = self._resolve(run)
        _check_name("result key", key)
        plain = _to_jsonable(value, "value")
        _check_json(plain, "value", allow_nan=True)
        with self._write() as c:
            c.execute(
                "INSERT OR REPLACE INTO results (run_id, key, value, updated_at) VALUES (?, ?, ?, ?)",
                (r.id, key, json.dumps(plain), time.time()),
            )

    def results(self, run: Run | str | int) -> dict[str, Any]:
        """All summary results of a run, ``{key: value}`` sorted by key."""
        r = self._resolve(run)
        rows = self._query("SELECT key, value FROM results WHERE run_id = ? ORDER BY key", (r.id,))
        return {k: json.loads(v) for k, v in rows}
