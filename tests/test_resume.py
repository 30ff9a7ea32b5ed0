"""Kill-and-resume: a training process killed with SIGKILL mid-run, then resumed, must end with
exactly the weights and metric rows of an uninterrupted run (float64, bit for bit).

Reference: the same config trained without interruption into another store.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from landscape.experiment.store import RunStore
from landscape.experiment.train import TrainConfig, train
from limits import HANG_GUARD_S

REPO = Path(__file__).resolve().parents[1]

CONFIG = dict(task="linear", d=3, n=6, sigma="random:3", task_cov="inverse", attention="linear", layers=2,
              family="pgd", mask="full", seeds=3, steps=150, batch=16, lr=0.02, schedule="cosine", warmup=5,
              clip=5.0, resample_every=4, dtype="float64", device="cpu", log_every=3, checkpoint_every=10,
              eval_batch=64, distance_every=15)

CHILD = textwrap.dedent(
    """
    import json, sys, time
    import torch
    torch.set_num_threads(1)
    from landscape.experiment.train import TrainConfig, train
    cfg = TrainConfig(**json.loads(sys.argv[2]))
    # a short pause per step (no effect on the numbers) so that the parent can kill mid-run
    train(cfg, sys.argv[1], progress=False, callback=lambda step, state: time.sleep(0.02))
    print("finished", flush=True)
    """
)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _rows(root: Path) -> list[tuple]:
    con = sqlite3.connect(root / "store.sqlite")
    try:
        return con.execute("SELECT key, step, seed, value FROM metrics ORDER BY key, step, seed").fetchall()
    finally:
        con.close()


def _same(a: list[tuple], b: list[tuple]) -> bool:
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if x[:3] != y[:3]:
            return False
        if not (x[3] == y[3] or (x[3] is None and y[3] is None)):
            return False
    return True


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_equals_uninterrupted(tmp_path: Path) -> None:
    cfg = TrainConfig(**CONFIG)
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    killed_root = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, str(script), str(killed_root), json.dumps(CONFIG)],
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + HANG_GUARD_S
        steps: list[int] = []
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
            if not (killed_root / "store.sqlite").exists():
                continue
            with RunStore(killed_root) as s:
                runs = s.list_runs()
                steps = s.checkpoints(runs[0]) if runs else []
                logged = max((r.step for r in s.metrics_long(runs[0])), default=-1) if runs else -1
            # kill once metrics exist past the latest checkpoint: the resumed run must replay them
            if len(steps) >= 2 and logged > steps[-1]:
                break
        assert proc.poll() is None, f"child ended before it could be killed: {proc.communicate()}"
        assert len(steps) >= 2, "no checkpoints appeared in time"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL

    with RunStore(killed_root) as s:
        run = s.list_runs()[0]
        assert run.status == "running"  # the kill left no chance to mark it
        last_ckpt = s.checkpoints(run)[-1]
        logged = max(r.step for r in s.metrics_long(run))
    assert 0 < last_ckpt < cfg.steps and logged < cfg.steps  # killed mid-run, after checkpoints

    resumed = train(cfg, killed_root, progress=False)
    assert resumed.resumed_from is not None and last_ckpt <= resumed.resumed_from < cfg.steps
    reference = train(cfg, tmp_path / "reference", progress=False)
    assert reference.resumed_from is None

    for k in reference.params:
        assert torch.equal(resumed.params[k], reference.params[k]), k
    assert torch.equal(resumed.final_loss, reference.final_loss)
    assert torch.equal(resumed.family_distance, reference.family_distance)

    a, b = _rows(killed_root), _rows(tmp_path / "reference")
    assert len(a) == len(b) and _same(a, b)
    keys = {(k, st, se) for k, st, se, _ in a}
    assert len(keys) == len(a)  # no duplicates
    # every log step 0, 3, ..., 147 and the final step 150, for every seed
    with RunStore(killed_root) as s:
        run = s.list_runs()[0]
        assert run.status == "finished"
        series = s.metrics(run, "eval_loss")["eval_loss"]
        assert series.steps.tolist() == list(range(0, cfg.steps, 3)) + [cfg.steps]
        assert series.seeds.tolist() == [0, 1, 2]
        assert not any(math.isnan(v) for v in series.values.ravel())


def test_resume_in_process_after_an_exception_matches(tmp_path: Path) -> None:
    """The same guarantee without a subprocess: stop at an arbitrary step (not a checkpoint, not a
    resampling step), resume, compare with an uninterrupted run."""
    cfg = TrainConfig(**{**CONFIG, "steps": 40, "distance_every": 0})

    class Stop(Exception):
        pass

    def stop_at_27(step: int, state: object) -> None:
        if step == 27:
            raise Stop

    with pytest.raises(Stop):
        train(cfg, tmp_path / "a", progress=False, callback=stop_at_27)
    with RunStore(tmp_path / "a") as s:
        run = s.list_runs()[0]
        assert run.status == "failed" and s.checkpoints(run) == [10, 20]
    resumed = train(cfg, tmp_path / "a", progress=False)
    assert resumed.resumed_from == 20
    ref = train(cfg, tmp_path / "b", progress=False)
    for k in ref.params:
        assert torch.equal(resumed.params[k], ref.params[k])
    assert _same(_rows(tmp_path / "a"), _rows(tmp_path / "b"))


def test_checkpoint_of_another_config_is_refused(tmp_path: Path) -> None:
    cfg = TrainConfig(**{**CONFIG, "steps": 12, "distance_every": 0})
    with RunStore(tmp_path) as s:
        run = s.create_run(cfg.to_dict())
        s.save_checkpoint(run, 10, {"format": 1, "config_hash": "0" * 64, "step": 10})
    with pytest.raises(ValueError, match="does not belong to this config"):
        train(cfg, tmp_path, progress=False)


def _checkpoint_file(root: Path, step: int) -> Path:
    con = sqlite3.connect(root / "store.sqlite")
    try:
        (rel,) = con.execute("SELECT file FROM checkpoints WHERE kind = 'checkpoint' AND step = ?", (step,)).fetchone()
    finally:
        con.close()
    return root / rel


def _damage(path: Path, how: str) -> str:
    """Damage a checkpoint file; return the word the store uses for it."""
    if how == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        return "corrupt"
    if how == "flip":
        raw = bytearray(path.read_bytes())
        raw[len(raw) // 2] ^= 0x01
        path.write_bytes(bytes(raw))
        return "corrupt"
    path.unlink()
    return "missing"


@pytest.mark.parametrize("how", ["truncate", "flip", "delete"])
def test_resume_falls_back_to_the_newest_intact_checkpoint(tmp_path: Path, how: str,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    """The newest checkpoint (step 20) damaged: resume from step 10, say so, end bit for bit as an
    uninterrupted run."""
    cfg = TrainConfig(**{**CONFIG, "steps": 40, "distance_every": 0})

    def stop_at_27(step: int, state: object) -> None:
        if step == 27:
            raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        train(cfg, tmp_path / "a", progress=False, callback=stop_at_27)
    word = _damage(_checkpoint_file(tmp_path / "a", 20), how)
    with caplog.at_level("WARNING", logger="landscape.experiment.train"):
        resumed = train(cfg, tmp_path / "a", progress=False)
    assert resumed.resumed_from == 10
    messages = [r.getMessage() for r in caplog.records if r.name == "landscape.experiment.train"]
    assert len(messages) == 2, messages
    assert messages[0].startswith("run ") and "skipping the checkpoint at step 20" in messages[0]
    assert f"is {word}" in messages[0] and "\n" not in messages[0]
    assert messages[1].endswith("resuming from the checkpoint at step 10")
    ref = train(cfg, tmp_path / "b", progress=False)
    for k in ref.params:
        assert torch.equal(resumed.params[k], ref.params[k])
    assert _same(_rows(tmp_path / "a"), _rows(tmp_path / "b"))


def test_resume_with_every_checkpoint_damaged_starts_over(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = TrainConfig(**{**CONFIG, "steps": 25, "distance_every": 0})

    def stop_at_22(step: int, state: object) -> None:
        if step == 22:
            raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        train(cfg, tmp_path / "a", progress=False, callback=stop_at_22)
    _damage(_checkpoint_file(tmp_path / "a", 20), "truncate")
    _damage(_checkpoint_file(tmp_path / "a", 10), "flip")
    with caplog.at_level("WARNING", logger="landscape.experiment.train"):
        resumed = train(cfg, tmp_path / "a", progress=False)
    assert resumed.resumed_from is None
    messages = [r.getMessage() for r in caplog.records if r.name == "landscape.experiment.train"]
    assert [("step 20" in m, "step 10" in m) for m in messages[:2]] == [(True, False), (False, True)]
    assert messages[2].endswith("resuming from step 0 (no stored checkpoint verifies)")
    ref = train(cfg, tmp_path / "b", progress=False)
    for k in ref.params:
        assert torch.equal(resumed.params[k], ref.params[k])
