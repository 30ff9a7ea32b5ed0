"""A run store written by an earlier layout of the package still opens, trains, plots and certifies.

``tests/data/store-flat-layout`` was written by ``landscape train`` as the package stood before its
modules moved into layer packages (``landscape/train.py``, ``landscape/store.py`` side by side):
two float64 runs — ``pgd-linear`` (2 layers of linear attention, Σ = ``random:3``, family ``pgd``)
and ``fgd-exp`` (1 layer of exp kernel attention on exp-GP data, family ``fgd``) — with their
metrics, a checkpoint and final weights, and beside them the ``--json`` line each ``train`` printed
(``train-*.json``). The checks compare today's code with those stored numbers: config hashes,
retrained weights (equal to round-off: the fused kernel now sums prompts in SIMD lanes, measured ≤ 2.2e-16 apart), the plotted figures, and the family distance (unchanged where the
family has no symmetry to quotient, never larger where the projection now quotients one).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from landscape.experiment.distance import project_stacked
from landscape.experiment.store import RunStore, config_hash
from landscape.experiment.train import TrainConfig, stored_config, train
from landscape.tolerances import ATOL

FIXTURE = Path(__file__).resolve().parent / "data" / "store-flat-layout"
RUNS = ("pgd-linear", "fgd-exp")


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
            and not p.name.endswith(("-wal", "-shm")) and p.name != "writer.lock"}


@pytest.fixture()
def old_store(tmp_path: Path) -> Path:
    root = tmp_path / "old"
    shutil.copytree(FIXTURE, root)
    return root


def _printed(name: str) -> dict:
    return json.loads((FIXTURE / f"train-{name}.json").read_text())


def test_stored_configs_hash_as_they_did_and_build(old_store: Path) -> None:
    with RunStore(old_store, read_only=True) as s:
        runs = {r.name: r for r in s.list_runs()}
        assert set(runs) == set(RUNS) and all(r.status == "finished" for r in runs.values())
        for r in runs.values():
            cfg = stored_config(r)
            assert cfg is not None
            # the stored hash is today's hash of the stored config, and of the config rebuilt from it
            assert config_hash(r.config) == r.config_hash == config_hash(cfg.to_dict())
            assert cfg.build().family is not None


@pytest.mark.parametrize("name", RUNS)
def test_today_s_training_repeats_the_stored_run_to_round_off(old_store: Path, tmp_path: Path, name: str) -> None:
    with RunStore(old_store, read_only=True) as s:
        r = s.get_run(name)
        old = s.load_final(r)
        old_loss = s.metrics(r, "loss")["loss"]
        cfg = TrainConfig.from_dict(r.config)
    res = train(cfg, tmp_path / "new", name=name, progress=False)
    with RunStore(tmp_path / "new", read_only=True) as s:
        new = s.load_final(name)
        new_loss = s.metrics(name, "loss")["loss"]
    # same seeds, same prompts, same steps: the weights agree to float64 round-off (the fused engine's
    # summation order changed when it began to vectorise across prompts; ulp-level, not a new run)
    tol = ATOL[torch.float64]
    assert old["params"].keys() == new["params"].keys()
    for k in old["params"]:
        assert float((old["params"][k] - new["params"][k]).abs().max()) <= tol, k
    assert list(old_loss.steps) == list(new_loss.steps)
    assert torch.allclose(torch.as_tensor(old_loss.values), torch.as_tensor(new_loss.values), rtol=0, atol=tol)
    assert [float(v) for v in old["final_loss"]] == _printed(name)["final_loss"]
    assert res.run == name


def test_family_distance_of_the_stored_weights(old_store: Path) -> None:
    with RunStore(old_store, read_only=True) as s:
        for name in RUNS:
            r = s.get_run(name)
            params = {k: v.to(torch.float64) for k, v in s.load_final(r)["params"].items()}
            family = stored_config(r).build().family
            g = torch.Generator().manual_seed(0)
            now = project_stacked(params, family, generator=g).distance
            then = torch.tensor(_printed(name)["family_distance"], dtype=torch.float64)
            if name == "pgd-linear":
                # P, Q attention with the pgd family: nothing to quotient; the same projection
                assert torch.allclose(now, then, rtol=1e-6, atol=0.0), (now, then)
            else:
                # exp kernel: B → GB, C → G^{-T}C leaves the model unchanged; the projection now
                # quotients it, so the distance can only fall (it fell by ≥ 5 % on both seeds)
                assert bool((now <= then * 0.95).all()), (now, then)


def test_plot_reads_the_old_store_and_leaves_it_unchanged(old_store: Path, tmp_path: Path) -> None:
    from landscape.cli import main

    before = _files(old_store)
    assert main(["plot", str(old_store), "--out", str(tmp_path / "fig")]) == 0
    pngs = sorted(p.name for p in (tmp_path / "fig").rglob("*.png"))
    assert any("loss" in p for p in pngs), pngs
    assert _files(old_store) == before


def test_verify_certifies_a_seed_of_the_old_store(old_store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from landscape.cli import main

    code = main(["verify", "pgd", "--run", f"{old_store}:pgd-linear", "--seed", "0", "--json"])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # 40 steps from a random start leave the seed at relative distance 0.9 from the family: the
    # certificate must say so (a "stationary" here would be a test without power)
    assert _printed("pgd-linear")["family_distance"][0] > 0.5
    assert (code, out["verdict"], out["family"]) == (1, "not_stationary", "pgd")
    assert out["grad_norm_normal_lower"] > out["tol"]
