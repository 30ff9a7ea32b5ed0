"""Tests of sweeps (landscape/experiment/sweep.py) and the ``landscape sweep`` / ``landscape plot`` commands.

References: the Cartesian product computed by hand (count, order, values); TrainConfig built
directly; the numbers of a direct ``train`` call without a store (a sweep point must equal it
bit for bit); raw SQL row counts and timestamps for resume (nothing is rewritten).
"""

from __future__ import annotations

import json
import sqlite3
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from landscape.cli import main
from landscape.experiment.store import RunStore
from landscape.experiment.sweep import expand_grid, load_sweep, parse_sweep, run_sweep
from landscape.experiment.train import TrainConfig, train

TINY_TOML = """
name = "tiny"
seeds = 2

[base]
task = "linear"
d = 2
n = 4
steps = 20
batch = 16
eval_batch = 64
log_every = 5
lr = 0.02
dtype = "float64"
device = "cpu"
checkpoint_every = 0

[grid]
layers = [1, 2]
"""


def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def _rows(root: Path, sql: str) -> list[tuple]:
    con = sqlite3.connect(root / "store.sqlite")
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


# ----------------------------------------------------------------------------------------------
# Grid expansion and validation
# ----------------------------------------------------------------------------------------------


def test_grid_is_cartesian_product_last_key_fastest() -> None:
    spec = parse_sweep({
        "base": {"d": 2, "n": 4, "steps": 3, "device": "cpu"},
        "grid": {"layers": [1, 2, 3], "lr": [0.1, 0.01], "task": ["linear"]},
        "seeds": 4,
    })
    assert spec.size == 6
    points = expand_grid(spec)
    assert [p.index for p in points] == list(range(6))
    expected = [(L, lr) for L in (1, 2, 3) for lr in (0.1, 0.01)]
    assert [(p.overrides["layers"], p.overrides["lr"]) for p in points] == expected
    for p, (L, lr) in zip(points, expected):
        ref = TrainConfig(d=2, n=4, steps=3, device="cpu", layers=L, lr=lr, task="linear", seeds=4)
        assert p.config == ref
    assert points[3].label() == "layers=2, lr=0.01, task=linear"


def test_empty_grid_is_one_point_of_the_base() -> None:
    points = expand_grid(parse_sweep({"base": {"d": 3, "steps": 1}}))
    assert len(points) == 1 and points[0].config == TrainConfig(d=3, steps=1)
    assert points[0].label() == "base"


def test_toml_and_yaml_give_the_same_points(tmp_path: Path) -> None:
    toml = _write(tmp_path, "s.toml", TINY_TOML)
    yaml_text = """
    name: tiny
    seeds: 2
    base: {task: linear, d: 2, n: 4, steps: 20, batch: 16, eval_batch: 64, log_every: 5,
           lr: 0.02, dtype: float64, device: cpu, checkpoint_every: 0}
    grid:
      layers: [1, 2]
    """
    yml = _write(tmp_path, "s.yaml", yaml_text)
    a, b = expand_grid(load_sweep(toml)), expand_grid(load_sweep(yml))
    assert [p.config for p in a] == [p.config for p in b]
    assert len(a) == 2 and a[1].config.layers == 2 and a[0].config.seeds == 2


@pytest.mark.parametrize(
    "data, exc, pattern",
    [
        ({"grid": {"layer": [1, 2]}}, ValueError, r"grid has unknown config keys \['layer'\]; accepted: \[.*'layers'"),
        ({"base": {"lr_rate": 1}}, ValueError, r"base has unknown config keys \['lr_rate'\]"),
        ({"grid": {"layers": [1, 0]}}, ValueError, r"grid point 1 \(layers=0\) is invalid: layers must be an int >= 1, got 0"),
        ({"grid": {"optimizer": ["adam", "lbfgs"]}}, ValueError, r"grid point 1 \(optimizer='lbfgs'\).*optimizer must be one of"),
        ({"grid": {"d": [2, "x"]}}, TypeError, r"grid point 1 \(d='x'\) is invalid: d must be an int"),
        ({"grid": {"layers": [1, 1]}}, ValueError, r"grid points 0 and 1 give the same config"),
    ],
)
def test_bad_values_name_point_key_and_value(data: dict, exc: type, pattern: str) -> None:
    with pytest.raises(exc, match=pattern):
        expand_grid(parse_sweep({"base": {"steps": 1}, **data}))


@pytest.mark.parametrize(
    "data, exc, pattern",
    [
        ({"grid": {"layers": 3}}, ValueError, r"grid\['layers'\] = 3 must be a list"),
        ({"grid": {"layers": []}}, ValueError, r"grid\['layers'\] is an empty list"),
        ({"seeds": [0, 1]}, TypeError, r"seeds must be an int S.*seed = \[0, 1\] in the grid"),
        ({"seeds": 0}, ValueError, r"seeds = 0"),
        ({"seeds": 2, "base": {"seeds": 3}}, ValueError, r"seeds given both"),
        ({"executor": "ray"}, ValueError, r"unknown top-level keys \['executor'\]"),
        ({"base": [1]}, TypeError, r"'base' must be a table"),
    ],
)
def test_bad_structure_is_rejected(data: dict, exc: type, pattern: str) -> None:
    with pytest.raises(exc, match=pattern):
        parse_sweep(data)


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"extension '.json'; accepted"):
        load_sweep(_write(tmp_path, "s.json", "{}"))
    with pytest.raises(ValueError, match="not valid TOML"):
        load_sweep(_write(tmp_path, "b.toml", "[base\nd = 2"))
    with pytest.raises(ValueError, match="not valid YAML"):
        load_sweep(_write(tmp_path, "b.yaml", "base: {d: 2"))
    with pytest.raises(FileNotFoundError):
        load_sweep(tmp_path / "missing.toml")


def test_invalid_point_stops_everything_before_training(tmp_path: Path) -> None:
    spec = parse_sweep({"base": {"d": 2, "n": 4, "steps": 2, "device": "cpu"}, "grid": {"layers": [1, 2, -1]}})
    root = tmp_path / "store"
    with pytest.raises(ValueError, match=r"grid point 2 \(layers=-1\)"):
        run_sweep(spec, root)
    assert not root.exists()  # nothing ran, not even the store was created
    with pytest.raises(ValueError, match=r"executor must be one of \['local', 'ray'\]; got 'dask'"):
        run_sweep(spec, root, executor="dask")
    with pytest.raises(ValueError, match="address is only used by executor 'ray'"):
        run_sweep(spec, root, address="10.0.0.1:6379")


# ----------------------------------------------------------------------------------------------
# Local execution and resume
# ----------------------------------------------------------------------------------------------


def test_local_sweep_lands_runs_equal_to_direct_training_and_resumes(tmp_path: Path) -> None:
    spec = load_sweep(_write(tmp_path, "s.toml", TINY_TOML))
    points = expand_grid(spec)
    root = tmp_path / "store"
    seen: list[str] = []
    result = run_sweep(spec, root, on_point=lambda r: seen.append(r.status))
    assert result.ok and result.counts() == {"trained": 2, "skipped": 0, "failed": 0}
    assert seen == ["trained", "trained"]

    with RunStore(root) as store:
        runs = store.list_runs()
        assert [r.status for r in runs] == ["finished", "finished"]
        assert [r.config for r in runs] == [json.loads(json.dumps(p.config.to_dict())) for p in points]
        assert [r.name for r in runs] == [p.run for p in result.points]
        for p, r in zip(points, runs):
            direct = train(p.config, None, progress=False)  # no store: a fresh computation
            assert store.results(r)["final_loss"] == direct.final_loss.tolist()
            final = store.load_final(r)["params"]
            for k, v in direct.params.items():
                assert torch.equal(final[k], v)
            loss = store.metrics(r, "loss")["loss"]
            assert loss.seeds.tolist() == [0, 1]
            assert loss.steps.tolist() == [0, 5, 10, 15]

    n_metrics = _rows(root, "SELECT COUNT(*) FROM metrics")[0][0]
    stamps = _rows(root, "SELECT id, created_at, updated_at FROM runs ORDER BY id")
    assert n_metrics > 0

    # Resume: every point is finished, nothing is trained or rewritten.
    again = run_sweep(spec, root)
    assert again.counts() == {"trained": 0, "skipped": 2, "failed": 0}
    assert [p.run for p in again.points] == [p.run for p in result.points]
    assert _rows(root, "SELECT COUNT(*) FROM metrics")[0][0] == n_metrics
    assert _rows(root, "SELECT id, created_at, updated_at FROM runs ORDER BY id") == stamps

    # An interrupted point is trained again; the finished one is left alone.
    with RunStore(root) as store:
        store.set_status(result.points[1].run, "interrupted")
    third = run_sweep(spec, root)
    assert [p.status for p in third.points] == ["skipped", "trained"]
    after = _rows(root, "SELECT id, created_at, updated_at FROM runs ORDER BY id")
    assert after[0] == stamps[0] and after[1][:2] == stamps[1][:2] and after[1][2] > stamps[1][2]
    assert _rows(root, "SELECT COUNT(*) FROM runs")[0][0] == 2
    assert _rows(root, "SELECT COUNT(*) FROM metrics")[0][0] == n_metrics


def test_cli_sweep_json_dry_run_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = _write(tmp_path, "s.toml", TINY_TOML)
    assert main(["sweep", str(f), "--dry-run", "--json", "--out", str(tmp_path / "o")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["size"] == 2 and [p["overrides"] for p in out["points"]] == [{"layers": 1}, {"layers": 2}]
    assert not (tmp_path / "o").exists()

    bad = _write(tmp_path, "bad.toml", TINY_TOML.replace("layers = [1, 2]", "layers = [1, 0]"))
    assert main(["sweep", str(bad), "--json", "--out", str(tmp_path / "o")]) == 2
    err = json.loads(capsys.readouterr().out)["error"]
    assert "grid point 1 (layers=0) is invalid" in err
    assert main(["sweep", str(f), "--address", "auto"]) == 2
    assert "--address is only used with --executor ray" in capsys.readouterr().err


def test_cli_sweep_then_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = _write(tmp_path, "s.toml", TINY_TOML)
    root = tmp_path / "store"
    assert main(["sweep", str(f), "--out", str(root), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["counts"] == {"trained": 2, "skipped": 0, "failed": 0}
    assert [len(p["summary"]["final_loss"]) for p in res["points"]] == [2, 2]

    assert main(["plot", str(root), "--kind", "depth", "--kind", "loss", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    names = sorted(fig["name"] for fig in out["figures"])
    assert names == ["loss", "loss", "loss-vs-layers"]
    depth = next(fig for fig in out["figures"] if fig["name"] == "loss-vs-layers")
    assert sorted(depth["runs"]) == sorted(p["run"] for p in res["points"])
    for fig in out["figures"]:
        png, svg = (Path(p) for p in fig["files"])
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and svg.read_text().rstrip().endswith("</svg>")
    # medians shown are the stored final losses (checked via the plotting function's figure)
    from landscape.views.plots import plot_loss_vs

    with RunStore(root) as store:
        fig = plot_loss_vs(store, x="layers").figure
        line = next(ln for ln in fig.axes[0].get_lines() if ln.get_gid() == "median:linear attn")
        ref = [np.median(p["summary"]["final_loss"]) for p in res["points"]]
        np.testing.assert_allclose(line.get_ydata(), ref, rtol=1e-15)

    assert main(["plot", str(tmp_path / "nowhere")]) == 2
    assert "not a run store" in capsys.readouterr().err


def test_failed_point_is_reported_and_does_not_stop_the_others(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    import landscape.experiment.sweep as sweep_mod

    real = sweep_mod._train_point

    def flaky(config, store, progress):
        if config.layers == 1:
            raise RuntimeError("simulated crash of grid point layers=1")
        return real(config, store, progress)

    monkeypatch.setattr(sweep_mod, "_train_point", flaky)
    f = _write(tmp_path, "s.toml", TINY_TOML)
    root = tmp_path / "store"
    assert main(["sweep", str(f), "--out", str(root)]) == 1
    captured = capsys.readouterr()
    assert "[0] layers=1: failed -> None" in captured.out and "1 trained" in captured.out
    assert "RuntimeError: simulated crash of grid point layers=1" in captured.err
    with RunStore(root) as store:
        assert [r.config["layers"] for r in store.list_runs()] == [2]
    monkeypatch.setattr(sweep_mod, "_train_point", real)
    result = run_sweep(load_sweep(f), root)  # the failed point is trained on the next run
    assert [p.status for p in result.points] == ["trained", "skipped"]


@pytest.mark.parametrize("data", [{}, {"name": "x"}, {"base": {}, "grid": {}}])
def test_a_sweep_that_sets_nothing_is_an_error(data: dict) -> None:
    with pytest.raises(ValueError, match="sets no config values"):
        parse_sweep(data)


@pytest.mark.parametrize("name,text", [("e.toml", ""), ("e.yaml", "# only a comment\n"), ("e.yml", "\n")])
def test_an_empty_sweep_file_is_an_error(name: str, text: str, tmp_path: Path) -> None:
    f = tmp_path / name
    f.write_text(text)
    with pytest.raises(ValueError, match="is empty|sets no config values"):
        load_sweep(f)


def test_a_sweep_whose_point_diverged_everywhere_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from landscape.cli import main

    f = tmp_path / "div.toml"
    f.write_text('seeds = 2\n[base]\nd = 2\nn = 3\nsteps = 3\nbatch = 8\neval_batch = 8\ndevice = "cpu"\n'
                 "[grid]\nlr = [1e30, 1e-3]\n")
    rc = main(["sweep", str(f), "--out", str(tmp_path / "runs")])
    out, err = capsys.readouterr()
    assert rc == 1 and "every seed diverged at grid point(s) 0" in err
    assert "2 trained, 0 skipped, 0 failed" in out


# ----------------------------------------------------------------------------------------------
# Progress on stderr, --quiet, and the Bayes loss recorded by the sweep
# ----------------------------------------------------------------------------------------------


def _without_timings(text: str) -> str:
    import re

    text = re.sub(r'"(seconds|wall_time)": [0-9.e+-]+', r'"\1": T', text)
    return re.sub(r"\d+\.\d+ s\b", "T s", text)


@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_sweep_progress_on_stderr_and_quiet(json_flag: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """Without a terminal (pytest's stderr) a sweep prints a line per cell as it starts and finishes,
    and its training's periodic lines (every step here); ``--quiet`` prints nothing on stderr, and
    stdout is the same bytes but for wall times, with and without it."""
    import shutil

    import landscape.experiment.train as tr

    monkeypatch.setattr(tr, "PROGRESS_LINE_SECONDS", 0.0)
    f = _write(tmp_path, "s.toml", TINY_TOML)
    root = tmp_path / "store"
    assert main(["sweep", str(f), "--out", str(root), *json_flag]) == 0
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert [ln for ln in lines if ln.startswith("sweep tiny: cell")] == [
        "sweep tiny: cell 1/2 (layers=1; 2 seeds) training",
        next(ln for ln in lines if ln.startswith("sweep tiny: cell 1/2 (layers=1; 2 seeds) trained in ")),
        "sweep tiny: cell 2/2 (layers=2; 2 seeds) training",
        next(ln for ln in lines if ln.startswith("sweep tiny: cell 2/2 (layers=2; 2 seeds) trained in ")),
    ]
    assert "1/2 done, ETA" in err and "2/2 done" in err
    assert sum("step 20/20" in ln for ln in lines) == 2  # each cell's training reports its steps
    shutil.rmtree(root)
    assert main(["--quiet", "sweep", str(f), "--out", str(root), *json_flag]) == 0
    out_q, err_q = capsys.readouterr()
    assert err_q == ""
    assert _without_timings(out_q) == _without_timings(out) and out_q.strip()
    shutil.rmtree(root)
    assert main(["sweep", str(f), "--out", str(root), "--quiet", *json_flag]) == 0
    out_q2, err_q2 = capsys.readouterr()
    assert err_q2 == "" and _without_timings(out_q2) == _without_timings(out)
    # resuming: skipped cells are reported too
    assert main(["sweep", str(f), "--out", str(root), *json_flag]) == 0
    err = capsys.readouterr().err
    assert "sweep tiny: cell 2/2 (layers=2; 2 seeds) already finished -> run-" in err


def test_sweep_records_the_bayes_loss_of_each_point(tmp_path: Path) -> None:
    """Where results are produced: every trained point gets its ``bayes_loss`` result, equal to
    the estimate of its config (linear regression, noiseless, n = 4 >= d = 2: exactly 0)."""
    from landscape.experiment.bayes import bayes_loss_estimate

    spec = load_sweep(_write(tmp_path, "s.toml", TINY_TOML.replace('task = "linear"', 'task = "gp:exp"')
                             .replace("[base]", "[base]\nattention = \"kernel\"")))
    res = run_sweep(spec, tmp_path / "store")
    with RunStore(tmp_path / "store", read_only=True) as s:
        for p, point in zip(res.points, expand_grid(spec)):
            rec = s.results(p.run)["bayes_loss"]
            assert rec["value"] == bayes_loss_estimate(point.config)[0] and 0 < rec["value"] < 1
