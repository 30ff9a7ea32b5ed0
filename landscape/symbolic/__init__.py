"""Exact (sympy) population losses on parameter families, their stationary points, codegen to torch.

Public surface:

* :func:`family_loss` → :class:`FamilyLoss` — the loss of a :class:`~landscape.theory.families.Family` on a
  prompt distribution, by the first route of the registry :data:`~landscape.symbolic.routes.ROUTES`
  that applies (whitening + Wishart moments, the one-layer closed form, Wick pairings, expansion in
  the data entries, one ReLU or exp-kernel head; label-exact Monte-Carlo for kernel attention);
  :func:`~landscape.symbolic.routes.route_report` gives every route's verdict.
* :func:`exact_loss_fn` — exact loss as a torch function of the *full* parameter dict (one layer of
  linear attention, any P, Q), for gradients over every entry.
* :func:`stationary_points` → :class:`StationaryPoint` — exact / numerical stationary points, classified.
* Gaussian/Wishart moment calculus (:mod:`landscape.symbolic.moments`).
"""

from landscape.symbolic.moments import (
    expected_trace_poly,
    expected_trace_poly_matrix,
    expected_trace_product,
    gaussian_expectation,
    preconditioned_gd_loss,
    wishart_moment,
    wishart_moment_coefficients,
    wishart_moment_wick,
)
from landscape.symbolic.codegen import to_torch
from landscape.symbolic.expansion import expansion_loss
from landscape.symbolic.label_exact import CoefficientEstimate, LabelExactEstimator
from landscape.symbolic.loss import FamilyLoss, default_data, family_loss
from landscape.symbolic.one_layer import exact_loss_fn, one_layer_loss
from landscape.symbolic.routes import ROUTES, Route, RouteOptions, route_report
from landscape.symbolic.solve import StationaryPoint, classify, stationary_points
from landscape.symbolic.whitened import D_SYMBOL, N_SYMBOL

__all__ = [
    "FamilyLoss",
    "family_loss",
    "default_data",
    "ROUTES",
    "Route",
    "RouteOptions",
    "route_report",
    "exact_loss_fn",
    "one_layer_loss",
    "expansion_loss",
    "StationaryPoint",
    "stationary_points",
    "classify",
    "LabelExactEstimator",
    "CoefficientEstimate",
    "to_torch",
    "D_SYMBOL",
    "N_SYMBOL",
    "expected_trace_poly",
    "expected_trace_poly_matrix",
    "expected_trace_product",
    "gaussian_expectation",
    "preconditioned_gd_loss",
    "wishart_moment",
    "wishart_moment_coefficients",
    "wishart_moment_wick",
]
