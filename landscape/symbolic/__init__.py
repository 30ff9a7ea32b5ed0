"""Exact (sympy) population losses on parameter families.

Gaussian/Wishart moment calculus lives in :mod:`landscape.symbolic.moments`.
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

__all__ = [
    "expected_trace_poly",
    "expected_trace_poly_matrix",
    "expected_trace_product",
    "gaussian_expectation",
    "preconditioned_gd_loss",
    "wishart_moment",
    "wishart_moment_coefficients",
    "wishart_moment_wick",
]
