"""landscape — loss landscapes of in-context-learning transformers.

The names a study needs are re-exported here; the rest lives in the layer packages, each of
which imports only the layers below it:

* ``landscape.core`` — kernels, the transformer forward pass, prompt distributions;
* ``landscape.theory`` — reference algorithms, constructions, parameter families;
* ``landscape.symbolic`` — the exact in-context loss on a family and its stationary points;
* ``landscape.numeric`` — ``torch.func`` derivatives, Hessians and the stationarity certificate;
* ``landscape.engine`` — the fast seed-parallel training kernels;
* ``landscape.experiment`` — training (:func:`landscape.train`; :func:`landscape.minimise` for user objectives), distances, the run store, sweeps;
* ``landscape.views`` — figures and summaries (read-only on stores);
* ``landscape.cli`` — the ``landscape`` command.

The re-exports are resolved lazily (PEP 562): ``import landscape`` is cheap, and the first
attribute access imports the submodule that owns it. See ``docs/architecture.md``.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # landscape.core.kernels
    "Kernel": "landscape.core.kernels",
    "SumKernel": "landscape.core.kernels",
    "get_kernel": "landscape.core.kernels",
    "known_kernels": "landscape.core.kernels",

    # landscape.core.loss
    "loss": "landscape.core.loss",
    "squared_error": "landscape.core.loss",

    # landscape.core.masks
    "make_mask": "landscape.core.masks",

    # landscape.core.model
    "HeadSpec": "landscape.core.model",
    "ModelSpec": "landscape.core.model",
    "change_of_basis": "landscape.core.model",
    "flatten_params": "landscape.core.model",
    "forward": "landscape.core.model",
    "init_params": "landscape.core.model",
    "param_shapes": "landscape.core.model",
    "predict": "landscape.core.model",
    "stack_params": "landscape.core.model",
    "unflatten_params": "landscape.core.model",
    "unstack_params": "landscape.core.model",
    "whitening_transform": "landscape.core.model",

    # landscape.core.tasks
    "KernelGP": "landscape.core.tasks",
    "LinearClassification": "landscape.core.tasks",
    "LinearRegression": "landscape.core.tasks",
    "OrthonormalFeatures": "landscape.core.tasks",
    "PromptBatch": "landscape.core.tasks",
    "random_covariance": "landscape.core.tasks",

    # landscape.theory.families
    "Family": "landscape.theory.families",
    "Problem": "landscape.theory.families",
    "get_family": "landscape.theory.families",
    "known_families": "landscape.theory.families",

    # landscape.theory.algorithms
    "functional_gd": "landscape.theory.algorithms",
    "gp_posterior_mean": "landscape.theory.algorithms",
    "newton_schulz": "landscape.theory.algorithms",
    "normalised_gd": "landscape.theory.algorithms",
    "preconditioned_gd": "landscape.theory.algorithms",

    # landscape.theory.constructions
    "Construction": "landscape.theory.constructions",
    "functional_gd_construction": "landscape.theory.constructions",
    "gd_plus_plus_construction": "landscape.theory.constructions",
    "newton_schulz_construction": "landscape.theory.constructions",
    "normalised_gd_construction": "landscape.theory.constructions",
    "preconditioned_gd_construction": "landscape.theory.constructions",

    # landscape.symbolic
    "FamilyLoss": "landscape.symbolic",
    "StationaryPoint": "landscape.symbolic",
    "family_loss": "landscape.symbolic",
    "stationary_points": "landscape.symbolic",

    # landscape.numeric
    "StationarityCertificate": "landscape.numeric",
    "certify_stationary": "landscape.numeric",
    "hessian": "landscape.numeric",
    "lanczos": "landscape.numeric",

    # landscape.experiment.store
    "RunStore": "landscape.experiment.store",
    "StoreError": "landscape.experiment.store",

    # landscape.experiment.train
    "MinimiseResult": "landscape.experiment.train",
    "TrainConfig": "landscape.experiment.train",
    "TrainResult": "landscape.experiment.train",
    "minimise": "landscape.experiment.train",
    "train": "landscape.experiment.train",

    # landscape.experiment.distance
    "dist_to_identity": "landscape.experiment.distance",
    "identity_distances": "landscape.experiment.distance",
    "prediction_gap": "landscape.experiment.distance",
    "project_onto_family": "landscape.experiment.distance",

    # landscape.engine.threads
    "set_threads": "landscape.engine.threads",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'landscape' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
