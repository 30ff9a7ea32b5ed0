r"""Shared command-line arguments: the problem (d, n, L, attention, data, Σ) and its parsers.

Commands that act on one in-context problem (``solve``, ``verify``, ``train`` ...) register the
same options with :func:`add_problem_args` and turn them into a
:class:`~landscape.theory.families.Problem` and a prompt distribution with :func:`problem_from_args`:

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
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any


__all__ = ["parse_sigma", "add_problem_args", "add_threads_arg", "apply_threads", "problem_from_args", "data_from_args",
           "SIGMA_FORMS", "INVERSE_TASK_FAMILIES", "MAX_SIZE", "MAX_SEED", "int_arg", "float_arg", "float_list_arg",
           "positive_int", "nonneg_int", "seed_int", "finite_float", "positive_float", "nonneg_float"]

MAX_SIZE = 2**31 - 1
"""Largest value an integer size or count option accepts at parse time (torch index range);
whether a size fits the machine is decided later from a memory estimate
(:func:`landscape._checks.check_memory`)."""

MAX_SEED = 2**63 - 1
"""Largest seed (``torch.Generator.manual_seed`` takes 64-bit seeds)."""


# ---------------------------------------------------------------------- argparse types
# Every numeric option of every command is parsed by one of these: a bad value (not a number,
# NaN, inf, out of range) is an argparse error (exit 2, one line) before any work starts.
def _interval(lo: float | None, hi: float | None, lo_open: bool, hi_open: bool) -> str:
    if lo is not None and hi is not None:
        return f"in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {lo:g}"
    if hi is not None:
        return f"{'<' if hi_open else '<='} {hi:g}"
    return "finite"


def _parse_float(text: str, lo: float | None, hi: float | None, lo_open: bool, hi_open: bool) -> float:
    want = "a finite number" + ("" if lo is None and hi is None else " " + _interval(lo, hi, lo_open, hi_open))
    try:
        v = float(str(text).strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {want}, got {text!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"must be {want}, got {text!r}")
    if lo is not None and (v <= lo if lo_open else v < lo):
        raise argparse.ArgumentTypeError(f"must be {want}, got {text!r}")
    if hi is not None and (v >= hi if hi_open else v > hi):
        raise argparse.ArgumentTypeError(f"must be {want}, got {text!r}")
    return v


def float_arg(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
              hi_open: bool = False) -> Callable[[str], float]:
    """An argparse ``type=`` for a finite float in ``[lo, hi]`` (ends open when ``lo_open``/``hi_open``).

    Raises (when called):
        argparse.ArgumentTypeError: not a number, NaN, ±inf (including overflowing literals such
            as ``1e999``) or out of range; the message names the accepted range.
    """

    def parse(text: str) -> float:
        return _parse_float(text, lo, hi, lo_open, hi_open)

    parse.__name__ = "number"
    return parse


def float_list_arg(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
                   hi_open: bool = False, length: int | None = None) -> Callable[[str], tuple[float, ...]]:
    """An argparse ``type=`` for comma-separated finite floats, each as :func:`float_arg` (``length``: exact count).

    Raises (when called):
        argparse.ArgumentTypeError: an empty list, a wrong count or a bad entry (named by position).
    """

    def parse(text: str) -> tuple[float, ...]:
        items = [x for x in str(text).split(",") if x.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}")
        if length is not None and len(items) != length:
            raise argparse.ArgumentTypeError(f"expected {length} comma-separated numbers, got {len(items)} in {text!r}")
        out = []
        for i, x in enumerate(items):
            try:
                out.append(_parse_float(x, lo, hi, lo_open, hi_open))
            except argparse.ArgumentTypeError as exc:
                raise argparse.ArgumentTypeError(f"entry {i} {exc}") from None
        return tuple(out)

    parse.__name__ = "numbers"
    return parse


def int_arg(lo: int = 0, hi: int = MAX_SIZE) -> Callable[[str], int]:
    """An argparse ``type=`` for an integer in ``[lo, hi]`` (decimal digits only: ``2.5``, ``1e3``, ``nan`` are errors).

    Raises (when called):
        argparse.ArgumentTypeError: not an integer or out of range; the message names the range.
    """

    def parse(text: str) -> int:
        t = str(text).strip()
        want = f"an integer >= {lo}" if hi >= MAX_SIZE else f"an integer in [{lo}, {hi}]"
        try:
            v = int(t, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {want}, got {text!r}") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"must be {want}, got {v}")
        if v > hi:
            raise argparse.ArgumentTypeError(f"must be an integer in [{lo}, {hi}], got {t if len(t) < 24 else t[:20] + '...'}")
        return v

    parse.__name__ = "integer"
    return parse


positive_int = int_arg(1)
"""Sizes and counts: an integer in ``[1, MAX_SIZE]``."""
nonneg_int = int_arg(0)
"""Counts where 0 means none/never: an integer in ``[0, MAX_SIZE]``."""
seed_int = int_arg(0, MAX_SEED)
"""Seeds: an integer in ``[0, 2^63 - 1]``."""
finite_float = float_arg()
"""Any finite float."""
positive_float = float_arg(0.0, lo_open=True)
"""A finite float > 0."""
nonneg_float = float_arg(0.0)
"""A finite float >= 0."""

SIGMA_FORMS = ("identity | random[:SEED] | diag:l1,...,ld (the diagonal matrix) | spectrum:l1,...,ld[:SEED] "
               "(that spectrum, randomly rotated) | path to a .npy/.txt/.pt matrix")
"""The accepted ``--sigma`` forms (for messages)."""

INVERSE_TASK_FAMILIES = ("pgd", "pgd-relaxed", "pgd-identity")
"""Families whose statement is about :math:`w^* \\sim N(0, \\Sigma^{-1})` (Ahn et al. Theorems 3–4 and their control)."""


def _spectrum(spec: str, body: str, form: str, d: int) -> list[float]:
    """The eigenvalue list of a ``diag:``/``spectrum:`` body: d finite positive numbers."""
    try:
        vals = [float(v) for v in body.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--sigma {form} needs comma-separated numbers, got {spec!r}") from None
    if len(vals) != d:
        raise ValueError(f"--sigma {spec!r} lists {len(vals)} eigenvalues, expected d = {d}")
    if not all(math.isfinite(v) for v in vals):
        raise ValueError(f"--sigma {spec!r}: the eigenvalues must be finite")
    if min(vals) <= 0:
        raise ValueError(f"--sigma {spec!r}: a covariance needs positive eigenvalues (not positive definite)")
    return vals


def split_spectrum(spec: str) -> tuple[str, int | None]:
    """``"spectrum:l1,...,ld[:SEED]"`` → ``("l1,...,ld", SEED or None)`` (the list text as written).

    Raises:
        ValueError: not a ``spectrum:`` spec, or a SEED that is not an integer >= 0.
    """
    s = spec.strip()
    if not s.startswith("spectrum:"):
        raise ValueError(f"not a spectrum:l1,...,ld[:SEED] spec: {spec!r}")
    body, sep, seed_text = s[len("spectrum:"):].partition(":")
    if not sep:
        return body, None
    try:
        sd = int(seed_text.strip(), 10)
    except ValueError:
        raise ValueError(f"--sigma spectrum:l1,...,ld:SEED needs an integer SEED, got {spec!r}") from None
    if not 0 <= sd <= MAX_SEED:
        raise ValueError(f"--sigma {spec!r}: SEED must be in [0, 2^63 - 1]")
    return body, sd


def parse_sigma(spec: str | None, d: int, seed: int = 0) -> torch.Tensor | None:
    r"""Parse a covariance spec into a ``(d, d)`` float64 SPD matrix (``None`` = identity).

    Forms:

    * ``identity`` (or ``None``) — :math:`\Sigma = I`;
    * ``random`` / ``random:SEED`` — :func:`~landscape.core.tasks.random_covariance`: a Haar rotation
      (``torch.Generator().manual_seed(SEED)``, SEED defaulting to ``seed``) of a fixed spectrum
      (Ahn et al.'s ``(1, 1, .25, .0625, 1)`` for d = 5);
    * ``diag:l1,...,ld`` — the diagonal matrix :math:`\mathrm{diag}(l_1, \dots, l_d)`;
    * ``spectrum:l1,...,ld`` / ``spectrum:l1,...,ld:SEED`` — that spectrum, randomly rotated:
      :math:`U^\top \mathrm{diag}(l)\, U` with the Haar rotation of ``random:SEED`` (SEED defaulting
      to ``seed``). Before this form existed ``diag:`` meant this; stored run configs written then
      are read with their old meaning (:meth:`landscape.experiment.train.TrainConfig.from_dict`);
    * a path to a ``.npy``, ``.pt`` or whitespace-separated ``.txt`` file holding the matrix.

    Args:
        spec: the spec string.
        d: dimension.
        seed: default seed of the random rotation.

    Returns:
        :math:`\Sigma`, or ``None`` for the identity.

    Raises:
        ValueError: an unknown form, a bad or non-finite number, a wrong count, a missing or
            unreadable file, or a matrix that is not symmetric positive definite of shape ``(d, d)``.
    """
    import torch

    from landscape.core.tasks import check_covariance, random_covariance

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
        vals = _spectrum(spec, s[len("diag:"):], "diag:l1,...,ld", d)
        return torch.diag(torch.tensor(vals, dtype=torch.float64))
    if s.startswith("spectrum:"):
        body, sd = split_spectrum(s)
        vals = _spectrum(spec, body, "spectrum:l1,...,ld[:SEED]", d)
        rot = int(seed) if sd is None else sd
        return random_covariance(d, torch.Generator().manual_seed(rot), spectrum=vals)
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
    g.add_argument("--d", type=positive_int, default=5, help="covariate dimension (default 5)")
    g.add_argument("--n", type=positive_int, default=20, help="context length (default 20)")
    g.add_argument("--layers", type=positive_int, default=1, help="number of layers L (default 1)")
    g.add_argument("--attention", choices=("auto", "linear", "kernel"), default="auto",
                   help="auto: the family's attention (built-in families), else kernel iff --activation is given")
    g.add_argument("--activation", default=None,
                   help="kernel attention: one activation per head, comma-separated (e.g. exp, relu, softmax, "
                        "linear, exp,linear); default exp")
    g.add_argument("--heads", type=positive_int, default=1, help="heads of a linear-attention model (default 1)")
    g.add_argument("--data", default=None,
                   help="linear (LinearRegression) | gp[:KERNEL] (KernelGP, default kernel: the first "
                        "activation, exp for softmax); default linear for linear attention, gp for kernel")
    g.add_argument("--task-cov", choices=("auto", "identity", "inverse"), default="auto",
                   help="linear data: w* ~ N(0, I) or N(0, Σ^-1); auto = inverse for "
                        + ", ".join(INVERSE_TASK_FAMILIES) + ", identity otherwise")
    g.add_argument("--covariates", choices=("gaussian", "sphere"), default=None,
                   help="covariate law (default gaussian; sphere for gp data)")
    g.add_argument("--sigma", default="identity", help=f"covariance of x: {SIGMA_FORMS}")
    g.add_argument("--noise", type=nonneg_float, default=0.0, help="label noise std (default 0)")
    g.add_argument("--seed", type=seed_int, default=0, help="seed of random choices (rotations, samples; default 0)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def _attention(args: argparse.Namespace, family: str | None) -> str:
    from landscape.theory.families import FAMILY_ATTENTION

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
    from landscape.core.tasks import KernelGP, LinearRegression

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
    """Build the :class:`~landscape.theory.families.Problem` and the prompt distribution of parsed arguments.

    Args:
        args: namespace from a parser set up by :func:`add_problem_args`.
        family: the family name, if any (decides ``--attention auto`` and ``--task-cov auto``).

    Returns:
        ``(problem, data)``.

    Raises:
        ValueError: any bad value (sizes < 1, an activation with linear attention, a bad ``--sigma``
            ...), named with the accepted values, before any expensive work.
    """
    from landscape.theory.families import Problem

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
    from landscape.engine.threads import DEFAULT_THREADS

    parser.add_argument("--threads", type=positive_int, default=DEFAULT_THREADS,
                        help=f"CPU threads for the numerical work (default {DEFAULT_THREADS}: measured fastest "
                             "on small shared machines; see docs/benchmarks.md)")
    return parser


def apply_threads(args: argparse.Namespace) -> None:
    """Set the thread count a parsed command asked for (:func:`landscape.set_threads`).

    Raises:
        ValueError: ``--threads`` below 1.
    """
    from landscape.engine.threads import set_threads

    if getattr(args, "threads", None) is not None:
        set_threads(args.threads)
