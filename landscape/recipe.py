r"""Recipes: the one place where names, specs and defaults become objects.

Everything a user writes as text — on the command line, in a sweep file, in a
:class:`~landscape.experiment.train.TrainConfig`, in a stored run config — is turned into a library
object here and nowhere else; the engines (training, the symbolic and numerical layers) take the
objects. Each function names what it accepts in its errors (one line, before any expensive work).

* covariance specs — ``identity``, ``random[:SEED]``, ``diag:…``, ``spectrum:…[:SEED]``, a matrix
  file, a matrix: :func:`covariance` (:math:`\Sigma`, ``None`` for the identity), :func:`split_spectrum`,
  :data:`SIGMA_FORMS`;
* kernels — ``exp``, ``exp:0.5``, ``sympy:EXPR``, a ``Kernel``, and composites: a ``SumKernel`` or
  terms ``(weight, kernel, G)``: :func:`kernel`; :func:`kernel_terms` and :func:`kernel_name` are the
  inverse (what a config stores); head activations ``exp,linear``: :func:`activations`;
* tasks — ``linear``, ``gp[:KERNEL]`` (or ``gp`` with composite terms), ``classification``,
  ``features``: :func:`task`, :func:`task_kind`; defaults from the heads (:func:`default_data`) or
  the family (:func:`family_task`); the record every output prints (:func:`describe_task`);
* families — ``pgd``, ``file.py:NAME``: the attention and prior they declare (:func:`declared`),
  ``auto`` resolved (:func:`attention`, :func:`prior`), the family built (:func:`family`);
* presets ``ahn2023``, ``ahn2023-p0``, ``cheng2024`` (the parameterisations of the papers' official code, as
  :class:`~landscape.experiment.train.TrainConfig` fields): :func:`preset`;
* masks ``full``, ``paper``, ``sparse``: :func:`mask`; devices ``auto``, ``cpu``, ``cuda[:N]``:
  :func:`device`; dtypes ``float32``, ``float64``: :func:`dtype`, :func:`dtype_name`.

The prior of a family. Ahn et al.'s Theorems 3–4 (``pgd``, ``pgd-relaxed`` and the control
``pgd-identity``) are statements about :math:`w^* \sim N(0, \Sigma^{-1})`; every other linear
family about :math:`N(0, I)`. A built-in family declares it in
:data:`landscape.theory.families.FAMILY_PRIOR`; a user family file declares it with module-level
constants::

    PRIOR = "inverse"      # w* ~ N(0, Σ^-1); "identity" (the default) is N(0, I)
    ATTENTION = "linear"   # the attention its weights belong to ("linear" or "kernel")

:func:`describe_task` is the record of a task, its prior and :math:`\Sigma` that ``solve``,
``verify`` and ``train`` print.

Nothing here imports :mod:`landscape.cli`; sympy-backed modules are imported when a function needs
them, so reading this module's constants is cheap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Protocol, Sequence

import torch

import landscape.core.masks as _masks

if TYPE_CHECKING:  # pragma: no cover
    from landscape.core.kernels import Kernel, SumKernel
    from landscape.core.model import ModelSpec
    from landscape.core.tasks import Task
    from landscape.theory.families import Family, Problem

__all__ = [
    "SIGMA_FORMS",
    "TASKS",
    "PRIORS",
    "ATTENTIONS",
    "COVARIATES",
    "MASKS",
    "DTYPES",
    "MAX_SEED",
    "FamilyDeclaration",
    "HasTask",
    "covariance",
    "split_spectrum",
    "kernel",
    "kernel_terms",
    "kernel_name",
    "activations",
    "task_kind",
    "task",
    "default_data",
    "family_task",
    "describe_task",
    "task_line",
    "declared",
    "attention",
    "prior",
    "family",
    "mask",
    "device",
    "dtype",
    "dtype_name",
    "PRESETS",
    "preset",
]

from landscape._forms import MAX_SEED, SIGMA_FORMS  # noqa: E402  (defined with the CLI's light types)

TASKS: tuple[str, ...] = ("linear", "gp", "classification", "features")
"""Task kinds; ``"gp"`` takes its data kernel as ``"gp:KERNEL"`` (e.g. ``"gp:exp"``) or as composite terms."""

PRIORS: tuple[str, ...] = ("identity", "inverse")
r"""Priors of the regression vector: :math:`w^* \sim N(0, I)` or :math:`N(0, \Sigma^{-1})`."""

ATTENTIONS: tuple[str, ...] = ("linear", "kernel")
"""``linear``: Ahn et al.'s P, Q heads; ``kernel``: Cheng et al.'s V, B, C heads."""

COVARIATES: tuple[str, ...] = ("gaussian", "sphere")
"""Laws of the whitened covariates."""

MASKS: tuple[str, ...] = _masks.SPEC_MASKS
"""Names of the training masks (:func:`mask`; the vocabulary is :data:`landscape.core.masks.MASKS`)."""

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float64": torch.float64}
"""Accepted floating-point dtypes by name."""

_DEVICE_FORMS = "'auto', 'cpu', 'cuda', 'cuda:N'"

KernelTerm = tuple[float, str, "tuple[tuple[float, ...], ...] | None"]
"""One term ``(weight, kernel name, projection rows or None)`` of a composite data kernel."""


# ---------------------------------------------------------------------- covariance
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
    """Split a ``spectrum:`` spec into its list text and its rotation seed.

    Args:
        spec: ``"spectrum:l1,...,ld"`` or ``"spectrum:l1,...,ld:SEED"``.

    Returns:
        ``("l1,...,ld", SEED)`` with the list text as written and ``SEED = None`` when absent.

    Raises:
        ValueError: not a ``spectrum:`` spec, or a SEED that is not an integer in ``[0, 2^63 - 1]``.
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


def _sigma_file(spec: str, path: Path, d: int) -> torch.Tensor:
    from landscape.core.tasks import check_covariance

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


def covariance(spec: str | Sequence[Sequence[float]] | torch.Tensor | None, d: int,
               seed: int = 0) -> torch.Tensor | None:
    r"""Turn a covariance spec into :math:`\Sigma`, a ``(d, d)`` float64 SPD matrix (``None`` = identity).

    Forms (:data:`SIGMA_FORMS`):

    * ``"identity"`` (or ``None``) — :math:`\Sigma = I`;
    * ``"random"`` / ``"random:SEED"`` — :func:`~landscape.core.tasks.random_covariance`: a Haar
      rotation (``torch.Generator().manual_seed(SEED)``, SEED defaulting to ``seed``) of a fixed
      spectrum (Ahn et al.'s ``(1, 1, .25, .0625, 1)`` for d = 5);
    * ``"diag:l1,...,ld"`` — the diagonal matrix :math:`\mathrm{diag}(l_1, \dots, l_d)`;
    * ``"spectrum:l1,...,ld"`` / ``"spectrum:l1,...,ld:SEED"`` — that spectrum, randomly rotated:
      :math:`U^\top \mathrm{diag}(l)\, U` with the rotation of ``random:SEED`` (SEED defaulting to
      ``seed``). Stored run configs written before this form existed say ``diag:`` for it
      (:meth:`landscape.experiment.train.TrainConfig.from_dict` reads them with that meaning);
    * a path to a ``.npy``, ``.pt`` or whitespace-separated ``.txt`` file holding the matrix;
    * a matrix (tensor or nested sequence), taken as it is.

    Args:
        spec: the spec.
        d: dimension.
        seed: default seed of the random rotations.

    Returns:
        :math:`\Sigma`, or ``None`` for the identity.

    Raises:
        ValueError: an unknown form, a bad or non-finite number, a wrong count, a missing or
            unreadable file, or a matrix that is not symmetric positive definite of shape ``(d, d)``.
    """
    from landscape.core.tasks import check_covariance, random_covariance

    if spec is None:
        return None
    if isinstance(spec, torch.Tensor):
        return check_covariance(spec.to(torch.float64), d)
    if not isinstance(spec, str):
        try:
            mat = torch.tensor(spec, dtype=torch.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"sigma must be {SIGMA_FORMS} or a d×d matrix; got {spec!r} ({exc})") from None
        return check_covariance(mat, d)
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
    return _sigma_file(spec, path, d)


# ---------------------------------------------------------------------- kernels
def kernel(spec: Any) -> "Kernel | SumKernel":
    r"""Turn a kernel spec into a kernel object.

    Args:
        spec: a name of :func:`~landscape.core.kernels.get_kernel` (``"exp"``, ``"exp:0.5"``,
            ``"sympy:EXPR"``), a :class:`~landscape.core.kernels.Kernel` or
            :class:`~landscape.core.kernels.SumKernel` (passed through), or composite terms: a
            sequence of ``(weight, kernel, G)`` with ``kernel`` a name or ``Kernel`` and ``G`` a
            ``(k, d)`` projection (nested lists or a tensor) or ``None`` — the kernel
            :math:`K^\circ(x, x') = \sum_h w_h\,\tilde h_h(G_h x, G_h x')` (Cheng et al., Prop. 3).

    Returns:
        The :class:`Kernel` or :class:`SumKernel`.

    Raises:
        ValueError: an unknown kernel name (the known ones are listed), a malformed term, or a
            normalised (softmax) term in a composite.
        TypeError: a spec of another type.
    """
    from landscape.core.kernels import Kernel, SumKernel, get_kernel

    if isinstance(spec, (str, Kernel, SumKernel)):
        return get_kernel(spec)
    if not isinstance(spec, (list, tuple)) or not spec:
        raise TypeError(f"a kernel is a name, a Kernel, a SumKernel or a non-empty list of (weight, kernel, G) terms; "
                        f"got {spec!r}")
    terms = []
    for i, term in enumerate(spec):
        if not isinstance(term, (list, tuple)) or len(term) != 3:
            raise ValueError(f"kernel term {i} must be (weight, kernel, G) with G a (k, d) matrix or None; got {term!r}")
        w, k, G = term
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(float(w)):
            raise ValueError(f"kernel term {i}: the weight must be a finite number, got {w!r}")
        kern = get_kernel(k)
        if not isinstance(kern, Kernel):
            raise ValueError(f"kernel term {i}: a term is one kernel (name or Kernel), not a composite")
        if G is not None:
            try:
                G = torch.as_tensor(G, dtype=torch.float64)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"kernel term {i}: G must be a (k, d) matrix or None ({exc})") from None
            if G.ndim != 2 or not bool(torch.isfinite(G).all()):
                raise ValueError(f"kernel term {i}: G must be a finite (k, d) matrix, got shape {tuple(G.shape)}")
        terms.append((float(w), kern, G))
    return SumKernel(tuple(terms), name="+".join(t[1].name for t in terms))


def kernel_name(k: "Kernel | str") -> str:
    """The name of :func:`~landscape.core.kernels.get_kernel` that rebuilds ``k`` (what a config stores).

    Args:
        k: a kernel or a kernel name.

    Returns:
        ``"exp"``, ``"exp:0.5"``, ``"polynomial:3"``, ``"sympy:EXPR"`` ... such that
        ``get_kernel(name)`` has the same expression as ``k``.

    Raises:
        ValueError: a kernel no name rebuilds (e.g. a polynomial with a non-default offset).
    """
    from landscape.core.kernels import get_kernel, known_kernels

    if isinstance(k, str):
        get_kernel(k)  # raises on an unknown name
        return k.strip()
    params = dict(k.params)
    candidates = []
    if k.name in known_kernels():
        candidates.append(k.name)
        if params:
            first = next(iter(params.values()))
            candidates.append(f"{k.name}:{int(first) if float(first).is_integer() and k.name == 'polynomial' else first!r}")
    if k.name.startswith("sympy:"):
        candidates.append(k.name)
    if not k.normalised:
        import sympy

        candidates.append("sympy:" + sympy.sstr(k.expr))
    for c in candidates:
        try:
            rebuilt = get_kernel(c)
        except ValueError:
            continue
        if rebuilt.normalised == k.normalised and rebuilt.expr == k.expr:
            return c
    raise ValueError(f"kernel {k.name!r} ({k.expr}) cannot be named by a kernel spec; use a built-in name, "
                     "'name:value' or 'sympy:EXPR'")


def kernel_terms(k: Any) -> tuple[KernelTerm, ...]:
    """The JSON-able (and hashable) terms of a data kernel: the inverse of :func:`kernel`.

    Args:
        k: anything :func:`kernel` accepts.

    Returns:
        ``((weight, name, G rows or None), ...)`` with ``name`` from :func:`kernel_name` and the
        projection as a tuple of float rows; one term ``(1.0, name, None)`` for a single kernel.

    Raises:
        ValueError, TypeError: as :func:`kernel`, or a term kernel no name rebuilds.
    """
    from landscape.core.kernels import SumKernel

    obj = kernel(k)
    if not isinstance(obj, SumKernel):
        return ((1.0, kernel_name(obj), None),)
    out = []
    for w, kern, G in obj.terms:
        rows = None if G is None else tuple(tuple(float(x) for x in row) for row in G.to(torch.float64).tolist())
        out.append((float(w), kernel_name(kern), rows))
    return tuple(out)


def activations(spec: str | Sequence[str] | None) -> tuple[str, ...]:
    """Attention-head activations from ``"exp,linear"`` or a sequence of names (default ``("exp",)``).

    Args:
        spec: comma-separated names, a sequence of names, or ``None``.

    Returns:
        One kernel name per head, each checked by :func:`~landscape.core.kernels.get_kernel`.

    Raises:
        ValueError: an unknown activation (the known ones are listed) or an empty list.
        TypeError: an entry that is not a name.
    """
    from landscape.core.kernels import get_kernel

    if spec is None:
        return ("exp",)
    items = [a.strip() for a in spec.split(",")] if isinstance(spec, str) else list(spec)
    out = []
    for a in items:
        if not isinstance(a, str):
            raise TypeError(f"activations must be names (str), got {type(a).__name__}")
        if isinstance(spec, str) and not a:
            continue  # "exp,,linear" and a trailing comma: empty items of the text are skipped
        get_kernel(a)  # raises 'unknown activation ... known: ...'
        out.append(a)  # as given: the config stores (and hashes) the names as written
    if not out:
        raise ValueError("activations must name at least one kernel head activation")
    return tuple(out)


# ---------------------------------------------------------------------- tasks
def task_kind(spec: str, *, composite: bool = False) -> str:
    """Check and normalise a task name: ``"gp"`` → ``"gp:exp"``; data kernels checked.

    Args:
        spec: ``"linear"``, ``"gp"``, ``"gp:KERNEL"``, ``"classification"`` or ``"features"``.
        composite: the data kernel is given as composite terms (then the name is ``"gp"``, kept).

    Returns:
        The canonical name (what a config stores).

    Raises:
        TypeError: not a string.
        ValueError: an unknown kind (the kinds are listed), an argument to a kind without one,
            or a softmax data kernel.
    """
    from landscape._checks import check_choice
    from landscape.core.kernels import get_kernel

    if not isinstance(spec, str):
        raise TypeError(f"task must be a str, got {type(spec).__name__}")
    kind, _, kern = spec.partition(":")
    check_choice("task", kind, TASKS)
    if composite:
        if spec != "gp":
            raise ValueError(f"data_kernel terms give the kernel of task 'gp'; got task {spec!r} (write task='gp')")
        return spec
    if kind == "gp":
        kern = kern or "exp"
        if get_kernel(kern).normalised:
            raise ValueError(f"task 'gp:{kern}': a softmax kernel is not a data kernel; use e.g. 'gp:exp'")
        return f"gp:{kern}"
    if kern:
        raise ValueError(f"task {kind!r} takes no ':' argument, got {spec!r}")
    return spec


def task(kind: str, d: int, n: int, *, sigma: torch.Tensor | None = None, prior: str = "identity",
         covariates: str | None = None, noise: float = 0.0, probs: Sequence[float] = (0.5, 0.5),
         margin: float = 0.0, flip: float = 0.0, data_kernel: Any = None,
         dtype: torch.dtype = torch.float64) -> Any:
    r"""Build a prompt distribution.

    Args:
        kind: ``"linear"`` (:class:`~landscape.core.tasks.LinearRegression`), ``"gp[:KERNEL]"``
            (:class:`~landscape.core.tasks.KernelGP`, default kernel ``exp``), ``"classification"``
            (:class:`~landscape.core.tasks.LinearClassification`) or ``"features"``
            (:class:`~landscape.core.tasks.OrthonormalFeatures`).
        d, n: dimension and context length.
        sigma: :math:`\Sigma` (``None`` = identity; see :func:`covariance`).
        prior: linear regression: :math:`w^* \sim N(0, I)` (``"identity"``) or
            :math:`N(0, \Sigma^{-1})` (``"inverse"``).
        covariates: ``"gaussian"`` or ``"sphere"`` (``None``: sphere for GP data, else Gaussian).
        noise: label noise std (linear, gp).
        probs: feature probabilities (features).
        margin, flip: classification margin and label-flip probability.
        data_kernel: GP data kernel given as an object or composite terms (:func:`kernel`);
            overrides ``KERNEL`` of ``"gp:KERNEL"``.
        dtype: sample dtype.

    Returns:
        The task.

    Raises:
        ValueError: an unknown kind, a prior other than ``identity`` off the linear task, a
            covariance for the features task, or arguments the task rejects.
    """
    from landscape._checks import check_choice
    from landscape.core.tasks import KernelGP, LinearClassification, LinearRegression, OrthonormalFeatures

    name = task_kind(kind, composite=data_kernel is not None and kind == "gp")
    base, _, kern = name.partition(":")
    check_choice("task_cov", prior, PRIORS)
    if prior == "inverse" and base != "linear":
        raise ValueError(f"task_cov='inverse' applies to the linear task only, not {base!r}")
    if covariates is not None:
        check_choice("covariates", covariates, COVARIATES)
    if base == "linear":
        return LinearRegression(d, n, sigma, covariates or "gaussian", None if prior == "identity" else "inverse",
                                noise, dtype)
    if base == "gp":
        k = kernel(data_kernel if data_kernel is not None else kern)
        return KernelGP(d, n, k, sigma, covariates or "sphere", noise=noise, dtype=dtype)
    if base == "classification":
        return LinearClassification(d, n, sigma, covariates or "gaussian", margin, flip, dtype)
    if sigma is not None:
        raise ValueError("the features task (orthonormal feature tokens) takes no covariance; use sigma='identity'")
    return OrthonormalFeatures(d, n, tuple(probs), dtype=dtype)


def default_data(attention_kind: str, heads: Sequence[Any]) -> str:
    """The task name a model's data defaults to: ``linear`` for linear attention, GP data otherwise.

    Args:
        attention_kind: ``"linear"`` or ``"kernel"``.
        heads: the kernel heads' activations (names or kernels).

    Returns:
        ``"linear"``, or ``"gp:K"`` with ``K`` the first head's kernel (``exp`` for softmax heads:
        Cheng et al.'s data kernel of softmax attention).
    """
    if attention_kind == "linear":
        return "linear"
    first = kernel(heads[0])
    return "gp:" + ("exp" if first.normalised else kernel_name(first))


def family_task(fam: "Family", dtype: torch.dtype = torch.float64) -> "Task":
    r"""The prompt distribution a family's statement is about.

    Linear families: regression with the family's declared prior (``Family.prior``;
    :math:`w^* \sim N(0, \Sigma^{-1})` for ``pgd``, ``pgd-relaxed``, ``pgd-identity``, Ahn et al.
    Theorems 3–4; :math:`N(0, I)` otherwise); kernel families: GP data with the first head's kernel
    on whitened spherical inputs (Cheng et al.; ``exp`` for softmax heads).

    Args:
        fam: the family.
        dtype: sample dtype.

    Returns:
        The task.
    """
    prob = fam.problem
    if prob.attention == "linear":
        return task("linear", prob.d, prob.n, sigma=prob.sigma, prior=fam.prior or "identity", dtype=dtype)
    first = kernel(prob.activations[0])
    return task("gp", prob.d, prob.n, sigma=prob.sigma, covariates="sphere", dtype=dtype,
                data_kernel=kernel("exp") if first.normalised else first)


def describe_task(data: "Task | HasTask", sigma_spec: Any = None) -> dict[str, Any]:
    r"""The record of a task that every output carries: its kind, the prior of :math:`w^*` and :math:`\Sigma`.

    Args:
        data: a task (any of :func:`task`'s) or an exact-loss oracle with a ``task`` attribute.
        sigma_spec: the spec :math:`\Sigma` was given as (recorded as written), if any.

    Returns:
        ``{"kind", "prior", "prior_text", "sigma", "sigma_matrix", "covariates", "noise", ...}``:
        ``prior`` is ``"identity"``/``"inverse"`` for regression (``None`` where the task has no
        :math:`w^*` prior), ``sigma_matrix`` the matrix (nested lists) or ``None`` for the identity;
        GP tasks add ``kernel``.
    """
    from landscape.core.tasks import KernelGP, LinearClassification, LinearRegression, OrthonormalFeatures

    data = getattr(data, "task", data)
    sig = getattr(data, "sigma", None)
    out: dict[str, Any] = {"kind": type(data).__name__}
    if isinstance(data, LinearRegression):
        out.update(kind="linear", prior="identity" if data.task_cov is None else "inverse")
    elif isinstance(data, KernelGP):
        out.update(kind="gp", prior=None, kernel=data.kernel.name)
    elif isinstance(data, LinearClassification):
        out.update(kind="classification", prior="identity")
    elif isinstance(data, OrthonormalFeatures):
        out.update(kind="features", prior="identity")
    else:
        out["prior"] = None
    out["prior_text"] = {"identity": "w* ~ N(0, I)", "inverse": "w* ~ N(0, Σ^-1)", None: "none (GP labels)"}[out["prior"]]
    out["sigma"] = sigma_spec if isinstance(sigma_spec, str) or sigma_spec is None else "matrix"
    out["sigma_matrix"] = None if sig is None else [[float(x) for x in row] for row in sig.double().tolist()]
    out["covariates"] = getattr(data, "covariates", None)
    out["noise"] = float(getattr(data, "noise", 0.0) or 0.0)
    return out


def task_line(record: Mapping[str, Any]) -> str:
    """One line of text for a :func:`describe_task` record (what the text outputs print)."""
    kern = f" (kernel {record['kernel']})" if record.get("kernel") else ""
    sigma = record.get("sigma") or ("identity" if record.get("sigma_matrix") is None else "matrix")
    cov = f", covariates {record['covariates']}" if record.get("covariates") else ""
    return (f"task: {record['kind']}{kern}; prior {record['prior_text']}; Σ = {sigma}{cov}, "
            f"noise {record.get('noise', 0.0):g}")


class HasTask(Protocol):
    """Anything that carries its prompt distribution as ``task`` (e.g. an exact-loss oracle,
    :class:`~landscape.numeric.oracles.ExactLoss`): what :func:`describe_task` also accepts."""

    @property
    def task(self) -> "Task": ...


# ---------------------------------------------------------------------- families
@dataclass(frozen=True)
class FamilyDeclaration:
    r"""What a family states about the setting it lives in (before it is built).

    Attributes:
        attention: ``"linear"`` or ``"kernel"``, or ``None`` when the family does not say.
        prior: ``"identity"`` (:math:`w^* \sim N(0, I)`), ``"inverse"`` (:math:`N(0, \Sigma^{-1})`),
            or ``None`` when the family does not say (then :math:`N(0, I)`).
    """

    attention: str | None = None
    prior: str | None = None


def declared(name: Any) -> FamilyDeclaration:
    """The attention and prior a family declares.

    Built-ins: :data:`~landscape.theory.families.FAMILY_ATTENTION` and
    :data:`~landscape.theory.families.FAMILY_PRIOR`. A user file ``file.py:NAME``: its module-level
    ``ATTENTION`` and ``PRIOR`` (this imports the file, which only happens for a family the user
    names; see :func:`landscape.theory.families.load_family`). ``None`` (no family): nothing.

    Args:
        name: a family name, a :class:`~landscape.theory.families.Family` or ``None``.

    Returns:
        The :class:`FamilyDeclaration`.

    Raises:
        ValueError: a user file that cannot be imported or declares a value that is not accepted.
    """
    from landscape.theory.families import FAMILY_ATTENTION, FAMILY_PRIOR, Family, family_file_declaration, is_family_file

    if name is None:
        return FamilyDeclaration()
    if isinstance(name, Family):
        return FamilyDeclaration(name.problem.attention, name.prior)
    if name in FAMILY_ATTENTION:
        return FamilyDeclaration(FAMILY_ATTENTION[name], FAMILY_PRIOR.get(name))
    if is_family_file(name):
        att, pri = family_file_declaration(name)
        return FamilyDeclaration(att, pri)
    return FamilyDeclaration()


def attention(requested: str | None, family: Any = None, activation_given: bool = False) -> str:
    """Resolve the attention of a model (``auto``: the family's declaration, else kernel iff activations).

    Args:
        requested: ``"auto"`` (or ``None``), ``"linear"`` or ``"kernel"``.
        family: the family name, if any.
        activation_given: whether head activations were given.

    Returns:
        ``"linear"`` or ``"kernel"``.

    Raises:
        ValueError: an unknown value, or one the family's declaration contradicts.
    """
    from landscape._checks import check_choice

    req = requested or "auto"
    check_choice("attention", req, ("auto", *ATTENTIONS))
    want = declared(family).attention
    if req == "auto":
        return want if want is not None else ("kernel" if activation_given else "linear")
    if want is not None and want != req:
        raise ValueError(f"family {family!r} needs {want} attention, got --attention {req}")
    return req


def prior(requested: str | None, family: Any = None, data: str = "linear") -> str:
    r"""Resolve the prior of :math:`w^*` (``auto``: the family's declaration on linear data, else identity).

    Args:
        requested: ``"auto"`` (or ``None``), ``"identity"`` or ``"inverse"``.
        family: the family name, if any.
        data: the task name (the prior applies to ``"linear"`` only).

    Returns:
        ``"identity"`` or ``"inverse"``.

    Raises:
        ValueError: an unknown value.
    """
    from landscape._checks import check_choice

    req = requested or "auto"
    check_choice("task_cov", req, ("auto", *PRIORS))
    if req != "auto":
        return req
    if data != "linear":
        return "identity"
    return declared(family).prior or "identity"


def family(name: "str | Family", problem: "Problem") -> "Family":
    """A family by name (built-in or ``file.py:NAME``) built for ``problem``.

    Args:
        name: the name or a :class:`~landscape.theory.families.Family`.
        problem: the :class:`~landscape.theory.families.Problem`.

    Returns:
        The family, with its declared prior.

    Raises:
        ValueError: an unknown name (the known ones are listed) or a family/problem mismatch.
    """
    from landscape.theory.families import get_family

    return get_family(name, problem)


# ---------------------------------------------------------------------- masks, devices, dtypes
def mask(spec: "ModelSpec", name: str) -> dict[str, torch.Tensor]:
    """Boolean masks of the free entries of a training mask name (:data:`MASKS`).

    Args:
        spec: the architecture.
        name: ``"full"``, ``"paper"`` or ``"sparse"``.

    Returns:
        Parameter name → bool tensor.

    Raises:
        ValueError: an unknown name (the names are listed).
    """
    return _masks.make_mask(spec, _masks.canonical_mask(name, MASKS))


def device(spec: str | torch.device) -> torch.device:
    """Resolve a device name: ``"auto"`` is CUDA when available, else the CPU.

    Args:
        spec: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or a ``torch.device``.

    Returns:
        The device.

    Raises:
        TypeError: not a string or device.
        ValueError: an unknown or unsupported device, or CUDA asked for where it is not available.
    """
    if isinstance(spec, torch.device):
        spec = str(spec)
    if not isinstance(spec, str):
        raise TypeError(f"device must be a str, got {type(spec).__name__}")
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(spec)
    except RuntimeError:
        raise ValueError(f"unknown device {spec!r}; accepted: {_DEVICE_FORMS}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {spec!r} requested but CUDA is not available; use 'cpu' or 'auto'")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {spec!r}; accepted: {_DEVICE_FORMS}")
    return dev


def dtype_name(spec: str | torch.dtype) -> str:
    """The name (``"float32"``/``"float64"``) of a dtype given by name or as a ``torch.dtype``.

    Raises:
        ValueError: another dtype (the accepted ones are listed).
    """
    if isinstance(spec, torch.dtype):
        names = {v: k for k, v in DTYPES.items()}
        if spec not in names:
            raise ValueError(f"dtype must be one of {tuple(DTYPES)}, got {spec}")
        return names[spec]
    from landscape._checks import check_choice

    return check_choice("dtype", spec, tuple(DTYPES))


def dtype(spec: str | torch.dtype) -> torch.dtype:
    """The ``torch.dtype`` of a dtype name (or dtype).

    Raises:
        ValueError: another dtype (the accepted ones are listed).
    """
    return DTYPES[dtype_name(spec)]


# ---------------------------------------------------------------------- paper presets
PRESETS: dict[str, dict[str, Any]] = {
    "ahn2023": {"attention": "linear", "mask": "paper", "fixed": (("P", "corner", 1.0),), "init_std": 1e-4},
    "ahn2023-p0": {"attention": "linear", "mask": "sparse", "fixed": (("P", "corner", 1.0),), "init_std": 1e-4},
    "cheng2024": {"attention": "kernel", "covariates": "sphere", "optimizer": "adam", "resample_every": 10},
}
"""Preset name → the :class:`~landscape.experiment.train.TrainConfig` fields it sets (see :func:`preset`)."""

def preset(name: str) -> dict[str, Any]:
    r"""The :class:`~landscape.experiment.train.TrainConfig` fields of a paper's parameterisation.

    ``TrainConfig(**preset("ahn2023"), d=5, n=20, layers=3, ...)`` trains the model as the paper's
    code does; the other fields (sizes, learning rate, schedule, the optimizer where the preset does
    not name it) stay the caller's, so a study can run "as in the paper" and "as in landscape" side
    by side. The presets:

    * ``"ahn2023"`` — Ahn, Cheng, Daneshmand, Sra (2023), the model of their official code: each
      linear head is :math:`P = \begin{bmatrix}P' & 0\\ 0 & 1\end{bmatrix}`,
      :math:`Q = \begin{bmatrix}Q' & 0\\ 0 & 0\end{bmatrix}` with the :math:`d\times d` blocks
      :math:`P', Q'` trained from :math:`N(0, 10^{-8})` entries and the value scale
      :math:`P_{d+1,d+1} = 1` held (``mask="paper"`` less the held corner; Theorem 4's relaxed form
      :math:`P_l = \mathrm{diag}(B_l, 1)`, :math:`Q_l = -\mathrm{diag}(A_l, 0)`).
    * ``"ahn2023-p0"`` — the same with :math:`P' = 0` held too: :math:`P_l = \mathrm{diag}(0_{d\times d}, 1)`,
      :math:`Q_l = -\mathrm{diag}(A_l, 0)`, the form of their Lemma 1 ("the L-layer transformer is L
      steps of preconditioned gradient descent with preconditioners :math:`A_l`") and Theorem 3
      (``mask="sparse"`` less the held corner).
    * ``"cheng2024"`` — Cheng, Chen, Sra (2024), *Transformers implement functional gradient descent
      to learn non-linear functions in context* (ICML 2024, arXiv 2312.06528), the training setting
      of their experiments (section "Training Algorithm" and the data paragraph, as quoted at
      https://ri.k117.org/papers/transformers_implement_functional_gradient_descent_to_learn_nonlinear_functions_in_context__1ec02fd2):

      - ``attention="kernel"``: the paper's transformers with a non-linear attention
        :math:`\tilde h` (linear, ReLU, exp, softmax heads; the activations stay the caller's);
      - ``covariates="sphere"``: "the covariates :math:`x^{(i)}` are drawn iid from the unit
        sphere" (then :math:`x = \Sigma^{1/2}\xi` with the caller's ``sigma``);
      - ``optimizer="adam"``: "we train the Transformer using ADAM with gradient clipping" — Adam,
        not AdamW as other summaries of the paper say;
      - ``resample_every=10``: "we resample the minibatch every 10 steps".

      Verified but left to the caller (sizes and thresholds, as for ``ahn2023``): the minibatch of
      30 000 prompts per step (``batch``); gradient clipping, whose threshold is not stated (and is
      not known to be per seed, as ``clip`` is). Not verified, so not set: the learning rate (not
      stated); the initialisation :math:`N(0, 0.1^2)` with the masked blocks zeroed, the trained
      blocks :math:`V = \mathrm{diag}(A, r)` and keys/queries reading :math:`x` only (``mask="paper"``),
      and the official code's data kernel :math:`e^{\langle\xi,\xi'\rangle/2}` — these come from
      descriptions of the official code that no source at hand confirms (the quoted paper defines
      :math:`K_{\exp}(u, v) = \exp(\langle u, v\rangle)`), so pass ``mask``, ``init_std`` and
      the data kernel (``task``) explicitly.

    Not part of a preset: Ahn et al.'s per-matrix gradient clipping (each ``P``, ``Q`` of each head
    clipped to norm 0.01) differs from :class:`~landscape.experiment.train.TrainConfig`'s per-seed
    global-norm ``clip``, so the optimisation is left to the caller.

    The dict also holds ``preset=name``: the run's provenance (``TrainConfig.preset``), which is not
    part of its identity — a config from a preset hashes as the same fields typed out, and
    :func:`~landscape.experiment.train.train` records the name beside the stored run
    (:func:`~landscape.experiment.train.stored_preset`; ``landscape runs --show``).

    Args:
        name: a name of :data:`PRESETS`.

    Returns:
        A fresh dict of TrainConfig field → value: the fields of :data:`PRESETS` and ``preset``.

    Raises:
        ValueError: an unknown name (the names are listed).
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(repr(k) for k in PRESETS)}")
    return {**PRESETS[name], "preset": name}

