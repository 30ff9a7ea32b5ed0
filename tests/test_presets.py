"""Held entries (TrainConfig.fixed) and the paper presets of landscape.recipe.preset.

References: the held values themselves (exact equality after training, weight decay included),
the one-layer optimum of Ahn et al. (2023) Theorem 1 for Σ = I, A* = n/(n+d+1)·I, reached by
training the Lemma-1 form P = diag(0, 1), Q = −diag(A, 0), and the config hashes of configs
without held entries (unchanged: tests/test_recipe.py holds the reference digests).
"""

from __future__ import annotations

import json

import pytest
import torch

from landscape import recipe
from landscape.experiment.store import config_hash
from landscape.experiment.train import TrainConfig, free_mask, held_entries, init_state, train


def _check_ahn_form(params: dict[str, torch.Tensor], d: int, *, p_block_zero: bool) -> None:
    for key, W in params.items():
        if key.endswith(".P"):
            assert torch.equal(W[:, d, d], torch.ones_like(W[:, d, d])), key  # P_{d+1,d+1} == 1 exactly
            assert torch.equal(W[:, d, :d], torch.zeros_like(W[:, d, :d])) and torch.equal(W[:, :d, d], torch.zeros_like(W[:, :d, d]))
            if p_block_zero:
                assert torch.equal(W[:, :d, :d], torch.zeros_like(W[:, :d, :d])), key
        else:  # Q: the covariate block only
            assert torch.equal(W[:, d, :], torch.zeros_like(W[:, d, :])) and torch.equal(W[:, :d, d], torch.zeros_like(W[:, :d, d]))


@pytest.mark.parametrize("engine", ["stacked", "auto"])
def test_ahn2023_preset_holds_the_value_scale_and_trains_the_blocks(engine: str) -> None:
    d = 3
    cfg = TrainConfig(**recipe.preset("ahn2023"), d=d, n=10, layers=2, seeds=2, steps=60, batch=64, lr=3e-3,
                      optimizer="adamw", weight_decay=0.1, dtype="float64", engine=engine, log_every=60,
                      checkpoint_every=0, eval_batch=512)
    init = init_state(cfg).params
    _check_ahn_form(init, d, p_block_zero=False)
    free = init["layer0.head0.P"][:, :d, :d]
    assert 0 < float(free.abs().max()) < 1e-3  # N(0, 1e-4^2) entries
    res = train(cfg, None, progress=False)
    _check_ahn_form(res.params, d, p_block_zero=False)
    for key in ("layer0.head0.P", "layer0.head0.Q", "layer1.head0.Q"):
        moved = (res.params[key][:, :d, :d] - init[key][:, :d, :d]).abs().max()
        assert float(moved) > 1e-2, key  # the d×d blocks train
    assert not bool(res.diverged.any())


def test_ahn2023_p0_preset_reaches_the_one_layer_optimum_of_theorem_1() -> None:
    d, n = 2, 10
    cfg = TrainConfig(**recipe.preset("ahn2023-p0"), d=d, n=n, layers=1, seeds=2, steps=300, batch=512, lr=0.02,
                      schedule="cosine", dtype="float64", engine="stacked", log_every=300, checkpoint_every=0,
                      eval_batch=256)
    res = train(cfg, None, progress=False)
    _check_ahn_form(res.params, d, p_block_zero=True)
    A = -res.params["layer0.head0.Q"][:, :d, :d]
    a_star = n / (n + d + 1)  # Ahn et al. Theorem 1, Σ = I: A* = ((n+1)/n Σ + tr(Σ)/n I)^{-1}
    eye = torch.eye(d, dtype=torch.float64)
    err = (A - a_star * eye).flatten(1).norm(dim=1) / (a_star * d**0.5)
    assert bool((err < 0.03).all()), err  # measured 0.8-0.9 %


def test_held_entries_stay_out_of_existing_hashes_and_round_trip() -> None:
    base = dict(d=3, n=6, steps=5, batch=8)
    plain = TrainConfig(**base)
    assert "fixed" not in plain.to_dict()
    held = TrainConfig(**base, fixed=[("P", "corner", 1.0)])
    stored = held.to_dict()
    assert stored["fixed"] == [["P", "corner", 1.0]]
    assert config_hash(stored) != config_hash(plain.to_dict())
    back = TrainConfig.from_dict(stored)
    assert back.fixed == (("P", "corner", 1.0),) and config_hash(back.to_dict()) == config_hash(stored)
    h, v = held_entries(held)
    assert int(h["layer0.head0.P"].sum()) == 1 and float(v["layer0.head0.P"][3, 3]) == 1.0
    assert not bool(free_mask(held)["layer0.head0.P"][3, 3]) and bool(free_mask(plain)["layer0.head0.P"][3, 3])


@pytest.mark.parametrize("kw, exc, match", [
    (dict(fixed=[("P", "middle", 1.0)]), ValueError, "covariate"),
    (dict(fixed=[("W", "corner", 1.0)]), ValueError, "'P'"),
    (dict(fixed=[("P", "corner")]), ValueError, r"\(letter, block, value\)"),
    (dict(fixed=[("P", "corner", 1.0), ("P", "corner", 2.0)]), ValueError, "twice"),
    (dict(fixed="P.corner=1"), TypeError, "sequence of"),
    (dict(fixed=[("V", "corner", 1.0)]), ValueError, r"linear attention has the weights \['P', 'Q'\]"),
])
def test_bad_fixed_is_one_line(kw: dict, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match) as info:
        TrainConfig(d=3, n=6, **kw)
    assert "\n" not in str(info.value)


def test_unknown_preset_lists_the_names() -> None:
    with pytest.raises(ValueError, match="'ahn2023', 'ahn2023-p0'"):
        recipe.preset("ahn2024")


# ---------------------------------------------------------------------- from the command line
CLI_TINY = ["--d", "3", "--n", "6", "--layers", "2", "--seeds", "2", "--steps", "4", "--batch", "16",
            "--eval-batch", "32", "--lr", "0.01", "--dtype", "float64", "--log-every", "4", "--checkpoint-every", "0",
            "--no-progress"]
CLI_FIELDS = dict(d=3, n=6, layers=2, seeds=2, steps=4, batch=16, eval_batch=32, lr=0.01, dtype="float64",
                  log_every=4, checkpoint_every=0)


def _json_line(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


def _jsonified(cfg: TrainConfig) -> dict:
    """A config's stored dict as JSON reads it back (tuples become lists)."""
    return json.loads(json.dumps(cfg.to_dict()))


def test_cli_preset_ahn2023_holds_the_corner_and_stores_the_preset_config(tmp_path, capsys) -> None:
    from landscape.cli import main
    from landscape.experiment.store import RunStore

    assert main(["train", "--preset", "ahn2023", *CLI_TINY, "--out", str(tmp_path / "runs"), "--json"]) == 0
    out = _json_line(capsys.readouterr().out)
    # the CLI's train defaults (optimizer adam, betas, ...) with the preset's fields
    want = _jsonified(TrainConfig(**recipe.preset("ahn2023"), **CLI_FIELDS))
    assert out["preset"] == "ahn2023" and out["config"] == want
    with RunStore(tmp_path / "runs", read_only=True) as store:
        run = store.get_run(out["run"])
        assert run.config == want and run.config_hash == config_hash(want)
        params = store.load_final(run)["params"]
    _check_ahn_form({k: v for k, v in params.items() if k.endswith((".P", ".Q"))}, 3, p_block_zero=False)
    Q = params["layer0.head0.Q"]
    assert float(Q[:, :3, :3].abs().max()) > 1e-2  # the free block trained away from its N(0, 1e-4²) start


def test_cli_explicit_options_override_the_preset(capsys) -> None:
    from landscape.cli import main

    # an explicit value equal to the CLI default still overrides (0.1 is --init-std's default)
    argv = ["train", "--preset", "ahn2023", *CLI_TINY, "--steps", "0", "--json"]
    assert main([*argv, "--init-std", "0.1", "--mask", "full", "--fixed", "Q:corner=0.5"]) == 0
    cfg = _json_line(capsys.readouterr().out)["config"]
    assert cfg["init_std"] == 0.1 and cfg["mask"] == "full" and cfg["fixed"] == [["Q", "corner", 0.5]]
    assert cfg == _jsonified(TrainConfig(**{**recipe.preset("ahn2023"), "init_std": 0.1, "mask": "full",
                                            "fixed": (("Q", "corner", 0.5),)}, **{**CLI_FIELDS, "steps": 0}))
    assert main(argv) == 0  # not given: the preset's
    cfg = _json_line(capsys.readouterr().out)["config"]
    assert cfg["init_std"] == 1e-4 and cfg["mask"] == "paper" and cfg["fixed"] == [["P", "corner", 1.0]]


def test_cli_fixed_without_a_preset_is_the_config_field(capsys) -> None:
    from landscape.cli import main

    argv = ["train", *CLI_TINY, "--steps", "0", "--json", "--fixed", "P:corner=1", "--fixed", "Q:label_row=0"]
    assert main(argv) == 0
    out = _json_line(capsys.readouterr().out)
    assert out["preset"] is None
    assert out["config"] == _jsonified(TrainConfig(**{**CLI_FIELDS, "steps": 0},
                                                   fixed=(("P", "corner", 1.0), ("Q", "label_row", 0.0))))
    assert main(["train", *CLI_TINY, "--steps", "0", "--json"]) == 0
    assert "fixed" not in _json_line(capsys.readouterr().out)["config"]  # not given: not stored


@pytest.mark.parametrize("extra, needle", [
    (["--preset", "ahn2024"], "--preset unknown preset 'ahn2024'; known: 'ahn2023', 'ahn2023-p0'"),
    (["--preset", ""], "--preset unknown preset ''"),
    (["--fixed", "P:middle=1"], "--fixed BLOCK must be one of covariate, label_column, label_row, corner"),
    (["--fixed", "W:corner=1"], "--fixed LETTER must be one of P, Q, V, B, C"),
    (["--fixed", "P:corner=nan"], "--fixed VALUE must be a finite number, got 'nan'"),
    (["--fixed", "P:corner=1e999"], "--fixed VALUE must be a finite number"),
    (["--fixed", "P:corner=__import__('os')"], "--fixed VALUE must be a finite number"),
    (["--fixed", "P corner 1"], "--fixed must be LETTER:BLOCK=VALUE"),
    (["--fixed", "P:corner=1", "--fixed", "P:corner=2"], "fixed names ('P', 'corner') twice"),
    (["--attention", "kernel", "--fixed", "P:corner=1"], "fixed names ['P'], but kernel attention"),
])
def test_cli_bad_preset_or_fixed_is_one_line_exit_2(extra, needle, tmp_path, monkeypatch, capsys) -> None:
    from landscape.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("landscape.experiment.train.train",
                        lambda *a, **k: (_ for _ in ()).throw(AssertionError("training started")))
    rc = main(["train", *CLI_TINY, "--out", str(tmp_path / "runs"), *extra])
    out, err = capsys.readouterr()
    assert rc == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and needle in err, err
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_cli_help_names_every_preset() -> None:
    from landscape.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    help_text = sub.choices["train"].format_help().replace("\n", " ")
    for name in recipe.PRESETS:
        assert name in help_text, name


# ---------------------------------------------------------------------- Cheng, Chen, Sra (2024)
def test_cheng2024_preset_is_the_papers_training_setting() -> None:
    from landscape.experiment.train import make_task

    fields = recipe.preset("cheng2024")
    assert fields == {"attention": "kernel", "covariates": "sphere", "optimizer": "adam", "resample_every": 10,
                      "preset": "cheng2024"}
    cfg = TrainConfig(**fields, activations=("exp",), task="gp:exp", d=3, n=5, sigma="spectrum:1,0.25,0.0625:0")
    assert cfg.mask == "full" and cfg.init_std == 0.1  # not set by the preset: the caller's (defaults here)
    b = make_task(cfg).sample(64, torch.Generator().manual_seed(0))
    xi = b.latent["xi"].to(torch.float64)  # whitened covariates: on the unit sphere (x = Σ^½ ξ)
    assert torch.allclose(xi.norm(dim=-2), torch.ones(64, 6, dtype=torch.float64), atol=1e-6)
    sig = cfg.sigma_matrix().to(torch.float64)
    L = torch.linalg.cholesky(sig)
    # x = Σ^½ ξ for a square root of Σ: ‖L^{-1} x‖ = ‖ξ‖ = 1 for every token, query included
    assert torch.allclose(torch.linalg.solve_triangular(L, b.X.to(torch.float64), upper=False).norm(dim=-2),
                          torch.ones(64, 6, dtype=torch.float64), atol=1e-5)


@pytest.mark.parametrize("mask", ["paper", "sparse"])
def test_cheng2024_with_the_papers_masks_keeps_the_zero_blocks(mask: str) -> None:
    d = 3
    cfg = TrainConfig(**recipe.preset("cheng2024"), activations=("exp", "linear"), task="gp:exp", mask=mask, d=d,
                      n=5, layers=2, seeds=2, steps=12, batch=64, lr=0.01, dtype="float64", engine="stacked",
                      log_every=12, checkpoint_every=0, eval_batch=128)
    init = init_state(cfg).params
    res = train(cfg, None, progress=False)
    assert not bool(res.diverged.any())
    for key, W in res.params.items():
        letter = key.rsplit(".", 1)[1]
        if letter == "V":  # value: diag(A, r) ('paper') or diag(0, r) ('sparse')
            assert torch.equal(W[:, :d, d], torch.zeros_like(W[:, :d, d])) and torch.equal(W[:, d, :d], torch.zeros_like(W[:, d, :d]))
            if mask == "sparse":
                assert torch.equal(W[:, :d, :d], torch.zeros_like(W[:, :d, :d]))
            assert float((W[:, d, d] - init[key][:, d, d]).abs().max()) > 1e-3, key  # r trains
        else:  # B, C read x only
            assert torch.equal(W[:, d, :], torch.zeros_like(W[:, d, :])) and torch.equal(W[:, :, d], torch.zeros_like(W[:, :, d]))
            assert float((W[:, :d, :d] - init[key][:, :d, :d]).abs().max()) > 1e-3, key


def test_cli_preset_cheng2024_stores_the_preset_config(capsys) -> None:
    from landscape.cli import main

    argv = ["train", "--preset", "cheng2024", *CLI_TINY, "--steps", "2", "--mask", "paper", "--json"]
    assert main(argv) == 0
    out = _json_line(capsys.readouterr().out)
    # kernel attention without --activation: exp heads and GP data with the exp kernel (recipe.default_data)
    want = _jsonified(TrainConfig(**recipe.preset("cheng2024"), activations=("exp",), task="gp:exp", mask="paper",
                                  **{**CLI_FIELDS, "steps": 2}))
    assert out["preset"] == "cheng2024" and out["config"] == want
    assert out["task"]["covariates"] == "sphere" and out["task"]["kind"] == "gp"


# ---------------------------------------------------------------------- provenance: the preset's name
AHN_TYPED = dict(attention="linear", mask="paper", fixed=(("P", "corner", 1.0),), init_std=1e-4)
"""The fields of ``preset("ahn2023")`` written out by hand (the paper's model, Ahn et al. 2023)."""


def test_preset_name_is_provenance_outside_the_config_and_its_hash() -> None:
    base = dict(d=3, n=6, layers=2, seeds=2, steps=0, batch=8, eval_batch=16)
    from_preset = TrainConfig(**recipe.preset("ahn2023"), **base)
    typed = TrainConfig(**AHN_TYPED, **base)
    assert from_preset.preset == "ahn2023" and typed.preset is None
    # the same problem: the stored dicts and hashes are equal, and "preset" is in neither
    assert from_preset.to_dict() == typed.to_dict() and "preset" not in from_preset.to_dict()
    assert config_hash(from_preset.to_dict()) == config_hash(typed.to_dict())
    assert TrainConfig.from_dict(from_preset.to_dict()).preset is None  # the stored config does not hold it
    assert from_preset.bookkeeping_part.preset == "ahn2023"
    with pytest.raises(ValueError, match="preset must be one of 'ahn2023', 'ahn2023-p0', 'cheng2024'") as info:
        TrainConfig(**base, preset="ahn2024")
    assert "\n" not in str(info.value)


def _runs_json(argv: list[str], capsys) -> dict:
    from landscape.cli import main

    assert main(["runs", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_store_records_the_preset_once_and_runs_show_and_diff_print_it(tmp_path, capsys) -> None:
    from landscape.cli import main
    from landscape.experiment.store import RunStore
    from landscape.experiment.tables import runs_table
    from landscape.experiment.train import PRESET_RESULT, stored_preset

    root = tmp_path / "runs"
    base = dict(d=3, n=6, layers=1, seeds=1, steps=0, batch=8, eval_batch=16, dtype="float64", checkpoint_every=0)
    first = train(TrainConfig(**recipe.preset("ahn2023"), **base), root, progress=False)
    # the same fields typed out are the same run (loaded, not retrained) and keep how it began
    again = train(TrainConfig(**AHN_TYPED, **base), root, progress=False)
    p0 = train(TrainConfig(**recipe.preset("ahn2023-p0"), **base), root, progress=False)
    plain = train(TrainConfig(**{**AHN_TYPED, "init_std": 0.1}, **base), root, progress=False)
    assert again.run == first.run and len({first.run, p0.run, plain.run}) == 3
    with RunStore(root, read_only=True) as s:
        assert [stored_preset(s, r) for r in (first.run, p0.run, plain.run)] == ["ahn2023", "ahn2023-p0", None]
        assert s.results(plain.run)[PRESET_RESULT] is None  # recorded: fields given one by one
        assert [r.preset for r in runs_table(s)] == ["ahn2023", "ahn2023-p0", None]

    shown = _runs_json([str(root), "--show", first.run], capsys)["run"]
    assert shown["preset"] == "ahn2023" and "preset" not in shown["config"]
    assert main(["runs", str(root), "--show", first.run]) == 0
    assert "preset: ahn2023 (provenance, not in the config hash)" in capsys.readouterr().out
    assert main(["runs", str(root), "--show", plain.run]) == 0
    assert "preset: none (provenance" in capsys.readouterr().out

    diff = _runs_json([str(root), "--diff", first.run, p0.run], capsys)
    assert diff["preset"] == ["ahn2023", "ahn2023-p0"] and diff["diff"] == {"mask": ["paper", "sparse"]}
    assert main(["runs", str(root), "--diff", first.run, plain.run]) == 0
    text = capsys.readouterr().out
    assert 'init_std: 0.0001 -> 0.1' in text
    assert 'preset (provenance, not in the config hash): "ahn2023" -> null' in text
    listed = _runs_json([str(root)], capsys)["runs"]
    assert [r["preset"] for r in listed] == ["ahn2023", "ahn2023-p0", None]


def test_a_store_written_before_presets_were_recorded_shows_not_recorded(tmp_path, capsys) -> None:
    import shutil
    from pathlib import Path

    from landscape.cli import main

    root = tmp_path / "old"
    shutil.copytree(Path(__file__).resolve().parent / "data" / "store-flat-layout", root)
    assert main(["runs", str(root), "--show", "pgd-linear"]) == 0
    assert "preset: not recorded" in capsys.readouterr().out
    assert [r["preset"] for r in _runs_json([str(root)], capsys)["runs"]] == [None, None]


def test_cli_preset_is_recorded_and_a_typed_out_resume_keeps_it(tmp_path, capsys) -> None:
    from landscape.cli import main
    from landscape.experiment.store import RunStore
    from landscape.experiment.train import stored_preset

    root = str(tmp_path / "runs")
    argv = [*CLI_TINY, "--out", root, "--json"]
    assert main(["train", "--preset", "ahn2023", *argv]) == 0
    out = _json_line(capsys.readouterr().out)
    typed = ["--attention", "linear", "--mask", "paper", "--fixed", "P:corner=1", "--init-std", "1e-4"]
    assert main(["train", *typed, *argv]) == 0
    back = _json_line(capsys.readouterr().out)
    assert back["run"] == out["run"] and back["config"] == out["config"] and back["preset"] is None
    with RunStore(root, read_only=True) as s:
        assert len(s.list_runs()) == 1 and stored_preset(s, out["run"]) == "ahn2023"


def test_preset_overrides_name_the_fields_not_taken_from_the_preset(tmp_path, capsys) -> None:
    from landscape.cli import main
    from landscape.cli.train import preset_line
    from landscape.experiment.store import RunStore
    from landscape.experiment.train import PRESET_OVERRIDES_RESULT, preset_overrides

    base = dict(d=3, n=6, seeds=1, steps=0, batch=8, eval_batch=16)
    assert preset_overrides(TrainConfig(**recipe.preset("ahn2023"), **base)) == ()
    assert preset_overrides(TrainConfig(**base)) == ()  # no preset: nothing to override
    # the name alone, without the fields: every field that differs from the preset's is named
    assert preset_overrides(TrainConfig(**base, preset="ahn2023")) == ("mask", "fixed", "init_std")
    over = TrainConfig(**{**recipe.preset("ahn2023"), "mask": "full", "fixed": [("P", "corner", 1)]}, **base)
    assert preset_overrides(over) == ("mask",)  # [("P", "corner", 1)] is the preset's value as stored
    line = preset_line("ahn2023", over)
    assert "mask='full' (given; the preset's: 'paper')" in line and line.endswith("init_std=0.0001")
    assert "fixed=(('P', 'corner', 1.0),)" in line and line.count("given") == 1

    root = tmp_path / "runs"
    assert main(["train", "--preset", "ahn2023", *CLI_TINY, "--steps", "0", "--mask", "full", "--out", str(root),
                 "--json"]) == 0
    name = _json_line(capsys.readouterr().out)["run"]
    with RunStore(root, read_only=True) as s:
        assert s.results(name)[PRESET_OVERRIDES_RESULT] == ["mask"]
    assert main(["runs", str(root), "--show", name]) == 0
    text = capsys.readouterr().out
    assert "preset: ahn2023 (provenance, not in the config hash; fields given otherwise: mask)" in text
    assert "result preset" not in text  # shown once, on its own line
