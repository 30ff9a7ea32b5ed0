"""Tests of the embedded run store (landscape/experiment/store.py).

References: hand-written canonical JSON and SHA-256 for the config hash; bit patterns of the
saved tensors; exact row counts by raw SQL; a generator restored from a checkpoint reproducing the
draws of the original; real subprocesses writing concurrently and killed with SIGKILL.
"""

from __future__ import annotations

import hashlib
import math
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from limits import HANG_GUARD_S
from landscape.experiment.store import (
    APPLICATION_ID,
    SCHEMA_VERSION,
    SHARED_SEED,
    Artifact,
    MetricRow,
    Run,
    RunStore,
    StoreError,
    config_hash,
)

REPO = Path(__file__).resolve().parents[1]


def _count(root: Path, sql: str, params: tuple[object, ...] = ()) -> int:
    con = sqlite3.connect(root / "store.sqlite")
    try:
        return int(con.execute(sql, params).fetchone()[0])
    finally:
        con.close()


def _bits(t: torch.Tensor) -> torch.Tensor:
    """Integer view of a float tensor: equal bits <=> equal numbers including NaN payloads."""
    itype = {torch.float64: torch.int64, torch.float32: torch.int32, torch.bfloat16: torch.int16}
    return t.contiguous().view(itype[t.dtype])


def _python_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


# ----------------------------------------------------------------------------------------------
# config hash
# ----------------------------------------------------------------------------------------------


def test_config_hash_is_sha256_of_canonical_json() -> None:
    config = {"model": {"heads": 2, "kind": "linear"}, "lr": 0.5, "d": [1, 2]}
    reference = hashlib.sha256(
        b'{"d":[1,2],"lr":0.5,"model":{"heads":2,"kind":"linear"}}'
    ).hexdigest()
    assert config_hash(config) == reference
    reordered = {"lr": 0.5, "d": (1, 2), "model": {"kind": "linear", "heads": 2}}
    assert config_hash(reordered) == reference
    assert config_hash({**config, "lr": 0.25}) != reference
    assert config_hash({"s": "é"}) == hashlib.sha256('{"s":"é"}'.encode()).hexdigest()


def test_config_hash_names_offending_key() -> None:
    with pytest.raises(TypeError, match=r"config\['model'\]\['act'\].*set"):
        config_hash({"model": {"act": {1, 2}}})
    with pytest.raises(TypeError, match=r"config\['xs'\]\[1\].*object"):
        config_hash({"xs": [1, object()]})
    with pytest.raises(ValueError, match=r"config\['lr'\].*not finite"):
        config_hash({"lr": float("nan")})
    with pytest.raises(TypeError, match="keys must be str"):
        config_hash({"a": {1: 2}})
    with pytest.raises(TypeError, match="config must be a dict"):
        config_hash([1, 2])  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------
# opening, runs
# ----------------------------------------------------------------------------------------------


def test_open_creates_layout_in_wal_mode(tmp_path: Path) -> None:
    root = tmp_path / "a" / "b"
    with RunStore(root) as store:
        assert store.list_runs() == []
    assert (root / "store.sqlite").is_file() and (root / "tensors").is_dir()
    con = sqlite3.connect(root / "store.sqlite")
    try:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
        assert con.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    finally:
        con.close()


def test_open_errors(tmp_path: Path) -> None:
    afile = tmp_path / "file.txt"
    afile.write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        RunStore(afile)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "store.sqlite").write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="not a usable run store"):
        RunStore(bad)
    with pytest.raises(ValueError, match="keep_checkpoints"):
        RunStore(tmp_path / "k", keep_checkpoints=0)
    store = RunStore(tmp_path / "c")
    store.close()
    store.close()
    with pytest.raises(RuntimeError, match="closed"):
        store.list_runs()


def test_create_run_resume_and_name_conflicts(tmp_path: Path) -> None:
    config = {"lr": 0.1, "seeds": 4}
    other = {"lr": 0.2, "seeds": 4}
    with RunStore(tmp_path) as store:
        run = store.create_run(config, "exp")
        assert isinstance(run, Run)
        assert (run.id, run.name, run.status) == (1, "exp", "running")
        assert run.config == config and run.config_hash == config_hash(config)
        assert store.create_run(config, "exp") == run
        assert store.create_run(dict(reversed(list(config.items())))) == run
        with pytest.raises(ValueError) as info:
            store.create_run(other, "exp")
        msg = str(info.value)
        assert "another config" in msg
        assert config_hash(config) in msg and config_hash(other) in msg
        with pytest.raises(ValueError, match="already stored as run 'exp'"):
            store.create_run(config, "renamed")
        with pytest.raises(ValueError, match="exist_ok"):
            store.create_run(config, exist_ok=False)
        second = store.create_run(other)
        assert second.id == 2 and second.name == "run-" + config_hash(other)[:12]
        assert [r.id for r in store.list_runs()] == [1, 2]
    with RunStore(tmp_path) as store:
        assert store.get_run("exp") == run
        assert store.get_run(2) == second
        assert store.create_run(config) == run
        assert _count(tmp_path, "SELECT COUNT(*) FROM runs") == 2


def test_get_run_and_status_errors(tmp_path: Path) -> None:
    with RunStore(tmp_path) as store:
        run = store.create_run({"a": 1}, "known")
        with pytest.raises(ValueError, match=r"unknown run 'nope'.*'known'"):
            store.get_run("nope")
        with pytest.raises(ValueError, match="unknown run 7"):
            store.get_run(7)
        with pytest.raises(TypeError, match="name"):
            store.get_run(1.0)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="unknown status 'done'.*finished"):
            store.set_status(run, "done")
        with pytest.raises(TypeError, match=r"config\['f'\]"):
            store.create_run({"f": np.float32(1.0)})
        updated = store.set_status(run, "interrupted")
        assert updated.status == "interrupted" and updated.id == run.id
    with RunStore(tmp_path) as store:
        assert store.get_run("known").status == "interrupted"
        store.set_status("known", "finished")
        assert store.get_run(run.id).status == "finished"


def test_run_from_another_store_is_rejected(tmp_path: Path) -> None:
    with RunStore(tmp_path / "a") as a, RunStore(tmp_path / "b") as b:
        ra = a.create_run({"x": 1})
        b.create_run({"x": 2})
        with pytest.raises(ValueError, match="does not belong"):
            b.log_metrics(ra, 0, {"loss": 1.0})


# ----------------------------------------------------------------------------------------------
# metrics
# ----------------------------------------------------------------------------------------------


def test_metrics_round_trip_per_seed(tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(0)
    seeds = [3, 7, 11]
    losses = torch.randn(5, 3, generator=gen, dtype=torch.float64)
    accs = torch.rand(5, 3, generator=gen).to(torch.float32)
    with RunStore(tmp_path) as store:
        run = store.create_run({"m": 1})
        for step in range(5):
            store.log_metrics(
                run, 10 * step, {"loss": losses[step], "acc": accs[step].numpy(), "lr": 0.5**step},
                seeds=None if step == 0 else seeds,
            )
        # step 0 was logged without seeds: vector entries go to seeds 0, 1, 2 and the scalar lr
        # to SHARED_SEED; later scalars are broadcast to the given seeds.
        out = store.metrics(run)
    assert list(out) == ["acc", "loss", "lr"]
    loss = out["loss"]
    np.testing.assert_array_equal(loss.steps, [0, 10, 20, 30, 40])
    np.testing.assert_array_equal(loss.seeds, [0, 1, 2, 3, 7, 11])
    expected = np.full((5, 6), np.nan)
    expected[0, :3] = losses[0].numpy()
    expected[1:, 3:] = losses[1:].numpy()
    np.testing.assert_array_equal(loss.values, expected)  # float64 stored bit-exactly
    np.testing.assert_array_equal(out["acc"].values[1:, 3:], accs[1:].numpy().astype(np.float64))
    lr = out["lr"]
    np.testing.assert_array_equal(lr.seeds, [SHARED_SEED, 3, 7, 11])
    expected_lr = np.full((5, 4), np.nan)
    expected_lr[0, 0] = 1.0
    expected_lr[1:, 1:] = np.array([0.5**s for s in range(1, 5)])[:, None]
    np.testing.assert_array_equal(lr.values, expected_lr)


def test_metrics_replay_overwrites_never_duplicates(tmp_path: Path) -> None:
    with RunStore(tmp_path) as store:
        run = store.create_run({"m": 2})
        for step in range(6):
            store.log_metrics(run, step, {"loss": np.array([step, -step], float)}, seeds=[0, 1])
        for step in range(3, 6):  # replay after a resume, different numbers
            store.log_metrics(run, step, {"loss": np.array([step + 0.5, math.nan])}, seeds=[0, 1])
        series = store.metrics(run, "loss")["loss"]
        long = store.metrics_long(run, "loss")
    assert _count(tmp_path, "SELECT COUNT(*) FROM metrics") == 12
    np.testing.assert_array_equal(series.values[:3], [[0, 0], [1, -1], [2, -2]])
    np.testing.assert_array_equal(series.values[3:, 0], [3.5, 4.5, 5.5])
    assert np.isnan(series.values[3:, 1]).all()
    assert len(long) == 12 and long[0] == MetricRow(0, 0, "loss", 0.0)
    dense = {(r.step, r.seed): r.value for r in long}
    for i, step in enumerate(series.steps):
        for j, seed in enumerate(series.seeds):
            np.testing.assert_equal(dense[(int(step), int(seed))], series.values[i, j])


def test_metrics_unique_constraint_in_schema(tmp_path: Path) -> None:
    with RunStore(tmp_path) as store:
        run = store.create_run({"m": 3})
        store.log_metrics(run, 0, {"loss": 1.0})
    con = sqlite3.connect(tmp_path / "store.sqlite")
    try:
        with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
            con.execute(
                "INSERT INTO metrics (run_id, step, seed, key, value) VALUES (?, 0, ?, 'loss', 2.0)",
                (run.id, SHARED_SEED),
            )
    finally:
        con.close()


def test_metrics_bad_input(tmp_path: Path) -> None:
    with RunStore(tmp_path) as store:
        run = store.create_run({"m": 4})
        with pytest.raises(ValueError, match="step must be >= 0, got -1"):
            store.log_metrics(run, -1, {"loss": 1.0})
        with pytest.raises(TypeError, match="step must be an int"):
            store.log_metrics(run, 1.5, {"loss": 1.0})  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="3 entries but 2 seeds"):
            store.log_metrics(run, 0, {"loss": torch.zeros(3)}, seeds=[0, 1])
        with pytest.raises(ValueError, match=r"shape \(2, 2\)"):
            store.log_metrics(run, 0, {"loss": torch.zeros(2, 2)})
        with pytest.raises(TypeError, match="'loss' has type str"):
            store.log_metrics(run, 0, {"loss": "high"})  # type: ignore[dict-item]
        with pytest.raises(ValueError, match="distinct"):
            store.log_metrics(run, 0, {"loss": torch.zeros(2)}, seeds=[1, 1])
        with pytest.raises(ValueError, match="seed -2 out of range"):
            store.log_metrics(run, 0, {"loss": torch.zeros(1)}, seeds=[-2])
        with pytest.raises(ValueError, match="unknown run 'ghost'"):
            store.log_metrics("ghost", 0, {"loss": 1.0})
        store.log_metrics(run, 0, {"loss": torch.ones(2)})
        with pytest.raises(ValueError, match=r"no metric 'acc'; logged metrics: \['loss'\]"):
            store.metrics(run, "acc")
    # nothing of the rejected calls was written
    assert _count(tmp_path, "SELECT COUNT(*) FROM metrics") == 2


# ----------------------------------------------------------------------------------------------
# checkpoints
# ----------------------------------------------------------------------------------------------


def test_checkpoint_round_trip_is_bit_exact(tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(1)
    w64 = torch.randn(4, 5, generator=gen, dtype=torch.float64)
    w64[0, 0] = math.nan
    w64[0, 1] = -0.0
    w64[0, 2] = 5e-324  # subnormal
    w32 = torch.randn(7, generator=gen, dtype=torch.float32)
    bf = torch.randn(3, generator=gen).to(torch.bfloat16)
    big = torch.randn(1000, 100, generator=gen, dtype=torch.float64)
    view = big[:2, :3]  # a small view of a large storage
    rng = torch.Generator().manual_seed(42)
    torch.randn(3, generator=rng)
    state = {
        "params": {"layer0.head0.V": w64, "layer0.head0.B": w32, "h": bf},
        "view": view,
        "opt": {0: {"exp_avg": [w32 * 2, 3]}, "lr": 0.01},
        "rng": rng.get_state(),
        "step": 17,
        "note": "adam",
        "pair": (1, 2.5),
        "none": None,
    }
    with RunStore(tmp_path) as store:
        run = store.create_run({"c": 1})
        assert store.latest_checkpoint(run) is None
        store.save_checkpoint(run, 17, state)
        step, loaded = store.latest_checkpoint(run)  # type: ignore[misc]
        files = list((tmp_path / "tensors").rglob("*.pt"))
    assert step == 17
    for key in ("layer0.head0.V", "layer0.head0.B", "h"):
        src, got = state["params"][key], loaded["params"][key]  # type: ignore[index]
        assert got.dtype == src.dtype and got.shape == src.shape
        assert torch.equal(_bits(got), _bits(src))
    assert torch.equal(loaded["view"], view)
    assert torch.equal(loaded["opt"][0]["exp_avg"][0], w32 * 2)
    assert loaded["opt"][0]["exp_avg"][1] == 3 and loaded["opt"]["lr"] == 0.01
    assert (loaded["step"], loaded["note"], loaded["pair"], loaded["none"]) == (17, "adam", (1, 2.5), None)
    # the restored generator continues exactly like the original one
    restored = torch.Generator().set_state(loaded["rng"])
    assert torch.equal(torch.randn(5, generator=restored), torch.randn(5, generator=rng))
    # only the 6 viewed numbers were saved, not the 100 000 of the underlying storage
    assert len(files) == 1 and files[0].stat().st_size < big.numel() * 8 / 10


def test_checkpoint_retention_and_replace(tmp_path: Path) -> None:
    with RunStore(tmp_path, keep_checkpoints=3) as store:
        run = store.create_run({"c": 2})
        for step in (10, 20, 30, 40, 50):
            store.save_checkpoint(run, step, {"w": torch.full((3,), float(step))})
        assert store.checkpoints(run) == [30, 40, 50]
        store.save_checkpoint(run, 40, {"w": torch.full((3,), -1.0)})  # replay replaces
        assert store.checkpoints(run) == [30, 40, 50]
        assert torch.equal(store.load_checkpoint(run, 40)["w"], torch.full((3,), -1.0))
        assert torch.equal(store.load_checkpoint(run, 30)["w"], torch.full((3,), 30.0))
        with pytest.raises(ValueError, match=r"no checkpoint at step 10; stored steps: \[30, 40, 50\]"):
            store.load_checkpoint(run, 10)
        with pytest.raises(ValueError, match="step must be >= 0"):
            store.save_checkpoint(run, -5, {"w": torch.zeros(1)})
        run_dir = tmp_path / "tensors" / f"run-{run.id:06d}"
        assert len(list(run_dir.glob("step-*.pt"))) == 3
    with RunStore(tmp_path) as store:  # default keeps 2
        store.save_checkpoint(run, 60, {"w": torch.zeros(1)})
        assert store.checkpoints(run) == [50, 60]
        assert len(list(run_dir.glob("step-*.pt"))) == 2
    assert _count(tmp_path, "SELECT COUNT(*) FROM checkpoints") == 2


def test_final_weights(tmp_path: Path) -> None:
    with RunStore(tmp_path, keep_checkpoints=1) as store:
        run = store.create_run({"c": 3})
        with pytest.raises(ValueError, match="no final weights"):
            store.load_final(run)
        store.save_final(run, {"w": torch.ones(2, dtype=torch.float64)})
        store.save_final(run, {"w": torch.arange(3, dtype=torch.float64)}, step=99)
        for step in range(3):
            store.save_checkpoint(run, step, {"w": torch.zeros(1)})
        final = store.load_final(run)
        assert torch.equal(final["w"], torch.arange(3, dtype=torch.float64))
        assert store.checkpoints(run) == [2]
    run_dir = tmp_path / "tensors" / f"run-{run.id:06d}"
    assert len(list(run_dir.glob("final-*.pt"))) == 1
    assert _count(tmp_path, "SELECT COUNT(*) FROM checkpoints WHERE kind = 'final' AND step = 99") == 1


def test_checkpoint_bad_state_and_corruption(tmp_path: Path) -> None:
    with RunStore(tmp_path) as store:
        run = store.create_run({"c": 4})
        with pytest.raises(TypeError, match=r"state\['opt'\]\['m'\] has type ndarray"):
            store.save_checkpoint(run, 0, {"opt": {"m": np.zeros(2)}})
        with pytest.raises(TypeError, match="top-level keys must be str"):
            store.save_checkpoint(run, 0, {0: torch.zeros(1)})  # type: ignore[dict-item]
        assert store.checkpoints(run) == []
        assert list((tmp_path / "tensors").rglob("*")) == []
        store.save_checkpoint(run, 0, {"w": torch.zeros(100, dtype=torch.float64)})
        (path,) = (tmp_path / "tensors").rglob("*.pt")
        raw = bytearray(path.read_bytes())
        raw[-30] ^= 0xFF
        path.write_bytes(bytes(raw))
        with pytest.raises(RuntimeError, match="corrupt"):
            store.latest_checkpoint(run)


# ----------------------------------------------------------------------------------------------
# artifacts and results
# ----------------------------------------------------------------------------------------------


def test_artifacts(tmp_path: Path) -> None:
    root = tmp_path / "store"
    with RunStore(root) as store:
        run = store.create_run({"a": 1})
        fig = root / "figures" / "loss.png"
        fig.parent.mkdir()
        fig.write_bytes(b"png")
        outside = tmp_path / "report.md"
        outside.write_text("# report")
        a1 = store.add_artifact(run, "figure", fig, {"dpi": 100})
        assert a1 == Artifact("figure", fig, {"dpi": 100}, a1.created_at)
        store.add_artifact(run, "report", outside)
        store.add_artifact(run, "figure", fig, {"dpi": 200})  # update, no duplicate
        assert [(a.kind, a.path, a.meta) for a in store.artifacts(run)] == [
            ("figure", fig, {"dpi": 200}),
            ("report", outside, {}),
        ]
        assert [a.path for a in store.artifacts(run, kind="report")] == [outside]
        with pytest.raises(ValueError, match="not an existing file"):
            store.add_artifact(run, "figure", root / "missing.png")
        with pytest.raises(TypeError, match=r"meta\['f'\]"):
            store.add_artifact(run, "figure", fig, {"f": object()})
    # paths inside the root are relative: the store can be moved
    moved = tmp_path / "moved"
    root.rename(moved)
    with RunStore(moved) as store:
        paths = [a.path for a in store.artifacts("run-" + config_hash({"a": 1})[:12])]
    assert paths == [moved / "figures" / "loss.png", outside]
    assert paths[0].read_bytes() == b"png"


def test_results(tmp_path: Path) -> None:
    with RunStore(tmp_path) as store:
        run = store.create_run({"r": 1})
        store.log_result(run, "final_loss", 0.125)
        store.log_result(run, "distances", torch.tensor([0.5, 0.25], dtype=torch.float64))
        store.log_result(run, "fit", {"slope": np.float64(-1.5), "ok": True, "bad": math.nan})
        store.log_result(run, "final_loss", 0.0625)
        out = store.results(run)
        with pytest.raises(TypeError, match=r"value\['x'\] has type object"):
            store.log_result(run, "junk", {"x": object()})
    assert list(out) == ["distances", "final_loss", "fit"]
    assert out["final_loss"] == 0.0625 and out["distances"] == [0.5, 0.25]
    assert out["fit"]["slope"] == -1.5 and out["fit"]["ok"] is True and math.isnan(out["fit"]["bad"])
    assert _count(tmp_path, "SELECT COUNT(*) FROM results") == 3


# ----------------------------------------------------------------------------------------------
# concurrency and crash safety
# ----------------------------------------------------------------------------------------------

_WRITER = """
import sys
import numpy as np
from landscape.experiment.store import RunStore

root, worker, n_steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
seeds = [4 * worker + j for j in range(4)]
with RunStore(root, timeout=60) as store:
    run = store.create_run({"experiment": "concurrent"}, "shared")
    for step in range(n_steps):
        own = np.array([1000.0 * step + s for s in seeds])
        store.log_metrics(run, step, {"loss": own, "acc": -own}, seeds=seeds)
        store.log_metrics(run, step, {"both": 1.0 * step})  # same rows from both writers
    print(run.id)
"""


def test_two_processes_write_concurrently(tmp_path: Path) -> None:
    script = tmp_path / "writer.py"
    script.write_text(_WRITER)
    root = tmp_path / "store"  # both processes create the store and the run at the same time
    n_steps = 60
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(root), str(w), str(n_steps)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_python_env(),
        )
        for w in range(2)
    ]
    outs = [p.communicate(timeout=HANG_GUARD_S) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
    assert [out.strip() for out, _ in outs] == ["1", "1"]
    assert _count(root, "SELECT COUNT(*) FROM runs") == 1
    assert _count(root, "SELECT COUNT(*) FROM metrics WHERE key = 'loss'") == 2 * n_steps * 4
    assert _count(root, "SELECT COUNT(*) FROM metrics WHERE key = 'acc'") == 2 * n_steps * 4
    assert _count(root, "SELECT COUNT(*) FROM metrics WHERE key = 'both'") == n_steps
    with RunStore(root) as store:
        loss = store.metrics("shared", "loss")["loss"]
    np.testing.assert_array_equal(loss.seeds, np.arange(8))
    expected = 1000.0 * np.arange(n_steps)[:, None] + np.arange(8)[None, :]
    np.testing.assert_array_equal(loss.values, expected)
    con = sqlite3.connect(root / "store.sqlite")
    try:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        con.close()


def test_threads_share_one_store(tmp_path: Path) -> None:
    errors: list[BaseException] = []
    with RunStore(tmp_path) as store:
        run = store.create_run({"t": 1})

        def work(worker: int) -> None:
            try:
                for step in range(25):
                    store.log_metrics(run, step, {"loss": np.full(2, float(worker))},
                                      seeds=[2 * worker, 2 * worker + 1])
                    if step % 10 == 0:
                        store.log_result(run, f"w{worker}", step)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        loss = store.metrics(run, "loss")["loss"]
        assert store.results(run) == {f"w{w}": 20 for w in range(4)}
    assert _count(tmp_path, "SELECT COUNT(*) FROM metrics") == 4 * 25 * 2
    np.testing.assert_array_equal(loss.values, np.repeat(np.arange(4.0), 2)[None, :].repeat(25, 0))


_TRAINER = """
import sys
import numpy as np
import torch
from landscape.experiment.store import RunStore

root = sys.argv[1]
with RunStore(root) as store:
    run = store.create_run({"experiment": "crash"}, "crash")
    latest = store.latest_checkpoint(run)
    start = 0 if latest is None else latest[0] + 1
    for step in range(start, 10**6):
        store.log_metrics(run, step, {"loss": np.arange(3.0) + step}, seeds=[0, 1, 2])
        w = torch.full((1 << 17,), float(step), dtype=torch.float64)
        store.save_checkpoint(run, step, {"w": w, "step": step})
        print(step, flush=True)
"""


def _check_after_crash(root: Path) -> int:
    with RunStore(root) as store:
        run = store.get_run("crash")
        step, state = store.latest_checkpoint(run)  # type: ignore[misc]
        assert state["step"] == step
        assert torch.equal(state["w"], torch.full((1 << 17,), float(step), dtype=torch.float64))
        loss = store.metrics(run, "loss")["loss"]
        n = loss.steps.size
        # a prefix of steps, every seed present, no duplicates
        np.testing.assert_array_equal(loss.steps, np.arange(n))
        np.testing.assert_array_equal(loss.values, np.arange(n)[:, None] + np.arange(3.0)[None, :])
        assert _count(root, "SELECT COUNT(*) FROM metrics") == 3 * n
        # metrics are logged before the checkpoint of the same step
        assert n - 1 - step in (0, 1)
        steps = store.checkpoints(run)
        assert steps[-1] == step and len(steps) <= 2
    files = sorted((root / "tensors").rglob("*"))
    assert [f for f in files if f.name.endswith(".tmp")] == []
    assert len([f for f in files if f.suffix == ".pt"]) == len(steps)
    return n


def test_sigkill_mid_run_leaves_consistent_store(tmp_path: Path) -> None:
    script = tmp_path / "trainer.py"
    script.write_text(_TRAINER)
    root = tmp_path / "store"
    previous = 0
    # Kill after a different number of completed steps each round; the second round resumes
    # from the latest checkpoint and replays the steps logged after it.
    for round_, (min_steps, extra_delay) in enumerate([(4, 0.013), (3, 0.031)]):
        proc = subprocess.Popen(
            [sys.executable, str(script), str(root)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_python_env(),
        )
        assert proc.stdout is not None
        seen = 0
        deadline = time.monotonic() + HANG_GUARD_S
        while seen < min_steps and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            seen += 1
        time.sleep(extra_delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL, proc.stderr.read() if proc.stderr else ""
        proc.stdout.close()
        if proc.stderr is not None:
            proc.stderr.close()
        assert seen == min_steps
        n = _check_after_crash(root)
        assert n >= previous + min_steps - 1 if round_ else n >= min_steps
        previous = n
