r"""Numerical layer: loss oracles, derivatives, Lanczos, inertia, stationarity certificates, slices.

Everything acts on the flat parameter vector :math:`\theta` (:func:`landscape.core.model.flatten_params`
order) through a loss *oracle*:

* :class:`MonteCarloLoss` (common random numbers, chunked) and :class:`ExactLoss` (any callable
  ``params -> scalar``, e.g. the symbolic layer's exact population loss);
* :func:`gradient`, :func:`hvp`, :func:`hessian`, :func:`hessian_eigenpairs` / :func:`lanczos`,
  :func:`inertia`, :func:`hessian_blocks`, :func:`tangent_split`, :func:`symmetry_generators`;
* :func:`fit_family` and :func:`certify_stationary` (exact tolerance verdict, or a statistical verdict
  from Monte-Carlo samples of growing size);
* :func:`line_slice`, :func:`plane_slice` (figures: :func:`landscape.views.pictures.plot_slice`).
"""

from landscape.numeric.certificate import (
    TESTS,
    VERDICTS,
    SampleSizeResult,
    StationarityCertificate,
    certify_stationary,
    combined_p_value,
    decide,
    free_entries,
)
from landscape.numeric.derivatives import (
    EigenResult,
    Inertia,
    TangentSplit,
    finite_difference_gradient,
    finite_difference_hessian,
    gradient,
    hessian,
    hessian_blocks,
    hessian_eigenpairs,
    hvp,
    inertia,
    lanczos,
    orthonormal_complement,
    symmetry_generators,
    tangent_split,
)
from landscape.numeric.fit import FamilyFit, family_point, fit_family
from landscape.numeric.oracles import (
    ExactLoss,
    GradientMoments,
    LossOracle,
    MonteCarloLoss,
    as_flat,
    as_oracle,
    exact_loss_oracle,
    streamed_gradient_moments,
)
from landscape.numeric.slices import (
    LineSlice,
    PlaneSlice,
    evaluate_losses,
    hessian_directions,
    line_slice,
    plane_slice,
    random_directions,
)
from landscape.numeric.stats import NormBounds, NormEstimate, norm_bounds, quadratic_form_sf

__all__ = [
    "MonteCarloLoss", "ExactLoss", "LossOracle", "GradientMoments", "as_oracle", "as_flat", "exact_loss_oracle",
    "gradient", "hvp", "hessian", "finite_difference_gradient", "finite_difference_hessian",
    "EigenResult", "lanczos", "hessian_eigenpairs", "Inertia", "inertia", "hessian_blocks",
    "orthonormal_complement", "TangentSplit", "tangent_split", "symmetry_generators",
    "FamilyFit", "fit_family", "family_point",
    "streamed_gradient_moments",
    "StationarityCertificate", "SampleSizeResult", "certify_stationary", "decide", "combined_p_value",
    "free_entries", "VERDICTS", "TESTS", "NormEstimate", "NormBounds", "norm_bounds", "quadratic_form_sf",
    "LineSlice", "PlaneSlice", "evaluate_losses", "line_slice", "plane_slice", "hessian_directions",
    "random_directions",
]
