r"""Shared command-line arguments: the problem (d, n, L, attention, data, Σ) and its parsers.

Commands that act on one in-context problem (``solve``, ``verify``, ``train`` ...) register the
same options with :func:`add_problem_args` and turn them into a
:class:`~landscape.families.Problem` and a prompt distribution with :func:`problem_from_args`:

``--d D --n N --layers L``       sizes (defaults 5, 20, 1 — Ahn et al.'s d and n)
``--attention auto|linear|kernel`` ``auto``: the family's (built-in), else kernel iff ``--activation``
``--activation A[,B,...]``        one kernel per head (kernel attention), e.g. ``exp`` or ``exp,linear``
``--heads H``                     heads of a linear-attention model
``--data linear|gp[:KERNEL]``     LinearRegression or KernelGP prompts (default: by attention)
``--task-cov auto|identity|inverse`` :math:`w^* \sim N(0, I)` or :math:`N(0, \Sigma^{-1})`; ``auto``: inverse for
                                  ``pgd``, ``pgd-relaxed``, ``pgd-identity`` (Ahn et al. Theorems 3–4)
``--covariates gaussian|sphere``  law of the whitened covariates (default gaussian; sphere for GP data)
``--sigma SPEC``                  :func:`parse_sigma`
``--noise S``                     label noise std
``--seed S``                      seed of every random choice the problem makes (rotations of ``--sigma``)
``--json``                        one JSON object on stdout

Every command also takes ``--threads N`` (:func:`add_threads_arg`, applied by :func:`apply_threads`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from .families import FAMILY_ATTENTION, Problem
from .tasks import KernelGP, LinearRegression, check_covariance, random_covariance

__all__ = ["parse_sigma", "add_problem_args", "add_threads_arg", "apply_threads", "problem_from_args", "data_from_args", "SIGMA_FORMS",
           "INVERSE_TASK_FAMILIES"]

SIGMA_FORMS = "identity | random[:SEED] | diag:l1,...,ld | path to a .npy/.txt/.pt matrix"
"""The accepted ``--sigma`` forms (for messages)."""

INVERSE_TASK_FAMILIES = ("pgd", "pgd-relaxed", "pgd-identity")
"""Families whose statement is about :math:`w^* \\sim N(0, \\Sigma^{-1})` (Ahn et al. Theorems 3–4 and their control)."""


def parse_sigma(spec: str | None, d: int, seed: int = 0) -> torch.Tensor | None:
    r"""Parse a covariance spec into a ``(d, d)`` float64 SPD matrix (``None`` = identity).

    Forms:

    * ``identity`` (or ``None``) — :math:`\Sigma = I`;
    * ``random`` / ``random:SEED`` — :func:`~landscape.tasks.random_covariance`: a Haar rotation
      (``torch.Generator().manual_seed(SEED)``, SEED defaulting to ``seed``) of a fixed spectrum
      (Ahn et al.'s ``(1, 1, .25, .0625, 1)`` for d = 5);
    * ``diag:l1,...,ld`` — that spectrum, randomly rotated (rotation seeded by ``seed``);
    * a path to a ``.npy``, ``.pt`` or whitespace-separated ``.txt`` file holding the matrix.

    Args:
        spec: the spec string.
        d: dimension.
        seed: default seed of the random rotation.

    Returns:
        :math:`\Sigma`, or ``None`` for the identity.

    Raises:
        ValueError: an unknown form, a bad number, a wrong count, a missing or unreadable file, or a
            matrix that is not symmetric positive definite of shape ``(d, d)``.
    """
    if spec is None:
        return None
    if not isinstance(spec, str):
        raise ValueError(f"--sigma must be one of {SIGMA_FORMS}; got {spec!r}")
    s = spec.strip()
    if s == "identity":
        return None
    if s == "random" or s.startswith("random:"):
        arg = s.partition(":")[2].strip()
        try:
            sd = int(arg) if arg else int(seed)
        except ValueError:
            raise ValueError(f"--sigma random:SEED needs an integer SEED, got {spec!r}") from None
        return random_covariance(d, torch.Generator().manual_seed(sd))
    if s.startswith("diag:"):
        try:
            vals = [float(v) for v in s[5:].split(",") if v.strip()]
        except ValueError:
            raise ValueError(f"--sigma diag:l1,...,ld needs comma-separated numbers, got {spec!r}") from None
        if len(vals) != d:
            raise ValueError(f"--sigma {spec!r} lists {len(vals)} eigenvalues, expected d = {d}")
        if min(vals) <= 0:
            raise ValueError(f"--sigma {spec!r}: a covariance needs positive eigenvalues (not positive definite)")
        return random_covariance(d, torch.Generator().manual_seed(int(seed)), spectrum=vals)
    path = Path(s).expanduser()
    if not path.is_file():
        raise ValueError(f"--sigma {spec!r} is not a known form and no such file exists; accepted: {SIGMA_FORMS}")
    try:
        if path.suffix == ".npy":
            import numpy as np

            mat = torch.from_numpy(np.load(path, allow_pickle=False)).to(torch.float64)
        elif path.suffix == ".pt":
            mat = torch.load(path, weights_only=True)
            if not isinstance(mat, torch.Tensor):
                raise ValueError("the file does not hold a tensor")
            mat = mat.to(torch.float64)
        else:
            import numpy as np

            mat = torch.from_numpy(np.loadtxt(path, ndmin=2)).to(torch.float64)
    except (OSError, ValueError, RuntimeError) as exc:
        raise ValueError(f"cannot read the --sigma file {str(path)!r}: {exc}") from None
    return check_covariance(mat, d, name=f"--sigma matrix from {path.name}")


def add_problem_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Register the problem options (module docstring) on ``parser``; returns it."""
    g = parser.add_argument_group("problem")
    g.add_argument("--d", type=int, default=5, help="covariate dimension (default 5)")
    g.add_argument("--n", type=int, default=20, help="context length (default 20)")
    g.add_argument("--layers", type=int, default=1, help="number of layers L (default 1)")
    g.add_argument("--attention", choices=("auto", "linear", "kernel"), default="auto",
                   help="auto: the family's attention (built-in families), else kernel iff --activation is given")
    g.add_argument("--activation", default=None,
                   help="kernel attention: one activation per head, comma-separated (e.g. exp, relu, softmax, "
                        "linear, exp,linear); default exp")
    g.add_argument("--heads", type=int, default=1, help="heads of a linear-attention model (default 1)")
    g.add_argument("--data", default=None,
                   help="linear (LinearRegression) | gp[:KERNEL] (KernelGP, default kernel: the first "
                        "activation, exp for softmax); default linear for linear attention, gp for kernel")
    g.add_argument("--task-cov", choices=("auto", "identity", "inverse"), default="auto",
                   help="linear data: w* ~ N(0, I) or N(0, Σ^-1); auto = inverse for "
                        + ", ".join(INVERSE_TASK_FAMILIES) + ", identity otherwise")
    g.add_argument("--covariates", choices=("gaussian", "sphere"), default=None,
                   help="covariate law (default gaussian; sphere for gp data)")
    g.add_argument("--sigma", default="identity", help=f"covariance of x: {SIGMA_FORMS}")
    g.add_argument("--noise", type=float, default=0.0, help="label noise std (default 0)")
    g.add_argument("--seed", type=int, default=0, help="seed of random choices (rotations, samples; default 0)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def _attention(args: argparse.Namespace, family: str | None) -> str:
    attention = getattr(args, "attention", "auto") or "auto"
    if attention == "auto":
        if family in FAMILY_ATTENTION:
            return FAMILY_ATTENTION[family]
        return "kernel" if getattr(args, "activation", None) else "linear"
    if family in FAMILY_ATTENTION and FAMILY_ATTENTION[family] != attention:
        raise ValueError(f"family {family!r} needs {FAMILY_ATTENTION[family]} attention, got --attention {attention}")
    return attention


def data_from_args(args: argparse.Namespace, problem: Problem, family: str | None = None) -> Any:
    """The prompt distribution of parsed arguments for ``problem`` (see module docstring).

    Raises:
        ValueError: an unknown ``--data``, or options that do not fit it.
    """
    data = getattr(args, "data", None)
    if data is None:
        data = "linear" if problem.attention == "linear" else "gp"
    noise = float(getattr(args, "noise", 0.0) or 0.0)
    if noise < 0:
        raise ValueError(f"--noise must be >= 0, got {noise}")
    if data == "linear":
        tc = getattr(args, "task_cov", "auto") or "auto"
        if tc == "auto":
            tc = "inverse" if family in INVERSE_TASK_FAMILIES else "identity"
        cov = getattr(args, "covariates", None) or "gaussian"
        return LinearRegression(problem.d, problem.n, sigma=problem.sigma, covariates=cov,
                                task_cov=None if tc == "identity" else tc, noise=noise)
    if data == "gp" or data.startswith("gp:"):
        kern = data.partition(":")[2].strip()
        if not kern:
            first = problem.activations[0]
            kern = "exp" if first.normalised else first
        cov = getattr(args, "covariates", None) or "sphere"
        return KernelGP(problem.d, problem.n, kernel=kern, sigma=problem.sigma, covariates=cov, noise=noise)
    raise ValueError(f"--data must be 'linear' or 'gp[:KERNEL]', got {data!r}")


def problem_from_args(args: argparse.Namespace, family: str | None = None) -> tuple[Problem, Any]:
    """Build the :class:`~landscape.families.Problem` and the prompt distribution of parsed arguments.

    Args:
        args: namespace from a parser set up by :func:`add_problem_args`.
        family: the family name, if any (decides ``--attention auto`` and ``--task-cov auto``).

    Returns:
        ``(problem, data)``.

    Raises:
        ValueError: any bad value (sizes < 1, an activation with linear attention, a bad ``--sigma``
            ...), named with the accepted values, before any expensive work.
    """
    for name in ("d", "n", "layers", "heads"):
        v = getattr(args, name, 1)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"--{name} must be an integer >= 1, got {v!r}")
    attention = _attention(args, family)
    act = getattr(args, "activation", None)
    if attention == "linear" and act:
        raise ValueError("--activation applies to kernel attention; linear attention has P, Q heads without one")
    acts = tuple(a.strip() for a in act.split(",") if a.strip()) if act else ("exp",)
    sigma = parse_sigma(getattr(args, "sigma", "identity"), args.d, getattr(args, "seed", 0))
    problem = Problem(d=args.d, layers=args.layers, n=args.n, sigma=sigma, attention=attention,
                      activations=acts, heads=getattr(args, "heads", 1))
    return problem, data_from_args(args, problem, family)


def add_threads_arg(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``--threads N`` (CPU threads; default :data:`landscape.engine.threads.DEFAULT_THREADS`)."""
    from .engine.threads import DEFAULT_THREADS

    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS,
                        help=f"CPU threads for the numerical work (default {DEFAULT_THREADS}: measured fastest "
                             "on small shared machines; see docs/benchmarks.md)")
    return parser


def apply_threads(args: argparse.Namespace) -> None:
    """Set the thread count a parsed command asked for (:func:`landscape.set_threads`).

    Raises:
        ValueError: ``--threads`` below 1.
    """
    from .engine.threads import set_threads

    if getattr(args, "threads", None) is not None:
        set_threads(args.threads)
