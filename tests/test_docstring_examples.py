"""Examples written as literal blocks (``::``) in module and class docstrings run as written.

Doctests (``>>>``) are run by ``tests/test_doctests.py``; these are the longer examples a reader
copies whole: the sweep file of :mod:`landscape.experiment.sweep` and the composite-kernel run of
:class:`landscape.experiment.train.TrainConfig`.
"""

from __future__ import annotations

import dataclasses
import math
import textwrap
import tomllib

import torch

import landscape.experiment.sweep as sweep
from landscape.experiment.train import TrainConfig


def _literal_block(doc: str, after: str) -> str:
    """The indented block that follows the line ending in ``after`` (``::``) in ``doc``."""
    rest = doc.split(after, 1)[1].split("\n", 1)[1]
    lines = []
    for line in rest.splitlines():
        if line.strip() and not line.startswith(" " * 8) and lines:
            break
        lines.append(line)
    return textwrap.dedent("\n".join(lines)).strip("\n")


def test_the_sweep_module_example_parses_and_every_point_is_a_valid_config() -> None:
    text = textwrap.dedent(sweep.__doc__.split("holds::\n\n", 1)[1].split("\n\nThe grid", 1)[0])
    spec = sweep.parse_sweep(tomllib.loads(text))
    points = sweep.expand_grid(spec)  # validates every point
    assert [(p.overrides["layers"], p.overrides["activations"]) for p in points] == [
        (1, "linear"), (1, "exp"), (2, "linear"), (2, "exp"), (3, "linear"), (3, "exp")]
    assert spec.seeds == 4 and spec.base["attention"] == "kernel"


def test_the_composite_kernel_example_of_train_config_builds_the_kernel_it_names(tmp_path, monkeypatch) -> None:
    code = _literal_block(TrainConfig.__doc__, "trained and stored like any run::")
    setup, _, last = code.rpartition("\n")
    assert last.strip() == 'result = train(cfg, "runs/composite")'
    ns: dict = {}
    exec(compile(setup, "TrainConfig example", "exec"), ns)  # the docstring's own code, not user input
    cfg = ns["cfg"]
    kernel = cfg.build().task.kernel
    g = torch.Generator().manual_seed(0)
    U, W = torch.randn(5, 7, generator=g, dtype=torch.float64), torch.randn(5, 6, generator=g, dtype=torch.float64)
    want = torch.exp(0.5 * U[:2].T @ W[:2]) + U[2:4].T @ W[2:4]  # Cheng et al., Prop. 3, every pair (i, j)
    assert torch.allclose(kernel.gram(U, W), want, rtol=1e-12, atol=0)
    # the last line, as written, at a tiny size
    monkeypatch.chdir(tmp_path)
    ns["cfg"] = dataclasses.replace(cfg, steps=2, seeds=1, batch=8, log_every=1, eval_batch=16)
    exec(compile(last, "TrainConfig example", "exec"), ns)
    assert ns["result"].run is not None and (tmp_path / "runs" / "composite" / "store.sqlite").is_file()
    assert math.isfinite(float(ns["result"].final_loss[0]))
