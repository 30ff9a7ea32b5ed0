r"""``landscape check``: every construction against its reference algorithm on fresh prompts.

For each construction of :mod:`landscape.theory.constructions` (and, for functional GD, every built-in
activation, a user sympy kernel and a two-head composite kernel) this draws random inputs from
the seed, runs the transformer with ``return_states=True`` and the reference algorithm of
:mod:`landscape.theory.algorithms` with all iterates, and reports the largest normwise relative error

.. math:: \max_l \frac{\lVert \mathrm{readout}(Z_l) - \mathrm{iterate}_l\rVert_\infty}{\lVert \mathrm{iterate}_l\rVert_\infty}

over the layers ``l = 1..L``, against :data:`landscape.tolerances.CONSTRUCTION_RTOL`.
Before it starts, the memory is estimated from the sizes (:func:`check_memory`) and the run is
refused when it cannot fit; a run estimated to take long is announced on stderr.

Exit status 0 if every construction passes, 1 otherwise, 2 on bad arguments or sizes that do not
fit in memory.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from landscape.cli._args import add_command, positive_int, seed_int

__all__ = ["CheckResult", "CASES", "relative_error", "run_checks", "add_parser", "run"]

USER_KERNEL = "exp(-sqrt(r2))"
"""The user sympy kernel that ``check`` runs (Laplace, written by hand)."""


@dataclass(frozen=True)
class CheckResult:
    """Outcome of one construction check.

    Attributes:
        construction: builder name (``"functional_gd"`` ...).
        activation: attention activation(s) of the construction.
        max_relative_error: largest normwise relative error over layers ``1..L``.
        rtol: the tolerance it was held to.
        passed: ``max_relative_error <= rtol``.
    """

    construction: str
    activation: str
    max_relative_error: float
    rtol: float
    passed: bool


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    r"""Normwise relative error :math:`\lVert a - b\rVert_\infty / \lVert b\rVert_\infty` (absolute if ``b = 0``)."""
    scale = expected.abs().max()
    diff = (actual - expected).abs().max()
    return float(diff / scale) if scale > 0 else float(diff)


def _layerwise(trace: list[torch.Tensor], reference: torch.Tensor) -> float:
    """Max over layers ``l >= 1`` of the relative error; ``reference`` has the layer axis at 1."""
    return max(relative_error(trace[l], reference[:, l]) for l in range(1, len(trace)))


def _regression(d: int, n: int, batch: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    import torch

    import landscape.theory.algorithms as alg
    from landscape.core.kernels import get_kernel
    from landscape.theory.constructions import (
        functional_gd_construction, gd_plus_plus_construction, newton_schulz_construction,
        normalised_gd_construction, preconditioned_gd_construction,
    )

    F64 = torch.float64
    X = torch.randn(batch, d, n, generator=g, dtype=F64) / d**0.5
    y = torch.randn(batch, n, generator=g, dtype=F64)
    xq = torch.randn(batch, d, generator=g, dtype=F64) / d**0.5
    return X, y, xq


def _matrices(L: int, d: int, g: torch.Generator, scale: float) -> torch.Tensor:
    import torch

    import landscape.theory.algorithms as alg
    from landscape.core.kernels import get_kernel
    from landscape.theory.constructions import (
        functional_gd_construction, gd_plus_plus_construction, newton_schulz_construction,
        normalised_gd_construction, preconditioned_gd_construction,
    )

    F64 = torch.float64
    return scale * torch.randn(L, d, d, generator=g, dtype=F64) / d**0.5


CaseFn = Callable[[int, int, int, int, "torch.Generator"], float]


def _pgd(d: int, n: int, L: int, batch: int, g: torch.Generator) -> float:
    import torch

    import landscape.theory.algorithms as alg
    from landscape.core.kernels import get_kernel
    from landscape.theory.constructions import (
        functional_gd_construction, gd_plus_plus_construction, newton_schulz_construction,
        normalised_gd_construction, preconditioned_gd_construction,
    )

    F64 = torch.float64
    X, y, xq = _regression(d, n, batch, g)
    A = _matrices(L, d, g, 0.5)
    trace = preconditioned_gd_construction(A).trace(X, y, xq)
    w = alg.preconditioned_gd(X, y, A, return_iterates=True)  # (batch, L+1, d)
    return _layerwise(trace, torch.einsum("bld,bd->bl", w, xq))


def _gdpp(d: int, n: int, L: int, batch: int, g: torch.Generator) -> float:
    import torch

    import landscape.theory.algorithms as alg
    from landscape.core.kernels import get_kernel
    from landscape.theory.constructions import (
        functional_gd_construction, gd_plus_plus_construction, newton_schulz_construction,
        normalised_gd_construction, preconditioned_gd_construction,
    )

    F64 = torch.float64
    X, y, xq = _regression(d, n, batch, g)
    A, B = _matrices(L, d, g, 0.5), _matrices(L, d, g, 0.5)
    trace = gd_plus_plus_construction(A, B).trace(X, y, xq)
    ref = alg.gd_plus_plus(X, y, xq, A, B, return_iterates=True)
    return _layerwise(trace, ref.predictions)


def _fgd_case(activations: list[Kernel | str], composite: bool = False) -> CaseFn:
    def case(d: int, n: int, L: int, batch: int, g: torch.Generator) -> float:
        import torch

        import landscape.theory.algorithms as alg
        from landscape.core.kernels import get_kernel
        from landscape.theory.constructions import (
            functional_gd_construction, gd_plus_plus_construction, newton_schulz_construction,
            normalised_gd_construction, preconditioned_gd_construction,
        )

        F64 = torch.float64
        X, y, xq = _regression(d, n, batch, g)
        steps = (0.2 + 0.6 * torch.rand(L, generator=g, dtype=F64)).tolist()
        kernels = [get_kernel(a) for a in activations]
        if composite:
            k = max(1, d // 2)
            eye = torch.eye(d, dtype=F64)
            projections = [eye[:k], eye[k:] if d > 1 else eye]
            weights = [1.0, 0.5]
            c = functional_gd_construction(d, steps, kernels, projections, weights)
            kernel_fn, normalise = c.meta["kernel"], False
        else:
            c = functional_gd_construction(d, steps, kernels)
            # softmax: the un-normalised exp scores, normalised by the reference algorithm
            kernel_fn, normalise = kernels[0].scores, kernels[0].normalised
        trace = c.trace(X, y, xq)
        ref = alg.functional_gd(X, y, xq, kernel_fn, steps, normalise=normalise, return_iterates=True)
        return _layerwise(trace, ref.query_values)  # type: ignore[union-attr]

    return case


def _newton_schulz(d: int, n: int, L: int, batch: int, g: torch.Generator) -> float:
    import torch

    import landscape.theory.algorithms as alg
    from landscape.core.kernels import get_kernel
    from landscape.theory.constructions import (
        functional_gd_construction, gd_plus_plus_construction, newton_schulz_construction,
        normalised_gd_construction, preconditioned_gd_construction,
    )

    F64 = torch.float64
    M = torch.randn(batch, d, d, generator=g, dtype=F64) / d**0.5
    A = M @ M.transpose(-1, -2) + torch.eye(d, dtype=F64)
    trace = newton_schulz_construction(d, L).trace(A)
    ref = alg.newton_schulz(A, steps=L, return_iterates=True)
    return _layerwise(trace, ref)


def _normalised_gd(loss: str) -> CaseFn:
    def case(d: int, n: int, L: int, batch: int, g: torch.Generator) -> float:
        import torch

        import landscape.theory.algorithms as alg
        from landscape.core.kernels import get_kernel
        from landscape.theory.constructions import (
            functional_gd_construction, gd_plus_plus_construction, newton_schulz_construction,
            normalised_gd_construction, preconditioned_gd_construction,
        )

        F64 = torch.float64
        X = torch.randn(batch, d, n, generator=g, dtype=F64)
        w_star = torch.randn(batch, d, generator=g, dtype=F64)
        y = torch.where(torch.einsum("bdn,bd->bn", X, w_star) >= 0, 1.0, -1.0).to(F64)
        eta, c = 0.5, 2.0
        trace = normalised_gd_construction(d, eta, c, L, n, loss=loss).trace(X, y)  # type: ignore[arg-type]
        ref = alg.normalised_gd(X, y, L, eta, c, loss=loss, return_iterates=True)  # type: ignore[arg-type]
        return _layerwise(trace, ref)

    return case


def _cases() -> list[tuple[str, str, CaseFn]]:
    from landscape.core.kernels import Kernel, known_kernels

    cases: list[tuple[str, str, CaseFn]] = [
        ("preconditioned_gd", "linear-attention", _pgd),
        ("gd_plus_plus", "linear-attention", _gdpp),
    ]
    for name in known_kernels():
        cases.append(("functional_gd", name, _fgd_case([name])))
    user = Kernel.from_sympy(USER_KERNEL, name="user")
    cases.append(("functional_gd", f"user:{USER_KERNEL}", _fgd_case([user])))
    cases.append(("functional_gd", "exp+linear (2 heads)", _fgd_case(["exp", "linear"], composite=True)))
    cases.append(("newton_schulz", "linear-attention x2", _newton_schulz))
    cases.append(("normalised_gd", "softmax (exp loss)", _normalised_gd("exp")))
    cases.append(("normalised_gd", "softmax (log(1+sum exp) loss)", _normalised_gd("logsumexp1")))
    return cases


CASES: list[tuple[str, str, CaseFn]]
"""``(construction, activation, case)``; ``case(d, n, layers, batch, generator)`` returns the error.
Built on first use (it builds a sympy kernel), so that importing the command stays light."""


def __getattr__(name: str) -> Any:
    if name == "CASES":
        return globals().setdefault("CASES", _cases())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def run_checks(d: int = 3, n: int = 8, layers: int = 3, seed: int = 0, batch: int = 16,
               rtol: float | None = None) -> list[CheckResult]:
    """Run every case of :data:`CASES` on fresh prompts drawn from ``seed``.

    Args:
        d: covariate dimension (matrix size for Newton–Schulz).
        n: context length.
        layers: number of layers (= algorithm steps).
        seed: seed of the ``torch.Generator`` (each case gets its own stream ``seed, case index``).
        batch: prompts per case.
        rtol: tolerance on the relative error (default :data:`landscape.tolerances.CONSTRUCTION_RTOL`).

    Returns:
        One :class:`CheckResult` per case.

    Raises:
        ValueError, TypeError: non-integer or out-of-range sizes.
    """
    import torch

    from landscape._checks import check_int
    from landscape.tolerances import CONSTRUCTION_RTOL

    if rtol is None:
        rtol = CONSTRUCTION_RTOL
    d = check_int("d", d, minimum=1)
    n = check_int("n", n, minimum=1)
    layers = check_int("layers", layers, minimum=1)
    seed = check_int("seed", seed, minimum=0)
    batch = check_int("batch", batch, minimum=1)
    out = []
    for i, (name, activation, case) in enumerate(__getattr__("CASES")):
        g = torch.Generator().manual_seed(seed * 1000 + i)
        err = case(d, n, layers, batch, g)
        out.append(CheckResult(name, activation, err, rtol, bool(err <= rtol)))
    return out


CHECK_MEMORY_FACTOR = 8.0
"""Peak bytes per ``batch × (d+1) × (n+1) × layers`` float64 entry of one case, measured: 7.6 at
``batch 16000, d 8, n 16, layers 3`` (kernel scores dominate), 3.4 at ``batch 4000, layers 30``."""

CHECK_SECONDS_PER_LAYER = 0.012
"""Run time per layer of all the cases at small sizes (measured 2.3 s for 200 layers on one core)."""

CHECK_SECONDS_PER_ENTRY = 4.5e-6
"""Run time per ``batch × (d+1) × (n+1) × layers`` entry of all the cases at large sizes
(measured 3.5e-6 to 4.4e-6 s on one core of the 2-core test machine)."""


def check_sizes(d: int, n: int, layers: int, batch: int, prog: str = "landscape check") -> float:
    """Refuse sizes whose memory cannot fit and warn when the work is long, before anything runs.

    Returns:
        The estimated run time in seconds.

    Raises:
        ValueError: the estimated memory exceeds what the machine has available.
    """
    from landscape._checks import check_memory, prompt_memory, warn_if_long

    entries = batch * (d + 1) * (n + 1) * layers
    check_memory(f"--batch {batch} --d {d} --n {n} --layers {layers}",
                 prompt_memory(batch=batch, d=d, n=n, layers=layers, dtype_bytes=8, factor=CHECK_MEMORY_FACTOR),
                 f"batch × (d+1) × (n+1) × layers × 8 B × {CHECK_MEMORY_FACTOR:g}")
    seconds = layers * CHECK_SECONDS_PER_LAYER + entries * CHECK_SECONDS_PER_ENTRY
    warn_if_long(prog, seconds, f"layers × {CHECK_SECONDS_PER_LAYER:g} s + batch × (d+1) × (n+1) × layers × "
                                f"{CHECK_SECONDS_PER_ENTRY:g} s")
    return seconds


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``landscape check``."""
    p = add_command(
        subparsers, "check",
        help="check every construction against its reference algorithm",
        description="Run every construction (preconditioned GD, GD++, functional GD for every activation and a "
                    "user kernel, Newton-Schulz, normalised GD) against its reference algorithm on fresh random "
                    "prompts; fail if a relative error exceeds landscape.tolerances.CONSTRUCTION_RTOL.",
    )
    p.add_argument("--d", type=positive_int, default=3, help="covariate dimension (default 3)")
    p.add_argument("--n", type=positive_int, default=8, help="context length (default 8)")
    p.add_argument("--layers", type=positive_int, default=3, help="layers = algorithm steps (default 3)")
    p.add_argument("--seed", type=seed_int, default=0, help="random seed (default 0)")
    p.add_argument("--batch", type=positive_int, default=16, help="prompts per construction (default 16)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the checks and print a table (or JSON). Returns 0 if all pass, else 1."""
    from landscape.tolerances import CONSTRUCTION_RTOL

    check_sizes(args.d, args.n, args.layers, args.batch)
    results = run_checks(args.d, args.n, args.layers, args.seed, args.batch)
    ok = all(r.passed for r in results)
    if args.json:
        from landscape.cli import emit_json

        emit_json({"d": args.d, "n": args.n, "layers": args.layers, "seed": args.seed, "batch": args.batch,
                   "rtol": CONSTRUCTION_RTOL, "passed": ok, "results": [asdict(r) for r in results]})
        return 0 if ok else 1
    w1 = max(len("construction"), *(len(r.construction) for r in results))
    w2 = max(len("activation"), *(len(r.activation) for r in results))
    print(f"{'construction':<{w1}}  {'activation':<{w2}}  {'max rel. error':>14}  result")
    for r in results:
        print(f"{r.construction:<{w1}}  {r.activation:<{w2}}  {r.max_relative_error:>14.3e}  "
              f"{'pass' if r.passed else 'FAIL'}")
    n_fail = sum(not r.passed for r in results)
    print(f"{len(results) - n_fail}/{len(results)} constructions within CONSTRUCTION_RTOL = {CONSTRUCTION_RTOL:g} "
          f"(d={args.d}, n={args.n}, layers={args.layers}, seed={args.seed})")
    return 0 if ok else 1
