r"""The in-context transformer as a pure function of a flat parameter dict.

Tokens are **columns**. A prompt is ``Z0 = [[x_1 ... x_n x_{n+1}], [y_1 ... y_n 0]]`` of shape
``(d+1, n+1)``; the first ``n`` columns are *sources*, the query (last column) only receives.
With the mask :math:`M = \mathrm{diag}(I_n, 0)` every layer is

.. math::
    Z_{l+1} = Z_l + \frac{1}{n}\sum_h \mathrm{Attn}_{lh}(Z_l),

with two parameterisations of a head:

* ``"linear"`` (Ahn et al. 2023): :math:`\mathrm{Attn}_{P,Q}(Z) = P Z M (Z^\top Q Z)`,
  params ``P, Q`` of shape ``(D, D)``.
* ``"kernel"`` (Cheng, Chen, Sra 2024): :math:`\mathrm{Attn}_{V,B,C}(Z) = V Z M\,\tilde h(BZ, CZ)`,
  params ``V, B, C`` of shape ``(D, D)``; ``B`` acts on the source token, ``C`` on the receiving
  token. The papers' keys/queries read ``x`` only: that is the mask preset ``"paper"`` (label
  row/column of ``B, C`` zero). For softmax, :math:`\tilde h` is normalised over the ``n`` sources
  separately for every receiver, and the ``1/n`` is applied as for every activation.

The prediction is :math:`\mathrm{TF}(Z_0) = -[Z_L]_{d+1, n+1}`.

Parameters live in a flat ``dict[str, Tensor]`` keyed ``"layer{l}.head{h}.{P|Q|V|B|C}"``; a dict
whose tensors carry a leading seed axis is a stack of models, and ``torch.func.vmap`` over that
axis evaluates all of them at once. Nothing here writes in place, calls ``.item()`` or touches
the global RNG.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Mapping, Sequence

import torch

from landscape._checks import check_int, check_real, check_same_dtype_device
from landscape.core.kernels import Kernel, get_kernel
from landscape.core.masks import make_mask

__all__ = [
    "HeadSpec",
    "ModelSpec",
    "param_shapes",
    "init_params",
    "apply_mask",
    "forward",
    "predict",
    "stack_params",
    "unstack_params",
    "check_params",
    "flatten_params",
    "unflatten_params",
    "num_params",
    "change_of_basis",
    "whitening_transform",
]

HeadKind = Literal["linear", "kernel"]


@dataclass(frozen=True)
class HeadSpec:
    """One attention head.

    Attributes:
        kind: ``"linear"`` (params ``P, Q``) or ``"kernel"`` (params ``V, B, C``).
        activation: the kernel :math:`\tilde h` of a kernel head (name or :class:`Kernel`).
    """

    kind: HeadKind = "kernel"
    activation: Kernel | str = "linear"

    def __post_init__(self) -> None:
        if self.kind not in ("linear", "kernel"):
            raise ValueError(f"head kind must be 'linear' or 'kernel', got {self.kind!r}")
        if self.kind == "kernel":
            object.__setattr__(self, "activation", get_kernel(self.activation))

    @property
    def param_names(self) -> tuple[str, ...]:
        return ("P", "Q") if self.kind == "linear" else ("V", "B", "C")

    @property
    def kernel(self) -> Kernel:
        if self.kind != "kernel":
            raise AttributeError("a linear-attention head has no kernel")
        return self.activation  # type: ignore[return-value]

    def describe(self) -> str:
        return "linear-attention" if self.kind == "linear" else f"kernel[{self.kernel.name}]"


@dataclass(frozen=True)
class ModelSpec:
    """Architecture of an in-context transformer.

    Attributes:
        d: covariate dimension (tokens have ``token_dim = d + 1`` rows unless given).
        layers: number of layers ``L``.
        heads: head specs, the same in every layer.
        token_dim: rows of a token; defaults to ``d + 1``.
    """

    d: int
    layers: int
    heads: tuple[HeadSpec, ...] = field(default_factory=lambda: (HeadSpec("kernel", "linear"),))
    token_dim: int | None = None

    def __post_init__(self) -> None:
        for name in ("d", "layers"):
            check_int(f"ModelSpec.{name}", getattr(self, name), minimum=1)
        heads = tuple(self.heads)
        if not heads:
            raise ValueError("ModelSpec.heads must hold at least one HeadSpec")
        for h in heads:
            if not isinstance(h, HeadSpec):
                raise TypeError(f"ModelSpec.heads must hold HeadSpec objects, got {type(h).__name__}")
        object.__setattr__(self, "heads", heads)
        if self.token_dim is None:
            object.__setattr__(self, "token_dim", self.d + 1)
        else:
            check_int("ModelSpec.token_dim", self.token_dim, minimum=1)

    @classmethod
    def linear(cls, d: int, layers: int, heads: int = 1) -> "ModelSpec":
        """Linear attention ``P Z M (Zᵀ Q Z)`` (Ahn et al. 2023)."""
        return cls(d, layers, tuple(HeadSpec("linear") for _ in range(heads)))

    @classmethod
    def kernel(cls, d: int, layers: int, activations: str | Kernel | Sequence[str | Kernel] = "linear") -> "ModelSpec":
        """Kernel attention ``V Z M h(BZ, CZ)``, one head per activation (Cheng et al. 2024)."""
        if isinstance(activations, (str, Kernel)):
            activations = [activations]
        return cls(d, layers, tuple(HeadSpec("kernel", a) for a in activations))

    def key(self, layer: int, head: int, name: str) -> str:
        return f"layer{layer}.head{head}.{name}"

    def describe(self) -> str:
        """One line: layers, heads and sizes.

        >>> ModelSpec.linear(d=2, layers=1).describe()
        '1-layer linear-attention transformer (d=2, token_dim=3)'
        """
        heads = "+".join(h.describe() for h in self.heads)
        return f"{self.layers}-layer {heads} transformer (d={self.d}, token_dim={self.token_dim})"


def param_shapes(spec: ModelSpec) -> dict[str, tuple[int, int]]:
    """Names and shapes of every parameter of ``spec``, in a fixed order."""
    D = spec.token_dim
    out: dict[str, tuple[int, int]] = {}
    for l in range(spec.layers):
        for h, head in enumerate(spec.heads):
            for name in head.param_names:
                out[spec.key(l, h, name)] = (D, D)
    return out


# ---------------------------------------------------------------------- masks and init
# Mask names and their masks live in landscape.core.masks (re-exported here for old imports).


def apply_mask(params: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
    """Zero the entries that ``mask`` marks as not free (no in-place writes)."""
    if mask is None:
        return dict(params)
    return {k: torch.where(mask[k].to(v.device), v, torch.zeros_like(v)) if k in mask else v
            for k, v in params.items()}


def init_params(
    spec: ModelSpec,
    generator: torch.Generator,
    *,
    std: float = 0.1,
    mask: Mapping[str, torch.Tensor] | str | None = None,
    seeds: int | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> dict[str, torch.Tensor]:
    """Gaussian initialisation ``N(0, std^2)``, then the masked entries zeroed (Cheng et al.).

    Args:
        spec: architecture.
        generator: the only source of randomness (its device decides where sampling happens).
        std: standard deviation.
        mask: a mask dict, a mask name (:data:`landscape.core.masks.MASKS`, built by
            :func:`landscape.core.masks.make_mask`) or ``None`` (all free).
        seeds: if given, a leading axis of that many independent models.
        dtype: ``torch.float32`` or ``torch.float64``.
        device: target device (defaults to the generator's).

    Returns:
        The parameter dict (stacked along axis 0 when ``seeds`` is given).

    Raises:
        ValueError: ``std < 0`` or not finite, ``seeds < 1``.
        TypeError: non-floating dtype, a non-real ``std``, a non-integer ``seeds``.
    """
    check_real("std", std, nonnegative=True)
    if seeds is not None:
        check_int("seeds", seeds, minimum=1)
    if dtype not in (torch.float32, torch.float64):
        raise TypeError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    if isinstance(mask, str):
        mask = make_mask(spec, mask)
    lead = () if seeds is None else (seeds,)
    out = {}
    for name, shape in param_shapes(spec).items():
        t = torch.randn(lead + shape, generator=generator, dtype=dtype, device=generator.device) * std
        out[name] = t
    out = apply_mask(out, mask)
    if device is not None:
        out = {k: v.to(device) for k, v in out.items()}
    return out


def stack_params(param_list: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack parameter dicts along a new leading (seed) axis."""
    if not param_list:
        raise ValueError("stack_params needs at least one parameter dict")
    keys = list(param_list[0])
    for i, p in enumerate(param_list):
        if list(p) != keys:
            raise ValueError(f"parameter dict {i} has keys {sorted(p)}, expected {sorted(keys)}")
    return {k: torch.stack([p[k] for p in param_list]) for k in keys}


def unstack_params(params: Mapping[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    """Inverse of :func:`stack_params`."""
    sizes = {v.shape[0] for v in params.values()}
    if len(sizes) != 1:
        raise ValueError(f"stacked parameters disagree on the seed axis: sizes {sorted(sizes)}")
    S = sizes.pop()
    return [{k: v[i] for k, v in params.items()} for i in range(S)]


# ---------------------------------------------------------------------- validation
def check_params(spec: ModelSpec, params: Mapping[str, torch.Tensor], *, batch_dims: int = 0) -> None:
    """Raise a clear error if ``params`` does not fit ``spec``.

    Args:
        spec: architecture.
        params: parameter dict.
        batch_dims: leading (seed) axes allowed in front of every parameter.

    Raises:
        TypeError: non-tensor or non-floating values, mixed dtypes or devices
            (:func:`landscape._checks.check_same_dtype_device`).
        ValueError: missing/unexpected names or wrong shapes.
    """
    if not isinstance(params, Mapping):
        raise TypeError(f"params must be a dict[str, Tensor], got {type(params).__name__}")
    shapes = param_shapes(spec)
    missing = [k for k in shapes if k not in params]
    extra = [k for k in params if k not in shapes]
    if missing or extra:
        raise ValueError(
            f"params do not match {spec.describe()}: missing {missing[:6]}{'...' if len(missing) > 6 else ''}, "
            f"unexpected {extra[:6]}{'...' if len(extra) > 6 else ''}; expected names like {next(iter(shapes))!r}"
        )
    for k, shape in shapes.items():
        v = params[k]
        if not isinstance(v, torch.Tensor):
            raise TypeError(f"param {k!r} must be a torch.Tensor, got {type(v).__name__}")
        if not v.is_floating_point():
            raise TypeError(f"param {k!r} must be floating point, got {v.dtype}")
        if tuple(v.shape[v.ndim - 2:]) != shape or v.ndim != 2 + batch_dims:
            raise ValueError(f"param {k!r} has shape {tuple(v.shape)}, expected {batch_dims} leading axes + {shape}")
    first, *rest = shapes
    check_same_dtype_device(f"param {first!r}", params[first], **{f"param {k!r}": params[k] for k in rest})


def _check_tokens(spec: ModelSpec, Z: torch.Tensor, n_sources: int | None) -> int:
    if not isinstance(Z, torch.Tensor):
        raise TypeError(f"Z must be a torch.Tensor, got {type(Z).__name__}")
    if not Z.is_floating_point():
        raise TypeError(f"Z must be floating point, got {Z.dtype}")
    if Z.ndim < 2 or Z.shape[-2] != spec.token_dim:
        raise ValueError(
            f"Z must have shape (batch, {spec.token_dim}, N) (tokens as columns, token_dim = d+1 = {spec.token_dim}), "
            f"got {tuple(Z.shape)}"
        )
    N = Z.shape[-1]
    n = N - 1 if n_sources is None else n_sources
    if not 1 <= n <= N:
        raise ValueError(f"n_sources must be in [1, N={N}], got {n} (a prompt needs at least one context token)")
    return n


# ---------------------------------------------------------------------- forward
def _head_update(head: HeadSpec, p: Mapping[str, torch.Tensor], pre: str, Z: torch.Tensor, n: int) -> torch.Tensor:
    Zs = Z[..., :n]  # Z M: the sources
    if head.kind == "linear":
        P, Q = p[pre + "P"], p[pre + "Q"]
        scores = Zs.transpose(-1, -2) @ (Q @ Z)  # (…, n, N): z_i^T Q z_j
        return (P @ Zs) @ scores
    V, B, C = p[pre + "V"], p[pre + "B"], p[pre + "C"]
    scores = head.kernel.gram(B @ Zs, C @ Z)  # (…, n, N): h(B z_i, C z_j)
    return (V @ Zs) @ scores


def forward(
    params: Mapping[str, torch.Tensor],
    spec: ModelSpec,
    Z: torch.Tensor,
    *,
    n_sources: int | None = None,
    return_states: bool = False,
    validate: bool = True,
) -> torch.Tensor | list[torch.Tensor]:
    r"""Run the residual stream :math:`Z_{l+1} = Z_l + \frac1n \sum_h \mathrm{Attn}_{lh}(Z_l)`.

    Args:
        params: flat parameter dict (see module docstring), unbatched; use ``torch.func.vmap``
            for stacks of models.
        spec: architecture.
        Z: tokens ``(..., token_dim, N)``.
        n_sources: how many leading tokens are attention sources (default ``N - 1``: all but the
            query); the ``1/n`` scaling uses this ``n``.
        return_states: return ``[Z_0, ..., Z_L]`` instead of ``Z_L``.
        validate: check shapes and dtypes first (turn off inside hot loops that checked once).

    Returns:
        ``Z_L`` or the list of states.

    Raises:
        TypeError, ValueError: on parameters or tokens that do not fit ``spec``.
    """
    if validate:
        check_params(spec, params)
        n = _check_tokens(spec, Z, n_sources)
        check_same_dtype_device("params", next(iter(params.values())), Z=Z)
    else:
        n = Z.shape[-1] - 1 if n_sources is None else n_sources
    states = [Z]
    for l in range(spec.layers):
        upd = None
        for h, head in enumerate(spec.heads):
            u = _head_update(head, params, f"layer{l}.head{h}.", Z, n)
            upd = u if upd is None else upd + u
        Z = Z + upd / n
        states.append(Z)
    return states if return_states else Z


def predict(
    params: Mapping[str, torch.Tensor],
    spec: ModelSpec,
    Z: torch.Tensor,
    *,
    validate: bool = True,
) -> torch.Tensor:
    r"""Prediction :math:`\mathrm{TF}(Z_0) = -[Z_L]_{d+1,n+1}` for prompts ``Z`` of shape ``(..., d+1, n+1)``.

    Args:
        params: parameter dict.
        spec: architecture.
        Z: prompts, query label slot zero.
        validate: see :func:`forward`.

    Returns:
        ``(...,)`` predictions.
    """
    ZL = forward(params, spec, Z, validate=validate)
    return -ZL[..., -1, -1]


# ---------------------------------------------------------------------- flat views and changes of basis
def flatten_params(params: Mapping[str, torch.Tensor], spec: ModelSpec) -> torch.Tensor:
    """Concatenate every parameter (in :func:`param_shapes` order) into one vector.

    Leading batch axes are kept: a stack ``(S, D, D)`` per name gives ``(S, P)``.

    >>> spec = ModelSpec.linear(d=2, layers=1)
    >>> sorted(param_shapes(spec).items())
    [('layer0.head0.P', (3, 3)), ('layer0.head0.Q', (3, 3))]
    >>> params = {k: torch.ones(5, *shape) for k, shape in param_shapes(spec).items()}  # 5 seeds
    >>> flat = flatten_params(params, spec)
    >>> tuple(flat.shape), num_params(spec)
    ((5, 18), 18)
    >>> all(torch.equal(v, params[k]) for k, v in unflatten_params(flat, spec).items())
    True
    """
    shapes = param_shapes(spec)
    parts = []
    for k, shape in shapes.items():
        v = params[k]
        parts.append(v.reshape(v.shape[: v.ndim - 2] + (-1,)))
    return torch.cat(parts, dim=-1)


def unflatten_params(vec: torch.Tensor, spec: ModelSpec) -> dict[str, torch.Tensor]:
    """Inverse of :func:`flatten_params` (leading batch axes kept).

    Raises:
        ValueError: if the last axis of ``vec`` is not the total parameter count.
    """
    shapes = param_shapes(spec)
    total = sum(a * b for a, b in shapes.values())
    if vec.shape[-1] != total:
        raise ValueError(f"flat parameter vector has {vec.shape[-1]} entries, {spec.describe()} has {total}")
    out, i = {}, 0
    lead = vec.shape[:-1]
    for k, (a, b) in shapes.items():
        out[k] = vec[..., i : i + a * b].reshape(lead + (a, b))
        i += a * b
    return out


def num_params(spec: ModelSpec) -> int:
    """Total number of scalar parameters."""
    return sum(a * b for a, b in param_shapes(spec).values())


def change_of_basis(params: Mapping[str, torch.Tensor], spec: ModelSpec, T: torch.Tensor) -> dict[str, torch.Tensor]:
    r"""Parameters that act on tokens :math:`\zeta` as ``params`` act on :math:`Z = T\zeta`.

    If :math:`Z_0 = T\zeta_0` then :math:`Z_l = T\zeta_l` for every layer, where :math:`\zeta` runs
    through the model with :math:`P' = T^{-1}PT,\ Q' = T^\top Q T` (linear heads) and
    :math:`V' = T^{-1}VT,\ B' = BT,\ C' = CT` (kernel heads). With :math:`T = \mathrm{diag}(\Sigma^{1/2}, 1)`
    this is the whitening behind Ahn et al.'s theorems (:math:`A \mapsto \Sigma^{1/2}A\Sigma^{1/2}`); the
    prediction is unchanged because ``T`` leaves the label row alone.

    Args:
        params: parameter dict (leading batch axes allowed).
        spec: architecture.
        T: invertible ``(token_dim, token_dim)`` matrix.

    Returns:
        The transformed parameters.

    Raises:
        ValueError: wrong shape of ``T``.
    """
    D = spec.token_dim
    if T.shape != (D, D):
        raise ValueError(f"T must have shape ({D}, {D}), got {tuple(T.shape)}")
    Tinv = torch.linalg.inv(T)
    out = {}
    for k, v in params.items():
        kind = k.rsplit(".", 1)[1]
        if kind in ("P", "V"):
            out[k] = Tinv @ v @ T
        elif kind == "Q":
            out[k] = T.transpose(-1, -2) @ v @ T
        elif kind in ("B", "C"):
            out[k] = v @ T
        else:
            raise ValueError(f"unknown parameter name {k!r}")
    return out


def whitening_transform(sigma: torch.Tensor) -> torch.Tensor:
    r""":math:`T = \mathrm{diag}(\Sigma^{1/2}, 1)`, so that :math:`x = \Sigma^{1/2}\xi` maps whitened prompts to raw ones."""
    from landscape.core.tasks import sqrtm_psd  # local import: tasks imports kernels only

    d = sigma.shape[-1]
    T = torch.zeros(d + 1, d + 1, dtype=sigma.dtype, device=sigma.device)
    T[:d, :d] = sqrtm_psd(sigma)
    T[d, d] = 1
    return T
