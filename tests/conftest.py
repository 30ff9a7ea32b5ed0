"""Shared pytest configuration.

Warnings are errors (``pyproject.toml``). One warning from inside torch is filtered here: the
first forward-mode AD call (``torch.func.jacfwd``/``jvp``) loads torch's own JVP decompositions,
which call the deprecated ``torch.jit.script`` internally; that is not our code and not a
numerical problem.
"""

from __future__ import annotations

import pytest
import torch

TORCH_JIT_DEPRECATION = r"ignore:`torch\.jit\.script` is deprecated:DeprecationWarning"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("filterwarnings", TORCH_JIT_DEPRECATION)


@pytest.fixture
def gen() -> torch.Generator:
    """A CPU generator with a fixed seed (tests that need several streams seed their own)."""
    return torch.Generator().manual_seed(20240611)
