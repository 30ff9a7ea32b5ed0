"""``landscape verify --params / --run STORE[:RUN] --seed K``: one definition of "distance to the family".

References: the ``family_distance`` that :func:`landscape.experiment.train.train` stores for each
seed (computed while training) must be the distance ``verify`` prints for the same weights, read
back from the store opened read-only; a family point moved by a random invertible G (a model
symmetry of the exp kernel) must be accepted by ``--params`` at distance 0; bad store, run and
seed names must give one-line errors with exit status 2 and change nothing on disk.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from landscape.cli import main
from landscape.experiment.distance import project_onto_family
from landscape.experiment.train import TrainConfig, train
from landscape.theory.families import Problem, get_family

F64 = torch.float64
CFG = dict(task="gp:exp", d=2, n=5, attention="kernel", activations=("exp",), layers=1, family="fgd",
           mask="sparse", seeds=2, steps=6, batch=32, eval_batch=64, lr=0.05, dtype="float64", device="cpu",
           log_every=3, checkpoint_every=0, sigma="random:1")
VERIFY = ["--samples", "2048", "--hessian-samples", "0"]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("runs") / "tiny"
    res = train(TrainConfig(**CFG), str(root), progress=False)
    return root, res


def _contents(root) -> dict[str, bytes]:
    """Every file of a store and its bytes, except SQLite's WAL shared-memory index (a reader maps it)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.name.endswith(("-shm", "-wal"))}


def _one_json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, dict]:
    rc = main(["verify", *argv])
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1, out
    return rc, json.loads(out[0])


def test_verify_run_prints_the_distance_train_stored(store, capsys: pytest.CaptureFixture[str]) -> None:
    root, res = store
    files = _contents(root)
    for seed in (0,):  # seed 1 through the text report below
        rc, obj = _one_json(capsys, ["fgd", "--run", f"{root}:{res.run_name}", "--seed", str(seed), *VERIFY,
                                     "--json"])
        assert rc in (0, 1) and "error" not in obj, obj
        w = obj["weights"]
        stored = float(res.family_distance[seed])
        assert 0 < stored < 1
        # the same projection (one start) as train's: equal to round-off (the stacked and the
        # one-seed calls may order a reduction differently)
        assert w["stored_family_distance"] == stored
        assert w["family_distance"] == pytest.approx(stored, rel=1e-12), (w, stored)
        assert w["source"] == f"run {res.run_name} seed {seed}"
        # the point certified is the projection's: theta(s) of the nearest family point
        params = {k: v[seed].to(F64) for k, v in res.params.items()}
        fam = get_family("fgd", TrainConfig(**CFG).problem())
        proj = project_onto_family(params, fam, starts=1)
        # (the family's scalars are only defined up to the family's own rescaling b -> tb, c -> c/t,
        # so the two points are compared as models: equal predictions on random prompts)
        from landscape.core.model import predict

        Z = torch.randn(16, fam.spec.token_dim, CFG["n"] + 1, generator=torch.Generator().manual_seed(5), dtype=F64)
        p_cert = predict(fam.params({k: float(v) for k, v in obj["point"].items()}), fam.spec, Z)
        p_proj = predict(fam.params({k: float(v) for k, v in proj.values.items()}), fam.spec, Z)
        # along that flat valley the projection stops at its own tolerance: in the full suite's
        # order the two runs ended 1e-5 apart in b0*c0 (distances equal to 1e-12, the minimum is flat)
        assert torch.allclose(p_cert, p_proj, rtol=1e-4, atol=1e-6), (obj["point"], proj.values)
    # text report, RUN left out (the store holds one run)
    rc = main(["verify", "fgd", "--run", str(root), "--seed", "1", *VERIFY])
    text = capsys.readouterr().out
    m = re.search(r"relative distance (\S+) to family fgd modulo its symmetries", text)
    assert m and float(m.group(1)) == pytest.approx(float(res.family_distance[1]), rel=1e-5)
    assert "train stored" in text
    assert _contents(root) == files  # read-only: nothing written


def test_verify_params_accepts_weights_moved_by_a_symmetry(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    """--params: the distance is taken modulo GL; off-family weights are tested at their nearest family point
    and refused only beyond --max-distance."""
    cfg = TrainConfig(**CFG)
    fam = get_family("fgd", cfg.problem())
    theta = fam.params(torch.tensor([0.7, 0.9, -0.4], dtype=F64))  # b0, c0, r0
    G = torch.tensor([[1.0, 0.5, 0.0], [-0.3, 2.0, 0.0], [0.2, 0.1, -1.0]], dtype=F64)
    moved = dict(theta)
    moved["layer0.head0.B"] = G @ theta["layer0.head0.B"]
    moved["layer0.head0.C"] = torch.linalg.inv(G).T @ theta["layer0.head0.C"]
    np.savez(tmp_path / "moved.npz", **{k: v.numpy() for k, v in moved.items()})
    base = ["fgd", "--attention", "kernel", "--activation", "exp", "--data", "gp:exp", "--d", "2", "--n", "5",
            "--sigma", "random:1", *VERIFY]
    rc, obj = _one_json(capsys, [*base, "--params", str(tmp_path / "moved.npz"), "--json"])
    assert rc in (0, 1) and obj["weights"]["family_distance"] < 1e-12, obj
    off = {k: v + 0.05 * (i + 1) for i, (k, v) in enumerate(moved.items())}
    np.savez(tmp_path / "off.npz", **{k: v.numpy() for k, v in off.items()})
    ref = project_onto_family(off, fam, starts=1).distance
    rc, obj = _one_json(capsys, [*base, "--params", str(tmp_path / "off.npz"), "--json"])
    assert obj["weights"]["family_distance"] == pytest.approx(ref, rel=1e-12) and ref > 0.01
    rc, obj = _one_json(capsys, [*base, "--params", str(tmp_path / "off.npz"), "--max-distance", "0.001", "--json"])
    assert rc == 2 and "--max-distance" in obj["error"] and f"{ref:.3g}" in obj["error"]


def test_verify_run_errors(store, tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    root, res = store
    cases = [
        (["--run", str(tmp_path / "nowhere")], "no run store"),
        (["--run", str(tmp_path)], "not a run store"),
        (["--run", f"{root}:nope"], "unknown run"),
        (["--run", str(root), "--seed", "2"], "--seed 2: run"),
        (["--run", str(root), "--point", "b0=1,c0=1,r0=1"], "at most one of"),
        (["--max-distance", "0.1"], "--max-distance applies"),
    ]
    for extra, message in cases:
        rc, obj = _one_json(capsys, ["fgd", *extra, *VERIFY, "--json"])
        assert rc == 2 and message in obj["error"], (extra, obj)
        assert "\n" not in obj["error"]
