"""Shared pytest configuration.

Warnings are errors (``pyproject.toml``). One warning from inside torch is filtered here: the
first forward-mode AD call (``torch.func.jacfwd``/``jvp``) loads torch's own JVP decompositions,
which call the deprecated ``torch.jit.script`` internally; that is not our code and not a
numerical problem.

Tests run with one intra-op thread: every tensor here is tiny, and on a small shared machine
the thread pool's synchronisation made a 200-layer forward pass 20-200x slower than one thread.
"""

from __future__ import annotations

import pytest
import torch

TORCH_JIT_DEPRECATION = r"ignore:`torch\.jit\.script` is deprecated:DeprecationWarning"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("filterwarnings", TORCH_JIT_DEPRECATION)
    torch.set_num_threads(1)
