r"""Benchmark: variance reduction of the certificate's prompt samplers against plain Monte Carlo.

For each case the normal score of the certificate, :math:`N^\top\bar g` (the per-prompt gradients
at the family point, over the certificate's free entries, projected on the normal space), is
estimated by ``--replicates`` independent batches of ``--batch`` prompts with each sampler of
:data:`landscape.numeric.oracles.SAMPLERS` (``mc``, ``qmc``: one scrambled Sobol set per batch,
``antithetic``: label-sign pairs). Every sampler draws each prompt from the prompt law, so a run's
per-prompt covariance :math:`\hat\Sigma` (over all its prompts) estimates the same :math:`\Sigma`, and a
batch mean of ``m`` i.i.d. prompts has covariance :math:`\Sigma/m`. The spread of the run's independent
batch means estimates the covariance :math:`C` its batch means really have, and the table gives, at
equal prompts,

* ``VRF`` — :math:`\mathrm{tr}\,\hat\Sigma/m \,/\, \mathrm{tr}\,\hat C` (1 for plain Monte Carlo up to
  noise; above 1: the sampler reduces the summed variance; the certificate's upper bound scales like
  the square root of the variance, so a factor ``k`` shortens it by :math:`\sqrt k`) — the inverse of
  the :math:`\hat\kappa` that :func:`landscape.numeric.stats.variance_ratio` measures inside the
  certificate — with the standard error of the replicate estimate;
* ``VRF top`` — the same along the top eigenvector :math:`v` of :math:`\hat\Sigma`.

Both are taken within one run, against that run's own :math:`\hat\Sigma`: an extreme prompt enters
numerator and denominator alike. Comparing the replicate spreads of two *different* runs (or a
pooled :math:`\hat\Sigma`) is dominated by the heavy tails of the per-prompt gradients — a few extreme
batches — not by the samplers (measured: plain Monte Carlo then scatters between 0.4 and 1.0 "VRF").

Cases (the ``Must show`` settings of the verification tutorial and a control):

* ``pgd-blocks`` — ``pgd``, L = 2, d = 5, n = 20, Σ = diag(1, 1, 0.25, 0.0625, 1), ``--mask blocks``,
  at the exact (Wishart) family minimum;
* ``pgd-all`` — the same over all entries;
* ``fgd-exp-blocks`` — ``fgd``, exp attention on exp-kernel GP data, L = 1, d = 2, n = 4,
  Σ = random_covariance(2, 0), ``--mask blocks``, at the family minimum fitted on 16 000 prompts;
* ``pgd-identity-blocks`` — the control ``pgd-identity`` on the blocks (its minimum, exact family loss).

Usage: ``python benchmarks/bench_variance.py [--batch 512] [--replicates 64] [--cases a,b] [--seed 0]``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from typing import Any

import torch


def _case(name: str) -> tuple[Any, Any, str]:
    from landscape.core.tasks import KernelGP, LinearRegression, random_covariance
    from landscape.theory.families import Problem, get_family

    if name.startswith("pgd"):
        sig = torch.diag(torch.tensor([1.0, 1.0, 0.25, 0.0625, 1.0], dtype=torch.float64))
        prob = Problem(d=5, layers=2, n=20, sigma=sig, attention="linear")
        task = LinearRegression(5, 20, sigma=sig, task_cov="inverse")
        fam = get_family("pgd-identity" if "identity" in name else "pgd", prob)
        return fam, task, "all" if name == "pgd-all" else "blocks"
    sig = random_covariance(2, torch.Generator().manual_seed(0))
    prob = Problem(d=2, layers=1, n=4, sigma=sig, attention="kernel", activations=("exp",))
    task = KernelGP(2, 4, "exp", sigma=sig, covariates="sphere")
    return get_family("fgd", prob), task, "blocks"


def _point(fam: Any, task: Any) -> torch.Tensor:
    from landscape.numeric.certificate import _resolve_family_loss
    from landscape.numeric.fit import fit_family
    from landscape.numeric.oracles import MonteCarloLoss

    fl, _ = _resolve_family_loss(fam, task, "auto")
    if fl is not None:
        return fit_family(fam, None, scalar_loss=fl, generator=torch.Generator().manual_seed(0), n_starts=2).values
    A = MonteCarloLoss.from_task(task, fam.spec, 16000, torch.Generator().manual_seed(12345))
    return fit_family(fam, A, generator=torch.Generator().manual_seed(0), n_starts=2).values


def _ratio(E: torch.Tensor, sigma: torch.Tensor, m: int) -> tuple[float, float, float]:
    """(VRF, its SE, VRF along the top eigenvector of ``sigma``) of the batch means ``E`` (rows)."""
    R = E.shape[0]
    D = E - E.mean(0)
    sq = (D * D).sum(1) * R / (R - 1)
    tr, tr_se = float(sq.mean()), float(sq.std()) / math.sqrt(R)
    pred = float(torch.diagonal(sigma).sum()) / m
    lam, V = torch.linalg.eigh(sigma)
    v = V[:, -1]
    top = float(((D @ v) ** 2).sum()) / (R - 1)
    return pred / tr, pred / tr * tr_se / tr, float(lam[-1]) / m / top


def main(argv: list[str] | None = None) -> int:
    from landscape.numeric.certificate import free_entries
    from landscape.numeric.derivatives import orthonormal_complement
    from landscape.numeric.oracles import SAMPLERS, streamed_gradient_moments

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=512, help="prompts per replicate batch")
    ap.add_argument("--replicates", type=int, default=64, help="independent batches per sampler")
    ap.add_argument("--cases", default="pgd-blocks,fgd-exp-blocks,pgd-all,pgd-identity-blocks")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    rows = []
    for name in [c.strip() for c in args.cases.split(",") if c.strip()]:
        fam, task, mask = _case(name)
        s = _point(fam, task)
        theta = fam.flat(s).detach()
        free = free_entries(fam, None if mask == "all" else mask)
        _, N = orthonormal_complement(fam.tangent_basis(s).detach()[free])
        proj = N.T @ torch.eye(theta.numel(), dtype=torch.float64)[free]
        res = {}
        for sampler in SAMPLERS:
            g = torch.Generator().manual_seed(args.seed)
            t0 = time.perf_counter()
            mom = streamed_gradient_moments(task, fam.spec, theta, args.batch * args.replicates, g,
                                            batches=args.replicates, projection=proj, sampler=sampler)
            res[sampler] = (mom, time.perf_counter() - t0)
        for sampler in SAMPLERS:
            mom, sec = res[sampler]
            vrf, vrf_se, top = _ratio(mom.batch_means, mom.cov, args.batch)
            rows.append((name, N.shape[1], sampler, vrf, vrf_se, top, sec))
        sys.stderr.write(f"[bench_variance] {name} done\n")
    print(f"normal score N^T g at the family point; {args.replicates} batches x {args.batch} prompts per sampler; "
          f"seed {args.seed}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| case | normal dim | sampler | VRF (± SE) | VRF top | seconds |")
    print("|---|---|---|---|---|---|")
    for name, q, sampler, vrf, vrf_se, top, sec in rows:
        print(f"| `{name}` | {q} | {sampler} | {vrf:.2f} ± {vrf_se:.2f} | {top:.2f} | {sec:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
