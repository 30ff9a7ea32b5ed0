"""Results out of a store: the tidy metric table (CSV, Parquet, DataFrame), `landscape runs` and `export`.

Every number is checked against the store's own reader (:meth:`RunStore.metrics_long` and the dense
:meth:`RunStore.metrics` tables) on the stored fixture of ``tests/test_store_compat.py``.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import pytest

from landscape.cli import main
from landscape.experiment import tables
from landscape.experiment.store import RunStore

FIXTURE = Path(__file__).resolve().parent / "data" / "store-flat-layout"


@pytest.fixture()
def store(tmp_path: Path) -> Path:
    root = tmp_path / "store"
    shutil.copytree(FIXTURE, root)
    return root


def _long(root: Path) -> dict[tuple[str, int, int, str], float]:
    with RunStore(root, read_only=True) as s:
        return {(r.name, m.seed, m.step, m.key): m.value for r in s.list_runs() for m in s.metrics_long(r)}


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def test_csv_holds_every_stored_value_exactly_with_its_key_parts(store: Path, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "m.csv"
    assert main(["export", str(store), "--out", str(out), "--json"]) == 0
    ref = _long(store)
    assert json.loads(capsys.readouterr().out) == {"out": str(out), "rows": len(ref)}
    with out.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [*rows[0]] == list(tables.COLUMNS) and len(rows) == len(ref) > 50
    seen = set()
    for row in rows:
        k = (row["run"], int(row["seed"]), int(row["step"]), row["metric"])
        assert _same(float(row["value"]), ref[k]), k
        seen.add(k)
        if row["metric"] == "dist_identity.layer1.head0":
            assert (row["name"], row["layer"], row["head"]) == ("dist_identity", "1", "0")
        if row["metric"] == "eval_loss":
            assert (row["name"], row["layer"], row["head"]) == ("eval_loss", "", "")
    assert seen == set(ref)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.csv", "store"]  # no partial file left


def test_dataframe_pivots_back_to_the_stores_dense_tables(store: Path) -> None:
    df = tables.to_dataframe(store)
    with RunStore(store, read_only=True) as s:
        for r in s.list_runs():
            for key, series in s.metrics(r).items():
                sub = df[(df.run == r.name) & (df.metric == key)].pivot(index="step", columns="seed", values="value")
                assert list(sub.index) == list(series.steps)
                got = sub.to_numpy()
                want = series.values.numpy() if hasattr(series.values, "numpy") else series.values
                assert got.shape == tuple(want.shape)
                assert all(_same(float(a), float(b)) for a, b in zip(got.ravel(), want.ravel())), key
    assert str(df.layer.dtype) == "Int64" and df.layer.isna().any() and (df.layer == 1).any()


def test_parquet_round_trips_to_the_same_frame(store: Path, tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    out = tmp_path / "m.parquet"
    n = tables.write_table(store, out)
    back = pd.read_parquet(out)
    frame = tables.to_dataframe(store)
    assert n == len(frame)
    pd.testing.assert_frame_equal(back, frame, check_dtype=False)
    assert str(back.layer.dtype) == "Int64"


def test_filters_by_run_and_by_metric_name_or_key(store: Path) -> None:
    ref = _long(store)
    t = tables.metrics_table(store, runs=["fgd-exp"], metrics=["dist_identity", "eval_loss"])
    keys = {(r, m) for r, m in zip(t["run"], t["metric"])}
    want = {(k[0], k[3]) for k in ref if k[0] == "fgd-exp" and (k[3] == "eval_loss" or k[3].startswith("dist_identity."))}
    assert keys == want and want
    exact = tables.metrics_table(store, metrics=["dist_identity.layer0.head0"])
    assert set(exact["metric"]) == {"dist_identity.layer0.head0"} and set(exact["run"]) == {"pgd-linear", "fgd-exp"}


@pytest.mark.parametrize("argv, message", [
    (["--out", "{tmp}/m.txt"], "cannot tell the format of"),
    (["--out", "{tmp}/nowhere/m.csv"], "does not exist"),
    (["--out", "{tmp}/m.csv", "--run", "nope"], "unknown run(s) 'nope'"),
])
def test_bad_export_is_one_line_exit_2_and_writes_nothing(store: Path, tmp_path: Path, argv: list[str], message: str,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(["export", str(store), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]


def test_an_interrupted_write_leaves_no_file(store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = csv.writer

    class Boom:
        def __init__(self, f):  # a writer that dies after a few rows
            self.w, self.n = real(f), 0

        def writerow(self, row):
            self.n += 1
            if self.n > 10:
                raise KeyboardInterrupt
            self.w.writerow(row)

    monkeypatch.setattr(tables.csv, "writer", Boom)
    (tmp_path / "m.csv").write_text("previous\n")
    with pytest.raises(KeyboardInterrupt):
        tables.write_table(store, tmp_path / "m.csv")
    assert (tmp_path / "m.csv").read_text() == "previous\n"  # the old file stands, no partial one beside it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.csv", "store"]


def test_runs_list_show_and_diff(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["runs", str(store), "--json"]) == 0
    listed = {r["name"]: r for r in json.loads(capsys.readouterr().out)["runs"]}
    with RunStore(store, read_only=True) as s:
        for r in s.list_runs():
            row = listed[r.name]
            assert (row["seeds"], row["steps"], row["status"], row["config_hash"]) == (
                r.config["seeds"], r.config["steps"], r.status, r.config_hash)
            assert row["metrics"] == len(s.metrics(r)) and row["final"] is True
        pgd, fgd = s.get_run("pgd-linear").config, s.get_run("fgd-exp").config
    assert main(["runs", str(store), "--diff", "pgd-linear", "fgd-exp", "--json"]) == 0
    diff = json.loads(capsys.readouterr().out)["diff"]
    want = {k for k in set(pgd) | set(fgd) if pgd.get(k, "<absent>") != fgd.get(k, "<absent>")}
    assert set(diff) == want and diff["attention"] == ["linear", "kernel"] and "seed" not in diff
    assert main(["runs", str(store), "--diff", "1", "fgd-exp", "--json"]) == 0  # an id names a run too
    assert json.loads(capsys.readouterr().out)["diff"] == diff
    assert main(["runs", str(store), "--show", "fgd-exp", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)["run"]
    assert shown["config"] == fgd and "eval_loss" in shown["metric_keys"]
    assert main(["runs", str(store), "--show", "nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown run(s) 'nope'" in err and "pgd-linear (id 1), fgd-exp (id 2)" in err


def test_config_diff_nested_and_absent_keys() -> None:
    a = {"lr": 0.1, "opt": {"name": "adam", "betas": [0.9, 0.99]}, "x": 1}
    b = {"lr": 0.1, "opt": {"name": "adam", "betas": [0.9, 0.999]}, "y": 2}
    assert tables.config_diff(a, b) == {"opt.betas": ([0.9, 0.99], [0.9, 0.999]), "x": (1, "<absent>"),
                                        "y": ("<absent>", 2)}
    assert tables.config_diff(a, a) == {}
    with pytest.raises(TypeError, match="config b must be a mapping"):
        tables.config_diff(a, [1])


def test_the_runs_preset_joins_the_metric_table_by_run(tmp_path: Path) -> None:
    # the module docstring's join: the preset (provenance, a runs_table column) onto every metric row
    import dataclasses

    import pandas as pd

    from landscape import recipe
    from landscape.experiment.train import TrainConfig, stored_preset, train

    root = tmp_path / "runs"
    base = dict(d=2, n=4, seeds=1, steps=2, batch=4, eval_batch=8, log_every=1, checkpoint_every=0)
    a = train(TrainConfig(**recipe.preset("ahn2023-p0"), **base), root, progress=False)
    b = train(TrainConfig(**base), root, progress=False)
    runs = pd.DataFrame([dataclasses.asdict(r) for r in tables.runs_table(root)])
    df = tables.to_dataframe(root).merge(runs[["name", "preset"]], left_on="run", right_on="name")
    assert len(df) == len(tables.to_dataframe(root)) > 0
    with RunStore(root, read_only=True) as s:
        want = {a.run: stored_preset(s, a.run), b.run: stored_preset(s, b.run)}
    assert want == {a.run: "ahn2023-p0", b.run: None}
    assert df[df.run == a.run].preset.eq("ahn2023-p0").all() and df[df.run == b.run].preset.isna().all()
    assert (df.run == a.run).any() and (df.run == b.run).any()


# ---------------------------------------------------------------------- opening a folder named by a user
READERS = [["runs", "{store}"], ["export", "{store}", "--out", "{tmp}/m.csv"], ["plot", "{store}"],
           ["store", "check", "{store}"]]


def _argv(argv: list[str], store: Path, tmp: Path) -> list[str]:
    return [a.replace("{store}", str(store)).replace("{tmp}", str(tmp)) for a in argv]


@pytest.mark.parametrize("argv", READERS, ids=lambda a: a[0])
@pytest.mark.parametrize("kind, why", [("missing", "no such folder"), ("file", "it is a file"),
                                       ("empty", "no store.sqlite in it")])
def test_a_folder_that_is_not_a_store_is_one_line_naming_it(tmp_path: Path, argv: list[str], kind: str, why: str,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    work = tmp_path / "work"
    work.mkdir()
    target = work / "runs"
    if kind == "file":
        target.write_text("not a store\n")
    elif kind == "empty":
        target.mkdir()
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert main(_argv(argv, target, tmp_path)) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err, err
    assert f"{str(target)!r} is not a run store ({why}; a run store is a folder holding store.sqlite)" in err, err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing created


@pytest.mark.parametrize("argv", READERS, ids=lambda a: a[0])
def test_a_store_that_lost_its_database_says_to_repair_it(store: Path, tmp_path: Path, argv: list[str],
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    (store / "store.sqlite").unlink()
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert main(_argv(argv, store, tmp_path)) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "has no store.sqlite but tensors/ holds 4 tensor files" in err, err
    assert f"landscape store repair {store}" in err, err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_open_store_is_read_only(store: Path) -> None:
    from landscape.experiment.store import StoreError

    names = [r.name for r in tables.runs_table(store)]
    with tables.open_store(store) as s:
        assert s.read_only and [r.name for r in s.list_runs()] == names == ["pgd-linear", "fgd-exp"]
        with pytest.raises(StoreError):
            s.create_run({"exp": "x"}, "x")
    with pytest.raises(ValueError, match="no such folder"):
        tables.runs_table(store / "nowhere")
    assert not (store / "nowhere").exists()
