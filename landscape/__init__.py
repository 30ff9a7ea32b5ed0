"""landscape — loss landscapes of in-context-learning transformers.

The names a study needs are re-exported here (models, kernels, tasks, families, reference
algorithms, constructions, the symbolic loss and its stationary points, the stationarity
certificate, seed-parallel training and distances); the rest lives in the submodules
(``landscape.numeric``, ``landscape.symbolic``, ``landscape.plots``, ``landscape.sweep`` ...).
Training itself is :func:`landscape.train.train`. See ``docs/`` for the theory-to-code map.
"""

from .kernels import Kernel, SumKernel, get_kernel, known_kernels
from .model import (
    HeadSpec,
    ModelSpec,
    change_of_basis,
    flatten_params,
    forward,
    init_params,
    make_mask,
    param_shapes,
    predict,
    stack_params,
    unflatten_params,
    unstack_params,
    whitening_transform,
)
from .tasks import (
    KernelGP,
    LinearClassification,
    LinearRegression,
    OrthonormalFeatures,
    PromptBatch,
    random_covariance,
)
from .families import Family, Problem, get_family, known_families
from .algorithms import functional_gd, gp_posterior_mean, newton_schulz, normalised_gd, preconditioned_gd
from .constructions import (
    Construction,
    functional_gd_construction,
    gd_plus_plus_construction,
    newton_schulz_construction,
    normalised_gd_construction,
    preconditioned_gd_construction,
)
from .symbolic import FamilyLoss, StationaryPoint, family_loss, stationary_points
from .numeric import StationarityCertificate, certify_stationary, hessian, lanczos
from .store import RunStore
from .train import TrainConfig, TrainResult
from .distance import dist_to_identity, identity_distances, prediction_gap, project_onto_family
from .engine.threads import set_threads

__version__ = "0.1.0"

__all__ = [
    "Kernel", "SumKernel", "get_kernel", "known_kernels",
    "HeadSpec", "ModelSpec", "change_of_basis", "flatten_params", "forward", "init_params", "make_mask",
    "param_shapes", "predict", "stack_params", "unflatten_params", "unstack_params", "whitening_transform",
    "KernelGP", "LinearClassification", "LinearRegression", "OrthonormalFeatures", "PromptBatch",
    "random_covariance",
    "Family", "Problem", "get_family", "known_families",
    "functional_gd", "gp_posterior_mean", "newton_schulz", "normalised_gd", "preconditioned_gd",
    "Construction", "functional_gd_construction", "gd_plus_plus_construction", "newton_schulz_construction",
    "normalised_gd_construction", "preconditioned_gd_construction",
    "FamilyLoss", "StationaryPoint", "family_loss", "stationary_points",
    "StationarityCertificate", "certify_stationary", "hessian", "lanczos",
    "RunStore", "TrainConfig", "TrainResult",
    "dist_to_identity", "identity_distances", "prediction_gap", "project_onto_family",
    "set_threads",
]
