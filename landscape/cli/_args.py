r"""Shared command-line arguments: the problem (d, n, L, attention, data, Σ) and its parsers.

Commands that act on one in-context problem (``solve``, ``verify``, ``train`` ...) register the
same options with :func:`add_problem_args` and turn them into a
:class:`~landscape.theory.families.Problem` and a prompt distribution with :func:`problem_from_args`:

``--d D --n N --layers L``       sizes (defaults 5, 20, 1 — Ahn et al.'s d and n)
``--attention auto|linear|kernel`` ``auto``: the family's (built-in, or a family file's ``ATTENTION``), else
                                  kernel iff ``--activation``
``--activation A[,B,...]``        one kernel per head (kernel attention), e.g. ``exp`` or ``exp,linear``
``--heads H``                     heads of a linear-attention model
``--data linear|gp[:KERNEL]``     LinearRegression or KernelGP prompts (default: by attention)
``--task-cov auto|identity|inverse`` :math:`w^* \sim N(0, I)` or :math:`N(0, \Sigma^{-1})`; ``auto``: the family's
                                  declared prior — inverse for ``pgd``, ``pgd-relaxed``, ``pgd-identity``
                                  (Ahn et al. Theorems 3–4), a family file's ``PRIOR`` — else identity
``--covariates gaussian|sphere``  law of the whitened covariates (default gaussian; sphere for GP data)
``--sigma SPEC``                  :func:`parse_sigma`
``--noise S``                     label noise std
``--seed S``                      seed of every random choice the problem makes (rotations of ``--sigma``)
``--json``                        one JSON object on stdout

Every command also takes ``--threads N`` (:func:`add_threads_arg`, applied by :func:`apply_threads`).

Commands that look at one point of the landscape (``hessian``, ``slice``, ``llc``) register the point
options with :func:`add_point_args` and resolve them with :func:`resolve_point`:

``--run STORE[:RUN] --seed K``    seed ``K`` of a trained run (store opened read-only; :func:`add_run_arg`,
                                  :func:`trained_seed`; ``probe`` and ``verify`` read ``--run`` the same way)
``--family NAME [--point a0=...]`` a family point (default: the family fitted on the loss)
``--exact auto|yes|no``           the exact population loss where the symbolic layer has one, else
``--samples T --sample-seed S``   a Monte-Carlo loss on ``T`` fixed prompts
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from landscape._forms import MAX_SEED, SIGMA_FORMS

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from landscape.core.tasks import Task
    from landscape.numeric.points import TrainedSeeds
    from landscape.theory.families import Problem

__all__ = ["add_command", "parse_sigma", "add_problem_args", "add_threads_arg", "apply_threads", "problem_from_args", "data_from_args",
           "SIGMA_FORMS", "MAX_SIZE", "MAX_SEED", "int_arg", "float_arg", "float_list_arg",
           "index_list_arg", "positive_int", "nonneg_int", "seed_int", "finite_float", "positive_float", "nonneg_float",
           "run_ref", "add_run_arg", "load_run", "trained_seed", "add_point_args", "check_point_args",
           "resolve_point", "Point", "preset_arg", "held_entry_arg", "GIVEN", "record_given"]

MAX_SIZE = 2**31 - 1
"""Largest value an integer size or count option accepts at parse time (torch index range);
whether a size fits the machine is decided later from a memory estimate
(:func:`landscape._checks.check_memory`)."""


# ---------------------------------------------------------------------- registering a command
def add_command(subparsers: Any, name: str, *, help: str, doc: str | None = None, paragraph: int = 0,
                epilog_from: str | None = None, description: str | None = None) -> argparse.ArgumentParser:
    """Register ``landscape NAME`` and return its parser: the one way a command module sets up its help.

    The description shown by ``landscape NAME --help`` is either

    * taken from the command module's docstring ``doc`` (paragraphs are separated by a blank line):
      paragraph ``paragraph``, or with ``epilog_from`` the paragraphs from ``paragraph`` up to the
      first one that starts with ``epilog_from`` (e.g. ``"Examples"``), which with everything after
      it becomes the epilog. Docstring text is shown as written
      (:class:`argparse.RawDescriptionHelpFormatter`), so examples and aligned lists keep their lines;
    * or ``description``, one paragraph of prose that argparse re-wraps to the terminal width.

    Args:
        subparsers: the ``add_subparsers()`` object of the ``landscape`` parser.
        name: the command's name.
        help: its one-line summary in ``landscape --help``.
        doc: the command module's ``__doc__`` (``None`` under ``python -OO``: no description).
        paragraph: index of the docstring paragraph the description starts with.
        epilog_from: first word of the docstring paragraph that starts the epilog (``None``: no epilog).
        description: a literal description instead of ``doc``.

    Returns:
        The command's parser (arguments are added to it by the caller).

    Raises:
        TypeError: both ``doc`` and ``description`` given.
        ValueError: ``doc`` has no paragraph ``paragraph``.
    """
    if doc is not None and description is not None:
        raise TypeError(f"landscape {name}: give the description as doc or as description, not both")
    if doc is None:
        return subparsers.add_parser(name, help=help, description=description)
    paras = doc.split("\n\n")
    if not 0 <= paragraph < len(paras):
        raise ValueError(f"landscape {name}: the docstring has {len(paras)} paragraphs, no paragraph {paragraph}")
    epilog = None
    if epilog_from is None:
        text = paras[paragraph]
    else:
        end = next((i for i in range(paragraph, len(paras)) if paras[i].startswith(epilog_from)), len(paras))
        text = "\n\n".join(paras[paragraph:end])
        epilog = "\n\n".join(paras[end:]) or None
    return subparsers.add_parser(name, help=help, description=text, epilog=epilog,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)


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

    >>> int_arg(2)("8")
    8
    >>> int_arg(2)("1e3")
    Traceback (most recent call last):
        ...
    argparse.ArgumentTypeError: must be an integer >= 2, got '1e3'

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


def index_list_arg(most: int | None = None, *, allow_all: bool = False) -> Callable[[str], tuple[int, ...] | None]:
    """An argparse ``type=`` for distinct comma-separated indices >= 0 (seeds, symbols), at most ``most`` of them;
    with ``allow_all`` the word ``all`` gives ``None``.

    >>> index_list_arg(2)("0,1"), index_list_arg(allow_all=True)("all")
    ((0, 1), None)

    Raises (when called):
        argparse.ArgumentTypeError: not integers, a negative or repeated index, none or more than ``most``.
    """
    count = "one or two" if most == 2 else "one" if most == 1 else f"at most {most}" if most else ""
    want = " ".join(x for x in ("'all' or" if allow_all else "", count, "distinct comma-separated integers >= 0") if x)

    def parse(text: str) -> tuple[int, ...] | None:
        if allow_all and str(text).strip() == "all":
            return None
        try:
            vals = tuple(int(x.strip(), 10) for x in str(text).split(",") if x.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {want}, got {text!r}") from None
        if not vals or any(v < 0 for v in vals) or len(set(vals)) != len(vals) or (most and len(vals) > most):
            raise argparse.ArgumentTypeError(f"must be {want}, got {text!r}")
        return vals

    parse.__name__ = "indices"
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


def preset_arg(text: str) -> str:
    """An argparse ``type=`` for a paper preset name (:data:`landscape.recipe.PRESETS`).

    The recipe (and so torch) is imported only when the option is given: building the parser and
    ``--help`` stay light.

    Raises (when called):
        argparse.ArgumentTypeError: an unknown name; the message lists the known ones.
    """
    from landscape import recipe

    try:
        recipe.preset(str(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return str(text)


preset_arg.__name__ = "preset"

_HELD_FORM = "LETTER:BLOCK=VALUE"


def held_entry_arg(text: str) -> tuple[str, str, float]:
    """An argparse ``type=`` for one held entry ``LETTER:BLOCK=VALUE`` of ``--fixed``, e.g. ``P:corner=1``.

    ``LETTER`` is one of :data:`landscape.experiment.train.HELD_LETTERS`, ``BLOCK`` one of
    :data:`~landscape.experiment.train.HELD_BLOCKS` (the vocabulary of
    :attr:`TrainConfig.fixed <landscape.experiment.train.TrainConfig>`, which checks the triple
    again), ``VALUE`` a finite number (as :func:`float_arg`). Nothing is evaluated.

    >>> held_entry_arg("P:corner=1")
    ('P', 'corner', 1.0)

    Returns:
        ``(letter, block, value)``.

    Raises (when called):
        argparse.ArgumentTypeError: another form, letter or block, or a value that is not a finite
            number; the message names the accepted ones.
    """
    from landscape.experiment.train import HELD_BLOCKS, HELD_LETTERS

    t = str(text).strip()
    head, eq, value = t.partition("=")
    letter, colon, block = head.partition(":")
    letter, block = letter.strip(), block.strip()
    if not eq or not colon or not letter or not block:
        raise argparse.ArgumentTypeError(f"must be {_HELD_FORM} (e.g. P:corner=1), got {text!r}")
    if letter not in HELD_LETTERS:
        raise argparse.ArgumentTypeError(f"LETTER must be one of {', '.join(HELD_LETTERS)}, got {letter!r} in {text!r}")
    if block not in HELD_BLOCKS:
        raise argparse.ArgumentTypeError(f"BLOCK must be one of {', '.join(HELD_BLOCKS)}, got {block!r} in {text!r}")
    try:
        v = _parse_float(value, None, None, False, False)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"VALUE must be a finite number, got {value.strip()!r} in {text!r}") from None
    return letter, block, v


held_entry_arg.__name__ = "held entry"

GIVEN = "given_options"
"""Namespace attribute of a parser set up by :func:`record_given`: the ``dest`` of every option
given on the command line (a ``frozenset``)."""


class _GivenStore(argparse.Action):
    """``store`` that also records its ``dest`` in ``namespace.given_options`` (:data:`GIVEN`)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        setattr(namespace, self.dest, values)
        setattr(namespace, GIVEN, frozenset(getattr(namespace, GIVEN, frozenset())) | {self.dest})


class _GivenAppend(argparse.Action):
    """``append`` (into a fresh list: the default is never mutated) that records its ``dest`` (:data:`GIVEN`)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        setattr(namespace, self.dest, [*(getattr(namespace, self.dest, None) or []), values])
        setattr(namespace, GIVEN, frozenset(getattr(namespace, GIVEN, frozenset())) | {self.dest})


def record_given(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Make ``parser`` record which options were given (not defaulted): call before adding them.

    After parsing, ``args.given_options`` (:data:`GIVEN`) is the set of the ``dest`` of every
    option (``store`` or ``append``) that appeared on the command line, whatever its value — so a
    value equal to the default still counts as given (what ``--preset`` needs: explicit options
    override the preset's fields). Argument groups share the parser's registry, so their options
    are recorded too.

    Returns:
        ``parser``.
    """
    parser.register("action", None, _GivenStore)
    parser.register("action", "store", _GivenStore)
    parser.register("action", "append", _GivenAppend)
    parser.set_defaults(**{GIVEN: frozenset()})
    return parser


def parse_sigma(spec: str | None, d: int, seed: int = 0) -> torch.Tensor | None:
    r"""A ``--sigma`` text as :math:`\Sigma`: :func:`landscape.recipe.covariance` (its forms, returns and
    errors; :data:`SIGMA_FORMS` lists the forms), refusing anything but a string first.

    Raises:
        ValueError: ``spec`` is not a string, or as :func:`landscape.recipe.covariance`.
    """
    if spec is not None and not isinstance(spec, str):
        raise ValueError(f"--sigma must be one of {SIGMA_FORMS}; got {spec!r}")
    from landscape import recipe

    return recipe.covariance(spec, d, seed)


def add_problem_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Register the problem options (module docstring) on ``parser``; returns it."""
    g = parser.add_argument_group("problem")
    g.add_argument("--d", type=positive_int, default=5, help="covariate dimension (default 5)")
    g.add_argument("--n", type=positive_int, default=20, help="context length (default 20)")
    g.add_argument("--layers", type=positive_int, default=1, help="number of layers L (default 1)")
    g.add_argument("--attention", choices=("auto", "linear", "kernel"), default="auto",
                   help="auto: the family's attention (built-in, or a family file's ATTENTION), else kernel iff "
                        "--activation is given")
    g.add_argument("--activation", default=None,
                   help="kernel attention: one activation per head, comma-separated (e.g. exp, relu, softmax, "
                        "linear, exp,linear); default exp")
    g.add_argument("--heads", type=positive_int, default=1, help="heads of a linear-attention model (default 1)")
    g.add_argument("--data", default=None,
                   help="linear (LinearRegression) | gp[:KERNEL] (KernelGP, default kernel: the first "
                        "activation, exp for softmax); default linear for linear attention, gp for kernel")
    g.add_argument("--task-cov", choices=("auto", "identity", "inverse"), default="auto",
                   help="linear data: w* ~ N(0, I) or N(0, Σ^-1); auto = the family's declared prior (inverse "
                        "for Ahn et al.'s pgd families, a family file's PRIOR), identity otherwise")
    g.add_argument("--covariates", choices=("gaussian", "sphere"), default=None,
                   help="covariate law (default gaussian; sphere for gp data)")
    g.add_argument("--sigma", default="identity", help=f"covariance of x: {SIGMA_FORMS}")
    g.add_argument("--noise", type=nonneg_float, default=0.0, help="label noise std (default 0)")
    g.add_argument("--seed", type=seed_int, default=0, help="seed of random choices (rotations, samples; default 0)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def data_from_args(args: argparse.Namespace, problem: Problem, family: str | None = None) -> Task:
    """The prompt distribution of parsed arguments for ``problem`` (see module docstring).

    ``--data`` defaults to :func:`landscape.recipe.default_data`; ``--task-cov auto`` is the
    family's declared prior (:func:`landscape.recipe.prior`).

    Raises:
        ValueError: an unknown ``--data``, or options that do not fit it.
    """
    from landscape import recipe

    data = getattr(args, "data", None)
    if data is None:
        data = recipe.default_data(problem.attention, problem.activations)
    noise = float(getattr(args, "noise", 0.0) or 0.0)
    if noise < 0:
        raise ValueError(f"--noise must be >= 0, got {noise}")
    kind = data.partition(":")[0]
    if kind not in ("linear", "gp") or (kind == "linear" and data != "linear"):
        raise ValueError(f"--data must be 'linear' or 'gp[:KERNEL]', got {data!r}")
    if data == "gp":
        data = recipe.default_data("kernel", problem.activations)
    prior = recipe.prior(getattr(args, "task_cov", "auto"), family, kind)
    return recipe.task(data, problem.d, problem.n, sigma=problem.sigma, prior=prior,
                       covariates=getattr(args, "covariates", None), noise=noise)


def problem_from_args(args: argparse.Namespace, family: str | None = None) -> tuple[Problem, Task]:
    """Build the :class:`~landscape.theory.families.Problem` and the prompt distribution of parsed arguments.

    Args:
        args: namespace from a parser set up by :func:`add_problem_args`.
        family: the family name, if any (its declaration decides ``--attention auto`` and
            ``--task-cov auto``: :func:`landscape.recipe.declared`).

    Returns:
        ``(problem, data)``.

    Raises:
        ValueError: any bad value (sizes < 1, an activation with linear attention, a bad ``--sigma``
            ...), named with the accepted values, before any expensive work.
    """
    from landscape import recipe
    from landscape.theory.families import Problem

    from landscape._checks import check_int

    for name in ("d", "n", "layers", "heads"):
        check_int(f"--{name}", getattr(args, name, 1), minimum=1)
    act = getattr(args, "activation", None)
    attention = recipe.attention(getattr(args, "attention", "auto"), family, bool(act))
    if attention == "linear" and act:
        raise ValueError("--activation applies to kernel attention; linear attention has P, Q heads without one")
    acts = recipe.activations(act)
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


# ---------------------------------------------------------------------- a point of the landscape
def run_ref(text: str) -> tuple[str, str | None]:
    """argparse type for ``--run STORE[:RUN]`` (:func:`landscape.numeric.points.split_run_ref`)."""
    from landscape.numeric.points import split_run_ref

    try:
        return split_run_ref(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).replace("--run ", "")) from None


def add_run_arg(container: Any, *, help: str = "a trained run of a store (read-only); --seed K picks the seed"
                ) -> None:
    """Register ``--run STORE[:RUN]`` (parsed by :func:`run_ref`) on a parser, group or mutually exclusive group."""
    container.add_argument("--run", type=run_ref, default=None, metavar="STORE[:RUN]", help=help)


def load_run(ref: str | tuple[str, str | None]) -> TrainedSeeds:
    """The seeds of the run ``--run`` names (the store opened read-only: nothing is written).

    Args:
        ref: ``STORE[:RUN]`` text, or the ``(store, run or None)`` pair :func:`run_ref` parsed.

    Returns:
        :class:`~landscape.numeric.points.TrainedSeeds`.

    Raises:
        ValueError: a missing store, run or final weights, or a damaged store: one line that starts ``--run:``.
    """
    from landscape.experiment.store import StoreError
    from landscape.numeric.points import load_trained, split_run_ref

    root, name = split_run_ref(ref) if isinstance(ref, str) else ref
    try:
        return load_trained(root, name)
    except (StoreError, ValueError) as exc:
        raise ValueError(f"--run: {' '.join(str(exc).split())}") from None


def trained_seed(ref: str | tuple[str, str | None], seed: int) -> tuple[TrainedSeeds, int]:
    """``--run STORE[:RUN] --seed K``: the run's seeds (:func:`load_run`) and ``K``, checked against them.

    Raises:
        ValueError: as :func:`load_run`, or ``K`` is not a seed of the run
            (:meth:`~landscape.numeric.points.TrainedSeeds.check_seed`).
    """
    tr = load_run(ref)
    return tr, tr.check_seed(seed)


def add_point_args(p: argparse.ArgumentParser) -> None:
    """The options that choose the point and its loss (module docstring), with the problem options."""
    g = p.add_argument_group("point")
    add_run_arg(g)
    g.add_argument("--family", default=None,
                   help="a family (pgd, pgd-relaxed, fgd, ... or file.py:NAME) for a family point")
    g.add_argument("--point", default=None, help="family scalars, e.g. a0=0.8 (default: fit the family on the loss)")
    g.add_argument("--exact", default="auto", choices=("auto", "yes", "no"),
                   help="use the exact population loss (auto: when the symbolic layer has one)")
    g.add_argument("--samples", type=int_arg(16), default=2048,
                   help="Monte-Carlo prompts (fixed once) when the loss is not exact (default 2048)")
    g.add_argument("--sample-seed", type=seed_int, default=0, help="seed of the Monte-Carlo prompts (default 0)")
    add_problem_args(p)


@dataclass(frozen=True, eq=False)
class Point:
    """A resolved point of the landscape: its weights, the loss oracle and what they are.

    Attributes:
        spec: the architecture (:class:`~landscape.core.model.ModelSpec`).
        flat: ``(P,)`` float64 weights.
        oracle: the loss (:class:`~landscape.numeric.oracles.LossOracle`).
        oracle_desc: ``"exact population loss"`` or the Monte-Carlo size.
        label: what the point is, for printing.
        problem: the :class:`~landscape.theory.families.Problem`.
        task: the prompt distribution.
        family, family_values: the family and the point's scalars (the projection of a trained seed).
        trained, seed: the run's seeds and the seed, for a trained point.
    """

    spec: Any
    flat: Any
    oracle: Any
    oracle_desc: str
    label: str
    problem: Any
    task: Task
    family: Any = None
    family_values: Any = None
    trained: Any = None
    seed: int | None = None


def check_point_args(args: argparse.Namespace) -> None:
    """Cheap consistency checks of the point options (before anything is loaded).

    Raises:
        ValueError: neither or both of ``--run`` and ``--family``, ``--point`` with ``--run``, a bad ``--point``.
    """
    if (args.run is None) == (args.family is None):
        raise ValueError("give exactly one of --run STORE[:RUN] (a trained seed) or --family NAME (a family point)")
    if args.run is not None and args.point is not None:
        raise ValueError("--point applies to --family; a trained seed is chosen with --seed")
    if args.point is not None:
        from landscape.cli.verify import parse_point

        parse_point(args.point)


def resolve_point(args: argparse.Namespace) -> Point:
    """Build the point and its loss from parsed arguments (:func:`add_point_args`).

    A trained seed carries its run's family and its projection onto it (modulo the model's
    symmetries); a family point is ``--point`` or the family's best point fitted on the loss.

    Raises:
        ValueError: unknown run/family, a seed out of range, bad ``--point``.
    """
    import torch

    from landscape.numeric.points import landscape_oracle

    gen = torch.Generator().manual_seed(args.sample_seed)
    if args.run is not None:
        tr, k = trained_seed(args.run, args.seed)
        problem = tr.config.problem(tr.sigma)
        oracle, desc = landscape_oracle(problem, tr.task, tr.spec, exact=args.exact, samples=args.samples,
                                        generator=gen)
        values = None
        if tr.family is not None:
            from landscape.core.model import unflatten_params
            from landscape.experiment.distance import project_onto_family

            proj = project_onto_family(unflatten_params(tr.final[k], tr.spec), tr.family)
            values = proj.vector()
        return Point(tr.spec, tr.final[k], oracle, desc, f"{tr.run} seed {k}", problem, tr.task, tr.family,
                     values, tr, k)
    from landscape.cli.verify import build_problem, parse_point
    from landscape.numeric.fit import family_point, fit_family

    problem, family, task = build_problem(args)
    spec = family.spec
    oracle, desc = landscape_oracle(problem, task, spec, exact=args.exact, samples=args.samples, generator=gen)
    if args.point is not None:
        values = family_point(family, parse_point(args.point))
        how = "given"
    else:
        fit = fit_family(family, oracle, generator=torch.Generator().manual_seed(args.sample_seed))
        values = fit.values
        how = "fitted"
    flat = family.flat(values.to(torch.float64))
    pt = ", ".join(f"{n}={float(v):.6g}" for n, v in zip(family.names, values))
    return Point(spec, flat, oracle, desc, f"family {family.name} at {pt} ({how})", problem, task, family, values)
