r"""Prompt distributions for in-context learning.

Every sampler is a frozen dataclass with ``sample(batch, generator) -> PromptBatch``; the
``torch.Generator`` is the only source of randomness, so the same seed gives a bit-identical batch.
A prompt is the matrix (tokens as columns, query last with its label slot zeroed)

.. math::
    Z_0 = \begin{bmatrix} x_1 & \cdots & x_n & x_{n+1} \\ y_1 & \cdots & y_n & 0 \end{bmatrix}.

Distributions:

* :class:`LinearRegression` — :math:`x \sim N(0, \Sigma)` or :math:`\Sigma^{1/2}\cdot` uniform
  sphere, :math:`w^* \sim N(0, \Sigma_w)`, :math:`y = w^{*\top} x + \varepsilon` (Ahn et al. 2023).
* :class:`KernelGP` — :math:`x = \Sigma^{1/2}\xi`, :math:`(y_1..y_{n+1}) \sim N(0, K(\Xi))` with the
  kernel evaluated on the whitened inputs :math:`\xi`; a non-PSD kernel (ReLU) is repaired by
  absolute eigenvalues :math:`K_+ = Q|\Lambda|Q^\top` (Cheng, Chen, Sra 2024).
* :class:`LinearClassification` — :math:`y = \pm\,\mathrm{sign}(w^\top x)`, optional margin and flips.
* :class:`OrthonormalFeatures` — tokens drawn from K orthonormal features with probabilities
  :math:`p_k`, :math:`y = \langle w, x\rangle` (Huang, Cheng, Liang 2023).

What every distribution provides is the :class:`Task` protocol (``d``, ``n``, ``dtype`` and
``sample``); :class:`NormalsTask` adds what the quasi-random and antithetic samplers of
:mod:`landscape.numeric.oracles` need (prompts as a function of standard-normal draws:
:class:`LinearRegression`, :class:`KernelGP`). A user distribution needs no base class: a frozen
dataclass with these members is a task.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, ClassVar, Literal, Protocol, Sequence, runtime_checkable

import torch

from landscape._checks import check_int
from landscape.core.kernels import Kernel, SumKernel, get_kernel

__all__ = [
    "Task",
    "NormalsTask",
    "PromptBatch",
    "BufferedSampler",
    "linear_labels",
    "LinearRegression",
    "KernelGP",
    "LinearClassification",
    "OrthonormalFeatures",
    "embed",
    "check_covariance",
    "sqrtm_psd",
    "random_rotation",
    "random_covariance",
    "AHN_SPECTRUM",
]

AHN_SPECTRUM = (1.0, 1.0, 0.25, 0.0625, 1.0)
"""The spectrum ``D`` of ``Σ = Uᵀ D U`` in Ahn et al. (2023)'s experiments (d = 5)."""

Covariates = Literal["gaussian", "sphere"]


@dataclass(frozen=True)
class PromptBatch:
    """A batch of prompts.

    Attributes:
        Z: ``(B, d+1, n+1)`` prompt matrices, query label slot zero.
        target: ``(B,)`` the hidden query label :math:`y_{n+1}`.
        X: ``(B, d, n+1)`` covariates, query last.
        y: ``(B, n+1)`` labels, the query's included.
        latent: whatever else the distribution drew (``w``: task vectors; ``xi``: whitened inputs;
            ``K``: the data Gram matrix ...), for reference algorithms and Bayes predictors.
    """

    Z: torch.Tensor
    target: torch.Tensor
    X: torch.Tensor
    y: torch.Tensor
    latent: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return self.X.shape[-1] - 1

    @property
    def d(self) -> int:
        return self.X.shape[-2]

    def to(self, *args, **kwargs) -> "PromptBatch":
        """Move/cast every tensor (as ``Tensor.to``)."""
        return PromptBatch(self.Z.to(*args, **kwargs), self.target.to(*args, **kwargs), self.X.to(*args, **kwargs),
                           self.y.to(*args, **kwargs), {k: v.to(*args, **kwargs) for k, v in self.latent.items()})


@runtime_checkable
class Task(Protocol):
    """A prompt distribution: what training, the loss oracles, the certificate and the probes use.

    ``isinstance(obj, Task)`` checks that the members exist (not their types or behaviour).

    Attributes:
        d: covariate dimension (tokens have ``d + 1`` rows).
        n: context length (a prompt has ``n + 1`` tokens, the query last).
        dtype: floating dtype of the prompts.
    """

    d: int
    n: int
    dtype: torch.dtype

    def sample(self, batch: int, generator: torch.Generator) -> PromptBatch:
        """``batch`` prompts; ``generator`` is the only source of randomness."""
        ...


@runtime_checkable
class NormalsTask(Task, Protocol):
    """A :class:`Task` whose prompts are a deterministic function of standard-normal draws.

    ``from_normals({k: randn(*shape) for k, shape in normal_shapes(B).items()})`` has the law of
    ``sample(B, g)``; the samplers ``qmc`` and ``antithetic`` of :mod:`landscape.numeric.oracles`
    choose the draws (``antithetic`` flips the sign of the draws named in ``label_normals``).
    """

    label_normals: ClassVar[tuple[str, ...]]

    def normal_shapes(self, batch: int) -> dict[str, tuple[int, ...]]:
        """Name → shape of each standard-normal draw ``batch`` prompts use."""
        ...

    def from_normals(self, normals: dict[str, torch.Tensor]) -> PromptBatch:
        """The prompts made from the given draws."""
        ...


def embed(X: torch.Tensor, y: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Build ``Z0`` from covariates ``X (B, d, n+1)`` and labels ``y (B, n+1)``, zeroing the query label.

    Args:
        X: ``(B, d, n+1)`` covariates, query last.
        y: ``(B, n+1)`` labels, the query's included (its slot is zeroed in ``Z0``).
        out: optional ``(B, d+1, n+1)`` tensor to write ``Z0`` into (no other tensor is allocated);
            ``None`` builds a new one (differentiable, usable under ``torch.func`` transforms).

    Returns:
        ``Z0 (B, d+1, n+1)`` (``out`` when given).

    Raises:
        ValueError: mismatched shapes, or ``out`` of the wrong shape.
    """
    if X.ndim != 3 or y.ndim != 2 or X.shape[0] != y.shape[0] or X.shape[-1] != y.shape[-1]:
        raise ValueError(f"embed needs X (B, d, n+1) and y (B, n+1); got X {tuple(X.shape)}, y {tuple(y.shape)}")
    if out is None:
        y_ctx = torch.cat([y[:, :-1], torch.zeros_like(y[:, -1:])], dim=1)
        return torch.cat([X, y_ctx.unsqueeze(1)], dim=1)
    d = X.shape[1]
    want = (X.shape[0], d + 1, X.shape[2])
    if tuple(out.shape) != want:
        raise ValueError(f"embed: out must have shape {want} (B, d+1, n+1), got {tuple(out.shape)}")
    out[:, :d].copy_(X)
    out[:, d, :-1].copy_(y[:, :-1])
    out[:, d, -1].zero_()
    return out


# ---------------------------------------------------------------------- covariance helpers
def check_covariance(sigma: torch.Tensor, d: int, name: str = "sigma") -> torch.Tensor:
    """Validate a covariance: shape ``(d, d)``, finite, symmetric, positive definite.

    Returns:
        ``sigma`` as a float tensor.

    Raises:
        TypeError: not a tensor.
        ValueError: wrong shape, not symmetric, not positive definite.
    """
    if not isinstance(sigma, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape ({d}, {d}), got {type(sigma).__name__}")
    if sigma.shape != (d, d):
        raise ValueError(f"{name} must have shape ({d}, {d}), got {tuple(sigma.shape)}")
    if not sigma.is_floating_point():
        sigma = sigma.double()
    if not torch.isfinite(sigma).all():
        raise ValueError(f"{name} has non-finite entries")
    scale = sigma.abs().max().clamp_min(1e-300)
    if (sigma - sigma.T).abs().max() > 1e-10 * scale:
        raise ValueError(f"{name} is not symmetric (max |Σ - Σᵀ| = {(sigma - sigma.T).abs().max():.3g}); "
                         "a covariance must be symmetric positive definite")
    ev = torch.linalg.eigvalsh(sigma.double())
    if ev.min() <= 1e-12 * ev.abs().max().clamp_min(1e-300):
        raise ValueError(f"{name} is not positive definite (smallest eigenvalue {ev.min():.3g}); "
                         "a covariance must be symmetric positive definite")
    return sigma


def sqrtm_psd(sigma: torch.Tensor, power: float = 0.5) -> torch.Tensor:
    """Symmetric matrix power :math:`\\Sigma^{p}` via the eigendecomposition (``p = ±1/2`` typical)."""
    ev, U = torch.linalg.eigh(sigma)
    return (U * ev.clamp_min(0 if power > 0 else torch.finfo(ev.dtype).tiny) ** power) @ U.T


def random_rotation(d: int, generator: torch.Generator, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """A Haar-distributed orthogonal matrix (QR of a Gaussian with the sign convention fixed)."""
    check_int("d", d, minimum=1)
    G = torch.randn(d, d, generator=generator, dtype=dtype, device=generator.device)
    Q, R = torch.linalg.qr(G)
    return Q * torch.sign(torch.diagonal(R)).unsqueeze(0)


def random_covariance(
    d: int,
    generator: torch.Generator,
    spectrum: Sequence[float] | None = None,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """:math:`\\Sigma = U^\\top D U` with a random rotation ``U`` (Ahn et al.'s anisotropic covariance).

    Args:
        d: dimension.
        generator: randomness for ``U``.
        spectrum: eigenvalues ``D``; defaults to :data:`AHN_SPECTRUM` for d = 5, else ``linspace(1, 0.1)``.
        dtype: dtype.

    Raises:
        ValueError: wrong spectrum length or a non-positive eigenvalue.
    """
    check_int("d", d, minimum=1)
    if spectrum is None:
        spectrum = AHN_SPECTRUM if d == 5 else torch.linspace(1.0, 0.1, d, dtype=torch.float64).tolist()
    spectrum = [float(s) for s in spectrum]
    if len(spectrum) != d:
        raise ValueError(f"spectrum must have d = {d} entries, got {len(spectrum)}")
    if min(spectrum) <= 0:
        raise ValueError(f"spectrum must be positive, got {spectrum}")
    U = random_rotation(d, generator, dtype)
    D = torch.tensor(spectrum, dtype=dtype, device=U.device)
    S = U.T @ torch.diag(D) @ U
    return (S + S.T) / 2


def _whitened(batch: int, d: int, m: int, covariates: str, g: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    xi = torch.randn(batch, d, m, generator=g, dtype=dtype, device=g.device)
    if covariates == "sphere":
        xi = xi / xi.norm(dim=1, keepdim=True)
    elif covariates != "gaussian":
        raise ValueError(f"covariates must be 'gaussian' or 'sphere', got {covariates!r}")
    return xi


Pool = dict[str, torch.Tensor]
"""Output buffers reused from one batch to the next (:class:`BufferedSampler`), by name."""

PromptPass = Callable[[torch.Tensor, torch.Tensor, float, torch.Tensor | None, torch.Tensor, torch.Tensor], bool]
"""``prompt_pass(X, w, noise, eps, y, Z) -> bool``: writes ``y = linear_labels(w, X) + noise * eps`` and
``Z = embed(X, y)`` with the bits of those torch operations and returns ``True``, or writes nothing and
returns ``False`` where it does not apply (e.g. :func:`landscape.engine.fused.linear_prompts`)."""


def _buffer(pool: Pool | None, name: str, shape: tuple[int, ...], dtype: torch.dtype,
            device: torch.device | str) -> torch.Tensor:
    """``pool[name]`` when it has this shape, dtype and device, else a new (uninitialised) tensor stored there."""
    if pool is None:
        return torch.empty(shape, dtype=dtype, device=device)
    buf = pool.get(name)
    if buf is None or tuple(buf.shape) != tuple(shape) or buf.dtype != dtype or buf.device != torch.device(device):
        buf = pool[name] = torch.empty(shape, dtype=dtype, device=device)
    return buf


def linear_labels(w: torch.Tensor, X: torch.Tensor, out: torch.Tensor | None = None,
                  scratch: torch.Tensor | None = None) -> torch.Tensor:
    r"""The labels :math:`y_{bj} = \sum_k w_{bk} X_{bkj}` of the linear tasks, ``(B, d)`` weights against ``(B, d, m)`` columns.

    The products are rounded and added in increasing :math:`k` (:math:`d` element-wise products and
    :math:`d - 1` additions, never a fused multiply-add), so the bits are fixed by the inputs: the
    same with or without ``out``, on every machine (a batched matrix product leaves the order and the
    fusing of the sum to the BLAS). Where the BLAS sums in that order unfused it equals the batched
    product ``w.unsqueeze(1) @ X`` bit for bit (it does on the machine of docs/benchmarks.md), at
    half its cost for the papers' small :math:`d`.

    Args:
        w: ``(B, d)`` task vectors.
        X: ``(B, d, m)`` covariates, one column per token.
        out: a ``(B, m)`` tensor to write the labels into; ``scratch``, another, then holds the
            products.
        scratch: with ``out``, a ``(B, m)`` work tensor.

    Returns:
        The ``(B, m)`` labels (``out`` when given).
    """
    d = X.shape[1]
    if out is None:
        y = X[:, 0] * w[:, :1]
        for k in range(1, d):
            y = y + X[:, k] * w[:, k:k + 1]
        return y
    torch.mul(X[:, 0], w[:, :1], out=out)
    for k in range(1, d):
        out.add_(torch.mul(X[:, k], w[:, k:k + 1], out=scratch))
    return out


def _draw_normals(task: NormalsTask, batch: int, g: torch.Generator, pool: Pool | None = None) -> dict[str, torch.Tensor]:
    """I.i.d. standard-normal draws for :meth:`from_normals`, one ``torch.randn`` per entry of ``normal_shapes``
    (into the buffers of ``pool`` when given: ``torch.randn(out=)`` on a contiguous buffer draws the same numbers)."""
    shapes = task.normal_shapes(batch)
    if pool is None:
        return {k: torch.randn(*shape, generator=g, dtype=task.dtype, device=g.device) for k, shape in shapes.items()}
    return {k: torch.randn(*shape, generator=g, out=_buffer(pool, f"normal.{k}", shape, task.dtype, g.device))
            for k, shape in shapes.items()}


def _normals(task: NormalsTask, normals: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """The draws of ``normals`` in ``normal_shapes`` order, checked (one batch size, the right shapes)."""
    if not isinstance(normals, dict) or "xi" not in normals or not isinstance(normals["xi"], torch.Tensor):
        raise ValueError("from_normals needs a dict of standard-normal tensors with at least 'xi'")
    want = task.normal_shapes(int(normals["xi"].shape[0]))
    out = []
    for k, shape in want.items():
        v = normals.get(k)
        if not isinstance(v, torch.Tensor) or tuple(v.shape) != shape:
            got = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
            raise ValueError(f"from_normals: draw {k!r} must have shape {shape}, got {got}")
        out.append(v.to(task.dtype))
    return out


def _validate_common(d: int, n: int, dtype: torch.dtype) -> None:
    check_int("d", d, minimum=1)
    check_int("n", n, minimum=1)
    if dtype not in (torch.float32, torch.float64):
        raise TypeError(f"dtype must be torch.float32 or torch.float64, got {dtype}")


def _sigma_half(sigma: torch.Tensor | None, d: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor | None:
    if sigma is None:
        return None
    return sqrtm_psd(sigma.to(torch.float64)).to(dtype=dtype, device=device)


# ---------------------------------------------------------------------- distributions
@dataclass(frozen=True)
class LinearRegression:
    r"""Noisy linear regression prompts (Ahn et al. 2023).

    Attributes:
        d, n: dimension and context length.
        sigma: covariance :math:`\Sigma` of ``x`` (``None`` = identity).
        covariates: ``"gaussian"`` (:math:`x\sim N(0,\Sigma)`) or ``"sphere"``
            (:math:`x = \Sigma^{1/2}\xi`, :math:`\xi` uniform on :math:`S^{d-1}`).
        task_cov: covariance :math:`\Sigma_w` of :math:`w^*` (``None`` = identity); Ahn's Theorem 3
            uses :math:`\Sigma^{-1}` (``task_cov="inverse"``).
        noise: label noise standard deviation.
        dtype: sample dtype.
    """

    d: int
    n: int
    sigma: torch.Tensor | None = None
    covariates: Covariates = "gaussian"
    task_cov: torch.Tensor | Literal["identity", "inverse"] | None = None
    noise: float = 0.0
    dtype: torch.dtype = torch.float64

    def __post_init__(self) -> None:
        _validate_common(self.d, self.n, self.dtype)
        if self.covariates not in ("gaussian", "sphere"):
            raise ValueError(f"covariates must be 'gaussian' or 'sphere', got {self.covariates!r}")
        if self.sigma is not None:
            check_covariance(self.sigma, self.d)
        if isinstance(self.task_cov, torch.Tensor):
            check_covariance(self.task_cov, self.d, "task_cov")
        elif self.task_cov not in (None, "identity", "inverse"):
            raise ValueError(f"task_cov must be a matrix, 'identity' or 'inverse', got {self.task_cov!r}")
        if self.noise < 0:
            raise ValueError(f"noise must be >= 0, got {self.noise}")

    def task_covariance(self) -> torch.Tensor | None:
        """:math:`\\Sigma_w` as a matrix (``None`` for identity)."""
        if isinstance(self.task_cov, torch.Tensor):
            return self.task_cov
        if self.task_cov == "inverse" and self.sigma is not None:
            return torch.linalg.inv(self.sigma.to(torch.float64))
        return None

    label_normals: ClassVar[tuple[str, ...]] = ("w", "noise")
    r"""The standard-normal draws whose joint sign flip negates every label (:math:`w^*, \varepsilon \to -w^*, -\varepsilon`
    gives :math:`y \to -y` with the covariates unchanged): the antithetic pairs of
    :mod:`landscape.numeric.oracles`."""

    def normal_shapes(self, batch: int) -> dict[str, tuple[int, ...]]:
        r"""Shapes of the standard-normal draws behind ``batch`` prompts, in the order :meth:`sample` draws them.

        ``xi (B, d, n+1)`` (covariates; normalised to the sphere when ``covariates="sphere"``),
        ``w (B, d)`` (task vector before :math:`\Sigma_w^{1/2}`), ``noise (B, n+1)`` (when ``noise > 0``).
        """
        check_int("batch", batch, minimum=1)
        out = {"xi": (batch, self.d, self.n + 1), "w": (batch, self.d)}
        if self.noise > 0:
            out["noise"] = (batch, self.n + 1)
        return out

    def from_normals(self, normals: dict[str, torch.Tensor]) -> PromptBatch:
        """The prompts for given standard-normal draws (shapes :meth:`normal_shapes`); :meth:`sample` is
        ``from_normals`` of i.i.d. ``torch.randn`` draws, so quasi-random or antithetic draws plug in here.

        Raises:
            ValueError: missing draws or wrong shapes.
        """
        return self._prompts(normals, None)

    def _prompts(self, normals: dict[str, torch.Tensor], pool: Pool | None,
                 prompt_pass: PromptPass | None = None) -> PromptBatch:
        """:meth:`from_normals`; with a ``pool`` (whose draws ``normals`` are) the draws are transformed in
        place and the labels and ``Z0`` written into the pool's buffers, by the same operations (by
        ``prompt_pass`` when given and it applies: see :class:`BufferedSampler`)."""
        xi, w = _normals(self, normals)[:2]
        g_dev, d, dt = xi.device, self.d, self.dtype
        B, m = xi.shape[0], xi.shape[2]
        if self.covariates == "sphere":
            norm = xi.norm(dim=1, keepdim=True)
            xi = xi / norm if pool is None else torch.div(xi, norm, out=xi)
        half = _sigma_half(self.sigma, d, dt, g_dev)
        X = xi if half is None else half @ xi
        tc = self.task_covariance()
        if tc is not None:
            w = w @ _sigma_half(tc, d, dt, g_dev)
        if pool is None:
            y = linear_labels(w, X)
        else:  # the same products and sums, into buffers: in one pass of prompt_pass where it applies
            y, Z = _buffer(pool, "y", (B, m), dt, g_dev), _buffer(pool, "Z", (B, d + 1, m), dt, g_dev)
            eps = normals["noise"] if self.noise > 0 else None
            if prompt_pass is not None and prompt_pass(X, w, self.noise, eps, y, Z):
                return PromptBatch(Z, y[:, -1], X, y, {"w": w, "xi": xi})
            linear_labels(w, X, y, _buffer(pool, "y.scratch", (B, m), dt, g_dev))
        if self.noise > 0:
            if pool is None:
                y = y + self.noise * normals["noise"].to(dt)
            else:
                y.add_(normals["noise"].mul_(self.noise))
        Z = embed(X, y, None if pool is None else _buffer(pool, "Z", (B, d + 1, m), dt, g_dev))
        return PromptBatch(Z, y[:, -1], X, y, {"w": w, "xi": xi})

    def sample(self, batch: int, generator: torch.Generator) -> PromptBatch:
        """Draw ``batch`` prompts.

        Returns:
            :class:`PromptBatch` with ``latent = {"w": (B, d), "xi": (B, d, n+1)}``.
        """
        return self.from_normals(_draw_normals(self, batch, generator))


@dataclass(frozen=True)
class KernelGP:
    r"""Gaussian-process regression prompts (Cheng, Chen, Sra 2024).

    :math:`\xi_i` i.i.d. on the sphere (or Gaussian), :math:`x_i = \Sigma^{1/2}\xi_i`, and
    :math:`(y_1, \dots, y_{n+1}) \sim N(0, K(\Xi) + \text{jitter}\,I)` with the kernel on the whitened
    inputs. A kernel that is not PSD is repaired by absolute eigenvalues (``psd_repair="abs"``) or
    clipping (``"clip"``).

    Attributes:
        d, n: dimension and context length.
        kernel: data kernel (name, :class:`Kernel` or :class:`SumKernel`).
        sigma: covariance of ``x`` (``None`` = identity).
        covariates: ``"sphere"`` (default, as the paper) or ``"gaussian"``.
        jitter: added to the diagonal before the Cholesky factorisation.
        psd_repair: ``"abs"`` or ``"clip"``.
        noise: observation noise std added to the labels (part of the Bayes predictor).
        dtype: sample dtype.
    """

    d: int
    n: int
    kernel: Kernel | SumKernel | str = "exp"
    sigma: torch.Tensor | None = None
    covariates: Covariates = "sphere"
    jitter: float = 1e-8
    psd_repair: Literal["abs", "clip"] = "abs"
    noise: float = 0.0
    dtype: torch.dtype = torch.float64

    def __post_init__(self) -> None:
        _validate_common(self.d, self.n, self.dtype)
        k = get_kernel(self.kernel)
        if k.normalised:
            raise ValueError("a softmax (normalised) kernel is not a data kernel; use 'exp' for GP data")
        object.__setattr__(self, "kernel", k)
        if self.covariates not in ("gaussian", "sphere"):
            raise ValueError(f"covariates must be 'gaussian' or 'sphere', got {self.covariates!r}")
        if self.sigma is not None:
            check_covariance(self.sigma, self.d)
        if self.psd_repair not in ("abs", "clip"):
            raise ValueError(f"psd_repair must be 'abs' or 'clip', got {self.psd_repair!r}")
        if self.jitter < 0 or self.noise < 0:
            raise ValueError("jitter and noise must be >= 0")

    def gram(self, xi: torch.Tensor) -> torch.Tensor:
        """Data Gram matrix on whitened inputs ``xi (B, d, m)``, PSD-repaired, jitter included."""
        K = self.kernel.gram(xi, xi)
        K = (K + K.transpose(-1, -2)) / 2
        if self.kernel.psd is not True:
            ev, Q = torch.linalg.eigh(K)
            ev = ev.abs() if self.psd_repair == "abs" else ev.clamp_min(0)
            K = (Q * ev.unsqueeze(-2)) @ Q.transpose(-1, -2)
            K = (K + K.transpose(-1, -2)) / 2
        eye = torch.eye(K.shape[-1], dtype=K.dtype, device=K.device)
        return K + (self.jitter + self.noise**2) * eye

    label_normals: ClassVar[tuple[str, ...]] = ("z",)
    r"""The draws whose sign flip negates every label (:math:`z \to -z` gives :math:`y = Lz \to -y`)."""

    def normal_shapes(self, batch: int) -> dict[str, tuple[int, ...]]:
        r"""Shapes of the standard-normal draws behind ``batch`` prompts, in the order :meth:`sample` draws them:
        ``xi (B, d, n+1)`` (normalised to the sphere when ``covariates="sphere"``) and ``z (B, n+1, 1)``
        (labels :math:`y = L z`, :math:`LL^\top` the Gram matrix)."""
        check_int("batch", batch, minimum=1)
        return {"xi": (batch, self.d, self.n + 1), "z": (batch, self.n + 1, 1)}

    def sample(self, batch: int, generator: torch.Generator) -> PromptBatch:
        """Draw ``batch`` prompts.

        Returns:
            :class:`PromptBatch` with ``latent = {"xi": whitened inputs, "K": (B, n+1, n+1) Gram}``.
        """
        return self.from_normals(_draw_normals(self, batch, generator))

    def from_normals(self, normals: dict[str, torch.Tensor]) -> PromptBatch:
        """The prompts for given standard-normal draws (shapes :meth:`normal_shapes`); :meth:`sample` is
        ``from_normals`` of i.i.d. ``torch.randn`` draws.

        Raises:
            ValueError: missing draws or wrong shapes, or a singular Gram matrix.
        """
        return self._prompts(normals, None)

    def _prompts(self, normals: dict[str, torch.Tensor], pool: Pool | None,
                 prompt_pass: PromptPass | None = None) -> PromptBatch:
        """:meth:`from_normals`; with a ``pool`` (whose draws ``normals`` are) the covariates are normalised
        in place and ``Z0`` is written into the pool's buffer, by the same operations."""
        xi, z = _normals(self, normals)
        d, n, dt = self.d, self.n, self.dtype
        if self.covariates == "sphere":
            norm = xi.norm(dim=1, keepdim=True)
            xi = xi / norm if pool is None else torch.div(xi, norm, out=xi)
        # The Gram matrix and its Cholesky factor are formed in float64 whatever the sample dtype:
        # in float32 a smooth kernel's Gram matrix is numerically singular at modest n.
        K = self.gram(xi.to(torch.float64))
        L, info = torch.linalg.cholesky_ex(K)
        if bool((info != 0).any()):
            raise ValueError(
                f"the GP Gram matrix of kernel {self.kernel.name!r} is singular for some prompts "
                f"(n+1 = {n + 1} points, d = {d}); use jitter > 0 (got {self.jitter})"
            )
        y = (L @ z.to(torch.float64)).squeeze(-1).to(dt)
        half = _sigma_half(self.sigma, d, dt, xi.device)
        X = xi if half is None else half @ xi
        Z = embed(X, y, None if pool is None else _buffer(pool, "Z", (X.shape[0], d + 1, n + 1), dt, xi.device))
        return PromptBatch(Z, y[:, -1], X, y, {"xi": xi, "K": K.to(dt)})

    def bayes_prediction(self, batch: PromptBatch) -> torch.Tensor:
        """GP posterior mean :math:`k_q^\\top K_{nn}^{-1} y` (the Bayes-optimal predictor)."""
        K = batch.latent["K"].to(torch.float64)  # solved in float64 whatever the sample dtype
        Knn, kq = K[:, :-1, :-1], K[:, :-1, -1]
        sol = torch.linalg.solve(Knn, batch.y[:, :-1].to(torch.float64).unsqueeze(-1)).squeeze(-1)
        return (kq * sol).sum(-1).to(batch.y.dtype)


@dataclass(frozen=True)
class LinearClassification:
    r"""In-context linear classification: :math:`y_i = \mathrm{sign}(w^\top x_i)` (Zhang, Cao 2026).

    Attributes:
        d, n: dimension and context length.
        sigma: covariance of ``x``.
        covariates: ``"gaussian"`` or ``"sphere"``.
        margin: covariates with :math:`|w^\top x|/\lVert w\rVert < \text{margin}` are pushed out to the
            margin along ``w`` (so the data is separable with that margin).
        flip: probability of flipping a label.
        dtype: dtype.
    """

    d: int
    n: int
    sigma: torch.Tensor | None = None
    covariates: Covariates = "gaussian"
    margin: float = 0.0
    flip: float = 0.0
    dtype: torch.dtype = torch.float64

    def __post_init__(self) -> None:
        _validate_common(self.d, self.n, self.dtype)
        if self.sigma is not None:
            check_covariance(self.sigma, self.d)
        if self.margin < 0:
            raise ValueError(f"margin must be >= 0, got {self.margin}")
        if not 0 <= self.flip < 0.5:
            raise ValueError(f"flip must be in [0, 0.5), got {self.flip}")

    def sample(self, batch: int, generator: torch.Generator) -> PromptBatch:
        """Draw ``batch`` prompts (``latent = {"w": unit task vectors}``)."""
        check_int("batch", batch, minimum=1)
        g, d, n, dt = generator, self.d, self.n, self.dtype
        xi = _whitened(batch, d, n + 1, self.covariates, g, dt)
        half = _sigma_half(self.sigma, d, dt, g.device)
        X = xi if half is None else half @ xi
        w = torch.randn(batch, d, generator=g, dtype=dt, device=g.device)
        w = w / w.norm(dim=-1, keepdim=True)
        proj = linear_labels(w, X)  # (B, n+1)
        if self.margin > 0:
            sgn = torch.where(proj >= 0, 1.0, -1.0).to(dt)
            push = (self.margin - proj.abs()).clamp_min(0) * sgn
            X = X + w.unsqueeze(-1) * push.unsqueeze(1)
            proj = linear_labels(w, X)
        y = torch.where(proj >= 0, 1.0, -1.0).to(dt)
        if self.flip > 0:
            u = torch.rand(batch, n + 1, generator=g, dtype=dt, device=g.device)
            y = torch.where(u < self.flip, -y, y)
        return PromptBatch(embed(X, y), y[:, -1], X, y, {"w": w})


@dataclass(frozen=True)
class OrthonormalFeatures:
    r"""Feature-token prompts of Huang, Cheng, Liang (2023).

    ``K`` orthonormal features :math:`v_1..v_K \in \mathbb R^d` (the first K standard basis vectors,
    or given); every token and the query is :math:`v_k` with probability :math:`p_k`;
    :math:`y = \langle w, x\rangle` with :math:`w \sim N(0, I_d)`.

    Attributes:
        d, n: dimension and context length.
        probs: feature probabilities (length K ≤ d, positive, summing to one).
        features: ``(d, K)`` orthonormal columns (default: standard basis).
        dtype: dtype.
    """

    d: int
    n: int
    probs: Sequence[float] = (0.5, 0.5)
    features: torch.Tensor | None = None
    dtype: torch.dtype = torch.float64

    def __post_init__(self) -> None:
        _validate_common(self.d, self.n, self.dtype)
        p = torch.as_tensor(list(self.probs), dtype=torch.float64)
        if p.ndim != 1 or len(p) < 1 or len(p) > self.d:
            raise ValueError(f"probs must list K in [1, d={self.d}] probabilities, got {list(self.probs)}")
        if (p <= 0).any() or abs(float(p.sum()) - 1) > 1e-9:
            raise ValueError(f"probs must be positive and sum to 1, got {list(self.probs)}")
        object.__setattr__(self, "probs", tuple(float(x) for x in p))
        if self.features is not None:
            F = self.features
            if F.shape != (self.d, len(p)):
                raise ValueError(f"features must have shape ({self.d}, {len(p)}), got {tuple(F.shape)}")
            G = F.T.double() @ F.double()
            if (G - torch.eye(len(p), dtype=torch.float64)).abs().max() > 1e-8:
                raise ValueError("features must have orthonormal columns")

    @property
    def K(self) -> int:
        return len(self.probs)

    def feature_matrix(self, device: torch.device | str | None = None) -> torch.Tensor:
        """``(d, K)`` feature columns."""
        if self.features is not None:
            return self.features.to(dtype=self.dtype, device=device)
        return torch.eye(self.d, dtype=self.dtype, device=device)[:, : self.K]

    def sample(self, batch: int, generator: torch.Generator) -> PromptBatch:
        """Draw ``batch`` prompts (``latent = {"w", "feature": (B, n+1) feature indices}``)."""
        check_int("batch", batch, minimum=1)
        g, d, n, dt = generator, self.d, self.n, self.dtype
        p = torch.tensor(self.probs, dtype=torch.float64, device=g.device)
        idx = torch.multinomial(p.expand(batch, -1), n + 1, replacement=True, generator=g)
        F = self.feature_matrix(g.device)
        X = F.T[idx].transpose(1, 2)  # (B, d, n+1)
        w = torch.randn(batch, d, generator=g, dtype=dt, device=g.device)
        y = linear_labels(w, X)
        return PromptBatch(embed(X, y), y[:, -1], X, y, {"w": w, "feature": idx})


# ---------------------------------------------------------------------- reused buffers
class BufferedSampler:
    r"""``task.sample`` with the output buffers reused from one call to the next.

    ``BufferedSampler(task).sample(batch, generator)`` returns the same prompts as
    ``task.sample(batch, generator)``, bit for bit, and leaves ``generator`` in the same state: the
    same ``torch.randn`` draws in the same order (``out=`` a contiguous buffer), the same operations
    on them. For :class:`LinearRegression` and :class:`KernelGP` the draws, the labels (linear
    regression) and ``Z0`` are written into buffers allocated on the first call, so a training loop
    does not allocate (and page-fault in) a fresh batch of ``B (d+1)(n+1)`` numbers every step; other
    tasks are sampled by ``task.sample`` itself.

    The tensors of a returned :class:`PromptBatch` are overwritten by the next call: use it for a
    batch that is dead before the next one is drawn (a training step), never to keep batches.

    ``prompt_pass`` (a :data:`PromptPass`, e.g. the compiled
    :func:`landscape.engine.fused.linear_prompts`, which :func:`landscape.experiment.train.train`
    passes) writes the linear-regression labels and ``Z0`` in one pass over the covariates instead of
    one torch operation at a time; it must give the same bits, and where it declines (returns
    ``False``) the torch operations run.

    Attributes:
        task: the prompt distribution.
        prompt_pass: the one-pass label and prompt writer, or ``None``.
    """

    def __init__(self, task: Task, prompt_pass: PromptPass | None = None) -> None:
        self.task = task
        self.prompt_pass = prompt_pass
        self._pool: Pool = {}

    def sample(self, batch: int, generator: torch.Generator) -> PromptBatch:
        """Draw ``batch`` prompts into the reused buffers (see the class docstring).

        Args:
            batch: number of prompts.
            generator: the only source of randomness.

        Returns:
            The :class:`PromptBatch` ``task.sample(batch, generator)`` returns, its tensors in this
            sampler's buffers.
        """
        task = self.task
        if type(task) in (LinearRegression, KernelGP):
            return task._prompts(_draw_normals(task, batch, generator, self._pool), self._pool, self.prompt_pass)
        return task.sample(batch, generator)
