"""Safety of the run store on disk (landscape/experiment/store.py, ``landscape plot``, ``landscape store``).

Opening never deletes data; read-only commands change no byte of the store; a database of another
program is refused unchanged; a lost or emptied database is reported and ``repair`` re-indexes the
tensor files; damaged database pages are detected; version-1 stores still open, plot and upgrade;
setup failures leave nothing behind and later failures are recorded with their reason; two
trainers of one run exclude each other; operating-system errors surface as :class:`StoreError`.

References: the SHA-256 of every file before and after; raw SQL on the database; states loaded
before the damage (bit for bit); an uninterrupted run trained into another store; real
subprocesses holding the writer lock.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import landscape.experiment.store as store_mod
import landscape.experiment.train as train_mod
from landscape.cli import build_parser
from landscape.experiment.store import APPLICATION_ID, RunStore, StoreError, repair_store
from landscape.experiment.train import TrainConfig, train
from limits import HANG_GUARD_S

REPO = Path(__file__).resolve().parents[1]

# linear attention, float64, checkpoints every 10 steps: a stop at step 25 leaves steps 10 and 20
CFG = dict(task="linear", d=2, n=4, attention="linear", layers=1, seeds=2, steps=30, batch=8, lr=0.02,
           dtype="float64", device="cpu", log_every=5, checkpoint_every=10, eval_batch=32, distance_every=0)
# kernel attention for the figures (the Bayes line of gp data is estimated when plotting)
PLOT_CFG = dict(task="gp:exp", activations=("exp",), layers=1, d=2, n=4, attention="kernel", seeds=2, steps=8,
                batch=8, eval_batch=32, log_every=4, lr=0.02, dtype="float64", device="cpu", distance_every=0,
                checkpoint_every=0)


class Stop(Exception):
    pass


def _stop_at(step_to_stop: int):
    def cb(step: int, state: object) -> None:
        if step == step_to_stop:
            raise Stop

    return cb


def _snapshot(root: Path) -> dict[str, str]:
    """SHA-256 of every file under ``root`` (relative paths)."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _without_sqlite_companions(snap: dict[str, str]) -> dict[str, str]:
    """A reader of a WAL database may leave SQLite's (empty) -wal/-shm companions; data is elsewhere."""
    return {k: v for k, v in snap.items() if not k.startswith("store.sqlite-")}


def _sql(root: Path, sql: str) -> list[tuple]:
    con = sqlite3.connect(f"file:{root / 'store.sqlite'}?mode=ro", uri=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _same_state(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same_state(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same_state(x, y) for x, y in zip(a, b))
    return a == b


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _cli_func(argv: list[str]) -> int:
    """Run a command's function directly (its exceptions reach the test, whatever the top level does)."""
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


# ----------------------------------------------------------------------------------------------
# lost or emptied database: reported, never deleted, repaired
# ----------------------------------------------------------------------------------------------


def test_copy_without_wal_is_reported_never_deleted_and_repair_reindexes(tmp_path: Path) -> None:
    cfg = TrainConfig(**CFG)
    src = tmp_path / "src"
    store = RunStore(src)  # kept open: the rows stay in store.sqlite-wal, as in a killed run
    try:
        with pytest.raises(Stop):
            train(cfg, store, progress=False, callback=_stop_at(25))
        run = store.list_runs()[0]
        assert store.checkpoints(run) == [10, 20]
        states = {s: store.load_checkpoint(run, s) for s in (10, 20)}
        assert (src / "store.sqlite-wal").stat().st_size > 0
        copy = tmp_path / "copy"
        copy.mkdir()
        shutil.copy2(src / "store.sqlite", copy / "store.sqlite")  # without its -wal file
        shutil.copytree(src / "tensors", copy / "tensors")
    finally:
        store.close()
    before = _snapshot(copy)
    assert sum(k.endswith(".pt") for k in before) == 2

    with pytest.raises(StoreError, match="landscape store repair") as plot_err:
        _cli_func(["plot", str(copy)])
    assert "\n" not in str(plot_err.value) and "2 tensor files" in str(plot_err.value)
    with pytest.raises(StoreError, match="lost"):
        RunStore(copy)  # writable open refuses as well
    with pytest.raises(StoreError, match="lost"):
        train(cfg, copy, progress=False)  # and training does not start over on top of the files
    assert _without_sqlite_companions(_snapshot(copy)) == _without_sqlite_companions(before)

    rep = repair_store(copy)
    assert rep.runs_restored == (run.name,) and len(rep.files_indexed) == 2
    assert rep.files_left == () and rep.moved_aside == ()
    assert all(_snapshot(copy)[f] == before[f] for f in rep.files_indexed)  # files untouched
    with RunStore(copy) as s:
        r = s.get_run(run.name)
        assert (r.id, r.config, r.config_hash) == (run.id, run.config, run.config_hash)
        assert r.status == "interrupted" and "not recoverable" in (r.reason or "")
        assert s.checkpoints(r) == [10, 20]
        for step, ref in states.items():
            assert _same_state(s.load_checkpoint(r, step), ref)
    # training goes on from the re-indexed checkpoint and ends where an uninterrupted run ends
    resumed = train(cfg, copy, progress=False)
    assert resumed.resumed_from == 20
    reference = train(cfg, tmp_path / "reference", progress=False)
    for k in reference.params:
        assert torch.equal(resumed.params[k], reference.params[k]), k


def test_lost_database_file_is_reported_and_rebuilt(tmp_path: Path) -> None:
    root = tmp_path / "s"
    with RunStore(root) as s:
        run = s.create_run({"exp": "lost"}, "lost")
        s.save_checkpoint(run, 3, {"w": torch.arange(4.0)})
        s.save_final(run, {"w": torch.arange(5.0)}, step=7)
    for suffix in ("", "-wal", "-shm"):
        (root / f"store.sqlite{suffix}").unlink(missing_ok=True)
    before = _snapshot(root)
    for ro in (True, False):
        with pytest.raises(StoreError, match=r"has no store.sqlite but tensors/ holds 2 tensor files"):
            RunStore(root, read_only=ro)
    assert _snapshot(root) == before and not (root / "store.sqlite").exists()
    assert _cli_func(["store", "repair", str(root)]) == 0
    with RunStore(root, read_only=True) as s:
        (r,) = s.list_runs()
        assert (r.name, r.config, r.status) == ("lost", {"exp": "lost"}, "finished")
        assert torch.equal(s.load_checkpoint(r, 3)["w"], torch.arange(4.0))
        assert torch.equal(s.load_final(r)["w"], torch.arange(5.0))
    # a new run gets a fresh id: the restored one keeps its folder
    with RunStore(root) as s:
        assert s.create_run({"exp": "next"}).id == r.id + 1


def test_repair_moves_a_damaged_database_aside_and_keeps_older_copies(tmp_path: Path) -> None:
    root = tmp_path / "s"
    with RunStore(root, keep_checkpoints=3) as s:
        run = s.create_run({"exp": "damaged"}, "d")
        for step in (1, 2):
            s.save_checkpoint(run, step, {"w": torch.full((3,), float(step))})
    # an older copy of step 2 (e.g. restored from a backup next to the live file)
    live = next((root / "tensors" / "run-000001").glob("step-000000000002-*.pt"))
    older = live.with_name(f"step-000000000002-{secrets.token_hex(8)}.pt")
    shutil.copy2(live, older)
    os.utime(older, (time.time() - 3600,) * 2)
    (root / "store.sqlite").write_bytes(b"garbage" * 1000)
    rep = repair_store(root)
    assert len(rep.moved_aside) == 1 and rep.moved_aside[0].startswith("store.sqlite.damaged-")
    assert (root / rep.moved_aside[0]).read_bytes() == b"garbage" * 1000
    assert rep.runs_restored == ("d",) and len(rep.files_indexed) == 2
    copies = {live.relative_to(root).as_posix(), older.relative_to(root).as_posix()}
    ((left, why),) = rep.files_left  # one of the two identical files of step 2 is indexed, not both
    (kept,) = copies & set(rep.files_indexed)
    assert left in copies and why == f"an older copy: {kept} holds the same step 2"
    moved = root / Path(left).parent / "unindexed" / Path(left).name  # kept, out of the way
    assert moved.read_bytes() == (root / kept).read_bytes()
    with RunStore(root) as s:
        assert s.checkpoints("d") == [1, 2]
        assert torch.equal(s.load_checkpoint("d", 2)["w"], torch.full((3,), 2.0))


def test_repair_of_lost_rows_next_to_listed_runs_and_old_files(tmp_path: Path) -> None:
    root = tmp_path / "s"
    with RunStore(root, keep_checkpoints=3) as s:
        run = s.create_run({"exp": "rows"}, "rows")
        for step in (1, 2):
            s.save_checkpoint(run, step, {"w": torch.full((2,), float(step)), "step": step})
    with RunStore(root, read_only=True) as s:
        state2 = s.load_checkpoint(run, 2)
    con = sqlite3.connect(root / "store.sqlite")
    con.execute("DELETE FROM checkpoints WHERE step = 2")  # the rows a lost -wal held
    con.commit()
    con.close()
    run_dir = root / "tensors" / "run-000001"
    # files in the version-1 layout (the bare state): one of the listed run, one of an unknown run
    buf = io.BytesIO()
    torch.save({"w": torch.full((2,), 3.0), "step": 3}, buf)
    old_file = run_dir / f"step-000000000003-{secrets.token_hex(8)}.pt"
    old_file.write_bytes(buf.getvalue())
    orphan_dir = root / "tensors" / "run-000007"
    orphan_dir.mkdir()
    orphan = orphan_dir / f"final-{secrets.token_hex(8)}.pt"
    orphan.write_bytes(buf.getvalue())
    with pytest.raises(StoreError, match=r"does not list 3 tensor files of 2 run folders \(run-000001, run-000007\)"):
        RunStore(root, read_only=True)
    rep = repair_store(root)
    assert rep.runs_restored == () and len(rep.files_indexed) == 2
    ((left, why),) = rep.files_left
    assert left == orphan.relative_to(root).as_posix() and "older version" in why
    assert not orphan.exists() and (orphan_dir / "unindexed" / orphan.name).read_bytes() == buf.getvalue()
    with RunStore(root, read_only=True) as s:
        assert s.checkpoints("rows") == [1, 2, 3]
        assert _same_state(s.load_checkpoint("rows", 2), state2)
        assert _same_state(s.load_checkpoint("rows", 3), {"w": torch.full((2,), 3.0), "step": 3})
        assert s.get_run("rows").status == "running"  # a listed run keeps its row as it was


# ----------------------------------------------------------------------------------------------
# read-only commands change nothing
# ----------------------------------------------------------------------------------------------


def test_plot_and_check_are_read_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "store"
    name = train(TrainConfig(**PLOT_CFG), root, progress=False).run_name
    before = _snapshot(root)
    results = _sql(root, "SELECT run_id, key, value FROM results ORDER BY key")
    assert "bayes_loss" not in {k for _, k, _ in results}  # the plot estimates it

    out = tmp_path / "figures"
    assert _cli_func(["plot", str(root), "--out", str(out)]) == 0
    assert len(list(out.rglob("*.png"))) >= 2
    assert _cli_func(["store", "check", str(root)]) == 0
    assert f"{name}: finished" in capsys.readouterr().out
    after = _snapshot(root)
    assert _without_sqlite_companions(after) == _without_sqlite_companions(before)
    assert _sql(root, "SELECT run_id, key, value FROM results ORDER BY key") == results
    assert _sql(root, "SELECT COUNT(*) FROM artifacts") == [(0,)]

    with RunStore(root, read_only=True) as s:
        for write in (lambda: s.log_result(name, "x", 1), lambda: s.create_run({"a": 1}),
                      lambda: s.save_checkpoint(name, 1, {"w": torch.ones(1)}),
                      lambda: s.set_status(name, "failed", "x"), lambda: s.log_metrics(name, 0, {"a": 1.0})):
            with pytest.raises(StoreError, match="read-only"):
                write()
    assert _without_sqlite_companions(_snapshot(root)) == _without_sqlite_companions(before)
    with pytest.raises(StoreError, match="no store.sqlite"):
        RunStore(tmp_path / "nothing", read_only=True)
    assert not (tmp_path / "nothing").exists()


def test_opening_removes_only_abandoned_temp_files_of_dead_writers(tmp_path: Path) -> None:
    with RunStore(tmp_path) as store:
        run = store.create_run({"g": 1})
        store.save_checkpoint(run, 5, {"w": torch.ones(2)})
        store.save_checkpoint(run, 6, {"w": torch.full((2,), 6.0)})
        host = store._host
    run_dir = tmp_path / "tensors" / f"run-{run.id:06d}"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    token = "0123456789abcdef"
    # a writer killed between its commit and the rename: the row's content is its temporary file
    (renamed,) = run_dir.glob("step-000000000006-*.pt")
    pending = run_dir / f".{renamed.name}.{host}.{dead.pid}.{token}.tmp"
    os.replace(renamed, pending)
    abandoned = run_dir / f".step-000000000007-{token}.pt.{host}.{dead.pid}.{token}.tmp"  # no row
    live_tmp = run_dir / f".step-000000000008-{token}.pt.{host}.{os.getpid()}.{token}.tmp"
    foreign_tmp = run_dir / f".step-000000000009-{token}.pt.otherhost.{dead.pid}.{token}.tmp"
    unrelated = run_dir / "notes.txt"
    for p in (abandoned, live_tmp, foreign_tmp, unrelated):
        p.write_bytes(b"x")
    with RunStore(tmp_path, read_only=True) as store:  # a reader finds the pending file, moves nothing
        assert torch.equal(store.load_checkpoint(run, 6)["w"], torch.full((2,), 6.0))
    assert pending.exists() and abandoned.exists()
    with RunStore(tmp_path) as store:
        assert store.checkpoints(run) == [5, 6]
        assert torch.equal(store.load_checkpoint(run, 6)["w"], torch.full((2,), 6.0))
    remaining = {p.name for p in run_dir.iterdir()}
    kept = {p.name for p in run_dir.glob("step-*.pt")}
    assert renamed.name in kept and len(kept) == 2
    assert remaining == kept | {live_tmp.name, foreign_tmp.name, unrelated.name}

    # a tensor file the database does not list is reported, never deleted
    stray = run_dir / f"step-000000000099-{token}.pt"
    stray.write_bytes(b"data the database lost")
    with pytest.raises(StoreError, match=r"does not list 1 tensor file of 1 run folder \(run-000001\)"):
        RunStore(tmp_path)
    assert stray.read_bytes() == b"data the database lost"


def test_a_retired_file_left_by_a_crash_goes_on_the_next_writable_open(tmp_path: Path) -> None:
    with RunStore(tmp_path, keep_checkpoints=1) as store:
        run = store.create_run({"trash": 1})
        store.save_checkpoint(run, 1, {"w": torch.ones(2)})
        store.save_checkpoint(run, 2, {"w": torch.ones(2)})
        assert len(list((tmp_path / "tensors").rglob("step-*.pt"))) == 1  # step 1 retired and unlinked
        store.save_checkpoint(run, 3, {"w": torch.ones(2)})
    (rel2,) = _sql(tmp_path, "SELECT file FROM checkpoints")[0]
    assert rel2.split("/")[-1].startswith("step-000000000003")
    # a writer killed after committing the retirement of step 3, before unlinking its file
    con = sqlite3.connect(tmp_path / "store.sqlite")
    con.execute("DELETE FROM checkpoints")
    con.execute("INSERT INTO trash (file, created_at) VALUES (?, 0)", (rel2,))
    con.commit()
    con.close()
    with RunStore(tmp_path, read_only=True) as store:  # a retired file is not a lost row
        assert store.checkpoints(run) == []
    assert (tmp_path / rel2).exists()
    with RunStore(tmp_path):
        pass
    assert not (tmp_path / rel2).exists() and _sql(tmp_path, "SELECT COUNT(*) FROM trash") == [(0,)]


# ----------------------------------------------------------------------------------------------
# foreign databases
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["other-program", "same-table-names", "other-application-id"])
def test_foreign_sqlite_database_is_refused_and_left_unchanged(tmp_path: Path, kind: str) -> None:
    root = tmp_path / kind
    root.mkdir()
    con = sqlite3.connect(root / "store.sqlite")
    if kind == "other-program":
        con.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
        con.executemany("INSERT INTO users (name) VALUES (?)", [("ada",), ("alan",)])
    elif kind == "same-table-names":  # user_version 1 and our table names, other columns
        for t in ("runs", "metrics", "checkpoints", "artifacts", "results"):
            con.execute(f"CREATE TABLE {t} (x TEXT)")
        con.execute("PRAGMA user_version = 1")
    else:
        con.execute("CREATE TABLE runs (x TEXT)")
        con.execute("PRAGMA application_id = 1179402567")
    con.commit()
    tables = con.execute("SELECT name, sql FROM sqlite_master ORDER BY name").fetchall()
    con.close()
    before = _snapshot(root)
    assert list(before) == ["store.sqlite"]

    for ro in (False, True):
        with pytest.raises(StoreError, match="is not a landscape run store") as err:
            RunStore(root, read_only=ro)
        assert "\n" not in str(err.value)
    with pytest.raises(StoreError, match="is not a landscape run store"):
        _cli_func(["plot", str(root)])
    with pytest.raises(StoreError, match="is not a landscape run store"):
        train(TrainConfig(**{**CFG, "steps": 2}), root, progress=False)
    with pytest.raises(StoreError, match="is not a landscape run store"):
        repair_store(root)
    assert _snapshot(root) == before and sorted(p.name for p in root.iterdir()) == ["store.sqlite"]
    con = sqlite3.connect(root / "store.sqlite")
    try:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        assert con.execute("SELECT name, sql FROM sqlite_master ORDER BY name").fetchall() == tables
    finally:
        con.close()


# ----------------------------------------------------------------------------------------------
# damaged database pages
# ----------------------------------------------------------------------------------------------


def test_damaged_database_pages_are_reported_on_open(tmp_path: Path) -> None:
    root = tmp_path / "s"
    with RunStore(root) as s:
        run = s.create_run({"exp": "pages"})
        for step in range(400):
            s.log_metrics(run, step, {"loss": np.arange(8.0) + step, "acc": np.arange(8.0)}, seeds=list(range(8)))
    db = root / "store.sqlite"
    assert not (root / "store.sqlite-wal").exists()  # everything is in the main file
    page = _sql(root, "PRAGMA page_size")[0][0]
    n_pages = db.stat().st_size // page
    assert n_pages > 20
    raw = bytearray(db.read_bytes())
    first = n_pages // 2
    raw[first * page:(first + 2) * page] = b"\xa5" * (2 * page)  # two b-tree pages of the metrics
    db.write_bytes(bytes(raw))
    before = _snapshot(root)
    for ro in (True, False):
        with pytest.raises(StoreError, match=r"is damaged \(SQLite quick_check: ") as err:
            RunStore(root, read_only=ro)
        assert "\n" not in str(err.value) and "landscape store repair" in str(err.value)
    with pytest.raises(StoreError, match="is damaged"):
        train(TrainConfig(**{**CFG, "steps": 2}), root, progress=False)
    assert _without_sqlite_companions(_snapshot(root)) == before


# ----------------------------------------------------------------------------------------------
# stores written by version 1 of the format
# ----------------------------------------------------------------------------------------------

_V1_SCHEMA = """
CREATE TABLE runs (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL UNIQUE,
    config_hash TEXT NOT NULL UNIQUE, config TEXT NOT NULL, created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('running', 'finished', 'failed', 'interrupted')));
CREATE TABLE metrics (run_id INTEGER NOT NULL REFERENCES runs(id), step INTEGER NOT NULL CHECK (step >= 0),
    seed INTEGER NOT NULL CHECK (seed >= -1), key TEXT NOT NULL, value REAL,
    PRIMARY KEY (run_id, key, step, seed)) WITHOUT ROWID;
CREATE TABLE checkpoints (run_id INTEGER NOT NULL REFERENCES runs(id),
    kind TEXT NOT NULL CHECK (kind IN ('checkpoint', 'final')), step INTEGER CHECK (step >= 0),
    file TEXT NOT NULL UNIQUE, sha256 TEXT NOT NULL, nbytes INTEGER NOT NULL, created_at REAL NOT NULL,
    CHECK (kind = 'final' OR step IS NOT NULL));
CREATE UNIQUE INDEX checkpoints_step ON checkpoints(run_id, step) WHERE kind = 'checkpoint';
CREATE UNIQUE INDEX checkpoints_final ON checkpoints(run_id) WHERE kind = 'final';
CREATE TABLE artifacts (id INTEGER PRIMARY KEY AUTOINCREMENT, run_id INTEGER NOT NULL REFERENCES runs(id),
    kind TEXT NOT NULL, path TEXT NOT NULL, meta TEXT NOT NULL, created_at REAL NOT NULL,
    UNIQUE (run_id, path));
CREATE TABLE results (run_id INTEGER NOT NULL REFERENCES runs(id), key TEXT NOT NULL, value TEXT NOT NULL,
    updated_at REAL NOT NULL, PRIMARY KEY (run_id, key));
"""


def _write_v1_copy(src: Path, dst: Path) -> None:
    """The store at ``src`` in the version-1 layout: no application_id, no reason, bare tensor files."""
    dst.mkdir()
    con = sqlite3.connect(dst / "store.sqlite")
    con.execute("PRAGMA journal_mode = WAL")
    con.executescript(_V1_SCHEMA)
    con.execute("PRAGMA user_version = 1")
    with RunStore(src, read_only=True) as s:
        for r in s.list_runs():
            con.execute("INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (r.id, r.name, r.config_hash, json.dumps(r.config, sort_keys=True, separators=(",", ":")),
                         r.created_at, r.created_at, r.status))
            con.executemany("INSERT INTO metrics VALUES (?, ?, ?, ?, ?)",
                            [(r.id, m.step, m.seed, m.key, None if np.isnan(m.value) else m.value)
                             for m in s.metrics_long(r)])
            con.executemany("INSERT INTO results VALUES (?, ?, ?, 0)",
                            [(r.id, k, json.dumps(v)) for k, v in s.results(r).items()])
            buf = io.BytesIO()
            torch.save(s.load_final(r), buf)  # version 1: the bare state
            rel = f"tensors/run-{r.id:06d}/final-{secrets.token_hex(8)}.pt"
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            (dst / rel).write_bytes(buf.getvalue())
            con.execute("INSERT INTO checkpoints VALUES (?, 'final', ?, ?, ?, ?, 0)",
                        (r.id, r.config["steps"], rel, hashlib.sha256(buf.getvalue()).hexdigest(),
                         len(buf.getvalue())))
    con.commit()
    con.close()


def test_version1_store_opens_plots_the_same_figures_and_upgrades(tmp_path: Path) -> None:
    new = tmp_path / "new"
    name = train(TrainConfig(**PLOT_CFG), new, progress=False).run_name
    old = tmp_path / "old"
    _write_v1_copy(new, old)
    before = _snapshot(old)
    assert _sql(old, "PRAGMA application_id") == [(0,)] and _sql(old, "PRAGMA user_version") == [(1,)]

    with RunStore(old, read_only=True) as s:
        (r,) = s.list_runs()
        assert (r.name, r.status, r.reason) == (name, "finished", None)
        with RunStore(new, read_only=True) as t:
            assert _same_state(s.load_final(r), t.load_final(name))
    # the same figures, byte for byte, from the old layout (read-only: the old store is unchanged)
    assert _cli_func(["plot", str(old), "--out", str(tmp_path / "f_old")]) == 0
    assert _cli_func(["plot", str(new), "--out", str(tmp_path / "f_new")]) == 0
    figs_old, figs_new = _snapshot(tmp_path / "f_old"), _snapshot(tmp_path / "f_new")
    assert figs_old == figs_new and any(k.endswith(".png") for k in figs_old)
    assert _without_sqlite_companions(_snapshot(old)) == _without_sqlite_companions(before)

    with RunStore(old) as s:  # a writable open upgrades in place
        s.set_status(name, "failed", "a reason")
        assert s.get_run(name).reason == "a reason"
        s.save_checkpoint(name, 1, {"w": torch.ones(2)})
        assert torch.equal(s.load_checkpoint(name, 1)["w"], torch.ones(2))
    assert _sql(old, "PRAGMA application_id") == [(APPLICATION_ID,)] and _sql(old, "PRAGMA user_version") == [(2,)]
    assert "reason" in {row[1] for row in _sql(old, "PRAGMA table_info(runs)")}


# ----------------------------------------------------------------------------------------------
# setup failures and failed runs
# ----------------------------------------------------------------------------------------------


def test_setup_failure_creates_nothing_in_out(tmp_path: Path) -> None:
    out = tmp_path / "X"
    with pytest.raises((Exception, SystemExit)):
        _cli_func(["train", "--activation", "sympy:1/0", "--d", "2", "--n", "3", "--seeds", "1", "--steps", "2",
                   "--batch", "4", "--eval-batch", "8", "--device", "cpu", "--no-progress", "--out", str(out)])
    assert not out.exists()
    with pytest.raises(Exception):
        train(TrainConfig(task="gp:sympy:1/0", activations=("sympy:1/0",), attention="kernel", d=2, n=3, seeds=1,
                          steps=2, batch=4, eval_batch=8, device="cpu"), out, progress=False)
    assert not out.exists()


def test_failure_after_the_run_exists_marks_it_failed_with_the_reason(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = TrainConfig(**{**CFG, "steps": 12})

    def broken(task: object, config: object, generator: object) -> None:
        raise RuntimeError("the prompt sampler broke")

    monkeypatch.setattr(train_mod, "sample_batch", broken)
    with pytest.raises(RuntimeError, match="the prompt sampler broke"):
        train(cfg, tmp_path / "a", progress=False)
    monkeypatch.undo()
    with RunStore(tmp_path / "a", read_only=True) as s:
        (r,) = s.list_runs()
        assert (r.status, r.reason) == ("failed", "RuntimeError: the prompt sampler broke")
    assert _sql(tmp_path / "a", "SELECT status, reason FROM runs") == [("failed", "RuntimeError: the prompt sampler broke")]
    # the same run trained again finishes and forgets the reason
    train(cfg, tmp_path / "a", progress=False)
    with RunStore(tmp_path / "a", read_only=True) as s:
        (r,) = s.list_runs()
        assert (r.status, r.reason) == ("finished", None)

    # a failure while resuming (before the first step) is recorded too, not left "running"
    with RunStore(tmp_path / "b") as s:
        run = s.create_run(cfg.to_dict())
        s.save_checkpoint(run, 10, {"format": 1, "config_hash": "0" * 64, "step": 10})
    with pytest.raises(ValueError, match="does not belong to this config"):
        train(cfg, tmp_path / "b", progress=False)
    ((status, reason),) = _sql(tmp_path / "b", "SELECT status, reason FROM runs")
    assert status == "failed" and reason.startswith("ValueError: checkpoint at step 10")


# ----------------------------------------------------------------------------------------------
# two writers of one run
# ----------------------------------------------------------------------------------------------

TRAINER = textwrap.dedent(
    """
    import json, sys, time
    import torch
    torch.set_num_threads(1)
    from landscape.experiment.train import TrainConfig, train
    cfg = TrainConfig(**json.loads(sys.argv[2]))
    def pace(step, state):
        if step == 12:  # hold the run (and its lock) here until the parent kills this process
            print("training", flush=True)
            while True:
                time.sleep(0.05)
    train(cfg, sys.argv[1], progress=False, callback=pace)
    """
)

SECOND = textwrap.dedent(
    """
    import json, sys
    from landscape.experiment.store import StoreError
    from landscape.experiment.train import TrainConfig, train
    try:
        train(TrainConfig(**json.loads(sys.argv[2])), sys.argv[1], progress=False)
    except StoreError as exc:
        print(exc)
        sys.exit(3)
    print("trained")
    """
)


def test_second_trainer_of_the_same_run_refuses_and_the_lock_dies_with_its_holder(tmp_path: Path) -> None:
    cfg_dict = {**CFG, "steps": 30}
    root = tmp_path / "s"
    script = tmp_path / "trainer.py"
    script.write_text(TRAINER)
    first = subprocess.Popen([sys.executable, str(script), str(root), json.dumps(cfg_dict)], env=_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert first.stdout is not None
        assert first.stdout.readline().strip() == "training", first.stderr.read() if first.stderr else ""
        second = subprocess.run([sys.executable, "-c", SECOND, str(root), json.dumps(cfg_dict)], env=_env(),
                                capture_output=True, text=True, timeout=HANG_GUARD_S)
        assert second.returncode == 3, second.stderr
        msg = second.stdout.strip()
        assert f"is being written by process {first.pid} on host " in msg and "\n" not in msg
        assert first.poll() is None  # the first one was not disturbed
        os.kill(first.pid, signal.SIGKILL)
    finally:
        if first.poll() is None:
            first.kill()
        first.communicate(timeout=60)
    # the kill released the lock: training resumes, and ends as an uninterrupted run
    cfg = TrainConfig(**cfg_dict)
    resumed = train(cfg, root, progress=False)
    assert resumed.resumed_from == 10
    reference = train(cfg, tmp_path / "reference", progress=False)
    for k in reference.params:
        assert torch.equal(resumed.params[k], reference.params[k]), k


def test_writer_lock_waits_for_its_timeout_then_names_the_holder(tmp_path: Path) -> None:
    with RunStore(tmp_path) as a, RunStore(tmp_path) as b:
        run = a.create_run({"lock": 1})
        with a.writer_lock(run):
            t0 = time.monotonic()
            with pytest.raises(StoreError, match=f"being written by process {os.getpid()} on host "):
                with b.writer_lock(run, timeout=0.3):
                    pass  # pragma: no cover - not reached
            assert time.monotonic() - t0 >= 0.3
        with b.writer_lock(run):  # released
            pass


# ----------------------------------------------------------------------------------------------
# operating-system errors
# ----------------------------------------------------------------------------------------------


def test_full_disk_while_saving_is_a_one_line_store_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with RunStore(tmp_path) as s:
        run = s.create_run({"disk": "full"})
        s.save_checkpoint(run, 1, {"w": torch.ones(3)})

        def no_space(fd: int) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(store_mod.os, "fsync", no_space)
        with pytest.raises(StoreError, match=r"cannot write the checkpoint of run .*No space left on device "
                                             r"\(the disk is full") as err:
            s.save_checkpoint(run, 2, {"w": torch.zeros(3)})
        monkeypatch.undo()
        assert "\n" not in str(err.value)
        assert s.checkpoints(run) == [1] and torch.equal(s.load_checkpoint(run, 1)["w"], torch.ones(3))
    assert [p.name for p in (tmp_path / "tensors").rglob("*.tmp")] == []


def test_unwritable_out_is_a_store_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def read_only_fs(self: Path, *args: object, **kwargs: object) -> None:
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "mkdir", read_only_fs)
    with pytest.raises(StoreError, match=r"cannot create the run store at .*Read-only file system \(choose a "
                                         r"writable directory\) \[EROFS\]"):
        RunStore(tmp_path / "out")


def test_read_only_directory_is_a_store_error_and_still_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "s"
    with RunStore(root) as s:
        s.create_run({"ro": 1}, "ro")
    real_access = os.access

    def no_write(path: object, mode: int, **kwargs: object) -> bool:  # a read-only mount
        return False if mode & os.W_OK else real_access(path, mode, **kwargs)

    monkeypatch.setattr(store_mod.os, "access", no_write)
    with pytest.raises(StoreError, match=r"cannot write the run store at .*: the directory is not writable"):
        RunStore(root)
    with pytest.raises(StoreError, match="the directory is not writable"):
        train(TrainConfig(**{**CFG, "steps": 2}), root, progress=False)
    with RunStore(root, read_only=True) as s:
        assert [r.name for r in s.list_runs()] == ["ro"]
