r"""Points of the landscape to look at: trained seeds read from a run store, and their loss oracle.

:func:`load_trained` reads a finished training run of a :class:`~landscape.experiment.store.RunStore`
(opened read-only: nothing is written) and returns the final weights and the initialisation of
every seed as flat float64 vectors, with the run's configuration, family and prompt distribution.
:func:`landscape_oracle` gives the loss to evaluate at them: the symbolic layer's exact population
loss where one exists for the setting, otherwise a Monte-Carlo loss on a fixed set of prompts
(common random numbers, an explicit generator).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from landscape._checks import check_choice, check_int
from landscape.core.model import ModelSpec, flatten_params
from landscape.core.tasks import Task
from landscape.numeric.oracles import LossOracle, MonteCarloLoss, exact_loss_oracle

__all__ = ["TrainedSeeds", "split_run_ref", "load_trained", "landscape_oracle"]


@dataclass(frozen=True, eq=False)
class TrainedSeeds:
    r"""The seeds of one finished training run.

    Attributes:
        run: the run's name.
        config: its :class:`~landscape.experiment.train.TrainConfig`.
        spec: the architecture.
        final: ``(S, P)`` final weights (float64, flat order).
        init: ``(S, P)`` initial weights (re-drawn from the config's ``init`` stream).
        alive: ``(S,)`` bool, the seeds that did not diverge.
        family: the configured family (``None`` if none).
        task: the prompt distribution (float64).
        sigma: :math:`\Sigma` (``None`` = identity).
        family_distance: ``(S,)`` the relative distance to ``family`` training stored for each
            seed (``None`` if the run has no family).
    """

    run: str
    config: Any
    spec: ModelSpec
    final: torch.Tensor
    init: torch.Tensor
    alive: torch.Tensor
    family: Any
    task: Task
    sigma: torch.Tensor | None
    family_distance: torch.Tensor | None = None

    @property
    def seeds(self) -> int:
        return int(self.final.shape[0])

    def check_seed(self, seed: int) -> int:
        """``seed`` if it indexes a seed of the run.

        Raises:
            ValueError: out of range.
        """
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < self.seeds:
            raise ValueError(f"--seed {seed!r}: run {self.run!r} has seeds 0..{self.seeds - 1} "
                             f"(--seed must be in [0, {self.seeds}))")
        return seed


def split_run_ref(text: str) -> tuple[str, str | None]:
    """``"STORE"`` or ``"STORE:RUN"`` → ``(store root, run name or None)``.

    A path that exists as a folder is taken whole (so a folder name may contain ``:``).

    Raises:
        ValueError: empty text or empty parts.
    """
    t = str(text).strip()
    if not t:
        raise ValueError("--run needs STORE or STORE:RUN")
    if Path(t).expanduser().is_dir() or ":" not in t:
        return t, None
    root, _, run = t.rpartition(":")
    if not root or not run:
        raise ValueError(f"--run takes STORE or STORE:RUN, got {text!r}")
    return root, run


def load_trained(root: str | Path, run: str | None = None) -> TrainedSeeds:
    """Read the seeds of a finished training run (the store is opened read-only).

    Args:
        root: the store's folder.
        run: the run's name (default: the store's only training run).

    Returns:
        :class:`TrainedSeeds`.

    Raises:
        ValueError: no such store or run, not a training run, no final weights, or several
            training runs and no name (the message lists them).
    """
    from landscape.experiment.store import RunStore
    from landscape.experiment.train import init_state, make_task, stored_config

    path = Path(root).expanduser()
    if not path.is_dir():
        raise ValueError(f"no run store at {str(root)!r} (give STORE or STORE:RUN)")
    if not (path / "store.sqlite").is_file():
        raise ValueError(f"{str(root)!r} is not a run store (no store.sqlite in it)")
    with RunStore(path, read_only=True) as store:
        runs = [r for r in store.list_runs() if stored_config(r) is not None]
        if run is None:
            if len(runs) != 1:
                names = ", ".join(r.name for r in runs) or "none"
                raise ValueError(f"store {str(root)!r} holds {len(runs)} training runs ({names}); name one as STORE:RUN")
            r = runs[0]
        else:
            try:
                r = store.get_run(run)
            except (KeyError, ValueError, LookupError) as exc:
                names = ", ".join(x.name for x in runs) or "none"
                raise ValueError(f"unknown run {run!r} in {str(root)!r} (training runs: {names})") from exc
        config = stored_config(r)
        if config is None:
            raise ValueError(f"run {r.name!r} is not a training run")
        if not store.has_final(r):
            raise ValueError(f"run {r.name!r} has no final weights (status {r.status}); train it to the end first")
        final = store.load_final(r)
    spec = config.spec
    params = {k: v.to(torch.float64) for k, v in final["params"].items()}
    flat = flatten_params(params, spec)
    init = init_state(config, device="cpu").flat.to(torch.float64)
    alive = torch.as_tensor(final.get("alive", torch.ones(flat.shape[0], dtype=torch.bool))).to(torch.bool)
    sigma = config.sigma_matrix()
    family = config.make_family(sigma)
    task = make_task(config, sigma)
    if hasattr(task, "dtype"):
        import dataclasses

        try:
            task = dataclasses.replace(task, dtype=torch.float64)
        except (TypeError, ValueError):
            pass
    fam_dist = final.get("family_distance")
    fam_dist = None if fam_dist is None else torch.as_tensor(fam_dist, dtype=torch.float64)
    return TrainedSeeds(r.name, config, spec, flat, init.reshape(flat.shape), alive, family, task, sigma, fam_dist)


def landscape_oracle(
    problem: Any,
    task: Task,
    spec: ModelSpec,
    *,
    exact: Literal["auto", "yes", "no"] = "auto",
    samples: int = 4096,
    generator: torch.Generator | None = None,
    chunk_size: int = 4096,
) -> tuple[LossOracle, str]:
    """The loss to look at: the exact population loss where the symbolic layer has one, else Monte-Carlo.

    Args:
        problem: the :class:`~landscape.theory.families.Problem` (for the exact loss).
        task: the prompt distribution.
        spec: the architecture.
        exact: ``"auto"`` (exact when available), ``"yes"`` (required) or ``"no"`` (Monte-Carlo).
        samples: Monte-Carlo prompts (fixed once: common random numbers).
        generator: the prompts' randomness (default seed 0).
        chunk_size: prompts per piece.

    Returns:
        ``(oracle, description)`` with description ``"exact"`` or ``"Monte-Carlo, T prompts"``.

    Raises:
        ValueError: ``exact="yes"`` without an exact formula, or a bad count.
    """
    check_choice("exact", exact, ("auto", "yes", "no"))
    check_int("samples", samples, minimum=1)
    if exact != "no":
        orc = exact_loss_oracle(problem, task)
        if orc is not None:
            return orc, "exact population loss"
        if exact == "yes":
            raise ValueError("no exact population loss is known for this setting (the symbolic layer covers one layer "
                             "of linear attention on Gaussian/spherical regression data); use --exact no")
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    return (MonteCarloLoss.from_task(task, spec, samples, g, chunk_size=chunk_size),
            f"Monte-Carlo loss, {samples} fixed prompts")
