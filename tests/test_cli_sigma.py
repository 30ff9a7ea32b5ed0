"""``--sigma diag:`` is the diagonal matrix; ``spectrum:`` is the randomly rotated spectrum that
``diag:`` used to mean; run configs stored before keep their meaning and their config hashes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from landscape.cli._args import parse_sigma
from landscape.cli import main
from landscape.experiment.store import RunStore, config_hash
from landscape.experiment.sweep import expand_grid, parse_sweep
from landscape.core.tasks import random_covariance
from landscape.experiment.train import TrainConfig, train

F64 = torch.float64

# What the code before `spectrum:` existed wrote into a run store for
# TrainConfig(task="linear", d=3, n=4, sigma="diag:1,2,3", seed=5, steps=2, batch=8, eval_batch=16,
# log_every=1): its to_dict(), its config_hash and its sigma_matrix(), printed by that code.
OLD_CONFIG = json.loads(
    '{"task": "linear", "d": 3, "n": 4, "sigma": "diag:1,2,3", "task_cov": "identity", "covariates": null, '
    '"noise": 0.0, "probs": [0.5, 0.5], "margin": 0.0, "flip": 0.0, "attention": "linear", "activations": '
    '["linear"], "heads": 1, "layers": 1, "family": null, "mask": "full", "init_std": 0.1, "seeds": 1, "steps": 2, '
    '"batch": 8, "lr": 0.001, "optimizer": "adam", "betas": [0.9, 0.999], "eps": 1e-08, "momentum": 0.0, '
    '"weight_decay": 0.0, "clip": null, "schedule": "constant", "warmup": 0, "resample_every": 1, "dtype": '
    '"float32", "seed": 5, "engine": "stacked", "log_every": 1, "checkpoint_every": 1000, "eval_batch": 16, '
    '"distance_every": null, "format": 1}')
OLD_HASH = "faf40c70f929a27ea576c085af7d2aeebe3f08ee98a9abaf2e946d851d88b962"
OLD_MATRIX = torch.tensor([[2.6526667653761535, -0.02727000315791686, -0.6363686657074606],
                           [-0.02727000315791686, 1.6844291772751896, -0.5241135426284858],
                           [-0.6363686657074606, -0.5241135426284858, 1.6629040573486567]], dtype=F64)
# Runs stored before the engine choice existed were trained by the stacked engine: that engine
# (``--engine stacked``) is what finds and resumes them; the default ``auto`` is another run.
SMALL = dict(task="linear", d=3, n=4, seed=5, steps=2, batch=8, eval_batch=16, log_every=1, device="cpu",
             engine="stacked")


def test_diag_is_the_diagonal_matrix() -> None:
    want = torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=F64))
    assert torch.equal(parse_sigma("diag:1,2,3", 3, seed=5), want)
    assert torch.equal(TrainConfig(**{**SMALL, "sigma": "diag:1,2,3"}).sigma_matrix(), want)
    with pytest.raises(ValueError, match="finite"):
        parse_sigma("diag:1,nan,3", 3)
    with pytest.raises(ValueError, match="finite"):
        parse_sigma("spectrum:1,inf,3", 3)


def test_spectrum_is_the_old_rotated_matrix() -> None:
    # the rotation of the seed applied to the spectrum: U^T diag(l) U, U Haar from Generator(seed)
    ref = random_covariance(3, torch.Generator().manual_seed(5), spectrum=[1.0, 2.0, 3.0])
    got = parse_sigma("spectrum:1,2,3", 3, seed=5)
    assert torch.equal(got, ref)
    assert torch.allclose(got, OLD_MATRIX, rtol=0, atol=1e-15)  # what diag:1,2,3 gave with seed 5
    assert torch.equal(parse_sigma("spectrum:1,2,3:5", 3, seed=0), got)
    assert torch.allclose(torch.linalg.eigvalsh(got), torch.tensor([1.0, 2.0, 3.0], dtype=F64), rtol=1e-12)
    assert torch.equal(TrainConfig(**{**SMALL, "sigma": "spectrum:1,2,3"}).sigma_matrix(), got)
    with pytest.raises(ValueError, match="integer SEED"):
        parse_sigma("spectrum:1,2,3:x", 3)


def test_an_old_stored_config_reads_back_to_the_old_matrix_and_hash() -> None:
    assert config_hash(OLD_CONFIG) == OLD_HASH
    cfg = TrainConfig.from_dict({**OLD_CONFIG, "device": "cpu"})
    assert cfg.sigma == "spectrum:1,2,3"
    assert torch.allclose(cfg.sigma_matrix(), OLD_MATRIX, rtol=0, atol=1e-15)
    # the hash of what is stored again is the one the old store holds: resume finds the run
    assert config_hash(cfg.to_dict()) == OLD_HASH
    assert config_hash(TrainConfig(**{**SMALL, "sigma": "spectrum:1,2,3"}).to_dict()) == OLD_HASH
    assert config_hash(TrainConfig(**{**SMALL, "sigma": "spectrum:1,2,3:5"}).to_dict()) == OLD_HASH
    # the diagonal is another run, stored as its matrix
    diag = TrainConfig(**{**SMALL, "sigma": "diag:1,2,3"})
    assert diag.to_dict()["sigma"] == [[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 3.0]]
    assert config_hash(diag.to_dict()) != OLD_HASH
    back = TrainConfig.from_dict(diag.to_dict())
    assert torch.equal(back.sigma_matrix(), diag.sigma_matrix())
    assert config_hash(back.to_dict()) == config_hash(diag.to_dict())
    # another rotation seed is kept as written
    other = TrainConfig(**{**SMALL, "sigma": "spectrum:1,2,3:7"})
    assert other.to_dict()["sigma"] == "spectrum:1,2,3:7"
    assert torch.equal(TrainConfig.from_dict(other.to_dict()).sigma_matrix(), other.sigma_matrix())


def test_an_old_store_is_resumed_by_the_spectrum_spelling(tmp_path: Path) -> None:
    with RunStore(tmp_path / "s") as store:
        old = store.create_run(OLD_CONFIG)  # the row an old `train --sigma diag:1,2,3 --seed 5` wrote
        res = train(TrainConfig(**{**SMALL, "sigma": "spectrum:1,2,3"}), store, progress=False)
        assert res.run_name == old.name
        res_diag = train(TrainConfig(**{**SMALL, "sigma": "diag:1,2,3"}), store, progress=False)
        assert res_diag.run_name != old.name
        assert len(store.list_runs()) == 2


def test_sweep_and_cli_spell_both_forms(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = parse_sweep({"base": {k: v for k, v in SMALL.items() if k != "device"},
                        "grid": {"sigma": ["diag:1,2,3", "spectrum:1,2,3"]}})
    a, b = expand_grid(spec)
    assert torch.equal(a.config.sigma_matrix(), torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=F64)))
    assert torch.allclose(b.config.sigma_matrix(), OLD_MATRIX, rtol=0, atol=1e-15)
    # solve on the diagonal equals solve on the same matrix from a file
    import numpy as np

    np.save(tmp_path / "d.npy", np.diag([2.0, 1.0]))
    outs = []
    for s in ("diag:2,1", str(tmp_path / "d.npy")):
        assert main(["solve", "pgd", "--d", "2", "--n", "3", "--sigma", s, "--json"]) == 0
        outs.append(json.loads(capsys.readouterr().out)["stationary_points"])
    assert outs[0] == outs[1]
    assert main(["solve", "pgd", "--d", "2", "--n", "3", "--sigma", "diag:2", "--json"]) == 2
    assert "expected d = 2" in json.loads(capsys.readouterr().out)["error"]


def test_the_engine_is_part_of_a_runs_identity_and_an_unset_chunk_is_not_stored() -> None:
    stacked = TrainConfig(**{**SMALL, "sigma": "spectrum:1,2,3"})
    auto = TrainConfig(**{**SMALL, "sigma": "spectrum:1,2,3", "engine": "auto"})
    assert "chunk" not in stacked.to_dict() and stacked.to_dict()["engine"] == "stacked"
    assert config_hash(stacked.to_dict()) == OLD_HASH != config_hash(auto.to_dict())
    chunked = TrainConfig(**{**SMALL, "sigma": "spectrum:1,2,3", "chunk": 4})
    assert chunked.to_dict()["chunk"] == 4 and config_hash(chunked.to_dict()) != OLD_HASH
    assert TrainConfig.from_dict(chunked.to_dict()).chunk == 4
