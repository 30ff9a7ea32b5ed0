"""The minimum of the loss over a run's family: recorded where results are produced, drawn by the loss plot.

References: ``landscape solve`` on the same problem (the lowest stationary value it prints, a
second read-out of the symbolic layer through the command line) and the closed form of Ahn et al.'s
one-layer optimum in whitened coordinates, ``min_a ℓ(a) = d(d+1)/(n+d+1)`` (Theorem 1, docs/theory.md
§2), which holds for every Σ with the prior w* ~ N(0, Σ^{-1}).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from landscape.cli import main
from landscape.experiment.bayes import (
    FAMILY_MINIMUM_RESULT,
    family_minimum,
    record_family_minimum,
    stored_family_minimum,
)
from landscape.experiment.store import RunStore

D, N = 2, 6
PROBLEM = ["--d", str(D), "--n", str(N), "--layers", "1", "--sigma", "random:0", "--task-cov", "inverse"]


@pytest.fixture(scope="module")
def pgd_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    from landscape.experiment.train import TrainConfig, train

    root = tmp_path_factory.mktemp("fmin") / "store"
    config = TrainConfig(d=D, n=N, layers=1, sigma="random:0", task_cov="inverse", family="pgd", seeds=2, steps=6,
                         batch=32, log_every=2, eval_batch=64, lr=1e-2, dtype="float64", device="cpu",
                         checkpoint_every=6)
    result = train(config, root, progress=False)
    return root, result.run_name


def _solve_minimum(capsys: pytest.CaptureFixture[str]) -> tuple[float, dict]:
    assert main(["solve", "pgd", *PROBLEM, "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    return min(p["loss"] for p in out["stationary_points"]), out["search"]


def test_recorded_minimum_equals_solve(pgd_run, capsys: pytest.CaptureFixture[str]) -> None:
    root, name = pgd_run
    want, search = _solve_minimum(capsys)
    assert want == pytest.approx(D * (D + 1) / (N + D + 1), abs=1e-12)  # Ahn et al., Theorem 1
    with RunStore(root) as store:
        assert stored_family_minimum(store.results(name)) is None
        got = record_family_minimum(store, name)
        rec = store.results(name)[FAMILY_MINIMUM_RESULT]
    assert abs(got - want) <= 1e-10 and abs(rec["value"] - want) <= 1e-10
    assert rec["exhaustive"] is True and rec["exhaustive"] == search["exhaustive"]
    assert rec["certified"] == search["certified"] and rec["family"] == "pgd" and rec["kind"] == "min"
    assert rec["point"]["a0"] == pytest.approx(N / (N + D + 1), abs=1e-10)
    # recorded once: a second call reads it back (by folder, as `landscape train --out` calls it)
    assert record_family_minimum(root, name) == got
    with RunStore(root, read_only=True) as ro, pytest.raises(ValueError, match="read-only"):
        record_family_minimum(ro, name)


def test_loss_plot_draws_the_recorded_minimum(pgd_run, tmp_path: Path) -> None:
    from landscape.views import plots

    root, name = pgd_run
    with RunStore(root) as store:
        record_family_minimum(store, name)
        value = store.results(name)[FAMILY_MINIMUM_RESULT]["value"]
    with RunStore(root, read_only=True) as ro:
        saved = plots.plot_loss(ro, name, out=tmp_path / "with")
    lines = {ln.get_gid(): ln for ln in saved.figure.axes[0].get_lines() if ln.get_gid()}
    y = np.asarray(lines["family_min"].get_ydata(), dtype=float)
    assert y.tolist() == [value, value]
    label = lines["family_min"].get_label()
    assert "family pgd" in label and "certified exhaustive" in label and label.startswith("minimum over") and f"{value:.4g}" in label


def test_store_without_the_minimum_plots_as_before(tmp_path: Path) -> None:
    from landscape.experiment.train import TrainConfig, train
    from landscape.views import plots

    root = tmp_path / "store"
    config = TrainConfig(d=D, n=N, layers=1, seeds=1, steps=4, batch=16, log_every=2, eval_batch=32,
                         dtype="float64", device="cpu", checkpoint_every=4)
    name = train(config, root, progress=False).run_name
    with RunStore(root) as store:
        assert record_family_minimum(store, name) is None  # no family: nothing computed, nothing written
        assert FAMILY_MINIMUM_RESULT not in store.results(name)
        saved = plots.plot_loss(store, name, out=tmp_path / "figs")
    gids = {ln.get_gid() for ln in saved.figure.axes[0].get_lines()}
    assert "family_min" not in gids and "median" in gids and "seed:0" in gids


def test_no_exact_route_gives_none() -> None:
    from landscape.experiment.train import TrainConfig

    kernel = TrainConfig(task="gp:exp", attention="kernel", activations=("exp",), d=2, n=4, layers=2, family="fgd",
                         seeds=1, steps=1)
    assert family_minimum(kernel) is None


def test_multistart_minimum_is_labelled_not_exhaustive(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A multi-start search: the record and the plot label say it is not exhaustive, and the value is
    what ``landscape solve --method multistart`` finds (same starts, same seed)."""
    from landscape.experiment.train import TrainConfig, train
    from landscape.views import plots

    config = TrainConfig(d=D, n=N, layers=2, sigma="random:0", task_cov="inverse", family="pgd", seeds=1, steps=2,
                         batch=16, log_every=1, eval_batch=32, dtype="float64", device="cpu", checkpoint_every=2)
    found = family_minimum(config, method="multistart")
    assert found is not None and found["search"] == "multistart" and found["exhaustive"] is False
    assert main(["solve", "pgd", *PROBLEM[:4], "--layers", "2", *PROBLEM[6:], "--method", "multistart", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert abs(found["value"] - min(p["loss"] for p in out["stationary_points"])) <= 1e-10
    root = tmp_path / "store"
    name = train(config, root, progress=False).run_name
    with RunStore(root) as store:
        assert record_family_minimum(store, name, method="multistart") == found["value"]
        saved = plots.plot_loss(store, name, out=tmp_path / "figs")
    (line,) = [ln for ln in saved.figure.axes[0].get_lines() if ln.get_gid() == "family_min"]
    assert line.get_ydata()[0] == found["value"]
    assert "multistart: not exhaustive" in line.get_label() and "lowest point found" in line.get_label()
