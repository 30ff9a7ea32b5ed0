"""landscape — loss landscapes of in-context-learning transformers.

The public surface is re-exported here; see ``docs/`` for the theory-to-code map.
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

__version__ = "0.1.0"

__all__ = [
    "Kernel", "SumKernel", "get_kernel", "known_kernels",
    "HeadSpec", "ModelSpec", "change_of_basis", "flatten_params", "forward", "init_params", "make_mask",
    "param_shapes", "predict", "stack_params", "unflatten_params", "unstack_params", "whitening_transform",
    "KernelGP", "LinearClassification", "LinearRegression", "OrthonormalFeatures", "PromptBatch",
    "random_covariance",
    "Family", "Problem", "get_family", "known_families",
]
