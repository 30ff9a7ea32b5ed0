r"""The fused CPU training kernel: forward and hand-derived backward, SIMD across prompts.

One call computes, for every seed ``s`` of a stack, the loss
:math:`f_s = \frac1B\sum_b (\mathrm{TF}_{\theta_s}(Z_{sb}) - y_{sb})^2` and its gradient, for the
built-in attention kinds: linear attention (``P, Q`` heads) and kernel attention (``V, B, C``
heads) with the ``linear``, ``relu``, ``exp`` and ``softmax`` activations. The model is
:func:`landscape.core.model.forward`, the one reference:
:math:`Z_{l+1} = Z_l + \frac1n\sum_h W_h K_h` with :math:`W_h = V_h X` the value vectors of the
sources :math:`X = Z_l M`, :math:`K_h = \tilde h(S_h)` the activated scores
:math:`S_h = b_h^\top c_h`, :math:`b_h = B_h X` (sources) and :math:`c_h = C_h Z_l` (receivers). A
linear-attention head is the same computation with :math:`V = P`, :math:`B = I`, :math:`C = Q` and
the identity activation. The prediction is :math:`-[Z_L]_{D,N}`; the last layer computes only
the query's column.

Backward pass (reverse mode written out; :math:`G = \partial f / \partial Z_{l+1}`,
:math:`\hat G = G / n`), per head:

.. math::
    \partial W = \hat G K^\top,\quad \partial K = W^\top \hat G,\quad
    \partial V = \partial W X^\top,\quad \partial S = \tilde h'(\partial K),\quad
    \partial b = c\,\partial S^\top,\quad \partial c = b\,\partial S,\quad
    \partial B = \partial b\, X^\top,\quad \partial C = \partial c\, Z_l^\top,

and :math:`\partial Z_l = G + [V^\top \partial W + B^\top \partial b,\ 0] + C^\top \partial c` (the
bracket fills the source columns). :math:`\tilde h'` is :math:`\partial K` (linear),
:math:`\partial K \odot [K > 0]` (ReLU), :math:`\gamma K\odot\partial K` (``exp`` with scale
:math:`\gamma`) and :math:`K\odot(\partial K - \mathbf 1\,\mathrm{diag}(K^\top\partial K)^\top)` per
receiver column (softmax over the sources).

Prompts are processed in blocks of :data:`BLOCK`, stored with the prompt index innermost, and
every matrix product of a block is computed on explicit lane vectors (one AVX-512 register of
float32 per entry, :mod:`landscape.engine._simd`) in register tiles of 6 × 4 outputs (float32;
4 × 4 in float64), so the accumulators stay in registers over the whole reduction; the
activations and their derivatives run on the same vectors (ReLU and its derivative as the
products store their outputs), and a block's prompts are loaded by gathers. Nothing larger
than one block's activations (about 200 kB at d = 5, n = 20, L = 3) is ever allocated. Every sum is taken in a fixed order with fused multiply-adds,
so the bits do not depend on the vector width the machine has.
With several torch threads
(:func:`landscape.set_threads`) the seeds are split into contiguous ranges run by that many
threads (each seed on one thread, its blocks in order), so the numbers do not depend on the
thread count and are the same bits every run.

:func:`fused_predict` runs the same block forward without the backward pass (the held-out loss of
a run trained on this engine).

The kernel is compiled by numba (a maintained LLVM JIT distributed as binary wheels: nothing to
compile on the user's machine, no C toolchain); numba is an optional dependency (the ``fast``
extra) and :func:`available` says whether it can be used.
"""

from __future__ import annotations

import functools
import math
import os
import sys
from typing import Any

import torch

from landscape.core.kernels import get_kernel
from landscape.core.model import ModelSpec, param_shapes

__all__ = ["BLOCK", "available", "unsupported_reason", "fused_grad", "fused_predict", "head_codes",
           "flops_per_prompt", "linear_prompts"]

BLOCK = 16
"""Prompts per block: the lanes of one vector (the kernel module's ``BL``). Measured at 32 seeds ×
1024 prompts, d = 5, n = 20, L = 3, ReLU kernel attention, float32, one thread, on the 2-core
benchmark machine shared with other jobs (load average 2-4): 42-45 ms per training step
(gradient + Adam, ``benchmarks/bench_train.py``), about 51 % of the single-core float32 matmul
peak. Alternated in one process against the kernel before its 6 × 4 float32 tiles, gathered
block loads and ReLU applied as the products store (process CPU time), the gradient takes
0.73-0.80 × the time (42 against 55 ms; 37 against 49 ms); linear attention 0.77 ×, softmax and
exp 0.96-0.99 × (their time is the scalar ``exp``). The kernel before those, whose loops over
64-prompt blocks were left to LLVM's loop vectoriser (256-bit vectors, accumulators reloaded from
L1 on every term, scalar activations), took 122-167 ms at load 13-15."""

_LINEAR_ATTN, _K_LINEAR, _K_RELU, _K_EXP, _K_SOFTMAX = 0, 1, 2, 3, 4
_KERNEL_CODES = {"linear": _K_LINEAR, "relu": _K_RELU, "exp": _K_EXP, "softmax": _K_SOFTMAX}

_kernel: Any = None
_predict: Any = None
_linear_prompts: Any = None
_import_error: str | None = None


def _load() -> bool:
    """Import numba and the kernel module lazily (once per process); False if numba is missing."""
    global _kernel, _predict, _linear_prompts, _import_error
    if _kernel is not None:
        return True
    if _import_error is not None:
        return False
    if os.environ.get("LANDSCAPE_NO_NUMBA"):
        _import_error = "LANDSCAPE_NO_NUMBA is set"
        return False
    try:
        _prefer_wide_vectors()
        import landscape.engine._kernel as mod
    except ImportError as exc:  # pragma: no cover - depends on the environment
        _import_error = f"numba is not installed ({exc}); pip install 'landscape[fast]'"
        return False
    _kernel = mod.kernel
    _predict = mod.predict_kernel
    _linear_prompts = mod.linear_prompts
    return True


def _prefer_wide_vectors() -> None:
    """Let LLVM use 512-bit vectors on AVX-512 machines (before numba is first imported).

    LLVM's tuning for recent Intel cores prefers 256-bit vectors (``prefer-256-bit``), which
    halves the kernel's throughput there (its vectors are 16 float32 lanes, one AVX-512
    register). numba reads the target from ``NUMBA_CPU_NAME`` / ``NUMBA_CPU_FEATURES`` when it is
    imported, so they are set to the host's own name and features minus that preference, and only
    when numba is not imported yet and neither variable is set by the user. The kernel's results
    do not depend on the vector width (explicit fused multiply-adds in a fixed order).
    """
    if "numba" in sys.modules or "NUMBA_CPU_NAME" in os.environ or "NUMBA_CPU_FEATURES" in os.environ:
        return
    try:
        import llvmlite.binding as ll
    except ImportError:  # pragma: no cover - numba's own dependency
        return
    features = ll.get_host_cpu_features().flatten()
    if "+avx512f" not in features.split(","):
        return
    os.environ["NUMBA_CPU_NAME"] = ll.get_host_cpu_name()
    os.environ["NUMBA_CPU_FEATURES"] = features + ",-prefer-256-bit"


def available() -> bool:
    """Whether the fused kernel can run here (numba importable)."""
    return _load()


def head_codes(spec: ModelSpec) -> tuple[list[int], list[float]] | None:
    """Kernel codes and ``exp`` scales of the heads of ``spec``; ``None`` if a head is not built in."""
    found = _head_codes(spec)
    return None if found is None else (list(found[0]), list(found[1]))


@functools.lru_cache(maxsize=64)
def _head_codes(spec: ModelSpec) -> tuple[tuple[int, ...], tuple[float, ...]] | None:
    """:func:`head_codes`, once per spec (it rebuilds each built-in kernel to compare: a sympy
    construction, about 2 ms, that every training step would otherwise repeat)."""
    codes, scales = [], []
    for head in spec.heads:
        if head.kind == "linear":
            codes.append(_LINEAR_ATTN)
            scales.append(1.0)
            continue
        k = head.kernel
        if k.name not in _KERNEL_CODES:
            return None
        kw = dict(k.params)
        if k != get_kernel(k.name, **kw):  # a user kernel that borrowed a built-in name
            return None
        codes.append(_KERNEL_CODES[k.name])
        scales.append(float(kw.get("scale", 1.0)))
    return tuple(codes), tuple(scales)


def unsupported_reason(spec: ModelSpec, device: torch.device | str, dtype: torch.dtype) -> str | None:
    """Why the fused kernel cannot train ``spec`` on ``device`` in ``dtype`` (``None``: it can).

    It covers CPU tensors in float32/float64 and heads of the built-in kinds (linear attention;
    kernel attention with ``linear``, ``relu``, ``exp``, ``softmax``), with any training mask (the
    mask is applied to the gradient afterwards, as in every engine).
    """
    if torch.device(device).type != "cpu":
        return f"the fused kernel runs on the CPU, not on {torch.device(device)}"
    if dtype not in (torch.float32, torch.float64):
        return f"the fused kernel needs float32 or float64, not {dtype}"
    if _head_codes(spec) is None:
        names = ", ".join(h.describe() for h in spec.heads)
        return f"the fused kernel covers linear attention and the linear/relu/exp/softmax kernels, not {names}"
    if not _load():
        return f"the fused kernel needs numba: {_import_error}"
    return None


def flops_per_prompt(spec: ModelSpec, n: int) -> int:
    """Floating-point operations (multiply and add counted apart) of one prompt's forward and
    backward pass in the kernel's formulation: matrix products only, the last layer computing
    only the query column, the first layer no input gradient."""
    D, N, L = spec.token_dim, n + 1, spec.layers
    total = 0
    for l in range(L):
        for head in spec.heads:
            proj_b = 0 if head.kind == "linear" else D * D * n
            if l < L - 1:
                fwd = proj_b + D * D * N + D * n * N + D * D * n + D * n * N
                bwd = 2 * D * n * N + D * D * n + 2 * D * n * N + D * D * N + (proj_b and D * D * n)
                if l > 0:
                    bwd += D * D * n + (proj_b and D * D * n) + D * D * N
            else:
                fwd = proj_b + D * D + D * n + D * n + n
                bwd = 2 * n + D * n + D * n + 2 * D * n + (proj_b and D * D * n) + D * D + D * n \
                    + (proj_b and D * D * n) + D * D
            total += 2 * (fwd + bwd)
    return total


@functools.lru_cache(maxsize=64)
def _kernel_args(spec: ModelSpec) -> tuple[Any, ...]:
    """The kernel's description of ``spec`` (once per spec): head codes, ``exp`` scales, the flat
    offset of every (layer, head) and ``L, H``, shared by every call."""
    import numpy as np

    codes_scales = _head_codes(spec)
    assert codes_scales is not None
    codes, scales = codes_scales
    L, H = spec.layers, len(spec.heads)
    offs = []
    i = 0
    names = iter(param_shapes(spec).items())
    for l in range(L):
        row = []
        for h, head in enumerate(spec.heads):
            row.append(i)
            for _ in head.param_names:
                _, (a, b) = next(names)
                i += a * b
        offs.append(row)
    # writeable arrays (numba compiles read-only ones as another signature); the kernels never write them
    return (np.asarray(codes, dtype=np.int64), np.asarray(scales, dtype=np.float64),
            np.asarray(offs, dtype=np.int64), L, H)


def _run_seeds(fn: Any, S: int, per_seed: tuple[Any, ...], shared: tuple[Any, ...], outs: tuple[Any, ...]) -> None:
    """``fn(*per_seed, *shared, *outs)`` over all ``S`` seeds (the leading axis of ``per_seed`` and
    ``outs``), split into contiguous seed ranges over :func:`torch.get_num_threads` threads (the
    kernels release the GIL). Every seed is computed by one thread from start to end, so the bits
    do not depend on the split."""
    workers = min(S, max(1, torch.get_num_threads()))
    if workers == 1:
        fn(*per_seed, *shared, *outs)
        return
    from concurrent.futures import ThreadPoolExecutor

    cuts = [S * w // workers for w in range(workers + 1)]
    with ThreadPoolExecutor(workers) as pool:
        futs = [pool.submit(fn, *(x[a:b] for x in per_seed), *shared, *(o[a:b] for o in outs))
                for a, b in zip(cuts[:-1], cuts[1:]) if b > a]
        for fu in futs:
            fu.result()


def fused_grad(flat: torch.Tensor, spec: ModelSpec, Z: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Per-seed loss and gradient by the fused kernel (see the module docstring).

    Args:
        flat: ``(S, P)`` stacked flat parameters (:func:`landscape.core.model.flatten_params` order).
        spec: architecture; every head of a built-in kind (:func:`unsupported_reason` is ``None``).
        Z: ``(S, B, D, N)`` prompts, same dtype, on the CPU.
        y: ``(S, B)`` targets.

    Returns:
        ``(grad (S, P), loss (S,))`` in the dtype of ``flat``.

    Raises:
        ValueError: the kernel does not cover this case (the reason is named).
    """
    why = unsupported_reason(spec, flat.device, flat.dtype)
    if why is not None:
        raise ValueError(why)
    S = Z.shape[0]
    dt = flat.dtype
    import numpy as np

    f = flat.detach().contiguous().numpy()
    z = Z.detach().to(dt).contiguous().numpy()
    t = y.detach().to(dt).contiguous().numpy()
    grad = np.zeros_like(f)
    loss = np.zeros(S, dtype=np.float64)
    _run_seeds(_kernel, S, (f, z, t), _kernel_args(spec), (grad, loss))
    return torch.from_numpy(grad), torch.from_numpy(loss).to(dt)


def fused_predict(flat: torch.Tensor, spec: ModelSpec, Z: torch.Tensor) -> torch.Tensor:
    r"""Per-seed predictions :math:`\mathrm{TF}_{\theta_s}(Z_b)` by the kernel's forward pass alone.

    The same forward as :func:`fused_grad` (the same block code), without the backward pass and
    without materialising more than one block's activations: the held-out evaluation of
    :func:`landscape.experiment.train.train` runs on it.

    Args:
        flat: ``(S, P)`` stacked flat parameters (:func:`landscape.core.model.flatten_params` order).
        spec: architecture; every head of a built-in kind (:func:`unsupported_reason` is ``None``).
        Z: ``(E, D, N)`` prompts shared by every seed, or ``(S, E, D, N)`` prompts per seed, on
            the CPU (converted to the dtype of ``flat``).

    Returns:
        ``(S, E)`` predictions :math:`-[Z_L]_{D,N}` in the dtype of ``flat``.

    Raises:
        ValueError: the kernel does not cover this case (the reason is named), or ``Z`` has
            neither shape.
    """
    why = unsupported_reason(spec, flat.device, flat.dtype)
    if why is not None:
        raise ValueError(why)
    S = flat.shape[0]
    if Z.dim() == 3:
        Z = Z.unsqueeze(0)
    if Z.dim() != 4 or Z.shape[0] not in (1, S):
        raise ValueError(f"Z must be (E, D, N) or ({S}, E, D, N) for {S} seeds, got {tuple(Z.shape)}")
    import numpy as np

    f = flat.detach().contiguous().numpy()
    z = Z.detach().to(flat.dtype).contiguous().numpy()
    pred = np.zeros((S, Z.shape[1]), dtype=f.dtype)
    per_seed, shared = ((f,), (z,)) if Z.shape[0] == 1 else ((f, z), ())
    _run_seeds(_predict, S, per_seed, (*shared, *_kernel_args(spec)), (pred,))
    return torch.from_numpy(pred)


def linear_prompts(X: torch.Tensor, w: torch.Tensor, noise: float, eps: torch.Tensor | None,
                   y: torch.Tensor, Z: torch.Tensor) -> bool:
    r"""Linear-regression labels and prompts into ``y`` and ``Z`` in one compiled pass, where it applies.

    Writes :math:`y = \mathrm{linear\_labels}(w, X) + \text{noise}\cdot\varepsilon` and
    :math:`Z = \mathrm{embed}(X, y)` (:func:`landscape.core.tasks.linear_labels`,
    :func:`~landscape.core.tasks.embed`) with the same bits as those torch operations (every product
    and sum rounded, in the same order), reading ``X`` once instead of once per operation: what
    :class:`landscape.core.tasks.BufferedSampler` uses for each training batch. With ``noise > 0``
    ``eps`` is overwritten by ``noise * eps`` (as ``eps.mul_(noise)``).

    Args:
        X: ``(B, d, m)`` covariates; w: ``(B, d)`` task vectors; eps: ``(B, m)`` standard-normal
            label noise (``None`` when ``noise`` is 0); y: ``(B, m)`` and Z: ``(B, d + 1, m)``
            outputs. All contiguous CPU tensors of one dtype (float32 or float64).

    Returns:
        ``True`` when written; ``False`` (nothing written) where it does not apply: numba missing,
        another device or dtype, non-contiguous tensors. The caller then uses the torch operations.
    """
    tensors = (X, w, y, Z) if eps is None else (X, w, y, Z, eps)
    if X.dtype not in (torch.float32, torch.float64) or any(
            t.device.type != "cpu" or t.dtype != X.dtype or not t.is_contiguous() for t in tensors):
        return False
    if not _load():
        return False
    e = y.numpy() if eps is None else eps.numpy()  # a placeholder array of the right type when noise is 0
    scale = e.dtype.type(noise if eps is not None else 0.0)  # in the tensors' dtype, as torch's scalar product
    _linear_prompts(X.numpy(), w.numpy(), e, scale, y.numpy(), Z.numpy())
    return True
