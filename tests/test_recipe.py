"""The recipe layer: names and specs become objects in one place (``landscape.recipe``).

* config hashes of existing stores stay valid: configs built now hash as the code before the
  recipe layer hashed them (reference digests below);
* a composite GP data kernel is a TrainConfig (``task="gp"``, ``data_kernel`` terms): its Gram
  matrix equals the formula written out, it round-trips through the store, and ``train`` on it
  gives the parameters of a hand-written loop over the same prompts;
* a user family file declares its prior and attention: a copy of ``pgd`` declaring
  ``PRIOR = "inverse"`` gets the built-in's verdict and loss, and every output records the task,
  the prior and Σ;
* TrainConfig is four declared parts, validates without building, builds explicitly;
* no library module imports ``landscape.cli``; the sweep docstring example runs as written.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import math
import tomllib
from pathlib import Path

import pytest
import torch

from landscape import recipe
from landscape.experiment.store import RunStore, config_hash
from landscape.experiment.train import (
    PARTS,
    BookkeepingPart,
    ModelPart,
    OptimisationPart,
    TaskPart,
    TrainConfig,
    init_state,
    lr_factor,
    make_generator,
    make_step,
    make_task,
    train,
)

F64 = torch.float64
ROOT = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------------- config hashes
# Reference digests: config_hash(TrainConfig(**kwargs).to_dict()) computed by running the code of
# commit 82f901d (before the recipe layer; `git archive 82f901d`), in a directory holding the
# files written by _reference_files below, with exactly these kwargs and command lines.
REFERENCE_HASHES = {
    "default": "2c395ec5add1ad60c3fe29e6702a9cacad849a889f9f7b22921ae2883b35ba09",
    "tiny_linear": "1fb0851227d8abff099222e91a198861fe4d6939337e85fbd6c96069136a4559",
    "pgd_random_inverse": "33b4b8519882d4740a370ee567407c90acada921ff3d9345241e24ca90af71bf",
    "spectrum_run_seed": "6f0705711cb233c1f2f88bc457848681e6222481d00ed8445e2c9254edf619f5",
    "spectrum_other_seed": "3b2c791f9d3348723dbd13dca78be395afc9b5d60042dec7429627de29ff8ef2",
    "diag_matrix": "a75be65f3dd94cdc7437cd15454574f5e89c05105fefe1fdd1371f9b180e8991",
    "sigma_file": "ac1093d2d0bf8bdef3d8bed14f5bc4c189b3ddb1553b1dbf605d79b3b147ffe1",
    "sigma_nested": "f7498609bec0dda6dda48b8acaf592422642574b237984f284c7b01e0a6956e2",
    "gp_kernel_two_heads": "2996959b4813df4e95164eba879ff9ff5d25315e100a028b0d1f1123fdc1dcf0",
    "gp_relu_softmax": "38b4c2497b5f6c9925bcba49e676430252d5256d95d9371f3c0494bcc00d8f5d",
    "gp_exp_scale": "c15c155c335f3f767b645485fc310db9358ad93eebc4c924e7be43d9d7d54727",
    "classification": "fc30a3a02d0e5f675a97c53df7641696a2480b49309800ae2722ce135d390539",
    "features": "832965049aa46a5eebfd47ddd36456e20fdc432c77d84ec1f62c2109ec037a1f",
    "optim": "863a6915634eb7ecbb234d0ba4b7cd2041aee53d17a4aeb7016d0ade1b6c6ad3",
    "bookkeeping": "471ade4d16ec423f11f9565c2c087cd95c96d9cadb09c4e54aeb6fd598408331",
    "user_family": "b2e12818587251c3c6cb5a23217bc39b500707570ab7064314d81aee0083de18",
    "task_gp_default": "f2ab377eaaab153e4a73725bc7664b4823817bc0b1d9ceaf5fad57f33c58c2f1",
    "cli_pgd": "5cf8314a2cb1a0571e09d1c5f44a3dbfa638d3c3558256091927cd413751d153",
    "cli_kernel": "7d3222053a4f5cecb711f8d644d35119d6ef3c7fb59640b88df26acb13ab73bb",
    "cli_softmax": "55e558becba78cd59aa33cb5fb9d8c6c14a7c2568e60344a4c96a182a9830f66",
    "cli_user": "6e73ab22d6cd0feeccffabd840664c66f24b6f3a61338e43426cec22bd8b5b47",
}

CASES = {
    "default": dict(),
    "tiny_linear": dict(d=3, n=5, seeds=3, steps=4, batch=8),
    "pgd_random_inverse": dict(d=3, n=5, layers=2, sigma="random:3", task_cov="inverse", family="pgd", mask="sparse"),
    "spectrum_run_seed": dict(d=3, sigma="spectrum:1,2,3", seed=5),
    "spectrum_other_seed": dict(d=3, sigma="spectrum:1,2,3:7", seed=5),
    "diag_matrix": dict(d=3, sigma="diag:1,2,3"),
    "sigma_file": dict(d=3, sigma="sigma.txt"),
    "sigma_nested": dict(d=2, sigma=((2.0, 0.5), (0.5, 1.0))),
    "gp_kernel_two_heads": dict(task="gp:exp", attention="kernel", activations=("exp", "linear"), d=4, n=6,
                                family="fgd", mask="paper"),
    "gp_relu_softmax": dict(task="gp:relu", attention="kernel", activations=("softmax",), covariates="gaussian",
                            noise=0.1),
    "gp_exp_scale": dict(task="gp:exp:0.5", attention="kernel", activations=("exp:0.5",), d=4),
    "classification": dict(task="classification", margin=0.2, flip=0.1),
    "features": dict(task="features", probs=(0.7, 0.2, 0.1), sigma="identity"),
    "optim": dict(seeds=2, lr=(0.1, 0.2), optimizer="sgd", momentum=0.9, weight_decay=1e-3, clip=1.0,
                  schedule="cosine", warmup=5, resample_every=2, dtype="float64", engine="stacked", chunk=32),
    "bookkeeping": dict(log_every=7, checkpoint_every=0, eval_batch=99, distance_every=0, device="cpu",
                        init_std=0.05, heads=2, layers=3),
    "user_family": dict(d=3, family="fam.py:f"),
    "task_gp_default": dict(task="gp", attention="kernel"),
}

CLI = {
    "cli_pgd": ["--family", "pgd", "--sigma", "random:0", "--d", "3", "--n", "5", "--layers", "2"],
    "cli_kernel": ["--activation", "exp,linear", "--family", "fgd", "--d", "4", "--n", "6"],
    "cli_softmax": ["--activation", "softmax", "--d", "3"],
    "cli_user": ["--family", "fam.py:f", "--d", "3", "--sigma", "spectrum:1,2,3"],
}

_FAM_TEXT = '''import sympy


def f(problem):
    d, D = problem.d, problem.d + 1
    a = sympy.Symbol("a0", real=True)
    P = sympy.zeros(D, D)
    P[D - 1, D - 1] = 1
    Q = sympy.zeros(D, D)
    for i in range(d):
        Q[i, i] = -a
    return {"layer0.head0.P": P, "layer0.head0.Q": Q}
'''


def _reference_files(root: Path) -> None:
    (root / "fam.py").write_text(_FAM_TEXT)
    (root / "sigma.txt").write_text("2 0 0\n0 1 0\n0 0 0.5\n")


def _cli_config(argv: list[str]) -> TrainConfig:
    import argparse

    from landscape.cli.train import add_parser, config_from_args

    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    return config_from_args(parser.parse_args(["train", *argv]))


def test_config_hashes_equal_those_of_the_code_before_the_recipe_layer(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    _reference_files(tmp_path)
    got = {k: config_hash(TrainConfig(**v).to_dict()) for k, v in CASES.items()}
    got |= {k: config_hash(_cli_config(argv).to_dict()) for k, argv in CLI.items()}
    assert got == REFERENCE_HASHES
    for k, v in CASES.items():  # a stored config reads back to the same run
        stored = json.loads(json.dumps(TrainConfig(**v).to_dict()))
        assert config_hash(TrainConfig.from_dict(stored).to_dict()) == REFERENCE_HASHES[k], k


def test_a_preset_name_leaves_every_reference_hash_as_it_was(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the preset's name is provenance (TrainConfig.preset), not identity: the same fields with a
    # preset named hash to the digests of the code that had no presets at all
    monkeypatch.chdir(tmp_path)
    _reference_files(tmp_path)
    for k, v in CASES.items():
        name = "cheng2024" if v.get("attention") == "kernel" else "ahn2023"
        cfg = TrainConfig(**v, preset=name)
        assert cfg.preset == name and config_hash(cfg.to_dict()) == REFERENCE_HASHES[k], k
    for k, argv in CLI.items():
        name = "cheng2024" if "--activation" in argv else "ahn2023"
        cfg = _cli_config([*argv, "--preset", name])  # a preset's fields change the config ...
        assert cfg.preset == name and config_hash(cfg.to_dict()) != REFERENCE_HASHES[k], k
        bare = dataclasses.replace(cfg, preset=None)  # ... its name does not
        assert config_hash(bare.to_dict()) == config_hash(cfg.to_dict()), k


# ---------------------------------------------------------------------- composite data kernels
def _composite_terms(d: int) -> tuple:
    """Cheng et al.'s K°(x, x') = exp(<x12, x'12>/2) + <x34, x'34> as (weight, kernel, G) terms."""
    E = torch.eye(d, dtype=F64)
    return ((1.0, "exp", (E[:2] / math.sqrt(2.0)).tolist()), (1.0, "linear", E[2:4].tolist()))


def _composite_direct(U: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """K° written out: the formula, not the SumKernel code."""
    return torch.exp(0.5 * U[..., :2, :].transpose(-1, -2) @ W[..., :2, :]) + U[..., 2:4, :].transpose(-1, -2) @ W[..., 2:4, :]


COMPOSITE = dict(task="gp", d=5, n=6, attention="kernel", activations=("exp", "linear"), layers=2, seeds=2,
                 steps=3, batch=16, lr=0.01, dtype="float64", device="cpu", log_every=1, checkpoint_every=0,
                 eval_batch=32, engine="stacked")


def test_composite_data_kernel_is_the_formula_and_its_prompts_are_gp_samples() -> None:
    cfg = TrainConfig(**COMPOSITE, data_kernel=_composite_terms(5))
    task = make_task(cfg)
    xi = torch.randn(7, 5, 9, generator=torch.Generator().manual_seed(0), dtype=F64)
    assert torch.allclose(task.kernel.gram(xi, xi), _composite_direct(xi, xi), rtol=1e-13, atol=1e-13)
    b = task.sample(64, torch.Generator().manual_seed(1))
    K = _composite_direct(b.latent["xi"], b.latent["xi"]) + task.jitter * torch.eye(7, dtype=F64)
    assert torch.allclose(b.latent["K"], K, rtol=1e-12, atol=1e-12)


def test_composite_data_kernel_spellings_name_one_run_and_a_plain_kernel_is_gp_name() -> None:
    from landscape.core.kernels import SumKernel, get_kernel

    terms = _composite_terms(5)
    a = TrainConfig(**COMPOSITE, data_kernel=terms)
    E = torch.eye(5, dtype=F64)
    obj = SumKernel(((1.0, get_kernel("exp"), E[:2] / math.sqrt(2.0)), (1.0, get_kernel("linear"), E[2:4])))
    b = TrainConfig(**COMPOSITE, data_kernel=obj)
    assert a == b and config_hash(a.to_dict()) == config_hash(b.to_dict())
    assert a.task == "gp" and a.data_kernel[1] == (1.0, "linear", tuple(tuple(r) for r in E[2:4].tolist()))
    stored = json.loads(json.dumps(a.to_dict()))
    back = TrainConfig.from_dict({**stored, "device": "cpu"})
    assert back == a and config_hash(back.to_dict()) == config_hash(stored)
    # one plain term is the 'gp:KERNEL' run (same hash as the string form), stored without data_kernel
    plain = TrainConfig(**{**COMPOSITE, "task": "gp"}, data_kernel=((1.0, "exp:0.5", None),))
    ref = TrainConfig(**{**COMPOSITE, "task": "gp:exp:0.5"})
    assert plain == ref and "data_kernel" not in plain.to_dict()
    assert config_hash(plain.to_dict()) == config_hash(ref.to_dict())
    with pytest.raises(ValueError, match="data_kernel gives the kernel of task 'gp'"):
        TrainConfig(**{**COMPOSITE, "task": "linear", "attention": "linear"}, data_kernel=terms)
    with pytest.raises(ValueError, match="normalised"):
        TrainConfig(**COMPOSITE, data_kernel=((1.0, "softmax", None), (1.0, "exp", None)))
    with pytest.raises(ValueError, match=r"kernel term 0 must be \(weight, kernel, G\)"):
        TrainConfig(**COMPOSITE, data_kernel=(("exp",),))
    with pytest.raises(ValueError, match="unknown activation/kernel"):
        TrainConfig(**COMPOSITE, data_kernel=((1.0, "nope", None), (1.0, "exp", None)))


def test_train_on_a_composite_kernel_equals_a_hand_written_loop_and_is_stored(tmp_path: Path) -> None:
    """``train`` on composite GP prompts = the step of ``make_step`` looped by hand over the prompts
    of the config's data stream (the loop the cheng2024 study wrote because TrainConfig could not
    name K°), bit for bit; the stored config reads back to the same config."""
    cfg = TrainConfig(**COMPOSITE, data_kernel=_composite_terms(5))
    res = train(cfg, tmp_path / "store", progress=False)
    task, gen = make_task(cfg), make_generator(cfg, "data")
    state, step = init_state(cfg, "cpu"), make_step(cfg)
    flat, opt, alive, dstep = state.flat, state.opt, state.alive, state.diverged_step
    lr0 = cfg.lr_vector(flat.device)
    for t in range(cfg.steps):
        b = task.sample(cfg.seeds * cfg.batch, gen)
        Z = b.Z.reshape((cfg.seeds, cfg.batch) + tuple(b.Z.shape[1:]))
        y = b.target.reshape(cfg.seeds, cfg.batch)
        flat, opt, alive, dstep, _, _ = step(flat, opt, alive, dstep, t, Z, y, lr0 * lr_factor(cfg, t))
    from landscape.core.model import flatten_params

    assert torch.equal(flatten_params(res.params, cfg.spec), flat)
    with RunStore(tmp_path / "store", read_only=True) as s:
        (run,) = s.list_runs()
        assert TrainConfig.from_dict({**run.config, "device": "cpu"}) == cfg and run.config["data_kernel"][0][1] == "exp"
    # the stored composite run plots, and plotting leaves every byte of the store as it was
    import hashlib

    from landscape.cli._main import build_parser

    def snapshot() -> dict[str, str]:
        return {p.relative_to(tmp_path / "store").as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted((tmp_path / "store").rglob("*")) if p.is_file() and "-wal" not in p.name
                and "-shm" not in p.name}

    before = snapshot()
    args = build_parser().parse_args(["plot", str(tmp_path / "store"), "--kind", "loss", "--out", str(tmp_path / "f")])
    assert args.func(args) == 0 and any((tmp_path / "f").rglob("*.png"))
    assert snapshot() == before


# ---------------------------------------------------------------------- family priors
_PGD_COPY = '''import sympy

{decl}

def pgd_copy(problem):
    """A user copy of Ahn et al.'s pgd family: P = diag(0, 1), Q = -diag(a_l Σ^-1, 0)."""
    d, D = problem.d, problem.d + 1
    prec = problem.sigma_power(-1)
    out = {{}}
    for l in range(problem.layers):
        a = sympy.Symbol(f"a{{l}}", real=True)
        P = sympy.zeros(D, D)
        P[D - 1, D - 1] = 1
        Q = sympy.zeros(D, D)
        Q[:d, :d] = -a * prec
        out[f"layer{{l}}.head0.P"] = P
        out[f"layer{{l}}.head0.Q"] = Q
    return out
'''


def _pgd_copy(tmp_path: Path, decl: str, name: str) -> str:
    path = tmp_path / f"{name}.py"
    path.write_text(_PGD_COPY.format(decl=decl))
    return f"{path}:pgd_copy"


def _cli_json(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict]:
    from landscape.cli._main import main

    capsys.readouterr()
    rc = main(argv)
    out = capsys.readouterr().out.strip().splitlines()
    return rc, json.loads(out[-1])


def test_user_copy_of_pgd_declaring_the_inverse_prior_matches_the_builtin(tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    declared = _pgd_copy(tmp_path, 'PRIOR = "inverse"\nATTENTION = "linear"', "declared")
    plain = _pgd_copy(tmp_path, "", "plain")
    assert recipe.declared(declared) == recipe.FamilyDeclaration("linear", "inverse")
    assert recipe.declared(plain) == recipe.FamilyDeclaration(None, None)
    assert recipe.declared("pgd") == recipe.FamilyDeclaration("linear", "inverse")
    common = ["--d", "3", "--n", "6", "--layers", "1", "--sigma", "spectrum:1,0.5,0.25:3", "--json"]

    rc_b, built = _cli_json(["verify", "pgd", *common], capsys)
    rc_u, user = _cli_json(["verify", declared, *common], capsys)
    rc_p, ctrl = _cli_json(["verify", plain, *common], capsys)
    assert (rc_b, built["verdict"]) == (0, "stationary") and (rc_u, user["verdict"]) == (0, "stationary")
    assert user["loss"] == pytest.approx(built["loss"], rel=1e-12)
    assert user["point"] == pytest.approx(built["point"], rel=1e-9)
    # the record of the task, its prior and Σ
    assert built["task"]["prior"] == user["task"]["prior"] == "inverse" and ctrl["task"]["prior"] == "identity"
    assert user["task"]["sigma"] == "spectrum:1,0.5,0.25:3"
    sig = torch.tensor(user["task"]["sigma_matrix"], dtype=F64)
    assert torch.allclose(torch.linalg.eigvalsh(sig), torch.tensor([0.25, 0.5, 1.0], dtype=F64), rtol=1e-12)
    # without the declaration the copy is about w* ~ N(0, I), where Σ^-1 steps are not stationary
    assert (rc_p, ctrl["verdict"]) == (1, "not_stationary")

    _, sb = _cli_json(["solve", "pgd", *common], capsys)
    _, su = _cli_json(["solve", declared, *common], capsys)
    assert sb["loss"] == su["loss"] and su["task"]["prior"] == "inverse" and su["task"]["sigma_matrix"] == user["task"]["sigma_matrix"]

    from landscape.symbolic.loss import default_data
    from landscape.theory.families import Problem

    prob = Problem(d=3, layers=1, n=6, sigma=sig, attention="linear")
    fam = recipe.family(declared, prob)
    assert fam.prior == "inverse" and default_data(fam).task_cov is not None
    assert recipe.family("pgd", prob).prior == "inverse" and recipe.family(plain, prob).prior is None
    assert _cli_config(["--family", declared, "--d", "3"]).task_cov == "inverse"
    assert _cli_config(["--family", plain, "--d", "3"]).task_cov == "identity"


def test_declared_attention_decides_auto_and_refuses_the_other(tmp_path: Path) -> None:
    declared = _pgd_copy(tmp_path, 'ATTENTION = "linear"', "att")
    assert recipe.attention("auto", declared, activation_given=False) == "linear"
    with pytest.raises(ValueError, match="needs linear attention, got --attention kernel"):
        recipe.attention("kernel", declared)
    bad = _pgd_copy(tmp_path, 'PRIOR = "sigma"', "bad")
    with pytest.raises(ValueError, match="PRIOR must be one of 'identity', 'inverse'"):
        recipe.declared(bad)


def test_a_family_file_runs_once_per_content(tmp_path: Path) -> None:
    """Reading a file's declaration and building its family import it once (a second import would run
    the user's code twice); an edited file is imported again."""
    from landscape.theory.families import Problem

    log = tmp_path / "runs.log"
    text = _PGD_COPY.format(decl=f'PRIOR = "inverse"\nwith open({str(log)!r}, "a") as fh:\n    fh.write("x")')
    path = tmp_path / "counted.py"
    path.write_text(text)
    name = f"{path}:pgd_copy"
    prob = Problem(d=2, layers=1, n=4, attention="linear")
    assert recipe.declared(name).prior == "inverse" and recipe.family(name, prob).prior == "inverse"
    assert recipe.attention("auto", name) == "linear" and log.read_text() == "x"
    path.write_text(text.replace('PRIOR = "inverse"', 'PRIOR = "identity"'))
    assert recipe.family(name, prob).prior == "identity" and log.read_text() == "xx"


def test_train_text_and_json_record_task_prior_and_sigma(capsys: pytest.CaptureFixture[str]) -> None:
    from landscape.cli._main import main

    argv = ["train", "--family", "pgd", "--d", "2", "--n", "4", "--sigma", "diag:2,1", "--seeds", "1", "--steps",
            "1", "--batch", "4", "--eval-batch", "8", "--no-progress", "--device", "cpu"]
    rc, out = _cli_json([*argv, "--json"], capsys)
    assert rc == 0 and out["task"]["kind"] == "linear" and out["task"]["prior"] == "inverse"
    assert out["task"]["sigma"] == "diag:2,1" and out["task"]["sigma_matrix"] == [[2.0, 0.0], [0.0, 1.0]]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "task: linear; prior w* ~ N(0, Σ^-1); Σ = diag:2,1" in text


# ---------------------------------------------------------------------- parts, validation, building
def test_parts_cover_every_field_once_and_building_is_explicit() -> None:
    names = [f.name for f in dataclasses.fields(TrainConfig) if f.name != "_from_store"]
    listed = [k for part in PARTS.values() for k in part]
    assert sorted(listed) == sorted(names) and len(listed) == len(set(listed))
    cfg = TrainConfig(d=3, n=4, layers=2, family="pgd-full", sigma="random:1")
    assert cfg.model_part == ModelPart(layers=2, family="pgd-full") and cfg.part("model") == cfg.model_part
    assert cfg.task_part == TaskPart(d=3, n=4, sigma="random:1")
    assert cfg.optimisation_part == OptimisationPart() and cfg.bookkeeping_part == BookkeepingPart()
    # the parts are the config: the flat fields are theirs, and a config is rebuilt from its parts
    assert TrainConfig(**{k: v for p in PARTS for k, v in dataclasses.asdict(cfg.part(p)).items()}) == cfg
    with pytest.raises(ValueError, match="mask must be one of"):
        ModelPart(mask="dense")
    # construction validates declaratively; the family (one-layer only) is built by build()
    with pytest.raises(ValueError, match="one-layer"):
        cfg.build()
    ok = TrainConfig(d=3, n=4, layers=2, family="pgd", sigma="random:1", task_cov="inverse").build()
    assert ok.family.prior == "inverse" and ok.task.task_cov is not None
    assert torch.equal(ok.sigma, recipe.covariance("random:1", 3))
    assert ok.device == torch.device("cpu") or ok.device.type == "cuda"
    from landscape.core.model import param_shapes

    assert set(ok.mask) == set(param_shapes(ok.spec)) and all(bool(m.all()) for m in ok.mask.values())  # "full"
    with pytest.raises(ValueError, match="part must be one of"):
        cfg.part("data")


def test_recipe_errors_name_what_is_accepted() -> None:
    with pytest.raises(ValueError, match="task must be one of 'linear', 'gp', 'classification', 'features'"):
        recipe.task("regression", 3, 4)
    with pytest.raises(ValueError, match="unknown device 'tpu0'|unsupported device"):
        recipe.device("tpu0")
    with pytest.raises(ValueError, match="dtype must be one of 'float32', 'float64'"):
        recipe.dtype("float16")
    with pytest.raises(ValueError, match="unknown mask 'dense'; accepted: 'full' \\(alias 'all'\\), 'paper', 'sparse'"):
        from landscape.core.model import ModelSpec

        recipe.mask(ModelSpec.linear(2, 1, 1), "dense")
    with pytest.raises(ValueError, match="task_cov must be one of 'auto', 'identity', 'inverse'"):
        recipe.prior("wishart")
    with pytest.raises(ValueError, match="applies to the linear task only"):
        recipe.task("gp:exp", 3, 4, prior="inverse")
    with pytest.raises(ValueError, match="is not a known form and no such file exists"):
        recipe.covariance("/no/such.npy", 3)


def test_kernel_names_rebuild_the_kernel() -> None:
    from landscape.core.kernels import get_kernel

    for name in ("exp", "exp:0.5", "relu", "linear", "rbf:2.0", "polynomial:3", "sympy:exp(-r2/2) + s"):
        k = get_kernel(name)
        assert get_kernel(recipe.kernel_name(k)).expr == k.expr, name
    assert recipe.activations("exp, linear") == ("exp", "linear") and recipe.activations(None) == ("exp",)
    assert recipe.default_data("kernel", ("softmax",)) == "gp:exp"
    assert recipe.default_data("kernel", ("exp:0.5",)) == "gp:exp:0.5"
    assert recipe.default_data("linear", ("exp",)) == "linear"


# ---------------------------------------------------------------------- layering and examples
def test_no_library_module_imports_the_cli() -> None:
    offenders = []
    for path in (ROOT / "landscape").rglob("*.py"):
        if "cli" in path.relative_to(ROOT / "landscape").parts[:1]:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            mods = ([a.name for a in node.names] if isinstance(node, ast.Import)
                    else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(m == "landscape.cli" or m.startswith("landscape.cli.") for m in mods):
                offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def test_sweep_docstring_example_expands_as_written() -> None:
    import landscape.experiment.sweep as sweep

    doc = sweep.__doc__ or ""
    block = doc.split("holds::", 1)[1].split("\n\n", 1)[1]
    lines = []
    for line in block.splitlines():
        if line and not line.startswith("    "):
            break
        lines.append(line[4:])
    spec = sweep.parse_sweep(tomllib.loads("\n".join(lines)))
    points = sweep.expand_grid(spec)
    assert [(p.config.layers, p.config.activations) for p in points] == [
        (1, ("linear",)), (1, ("exp",)), (2, ("linear",)), (2, ("exp",)), (3, ("linear",)), (3, ("exp",))]
    assert all(p.config.seeds == 4 and p.config.steps == 2000 and p.config.task == "linear" for p in points)
