"""Bad input on the command line: every numeric option of every command is checked when the
arguments are parsed (one line, exit 2, no traceback, nothing written), errors of the environment
(file system, SQLite, the run store, memory) are one line with exit 2 (JSON with ``--json``),
sizes that cannot fit are refused from an estimate before anything is allocated, and results
that failed (every seed diverged, an empty sweep) are not reported as success."""

from __future__ import annotations

import argparse
import errno
import json
import sqlite3
from pathlib import Path

import pytest
import torch

import landscape._checks as _checks
from landscape.cli import build_parser, main
from limits import HANG_GUARD_S

HUGE_INT = "1" + "0" * 30
HUGE_FLOAT = "1e999"  # overflows to inf when parsed
BAD_VALUES = ("nan", "inf", "-inf", "-1", "0", "huge", "abc", "")

# command -> (argv before the options, {option: (kind, accepts 0)})
# kind: "int" or "float" (a value), "list" (comma-separated numbers); "unit": a float in (0, 1)/[0, 1)
PROBLEM = {"--d": ("int", False), "--n": ("int", False), "--layers": ("int", False), "--heads": ("int", False),
           "--noise": ("float", True), "--seed": ("int", True)}
THREADS = {"--threads": ("int", False)}
TABLE: dict[str, tuple[list[str], dict[str, tuple[str, bool]]]] = {
    "solve": (["solve", "pgd"], {**PROBLEM, "--samples": ("int", False), "--starts": ("int", False),
                                 "--scale": ("float", False), **THREADS}),
    "verify": (["verify", "pgd"], {**PROBLEM, "--samples": ("int", False), "--alpha": ("unit", False),
                                   "--hessian-samples": ("int", True), "--tol": ("float", False), "--max-distance": ("float", False),
                                   **THREADS}),
    "train": (["train"], {**PROBLEM, "--probs": ("list", True), "--init-std": ("float", True),
                          "--seeds": ("int", False), "--steps": ("int", True), "--batch": ("int", False),
                          "--lr": ("list", False), "--betas": ("list", True), "--momentum": ("unit", True),
                          "--weight-decay": ("float", True), "--clip": ("float", False), "--warmup": ("int", True),
                          "--resample-every": ("int", False), "--log-every": ("int", False),
                          "--checkpoint-every": ("int", True), "--eval-batch": ("int", False),
                          "--distance-every": ("int", True), "--chunk": ("int", False), **THREADS}),
    "check": (["check"], {"--d": ("int", False), "--n": ("int", False), "--layers": ("int", False),
                          "--seed": ("int", True), "--batch": ("int", False), **THREADS}),
    "sweep": (["sweep", "grid.toml"], {"--num-cpus": ("int", False), **THREADS}),
    "reproduce": (["reproduce", "ahn2023"], {"--seed": ("int", True), **THREADS}),
    "families": (["families"], THREADS),
    "plot": (["plot", "runs"], THREADS),
    "store": (["store", "check", "runs"], THREADS),
    "runs": (["runs", "runs"], THREADS),
    "export": (["export", "runs", "--out", "m.csv"], THREADS),
    "hessian": (["hessian", "--family", "pgd"], {**PROBLEM, "--samples": ("int", False), "--sample-seed": ("int", True),
                "--k": ("int", False), "--matvecs": ("int", False), "--probes": ("int", False),
                "--steps": ("int", False), "--dense-max": ("int", True), **THREADS}),
    "slice": (["slice", "--family", "pgd", "--plane", "random"], {**PROBLEM, "--samples": ("int", False),
              "--sample-seed": ("int", True), "--range": ("list", False), "--grid": ("int", False), **THREADS}),
    "probe": (["probe", "--construction", "pgd"], {"--fit-samples": ("int", False), "--eval-samples": ("int", False),
              "--d": ("int", False), "--n": ("int", False), "--layers": ("int", False), "--seed": ("int", True),
              **THREADS}),
    "llc": (["llc", "--family", "pgd"], {**PROBLEM, "--samples": ("int", False), "--sample-seed": ("int", True),
            "--sample-size": ("int", False), "--beta": ("float", False), "--gamma": ("float", True),
            "--step-size": ("float", False), "--steps": ("int", False), "--burn-in": ("int", True),
            "--chains": ("int", False), "--chain-seed": ("int", True), "--dense-max": ("int", True), **THREADS}),
}


def _cases() -> list[tuple[str, str, str]]:
    out = []
    for cmd, (_, opts) in TABLE.items():
        for opt, (kind, zero_ok) in opts.items():
            for v in BAD_VALUES:
                if v == "0" and zero_ok:
                    continue  # a valid value: running it would start work
                if v == "" and kind != "list":
                    continue
                out.append((cmd, opt, v))
            if kind == "unit" or opt in ("--betas", "--probs"):
                out.append((cmd, opt, "1.5"))
    return out


def _value(opt: str, kind: str, v: str) -> str:
    if v == "huge":
        return HUGE_INT if kind == "int" else HUGE_FLOAT
    if opt == "--betas" and v not in ("", "abc"):
        return f"0.9,{v}"  # two numbers, the second bad
    return v


def _numeric_actions() -> dict[str, set[str]]:
    """command -> the options whose value argparse converts with a numeric type."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    out: dict[str, set[str]] = {}
    for name, p in sub.choices.items():
        for a in p._actions:
            t = a.type
            if t in (int, float):
                raise AssertionError(f"landscape {name} {a.option_strings}: a bare {t.__name__} type accepts "
                                     "NaN/inf/negative values; use the types of landscape.cli._args")
            if t is not None and getattr(t, "__name__", "") in ("integer", "number", "numbers"):
                out.setdefault(name, set()).update(o for o in a.option_strings if o.startswith("--"))
    return out


def test_the_table_covers_every_numeric_option() -> None:
    found = _numeric_actions()
    listed = {cmd: set(opts) for cmd, (_, opts) in TABLE.items()}
    assert found == listed


@pytest.mark.parametrize("cmd,opt,v", _cases(), ids=[f"{c}{o}={v or 'empty'}" for c, o, v in _cases()])
def test_bad_numeric_value_is_one_line_exit_2(cmd: str, opt: str, v: str, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    before, opts = TABLE[cmd]
    kind = opts[opt][0]
    argv = [*before, f"{opt}={_value(opt, kind, v)}"]

    def ran(args: object) -> int:
        raise AssertionError(f"landscape {cmd} started its work with a bad {opt}")

    monkeypatch.setattr(f"landscape.cli.{cmd}.run", ran)  # refused while parsing: the command never runs
    rc = main(argv)
    out, err = capsys.readouterr()
    assert rc == 2, (argv, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"landscape {cmd}: error: {opt} "), lines[0]
    assert "Traceback" not in err and out == ""
    assert list(tmp_path.iterdir()) == []  # nothing written


@pytest.mark.parametrize("argv,opt", [
    (["solve", "pgd", "--noise", "nan", "--json"], "--noise"),
    (["train", "--lr", "abc", "--json"], "--lr"),
    (["verify", "pgd", "--json", "--hessian-samples", "-1"], "--hessian-samples"),
    (["check", "--layers", "inf", "--json"], "--layers"),
])
def test_argument_errors_with_json_are_json(argv: list[str], opt: str, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(argv)
    out, err = capsys.readouterr()
    assert rc == 2 and err == ""
    obj = json.loads(out)
    assert obj["error"].startswith(f"{opt} ") and obj["kind"] == "argument"


def test_unknown_option_and_command_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--no-such-option"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unrecognized arguments: --no-such-option" in err[0]
    assert main(["bogus", "--json"]) == 2
    assert "invalid choice: 'bogus'" in json.loads(capsys.readouterr().out)["error"]


def test_types_name_the_accepted_range() -> None:
    from landscape.cli._args import float_arg, float_list_arg, int_arg

    with pytest.raises(argparse.ArgumentTypeError, match=r"in \(0, 1\), got '1'"):
        float_arg(0.0, 1.0, lo_open=True, hi_open=True)("1")
    assert float_arg(0.0, 1.0, lo_open=True, hi_open=True)("0.25") == 0.25
    with pytest.raises(argparse.ArgumentTypeError, match="an integer >= 16, got 8"):
        int_arg(16)("8")
    with pytest.raises(argparse.ArgumentTypeError, match="an integer >= 1"):
        int_arg(1)("2.5")
    assert int_arg(0)("12") == 12
    with pytest.raises(argparse.ArgumentTypeError, match="entry 1 must be a finite number > 0"):
        float_list_arg(0.0, lo_open=True)("0.1,nan")
    assert float_list_arg(0.0, lo_open=True)("0.1, 0.2") == (0.1, 0.2)


# ---------------------------------------------------------------------- errors of the environment
TINY_TRAIN = ["train", "--d", "2", "--n", "3", "--seeds", "1", "--steps", "2", "--batch", "4", "--eval-batch", "8",
              "--log-every", "1", "--no-progress"]


def test_out_is_a_regular_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "not-a-dir"
    f.write_text("x")
    for out in (f, f / "sub"):
        rc = main([*TINY_TRAIN, "--out", str(out)])
        _, err = capsys.readouterr()
        assert rc == 2, err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("landscape train: error: ") and "Traceback" not in err
        assert str(f) in lines[0]
    assert f.read_text() == "x"
    rc = main([*TINY_TRAIN, "--out", str(f), "--json"])
    obj = json.loads(capsys.readouterr().out)
    assert rc == 2 and obj["kind"].endswith("Error") and str(f) in obj["error"]


@pytest.mark.parametrize("exc,needle,kind", [
    (OSError(errno.ENOSPC, "No space left on device", "store.sqlite"), "No space left on device", "OSError"),
    (sqlite3.DatabaseError("database disk image is malformed"), "database disk image is malformed", "DatabaseError"),
    (MemoryError(), "out of memory", "MemoryError"),
])
def test_environment_errors_are_one_line_exit_2(exc: BaseException, needle: str, kind: str, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    import landscape.experiment.train

    def fail(*_a, **_k):
        raise exc

    monkeypatch.setattr(landscape.experiment.train, "train", fail)
    rc = main([*TINY_TRAIN, "--out", str(tmp_path / "o")])
    _, err = capsys.readouterr()
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("landscape train: error: ") and needle in lines[0]
    assert "--debug" in lines[0]  # how to get the traceback
    rc = main([*TINY_TRAIN, "--json"])
    out, err = capsys.readouterr()
    obj = json.loads(out)
    assert rc == 2 and needle in obj["error"] and obj["kind"] == kind and "Traceback" not in err
    rc = main(["--debug", *TINY_TRAIN])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" in err and needle in err.strip().splitlines()[-1]


def test_full_disk_while_the_store_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """ENOSPC raised by the store's own write path (not a stub of the command)."""
    import landscape.experiment.store as store

    def full(self, *_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store.RunStore, "save_final", full)
    rc = main([*TINY_TRAIN, "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "No space left on device" in err and len(err.strip().splitlines()) == 1


def test_a_runtime_error_of_the_store_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    import landscape.experiment.train
    from landscape.experiment.store import RunStore

    def closed_store(*_a, **_k):
        s = RunStore(tmp_path / "s")
        s.close()
        s.list_runs()  # raises from landscape/experiment/store.py: the store is closed

    monkeypatch.setattr(landscape.experiment.train, "train", closed_store)
    rc = main(TINY_TRAIN)
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and "closed" in err and len(err.strip().splitlines()) == 1


def test_a_bug_keeps_its_traceback(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import landscape.experiment.train

    def bug(*_a, **_k):
        return {}["missing"]

    monkeypatch.setattr(landscape.experiment.train, "train", bug)
    rc = main(TINY_TRAIN)
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" in err and "KeyError" in err and "internal error" in err
    rc = main([*TINY_TRAIN, "--json"])
    out, err = capsys.readouterr()
    assert rc == 1 and json.loads(out)["kind"] == "internal" and "Traceback" in err


def test_console_script_subprocess(tmp_path: Path) -> None:
    """The installed entry point behaves the same: argparse errors are JSON with --json."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    f = tmp_path / "file"
    f.write_text("")
    r = subprocess.run([sys.executable, "-m", "landscape.cli", "train", "--lr", "abc", "--json"],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=HANG_GUARD_S)
    assert r.returncode == 2 and json.loads(r.stdout)["error"].startswith("--lr ")
    r = subprocess.run([sys.executable, "-m", "landscape.cli", *TINY_TRAIN, "--out", str(f / "x")],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=HANG_GUARD_S)
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


# ---------------------------------------------------------------------- size limits
def test_memory_estimate_formula() -> None:
    got = _checks.prompt_memory(batch=7, d=3, n=5, layers=2, seeds=3, dtype_bytes=4, factor=6.0,
                                kernel_heads=2, kernel_factor=4.0)
    assert got == int(3 * 7 * 2 * 4 * (6.0 * 4 * 6 + 4.0 * 2 * 36))
    # Python integers: sizes far beyond memory do not overflow
    assert _checks.prompt_memory(batch=10**9, d=10**6, n=10**6, layers=10**5) > 7 * 10**26  # 8e26 B
    avail = _checks.available_memory()
    assert avail is None or avail > 0
    with pytest.raises(ValueError, match=r"needs about 1 GiB of memory \(f\), but this machine has 1 MiB available"):
        _checks.check_memory("--x", 2**30, "f", available=2**20)
    _checks.check_memory("--x", 2**20, "f", available=2**30)  # fits: no error


def _no_work(monkeypatch: pytest.MonkeyPatch, module: object, name: str) -> None:
    def boom(*_a, **_k):
        raise AssertionError(f"{name} ran although the sizes do not fit")

    monkeypatch.setattr(module, name, boom)


def test_check_refuses_sizes_that_cannot_fit(monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    import landscape.cli.check as chk

    _no_work(monkeypatch, chk, "run_checks")
    monkeypatch.setattr(_checks, "available_memory", lambda: 8 * 2**30)  # an 8 GiB machine
    rc = main(["check", "--batch", "100000", "--d", "50", "--n", "50", "--layers", "3"])
    err = capsys.readouterr().err.strip().splitlines()
    expected = 100000 * 51 * 51 * 3 * 8 * chk.CHECK_MEMORY_FACTOR
    assert rc == 2 and len(err) == 1
    assert f"needs about {_checks.format_bytes(expected)}" in err[0] and "8 GiB available" in err[0]


def test_check_warns_when_long(capsys: pytest.CaptureFixture[str]) -> None:
    from landscape.cli.check import check_sizes

    seconds = check_sizes(3, 8, 100000, 16)
    err = capsys.readouterr().err
    assert seconds > 600 and "landscape check: warning: this will take about" in err
    assert check_sizes(3, 8, 3, 16) < 1 and capsys.readouterr().err == ""


@pytest.mark.parametrize("extra", [["--seeds", "64", "--batch", "1000000"], ["--d", "100000", "--n", "1000"],
                                   ["--batch", "2000000000", "--seeds", "2"]])
def test_train_refuses_sizes_that_cannot_fit(extra: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    import landscape.experiment.train

    _no_work(monkeypatch, landscape.experiment.train, "train")
    monkeypatch.setattr(_checks, "available_memory", lambda: 16 * 2**30)
    out = tmp_path / "o"
    rc = main(["train", *extra, "--steps", "1", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "needs about" in err[0] and "16 GiB available" in err[0]
    assert not out.exists()


def test_solve_refuses_a_huge_dimension(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import landscape.symbolic.loss as sl

    _no_work(monkeypatch, sl, "family_loss")
    monkeypatch.setattr(_checks, "available_memory", lambda: 16 * 2**30)
    rc = main(["solve", "pgd", "--d", "1000", "--n", "20"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "needs about 29.2 TiB" in err[0]  # 4 * 8 B * 1001^4


def test_train_memory_estimate_is_the_formula() -> None:
    from landscape.cli.train import train_memory
    from landscape.experiment.train import TrainConfig

    c = TrainConfig(d=4, n=6, seeds=3, batch=10, eval_batch=20, layers=2, dtype="float64")
    assert train_memory(c) == 3 * 2 * 8 * (10 * 6.0 * 5 * 7 + 20 * 2.0 * 5 * 7)
    k = TrainConfig(task="gp:exp", attention="kernel", activations=("exp", "linear"), d=4, n=6, seeds=1,
                    batch=10, eval_batch=20, layers=1)
    assert train_memory(k) == 4 * (10 * (6.0 * 35 + 4.0 * 2 * 49) + 20 * (2.0 * 35 + 1.0 * 2 * 49))


# ---------------------------------------------------------------------- failures are not success
def test_every_seed_diverged_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["train", "--d", "2", "--n", "3", "--seeds", "2", "--steps", "5", "--batch", "8", "--eval-batch", "8",
            "--lr", "1e30", "--no-progress"]
    rc = main(argv)
    out, err = capsys.readouterr()
    assert rc == 1 and "every one of the 2 seeds diverged" in err
    assert out.count("yes") == 2  # the table says so too
    rc = main([*argv, "--json"])
    obj = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rc == 1 and obj["diverged"] == [True, True]
    # one seed of two diverging is a result, not a failure
    rc = main([*argv[:-3], "--lr", "1e30,1e-3", "--no-progress"])
    assert rc == 0 and "diverged" not in capsys.readouterr().err


@pytest.mark.parametrize("name,text", [("empty.toml", ""), ("blank.toml", "\n  \n"), ("empty.yaml", ""),
                                       ("comment.yaml", "# nothing\n"), ("name-only.toml", 'name = "x"\n'),
                                       ("empty-sections.toml", "[base]\n[grid]\n")])
def test_empty_sweep_is_an_error(name: str, text: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / name
    f.write_text(text)
    rc = main(["sweep", str(f), "--dry-run", "--out", str(tmp_path / "runs")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert "empty" in err[0] or "sets no config values" in err[0]
    assert not (tmp_path / "runs").exists()


def test_hessian_samples_minus_one_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["verify", "fgd", "--hessian-samples", "-1"])
    err = capsys.readouterr().err
    assert rc == 2 and "--hessian-samples must be an integer >= 0, got -1" in err


def test_exit_codes_are_documented() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    import importlib

    for name in sub.choices:
        doc = importlib.import_module(f"landscape.cli.{name}").__doc__ or ""
        if name == "families":
            continue
        assert "Exit status" in doc, name
    assert "every seed diverged" in (importlib.import_module("landscape.cli.train").__doc__ or "")


def test_torch_out_of_memory_is_an_environment_error() -> None:
    from landscape.cli._main import _environment_errors

    kinds = _environment_errors()
    assert OSError in kinds and sqlite3.Error in kinds and MemoryError in kinds
    oom = getattr(torch, "OutOfMemoryError", None)
    assert oom is None or oom in kinds
