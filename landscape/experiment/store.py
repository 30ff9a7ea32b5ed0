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
          writer.lock                      held (fcntl.flock) by the process training this run
          .<name>.<host>.<pid>.<token>.tmp a file being written

Schema (``PRAGMA application_id`` = :data:`APPLICATION_ID`, ``PRAGMA user_version`` =
:data:`SCHEMA_VERSION`)::

    runs(id INTEGER PRIMARY KEY, name TEXT UNIQUE, config_hash TEXT UNIQUE, config TEXT  -- canonical JSON,
         created_at REAL, updated_at REAL, status TEXT CHECK IN ('running','finished','failed','interrupted'),
         reason TEXT  -- why a run failed or was interrupted, NULL otherwise)
    metrics(run_id, step INTEGER >= 0, seed INTEGER >= -1, key TEXT, value REAL  -- NULL encodes NaN,
            PRIMARY KEY (run_id, key, step, seed)) WITHOUT ROWID
    checkpoints(run_id, kind TEXT CHECK IN ('checkpoint','final'), step INTEGER  -- NULL allowed for final,
                file TEXT UNIQUE  -- relative to root, sha256 TEXT, nbytes INTEGER, created_at REAL)
        UNIQUE (run_id, step) WHERE kind = 'checkpoint';  UNIQUE (run_id) WHERE kind = 'final'
    artifacts(id INTEGER PRIMARY KEY, run_id, kind TEXT, path TEXT  -- relative to root when inside it,
              meta TEXT  -- JSON, created_at REAL, UNIQUE (run_id, path))
    results(run_id, key TEXT, value TEXT  -- JSON, updated_at REAL, PRIMARY KEY (run_id, key))
    trash(file TEXT PRIMARY KEY, created_at REAL)  -- retired tensor files still to be unlinked

Version 1 stores (no ``application_id``, no ``reason`` column, no ``trash`` table) open read-only
as they are and are upgraded in place when opened writable. A database that is neither is refused
before anything in it is changed.

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
* a tensor file is written to a temporary file named after its writer (host, pid) and fsynced; its
  row is committed; then it is moved into place with :func:`os.replace`. A writer killed before
  the commit leaves a temporary file that nothing references: it is removed (under the write lock,
  once its writer is dead) when the store is opened writable or a checkpoint is saved. A writer
  killed between the commit and the rename leaves a row whose content is the temporary file: it is
  read from there, and the rename is completed on the next writable open;
* a checkpoint retired by ``keep_checkpoints`` (or replaced) moves from ``checkpoints`` to
  ``trash`` in the transaction that retires it, and its file is unlinked after the commit (or,
  after a crash, by the next writer or writable open). Hence
  every tensor file with a final name is listed in ``checkpoints`` or ``trash``, and a tensor file
  listed in neither means the database lost rows (e.g. it was copied without its ``-wal`` file):
  opening such a store raises :class:`StoreError` and changes nothing;
  :func:`repair_store` (``landscape store repair``) re-indexes those files. No file is ever
  deleted merely because the database does not list it;
* each tensor file carries its run (id, name, config), its kind and step next to the state, so
  that it describes itself; its SHA-256 is stored and checked on load;
* ``PRAGMA quick_check`` runs on open: a damaged database is reported, not read;
* read-only opening (``read_only=True``: ``mode=ro`` URI and ``PRAGMA query_only``) changes
  nothing on disk: no schema, no journal mode, no garbage collection.

Single host, local filesystem: SQLite's WAL mode does not work over network filesystems.
"""

from __future__ import annotations

import contextlib
import errno
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
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from landscape._checks import check_int

__all__ = [
    "APPLICATION_ID",
    "SCHEMA_VERSION",
    "SHARED_SEED",
    "STATUSES",
    "Artifact",
    "MetricRow",
    "CheckpointScan",
    "MetricSeries",
    "RepairReport",
    "Run",
    "RunStore",
    "StoreError",
    "config_hash",
    "repair_store",
]

SCHEMA_VERSION: int = 2
"""Version of the on-disk schema, stored in ``PRAGMA user_version`` (1: before ``reason``/``trash``)."""

APPLICATION_ID: int = 0x4C445352
"""``PRAGMA application_id`` of a run store (ASCII ``LDSR``); other databases are refused."""

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
_RUN_DIR_RE = re.compile(r"^run-(?P<id>\d{6,})$")
_LOCK_NAME = "writer.lock"
_FILE_META = "__landscape_store_file__"  # key of the self-description inside a tensor file
_FILE_FORMAT = 1
_V1_TABLES = frozenset({"runs", "metrics", "checkpoints", "artifacts", "results"})
_V1_RUN_COLUMNS = ("id", "name", "config_hash", "config", "created_at", "updated_at", "status")

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS runs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT    NOT NULL UNIQUE,
    config_hash TEXT    NOT NULL UNIQUE,
    config      TEXT    NOT NULL,
    created_at  REAL    NOT NULL,
    updated_at  REAL    NOT NULL,
    status      TEXT    NOT NULL CHECK (status IN ({", ".join(repr(s) for s in STATUSES)})),
    reason      TEXT
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
CREATE TABLE IF NOT EXISTS trash (
    file       TEXT    NOT NULL PRIMARY KEY,
    created_at REAL    NOT NULL
);
"""

# Upgrade of a version-1 store (same tables, no reason column, no trash table).
_MIGRATE_V1 = """
ALTER TABLE runs ADD COLUMN reason TEXT;
CREATE TABLE IF NOT EXISTS trash (
    file       TEXT    NOT NULL PRIMARY KEY,
    created_at REAL    NOT NULL
);
"""


# ----------------------------------------------------------------------------------------------
# Public value types
# ----------------------------------------------------------------------------------------------


class StoreError(RuntimeError):
    """A run store on disk cannot be used as asked.

    Raised for a database that is not a run store, a damaged database or tensor file, a database
    that lost rows next to its tensor files, a run whose writer lock is held by another process, a
    write to a store opened read-only, and operating-system or SQLite errors (read-only or full
    disk, ...). The message is one line naming the path and what to do.
    """


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
        reason: why the run failed or was interrupted (None otherwise, and for version-1 stores).
    """

    id: int
    name: str
    config: dict[str, Any] = field(hash=False)
    config_hash: str
    created_at: float
    status: str
    reason: str | None = None


@dataclass(frozen=True)
class CheckpointScan:
    """The newest checkpoint of a run whose file verifies, and the newer ones that did not.

    Attributes:
        step: step of the checkpoint found (None when no stored checkpoint verifies).
        state: its state (None with ``step``).
        skipped: ``(step, reason)`` of each newer checkpoint that was missing or corrupt, newest
            first.
    """

    step: int | None
    state: dict[str, Any] | None = field(hash=False)
    skipped: tuple[tuple[int, str], ...]


@dataclass(frozen=True)
class RepairReport:
    """What :func:`repair_store` did.

    Attributes:
        root: the store directory.
        runs_restored: names of runs re-created from their tensor files.
        files_indexed: tensor files (relative to ``root``) given back their rows.
        files_left: ``(file, reason)`` of tensor files not indexed (older copies, files that do
            not load or name no known run); each was moved, unchanged, into an ``unindexed/``
            folder inside its run folder, where it no longer stops the store from opening.
        moved_aside: database files renamed because they were damaged (nothing is deleted).
    """

    root: Path
    runs_restored: tuple[str, ...]
    files_indexed: tuple[str, ...]
    files_left: tuple[tuple[str, str], ...]
    moved_aside: tuple[str, ...]


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


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _unwrap(obj: object) -> object:
    """The state inside a tensor file (files of version-1 stores hold the bare state)."""
    if isinstance(obj, dict) and set(obj) == {_FILE_META, "state"}:
        return obj["state"]
    return obj


def _os_error(what: str, exc: OSError) -> StoreError:
    """One-line :class:`StoreError` for an operating-system error (``errno`` name included)."""
    code = errno.errorcode.get(exc.errno, "") if exc.errno is not None else ""
    why = exc.strerror or str(exc)
    if exc.errno == errno.ENOSPC:
        why += " (the disk is full: free space or choose another directory)"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        why += " (choose a writable directory)"
    return StoreError(f"{what}: {why}" + (f" [{code}]" if code else ""))


def _classify(conn: sqlite3.Connection, db: Path) -> tuple[str, int]:
    """``("empty" | "store", schema version)`` of a database, read without changing it.

    Raises:
        StoreError: a database that is not a run store (another program's), or a newer schema.
        sqlite3.DatabaseError: not a database at all.
    """
    app = int(conn.execute("PRAGMA application_id").fetchone()[0])
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    tables = {
        n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    } - {"sqlite_sequence"}
    if app == APPLICATION_ID:
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{db} has schema version {version}; this code reads up to {SCHEMA_VERSION} "
                "(upgrade landscape)"
            )
        return "store", version
    if app == 0 and version == 0 and not tables:
        return "empty", 0
    if app == 0 and version == 1 and tables == _V1_TABLES:
        cols = tuple(r[1] for r in conn.execute("PRAGMA table_info(runs)"))
        if cols == _V1_RUN_COLUMNS:
            return "store", 1
    shown = ", ".join(sorted(tables)) or "none"
    raise StoreError(
        f"{db} is not a landscape run store (application_id {app}, user_version {version}, "
        f"tables: {shown}); it was left unchanged: choose a directory of its own"
    )


def _quick_check(conn: sqlite3.Connection, db: Path) -> None:
    """Raise :class:`StoreError` if SQLite's ``PRAGMA quick_check`` finds damaged pages."""
    try:
        rows = [r[0] for r in conn.execute("PRAGMA quick_check(5)").fetchall()]
    except sqlite3.DatabaseError as exc:
        rows = [str(exc)]
    if rows != ["ok"]:
        lines = [ln.strip() for r in rows for ln in str(r).splitlines()]
        found = [ln for ln in lines if ln and not ln.startswith("***")]
        shown = "; ".join(found[:3]) + (f"; ... ({len(found)} problems)" if len(found) > 3 else "")
        raise StoreError(
            f"{db} is damaged (SQLite quick_check: {shown}); restore it "
            f"from a copy, or run `landscape store repair {db.parent}` to move it aside and "
            "re-index the tensor files"
        )


def _tensor_files(root: Path) -> list[Path]:
    """Files under ``root/tensors/run-*/`` with the name of a checkpoint or final-weights file."""
    base = root / _TENSOR_DIR
    if not base.is_dir():
        return []
    out: list[Path] = []
    for folder in sorted(base.iterdir()):
        if folder.is_dir() and _RUN_DIR_RE.match(folder.name):
            out.extend(sorted(p for p in folder.iterdir() if _TENSOR_FILE_RE.match(p.name)))
    return out


def _describe_files(files: Sequence[Path]) -> str:
    runs = sorted({f.parent.name for f in files})
    shown = ", ".join(runs[:5]) + (", ..." if len(runs) > 5 else "")
    return f"{len(files)} tensor file{'s' if len(files) != 1 else ''} of {len(runs)} run folder" \
        f"{'s' if len(runs) != 1 else ''} ({shown})"


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
        root: the run directory; created (with parents) if missing, unless ``read_only``.
        keep_checkpoints: how many step checkpoints to keep per run (the highest steps); older
            ones are retired when a new one is saved. Final weights are kept separately.
        timeout: seconds a writer waits for another writer's lock (SQLite ``busy_timeout``).
        read_only: open without changing anything on disk (``mode=ro``, ``query_only``); every
            write method then raises :class:`StoreError`.

    Raises:
        ValueError: ``root`` exists and is not a directory; ``keep_checkpoints < 1`` or
            ``timeout <= 0``.
        StoreError: ``root/tensors`` or ``root/store.sqlite`` is not what a store needs, ``store.sqlite`` is not a run store, has a newer schema, is damaged, or lost
            rows next to its tensor files (see :func:`repair_store`), or the operating system
            refuses (read-only or full disk, permissions).
        TypeError: if ``keep_checkpoints`` is not an int.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        keep_checkpoints: int = 2,
        timeout: float = 30.0,
        read_only: bool = False,
    ) -> None:
        self._setup(root, keep_checkpoints, timeout, read_only)
        self._open(check_index=True)

    def _setup(self, root: str | os.PathLike[str], keep_checkpoints: int, timeout: float,
               read_only: bool) -> None:
        check_int("keep_checkpoints", keep_checkpoints, minimum=1)
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        self.root = Path(root).expanduser().resolve()
        self.keep_checkpoints = keep_checkpoints
        self.read_only = bool(read_only)
        self._timeout = float(timeout)
        self._lock = threading.RLock()
        self._pid = os.getpid()
        self._host = _host_tag()
        self._conn: sqlite3.Connection | None = None
        self._version = SCHEMA_VERSION
        self._run_cols = self._RUN_COLS

    def _open(self, *, check_index: bool) -> None:
        """Open (and, when writable, create or upgrade) the database; see the class docstring."""
        db = self.root / _DB_NAME
        if self.root.exists() and not self.root.is_dir():
            raise ValueError(f"run store root {self.root} exists and is not a directory")
        tensors = self.root / _TENSOR_DIR
        if tensors.exists() and not tensors.is_dir():
            raise StoreError(f"{tensors} exists and is not a directory")
        if db.exists() and not db.is_file():
            raise StoreError(f"{db} exists and is not a file")
        if not db.exists():
            files = _tensor_files(self.root)
            if files and check_index:
                raise StoreError(
                    f"{self.root} has no {_DB_NAME} but tensors/ holds {_describe_files(files)}: "
                    f"the database was lost; nothing was changed; run `landscape store repair "
                    f"{self.root}` to re-index them"
                )
            if self.read_only:
                raise StoreError(f"{self.root} is not a run store (no {_DB_NAME} in it)")
        if not self.read_only:
            try:
                self.root.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise _os_error(f"cannot create the run store at {self.root}", exc) from exc
            if not os.access(self.root, os.W_OK | os.X_OK):
                raise StoreError(
                    f"cannot write the run store at {self.root}: the directory is not writable "
                    "(choose a writable directory; reading works with read_only=True)"
                )
        try:
            if self.read_only:
                uri = "file:" + urllib.parse.quote(str(db)) + "?mode=ro"
                conn = sqlite3.connect(uri, uri=True, timeout=self._timeout, isolation_level=None,
                                       check_same_thread=False)
            else:
                conn = sqlite3.connect(db, timeout=self._timeout, isolation_level=None,
                                       check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open {db}: {exc}") from exc
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self._timeout * 1000)}")
            if self.read_only:
                conn.execute("PRAGMA query_only = ON")
            kind, version = _classify(conn, db)
            if kind == "empty" and check_index:
                files = _tensor_files(self.root)
                if files:
                    raise StoreError(
                        f"{db} is empty but tensors/ holds {_describe_files(files)}: the database "
                        f"was lost or emptied; nothing was changed; run `landscape store repair "
                        f"{self.root}` to re-index them"
                    )
            if kind == "empty" and self.read_only:
                raise StoreError(f"{db} is an empty database, not a run store")
            if not self.read_only:
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise StoreError(
                        f"could not put {db} in WAL mode (got {mode!r}); use a local filesystem"
                    )
                conn.execute("PRAGMA synchronous = FULL")
                conn.execute("PRAGMA foreign_keys = ON")
            self._conn = conn
            _quick_check(conn, db)
            if self.read_only:
                self._version = version
            else:
                with self._write() as c:
                    kind, version = _classify(c, db)  # again, under the write lock
                    if kind == "empty":
                        for stmt in _SCHEMA.split(";"):
                            if stmt.strip():
                                c.execute(stmt)
                    elif version == 1:
                        for stmt in _MIGRATE_V1.split(";"):
                            if stmt.strip():
                                c.execute(stmt)
                    if kind == "empty" or version != SCHEMA_VERSION:
                        c.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                        c.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                self._version = SCHEMA_VERSION
                try:
                    tensors.mkdir(exist_ok=True)
                except OSError as exc:
                    raise _os_error(f"cannot create {tensors}", exc) from exc
            if self._version < 2:
                self._run_cols = self._RUN_COLS.replace(", reason", ", NULL")
            if check_index:
                self._check_index()
            if not self.read_only:
                self._collect_garbage(None)
        except sqlite3.DatabaseError as exc:
            self._conn = None
            conn.close()
            raise StoreError(f"{db} is not a usable run store: {exc}") from exc
        except BaseException:
            self._conn = None
            conn.close()
            raise

    def _check_index(self) -> None:
        """Raise :class:`StoreError` if a tensor file is listed neither in checkpoints nor trash."""
        files = _tensor_files(self.root)
        if not files:
            return
        listed = {f for (f,) in self._query("SELECT file FROM checkpoints")}
        if self._version >= 2:
            listed |= {f for (f,) in self._query("SELECT file FROM trash")}
        # A file listed in trash is unlinked before its trash row goes: re-check existence.
        lost = [f for f in files if f.relative_to(self.root).as_posix() not in listed and f.exists()]
        if not lost:
            return
        n_runs = self._query("SELECT COUNT(*) FROM runs")[0][0]
        what = "lists no runs, but tensors/ holds" if n_runs == 0 else "does not list"
        raise StoreError(
            f"{self.root / _DB_NAME} {what} {_describe_files(lost)}: the "
            f"database lost rows (e.g. it was copied without its {_DB_NAME}-wal file); nothing was "
            f"changed; run `landscape store repair {self.root}` to re-index them"
        )

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
                if not self.read_only and os.getpid() == self._pid and self._version >= 2:
                    with contextlib.suppress(StoreError):  # what stays is removed on the next open
                        self._empty_trash()
                conn, self._conn = self._conn, None
                if os.getpid() == self._pid:
                    conn.close()

    def __repr__(self) -> str:
        state = "open" if self._conn is not None else "closed"
        mode = ", read-only" if self.read_only else ""
        return f"RunStore({str(self.root)!r}, {state}{mode})"

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
        """One ``BEGIN IMMEDIATE`` … ``COMMIT`` transaction holding the database write lock.

        SQLite errors inside become :class:`StoreError`; other exceptions pass through (after a
        rollback).
        """
        if self.read_only:
            raise StoreError(f"run store {self.root} was opened read-only; it cannot be written")
        with self._lock:
            conn = self._connection()
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StoreError(f"cannot write {self.root / _DB_NAME}: {exc}") from exc
            try:
                yield conn
            except BaseException as exc:
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise StoreError(f"cannot write {self.root / _DB_NAME}: {exc}") from exc
                raise
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise StoreError(f"cannot write {self.root / _DB_NAME}: {exc}") from exc

    def _query(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self._connection().execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"cannot read {self.root / _DB_NAME}: {exc}") from exc

    # -- runs -----------------------------------------------------------------------------------

    @staticmethod
    def _row_to_run(row: tuple[Any, ...]) -> Run:
        rid, name, chash, config, created, status, reason = row
        return Run(int(rid), name, json.loads(config), chash, float(created), status, reason)

    _RUN_COLS = "id, name, config_hash, config, created_at, status, reason"

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
                f"SELECT {self._run_cols} FROM runs WHERE config_hash = ?", (chash,)
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
            rows = self._query(f"SELECT {self._run_cols} FROM runs WHERE name = ?", (name_or_id,))
        elif isinstance(name_or_id, int) and not isinstance(name_or_id, bool):
            rows = self._query(f"SELECT {self._run_cols} FROM runs WHERE id = ?", (name_or_id,))
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
            self._row_to_run(r) for r in self._query(f"SELECT {self._run_cols} FROM runs ORDER BY id")
        ]

    def set_status(self, run: Run | str | int, status: str, reason: str | None = None) -> Run:
        """Set a run's status, with the reason of a failure or interruption.

        Args:
            run: the run, its name or its id.
            status: one of :data:`STATUSES`.
            reason: one line saying why (e.g. ``"ValueError: ..."`` for ``"failed"``); None
                clears it.

        Returns:
            The updated :class:`Run`.

        Raises:
            ValueError: for an unknown run or status.
            TypeError: a ``reason`` that is not a str.
            StoreError: the store is read-only or cannot be written.
        """
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}; accepted: {list(STATUSES)}")
        if reason is not None and not isinstance(reason, str):
            raise TypeError(f"reason must be a str or None, got {type(reason).__name__}")
        r = self._resolve(run)
        with self._write() as c:
            c.execute(
                "UPDATE runs SET status = ?, reason = ?, updated_at = ? WHERE id = ?",
                (status, reason, time.time(), r.id),
            )
        return Run(r.id, r.name, r.config, r.config_hash, r.created_at, status, reason)

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
        self, run: Run, kind: str, step: int | None, stem: str, state: Mapping[str, Any]
    ) -> None:
        """Write ``state`` to a temporary file, commit its row, then move it into place."""
        if self.read_only:
            raise StoreError(f"run store {self.root} was opened read-only; it cannot be written")
        if not isinstance(state, Mapping):
            raise TypeError(f"state must be a dict, got {type(state).__name__}")
        for k in state:
            if not isinstance(k, str):
                raise TypeError(f"state has key {k!r}; top-level keys must be str")
        prepared = _prepare_state(state, "state")
        now = time.time()
        meta = {
            "format": _FILE_FORMAT, "run_id": run.id, "run_name": run.name,
            "config_hash": run.config_hash, "config": _canonical_json(run.config),
            "run_created_at": run.created_at, "kind": kind, "step": step, "created_at": now,
        }
        buf = io.BytesIO()
        torch.save({_FILE_META: meta, "state": prepared}, buf)
        payload = buf.getvalue()
        digest = hashlib.sha256(payload).hexdigest()

        folder = self._run_dir(run.id)
        token = secrets.token_hex(8)
        target = folder / f"{stem}-{token}.pt"
        tmp = folder / f".{target.name}.{self._host}.{os.getpid()}.{secrets.token_hex(8)}.tmp"
        rel = target.relative_to(self.root).as_posix()
        committed = False
        try:
            try:
                folder.mkdir(parents=True, exist_ok=True)
                with open(tmp, "xb") as f:
                    f.write(payload)
                    f.flush()
                    os.fsync(f.fileno())
            except OSError as exc:
                raise _os_error(f"cannot write the {kind} of run {run.name!r} to {folder}", exc) from exc
            with self._write() as c:
                self._unlink_trash(c)  # files retired by earlier commits
                if kind == "final":
                    old = c.execute(
                        "SELECT file FROM checkpoints WHERE run_id = ? AND kind = 'final'", (run.id,)
                    ).fetchall()
                else:
                    old = c.execute(
                        "SELECT file FROM checkpoints WHERE run_id = ? AND kind = 'checkpoint' "
                        "AND step = ?", (run.id, step),
                    ).fetchall()
                self._retire(c, [f for (f,) in old])  # the file this one replaces
                c.execute(
                    "INSERT INTO checkpoints (run_id, kind, step, file, sha256, nbytes, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (run.id, kind, step, rel, digest, len(payload), now),
                )
                if kind == "checkpoint":
                    pruned = c.execute(
                        "SELECT file FROM checkpoints WHERE run_id = ? AND kind = 'checkpoint' AND step "
                        "NOT IN (SELECT step FROM checkpoints WHERE run_id = ? AND kind = 'checkpoint' "
                        "ORDER BY step DESC LIMIT ?)",
                        (run.id, run.id, self.keep_checkpoints),
                    ).fetchall()
                    self._retire(c, [f for (f,) in pruned])
                    old += pruned
            committed = True
            try:
                os.replace(tmp, target)
                _fsync_dir(folder)
            except OSError as exc:
                raise _os_error(
                    f"the {kind} of run {run.name!r} was recorded but could not be moved to {target} "
                    "(it is read from its temporary file until the store is next opened writable)", exc
                ) from exc
        finally:
            if not committed:
                with contextlib.suppress(OSError):
                    tmp.unlink(missing_ok=True)
        if old:
            self._empty_trash()  # the retired files go now that their retirement is committed
        self._collect_garbage(run.id)

    def _retire(self, c: sqlite3.Connection, files: Sequence[str]) -> None:
        """Move checkpoint rows to ``trash`` (inside the caller's write transaction)."""
        now = time.time()
        for f in files:
            c.execute("DELETE FROM checkpoints WHERE file = ?", (f,))
            c.execute("INSERT OR REPLACE INTO trash (file, created_at) VALUES (?, ?)", (f, now))

    def _unlink_trash(self, c: sqlite3.Connection) -> None:
        """Unlink the files of committed ``trash`` rows and drop the rows (in the caller's write
        transaction: if it rolls back, the rows stay and the next call finds the files gone)."""
        for (rel,) in c.execute("SELECT file FROM trash").fetchall():
            try:
                (self.root / rel).unlink(missing_ok=True)
            except OSError as exc:
                raise _os_error(f"cannot remove retired file {self.root / rel}", exc) from exc
            c.execute("DELETE FROM trash WHERE file = ?", (rel,))

    def _empty_trash(self) -> None:
        """Unlink retired tensor files, then forget them (one write transaction, if any)."""
        if self._query("SELECT 1 FROM trash LIMIT 1"):
            with self._write() as c:
                self._unlink_trash(c)

    def _collect_garbage(self, run_id: int | None) -> None:
        """Finish what dead writers of this host left: never touches data the database lists.

        A temporary file of a dead writer whose target has a row (the writer died between the
        commit and the rename) is moved into place if its SHA-256 is the row's; one whose target
        has no row (it died before the commit) is removed. Temporary files of live writers or of
        other hosts, tensor files and anything else are left alone. On open (``run_id=None``)
        retired files are unlinked too.
        """
        base = self.root / _TENSOR_DIR
        if not base.is_dir():
            return
        folders = (
            [self._run_dir(run_id)]
            if run_id is not None
            else [p for p in base.iterdir() if p.is_dir() and _RUN_DIR_RE.match(p.name)]
        )
        if run_id is None and self._version >= 2:
            self._empty_trash()
        dead: list[tuple[Path, Path]] = []  # (temporary file, its target) of dead writers here
        for folder in folders:
            if folder.is_dir():
                for entry in folder.iterdir():
                    m = _TMP_RE.match(entry.name)
                    if m is not None and m["host"] == self._host and not _pid_alive(int(m["pid"])):
                        dead.append((entry, folder / m["target"]))
        if not dead:
            return
        with self._write() as c:
            rows = {f: d for f, d in c.execute("SELECT file, sha256 FROM checkpoints")}
            for entry, target in dead:
                digest = rows.get(target.relative_to(self.root).as_posix())
                try:
                    if digest is None:
                        entry.unlink(missing_ok=True)
                    elif not target.exists() and _sha256_file(entry) == digest:
                        os.replace(entry, target)
                        _fsync_dir(entry.parent)
                except OSError as exc:
                    raise _os_error(f"cannot clean up {entry}", exc) from exc

    def _read_payload(self, rel: str) -> bytes | None:
        """Bytes of a listed file, or of its writer's temporary file before the rename; None if neither."""
        path = self.root / rel
        try:
            return path.read_bytes()
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise _os_error(f"cannot read {path}", exc) from exc
        with contextlib.suppress(OSError):
            for entry in path.parent.iterdir():
                m = _TMP_RE.match(entry.name)
                if m is not None and m["target"] == path.name:
                    with contextlib.suppress(FileNotFoundError):
                        return entry.read_bytes()
        try:
            return path.read_bytes()  # renamed meanwhile
        except FileNotFoundError:
            return None

    def _load_file(
        self, run: Run, kind: str, step: int | None, map_location: str | torch.device | None
    ) -> dict[str, Any] | None:
        """Load the file of a checkpoint row; None if the row does not exist.

        Raises:
            StoreError: the file is missing, corrupt (SHA-256 mismatch) or does not unpickle.
        """
        if kind == "final":
            sql = "SELECT file, sha256 FROM checkpoints WHERE run_id = ? AND kind = 'final'"
            params: tuple[object, ...] = (run.id,)
        else:
            sql = (
                "SELECT file, sha256 FROM checkpoints WHERE run_id = ? AND kind = 'checkpoint' "
                "AND step = ?"
            )
            params = (run.id, step)
        what = "final weights" if kind == "final" else f"checkpoint at step {step}"
        for _ in range(5):
            rows = self._query(sql, params)
            if not rows:
                return None
            rel, digest = rows[0]
            payload = self._read_payload(rel)
            if payload is None:
                # Retired by a concurrent writer between the query and the read: look again.
                if self._query(sql, params) == rows:
                    raise StoreError(
                        f"the {what} of run {run.name!r} is missing: {self.root / rel} does not exist"
                    )
                continue
            if hashlib.sha256(payload).hexdigest() != digest:
                raise StoreError(
                    f"the {what} of run {run.name!r} is corrupt: {self.root / rel} fails its SHA-256 "
                    f"check ({len(payload)} bytes)"
                )
            try:
                obj = torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)
            except Exception as exc:  # noqa: BLE001 - any unpickling failure means a damaged file
                raise StoreError(
                    f"the {what} of run {run.name!r} does not load from {self.root / rel}: {exc}"
                ) from exc
            return _unwrap(obj)  # type: ignore[no-any-return]
        raise StoreError(f"could not read the {what} of run {run.name!r}: it kept changing")

    @contextlib.contextmanager
    def writer_lock(self, run: Run | str | int, *, timeout: float = 0.0) -> Iterator[None]:
        """Hold the exclusive writer lock of one run (``fcntl.flock`` on its ``writer.lock``).

        Training takes it for the whole run, so two processes never train the same run at once.
        The lock dies with its process (also on SIGKILL). On systems without ``fcntl`` it is a
        no-op.

        Args:
            run: the run, its name or its id.
            timeout: seconds to wait for another holder to finish (0: refuse at once).

        Raises:
            StoreError: the lock is held by another process (its pid, host and start time are
                named) after ``timeout`` seconds, or the store is read-only.
        """
        r = self._resolve(run)
        if self.read_only:
            raise StoreError(f"run store {self.root} was opened read-only; run {r.name!r} cannot be written")
        try:
            import fcntl
        except ImportError:  # pragma: no cover - non-POSIX
            yield
            return
        folder = self._run_dir(r.id)
        path = folder / _LOCK_NAME
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise _os_error(f"cannot create the writer lock {path}", exc) from exc
        try:
            deadline = time.monotonic() + max(0.0, float(timeout))
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        holder = os.pread(fd, 256, 0).decode("utf-8", "replace").split()
                        who = (
                            f"process {holder[0]} on host {holder[1]} (since "
                            f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(float(holder[2])))})"
                            if len(holder) >= 3 and holder[2].replace(".", "", 1).isdigit()
                            else "another process"
                        )
                        raise StoreError(
                            f"run {r.name!r} in {self.root} is being written by {who}; wait for it "
                            "to finish or stop it, then run again"
                        ) from None
                    time.sleep(0.05)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {self._host} {time.time():.3f}\n".encode(), 0)
            try:
                yield
            finally:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, 0)
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

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
            StoreError: read-only store, or the file cannot be written (full disk, ...).
        """
        r = self._resolve(run)
        s = _check_step(step)
        self._commit_file(r, "checkpoint", s, f"step-{s:012d}", state)

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
            StoreError: the file is corrupt or missing (see :meth:`latest_intact_checkpoint`).
        """
        r = self._resolve(run)
        for _ in range(5):
            steps = self.checkpoints(r)
            if not steps:
                return None
            state = self._load_file(r, "checkpoint", steps[-1], map_location)
            if state is not None:
                return steps[-1], state
        raise StoreError(f"could not read the latest checkpoint of run {r.name!r}: it kept changing")

    def latest_intact_checkpoint(
        self, run: Run | str | int, *, map_location: str | torch.device | None = "cpu"
    ) -> CheckpointScan:
        """The newest checkpoint whose file exists and verifies; newer damaged ones are skipped.

        Args:
            run: the run, its name or its id.
            map_location: passed to :func:`torch.load`.

        Returns:
            A :class:`CheckpointScan`: the step and state found (both None when none verifies)
            and the ``(step, reason)`` of every newer checkpoint skipped.

        Raises:
            ValueError: unknown run.
        """
        r = self._resolve(run)
        skipped: list[tuple[int, str]] = []
        for s in reversed(self.checkpoints(r)):
            try:
                state = self._load_file(r, "checkpoint", s, map_location)
            except StoreError as exc:
                skipped.append((s, str(exc)))
                continue
            if state is not None:
                return CheckpointScan(s, state, tuple(skipped))
        return CheckpointScan(None, None, tuple(skipped))

    def load_checkpoint(
        self, run: Run | str | int, step: int, *, map_location: str | torch.device | None = "cpu"
    ) -> dict[str, Any]:
        """The state saved at ``step``.

        Raises:
            ValueError: unknown run, negative step, or no checkpoint at ``step`` (stored steps
                are listed).
            StoreError: the file is corrupt or missing (external tampering).
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
            ValueError, TypeError, StoreError: as :meth:`save_checkpoint`.
        """
        r = self._resolve(run)
        s = None if step is None else _check_step(step)
        self._commit_file(r, "final", s, "final", state)

    def has_final(self, run: Run | str | int) -> bool:
        """Whether final weights of the run are stored."""
        r = self._resolve(run)
        return bool(self._query(
            "SELECT 1 FROM checkpoints WHERE run_id = ? AND kind = 'final'", (r.id,)
        ))

    def load_final(
        self, run: Run | str | int, *, map_location: str | torch.device | None = "cpu"
    ) -> dict[str, Any]:
        """The final weights saved by :meth:`save_final`.

        Raises:
            ValueError: unknown run, or no final weights saved.
            StoreError: the file is corrupt or missing (external tampering).
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


# ----------------------------------------------------------------------------------------------
# Repair
# ----------------------------------------------------------------------------------------------


def _file_meta(path: Path) -> tuple[dict[str, Any], str, int]:
    """``(meta, sha256, nbytes)`` of a tensor file; ``meta`` is rebuilt from the name for old files.

    Raises:
        StoreError: the file does not load.
    """
    payload = path.read_bytes()
    try:
        obj = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a damaged file
        raise StoreError(f"does not load ({type(exc).__name__})") from exc
    if isinstance(obj, dict) and set(obj) == {_FILE_META, "state"} and isinstance(obj[_FILE_META], dict):
        meta = dict(obj[_FILE_META])
    else:  # written by a version-1 store: the name gives kind and step, the state maybe a hash
        m = re.match(r"^step-(\d{12})-", path.name)
        meta = {"kind": "checkpoint" if m else "final", "step": int(m[1]) if m else None}
        if isinstance(obj, dict):
            if isinstance(obj.get("config_hash"), str):
                meta["config_hash"] = obj["config_hash"]
            if meta["step"] is None and isinstance(obj.get("step"), int):
                meta["step"] = obj["step"]
    return meta, hashlib.sha256(payload).hexdigest(), len(payload)


def repair_store(root: str | os.PathLike[str]) -> RepairReport:
    """Re-index the tensor files of a store whose database lost rows (or was lost or damaged).

    Nothing is deleted. A damaged ``store.sqlite`` (failing ``quick_check`` or not a database) is
    renamed to ``store.sqlite.damaged-<time>`` (with its ``-wal``/``-shm``) and a new one created;
    a database of another program is refused. Then every tensor file under ``tensors/run-*/``
    that the database does not list is read: files written since tensor files describe
    themselves (run id, name, config, kind, step) give back their run (status ``"finished"`` if
    final weights were found, else ``"interrupted"``, with the reason that metrics and results
    were not recoverable) and their checkpoint rows; older files are re-indexed when their run
    is still listed. A file whose step (or final slot) is already taken by a listed file is an
    older copy; it, and files that do not load, are moved unchanged into ``unindexed/`` inside
    their run folder (reported, kept, no longer counted as lost rows).

    Args:
        root: the store directory.

    Returns:
        A :class:`RepairReport`.

    Raises:
        ValueError: ``root`` is not a directory.
        StoreError: ``store.sqlite`` belongs to another program, or the store cannot be written.
    """
    root_p = Path(root).expanduser().resolve()
    if not root_p.is_dir():
        raise ValueError(f"{root_p} is not a directory")
    db = root_p / _DB_NAME
    moved: list[str] = []
    if db.is_file():
        conn = None
        damaged = False
        try:
            conn = sqlite3.connect("file:" + urllib.parse.quote(str(db)) + "?mode=ro", uri=True)
            _classify(conn, db)  # a foreign database raises StoreError: never touched
            _quick_check(conn, db)
        except sqlite3.DatabaseError:
            damaged = True
        except StoreError as exc:
            if "is damaged" not in str(exc):
                raise
            damaged = True
        finally:
            if conn is not None:
                conn.close()
        if damaged:
            stamp = time.strftime("%Y%m%dT%H%M%S")
            for suffix in ("", "-wal", "-shm"):
                src = root_p / (_DB_NAME + suffix)
                if src.exists():
                    dst = root_p / f"{_DB_NAME}.damaged-{stamp}{suffix}"
                    os.replace(src, dst)
                    moved.append(dst.name)
    store = RunStore.__new__(RunStore)
    store._setup(root_p, 2, 30.0, False)
    store._open(check_index=False)
    restored: list[str] = []
    indexed: list[str] = []
    left: list[tuple[str, str]] = []
    try:
        with store._write() as c:
            listed = {f for (f,) in c.execute("SELECT file FROM checkpoints UNION SELECT file FROM trash")}
            runs = {int(i): (n, h) for i, n, h in c.execute("SELECT id, name, config_hash FROM runs")}
            new_runs: dict[int, str] = {}
            candidates: list[tuple[int, Path, dict[str, Any], str, int]] = []
            for path in _tensor_files(root_p):
                rel = path.relative_to(root_p).as_posix()
                if rel in listed:
                    continue
                run_id = int(_RUN_DIR_RE.match(path.parent.name)["id"])  # type: ignore[index]
                try:
                    meta, digest, nbytes = _file_meta(path)
                except (StoreError, OSError) as exc:
                    left.append((rel, str(exc)))
                    continue
                if meta.get("run_id") not in (None, run_id):
                    left.append((rel, f"it belongs to run id {meta['run_id']}, not to its folder's run"))
                    continue
                if run_id not in runs:
                    text = meta.get("config")
                    if not isinstance(text, str) or not isinstance(meta.get("run_name"), str):
                        left.append((rel, "written by an older version: it does not name its run's "
                                          "config, and the database does not list the run"))
                        continue
                    chash = hashlib.sha256(text.encode("utf-8")).hexdigest()
                    name = meta["run_name"]
                    clash = c.execute("SELECT id FROM runs WHERE config_hash = ? OR name = ?",
                                      (chash, name)).fetchone()
                    if clash is not None:
                        left.append((rel, f"run id {clash[0]} already holds its run's name or config"))
                        continue
                    created = float(meta.get("run_created_at") or path.stat().st_mtime)
                    c.execute(
                        "INSERT INTO runs (id, name, config_hash, config, created_at, updated_at, status, "
                        "reason) VALUES (?, ?, ?, ?, ?, ?, 'interrupted', ?)",
                        (run_id, name, chash, text, created, time.time(),
                         "re-indexed from its tensor files by `landscape store repair`; its metrics, "
                         "results and artifacts were not recoverable"),
                    )
                    runs[run_id] = (name, chash)
                    new_runs[run_id] = name
                if meta.get("config_hash") not in (None, runs[run_id][1]):
                    left.append((rel, "its config hash is not its run's"))
                    continue
                candidates.append((run_id, path, meta, digest, nbytes))
            # newest first, so that of two finals (or two files of one step) the newer is indexed
            candidates.sort(key=lambda t: -float(t[2].get("created_at") or t[1].stat().st_mtime))
            for run_id, path, meta, digest, nbytes in candidates:
                rel = path.relative_to(root_p).as_posix()
                kind, step = meta.get("kind"), meta.get("step")
                if kind == "final":
                    taken = c.execute("SELECT file FROM checkpoints WHERE run_id = ? AND kind = 'final'",
                                      (run_id,)).fetchone()
                elif kind == "checkpoint" and isinstance(step, int):
                    taken = c.execute("SELECT file FROM checkpoints WHERE run_id = ? AND kind = 'checkpoint' "
                                      "AND step = ?", (run_id, step)).fetchone()
                else:
                    left.append((rel, f"unknown kind {kind!r} or step {step!r}"))
                    continue
                if taken is not None:
                    left.append((rel, f"an older copy: {taken[0]} holds the same "
                                      f"{'final weights' if kind == 'final' else f'step {step}'}"))
                    continue
                c.execute(
                    "INSERT INTO checkpoints (run_id, kind, step, file, sha256, nbytes, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (run_id, kind, step, rel, digest, nbytes,
                     float(meta.get("created_at") or path.stat().st_mtime)),
                )
                indexed.append(rel)
                if kind == "final" and run_id in new_runs:
                    c.execute("UPDATE runs SET status = 'finished' WHERE id = ?", (run_id,))
            restored = [new_runs[i] for i in sorted(new_runs)]
        for rel, _why in left:
            src = root_p / rel
            dst = src.parent / "unindexed" / src.name
            try:
                dst.parent.mkdir(exist_ok=True)
                os.replace(src, dst)
                _fsync_dir(dst.parent)
            except OSError as exc:
                raise _os_error(f"cannot move {src} out of the way", exc) from exc
    finally:
        store.close()
    return RepairReport(root_p, tuple(restored), tuple(sorted(indexed)), tuple(sorted(left)), tuple(moved))
