"""Benchmark: dense Hessians and top eigenvalues of the in-context loss (not a timed test).

Compares, on the same model and the same fixed prompts (float64):

* dense Hessian — :func:`landscape.numeric.hessian` (vmapped forward-over-reverse HVPs over basis
  chunks, and ``jacfwd(jacrev)``) against ``torch.autograd.functional.hessian`` (default,
  non-vectorised: one reverse pass per row);
* top Hessian eigenvalue — :func:`landscape.numeric.hessian_eigenpairs` (Lanczos with full
  reorthogonalisation, on ``jvp``-of-``grad`` HVPs or on double-backward HVPs) against PyHessian-style power iteration with
  double-backward HVPs (``torch.autograd.grad(..., create_graph=True)``), both to a relative
  tolerance of 1e-10 on the eigenvalue.

Each method runs in a fresh subprocess, warmed up on 8 prompts (imports, functorch decompositions),
so that the peak memory of its first full call can be read: on CPU the growth of the peak resident
set (``resource.getrusage``; allocations that reuse freed pages do not show), on CUDA
``torch.cuda.max_memory_allocated``. Wall times are medians over ``--repeats`` further runs.

Usage: ``python benchmarks/bench_hessian.py [--device cpu|cuda] [--prompts 512] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import statistics
import time
from typing import Any

import torch

CASES = {
    "linear d=3 L=2 (P=32)": dict(kind="linear", d=3, layers=2, n=10),
    "exp-kernel d=4 L=2 (P=150)": dict(kind="kernel", d=4, layers=2, n=6),
}


def _setup(case: dict[str, Any], prompts: int, device: str) -> tuple[Any, torch.Tensor]:
    from landscape.theory.families import Problem, get_family
    from landscape.numeric import MonteCarloLoss
    from landscape.core.tasks import KernelGP, LinearRegression, random_covariance

    g = torch.Generator().manual_seed(0)
    sig = random_covariance(case["d"], g)
    if case["kind"] == "linear":
        prob = Problem(d=case["d"], layers=case["layers"], n=case["n"], sigma=sig, attention="linear")
        task = LinearRegression(case["d"], case["n"], sigma=sig, task_cov="inverse")
        fam, s = get_family("pgd", prob), torch.full((case["layers"],), 0.6, dtype=torch.float64)
    else:
        prob = Problem(d=case["d"], layers=case["layers"], n=case["n"], sigma=sig, attention="kernel",
                       activations=("exp",))
        task = KernelGP(case["d"], case["n"], "exp", sigma=sig)
        fam = get_family("fgd", prob)
        s = torch.tensor([-0.6, 1.0, 1.0] * case["layers"], dtype=torch.float64)
    oracle = MonteCarloLoss.from_task(task, prob.spec, prompts, g, chunk_size=prompts)
    if device != "cpu":
        oracle = MonteCarloLoss(oracle.spec, oracle.Z.to(device), oracle.target.to(device), oracle.chunk_size)
    theta = fam.flat(s).to(device)
    # move off the family a little so the Hessian has no special structure
    theta = theta + 0.05 * torch.randn(theta.shape, generator=g, dtype=torch.float64).to(device)
    return oracle, theta


def _method(name: str, oracle: Any, theta: torch.Tensor) -> torch.Tensor:
    from landscape.numeric import hessian, hessian_eigenpairs

    if name == "numeric.hessian (vmapped HVP)":
        return hessian(oracle, theta)
    if name == "numeric.hessian (vmapped HVP, chunk 16)":
        return hessian(oracle, theta, vector_chunk=16)
    if name == "numeric.hessian (jacfwd∘jacrev)":
        return hessian(oracle, theta, method="jacfwd")
    if name == "autograd.functional.hessian":
        return torch.autograd.functional.hessian(oracle, theta)
    if name == "numeric Lanczos top eigenvalue":
        res = hessian_eigenpairs(oracle, theta, 1, which="LA", generator=torch.Generator().manual_seed(1), tol=None)
        return res.eigenvalues[0]
    if name == "numeric Lanczos (double-backward HVPs)":
        res = hessian_eigenpairs(oracle, theta, 1, which="LA", generator=torch.Generator().manual_seed(1),
                                 hvp_mode="double_backward")
        return res.eigenvalues[0]
    if name == "power iteration (double backward)":
        return _power_iteration(oracle, theta)
    raise ValueError(name)


def _power_iteration(oracle: Any, theta: torch.Tensor, max_iter: int = 2000, rtol: float = 1e-10) -> torch.Tensor:
    """PyHessian-style: HVP by differentiating g·v with a graph kept from the first backward."""
    x = theta.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(oracle(x), x, create_graph=True)
    v = torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=x.dtype).to(x.device)
    v = v / v.norm()
    lam = torch.zeros((), dtype=x.dtype, device=x.device)
    for _ in range(max_iter):
        (Hv,) = torch.autograd.grad(g, x, grad_outputs=v, retain_graph=True)
        new = torch.dot(Hv, v)
        v = Hv / Hv.norm()
        if abs(float(new - lam)) <= rtol * abs(float(new)):
            lam = new
            break
        lam = new
    return lam.detach()


def _worker(case: str, name: str, prompts: int, device: str, repeats: int, out: Any) -> None:
    torch.set_num_threads(1)
    oracle, theta = _setup(CASES[case], prompts, device)
    _method(name, oracle.subsample(8), theta)  # warm-up on 8 prompts: imports, functorch decompositions
    if device != "cpu":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    value = _method(name, oracle, theta)  # first full call: its peak memory
    if device != "cpu":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024  # kB -> MiB (Linux)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        value = _method(name, oracle, theta)
        if device != "cpu":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    out.put((statistics.median(times), peak, value.cpu().numpy()))  # numpy: no shared-memory handles


def run(case: str, name: str, prompts: int, device: str, repeats: int) -> tuple[float, float, torch.Tensor]:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_worker, args=(case, name, prompts, device, repeats, q))
    p.start()
    t, peak, value = q.get()
    p.join()
    return t, peak, torch.as_tensor(value)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--prompts", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    mem = "peak GPU MiB" if args.device == "cuda" else "RSS growth MiB"
    for case in CASES:
        print(f"\n== {case}, {args.prompts} prompts, float64, {args.device} ==")
        ref = run(case, "autograd.functional.hessian", args.prompts, args.device, args.repeats)
        ref_t, H_ref = ref[0], ref[2]
        print(f"{'method':40s} {'time s':>9s} {'ratio':>7s} {mem:>15s} {'max|Δ| vs ref':>14s}")
        for name in ("autograd.functional.hessian", "numeric.hessian (vmapped HVP)",
                     "numeric.hessian (vmapped HVP, chunk 16)", "numeric.hessian (jacfwd∘jacrev)"):
            t, peak, H = ref if name == "autograd.functional.hessian" else run(case, name, args.prompts, args.device,
                                                                               args.repeats)
            err = float((H - H_ref).abs().max() / H_ref.abs().max())
            print(f"{name:40s} {t:9.3f} {ref_t / t:7.2f} {peak:15.1f} {err:14.2e}")
        ev = torch.linalg.eigvalsh((H_ref + H_ref.T) / 2)
        lam_ref = float(ev[-1])
        print(f"reference spectrum: λ_max = {lam_ref:.6g}, λ_min = {float(ev[0]):.6g}")
        pt, ppeak, lam_p = run(case, "power iteration (double backward)", args.prompts, args.device, args.repeats)
        rows = [("power iteration (double backward)", (pt, ppeak, lam_p))]
        for name in ("numeric Lanczos top eigenvalue", "numeric Lanczos (double-backward HVPs)"):
            rows.append((name, run(case, name, args.prompts, args.device, args.repeats)))
        for name, (t, peak, lam) in rows:
            rel = abs(float(lam) - lam_ref) / abs(lam_ref)
            print(f"{name:40s} {t:9.3f} {pt / t:7.2f} {peak:15.1f} {rel:14.2e}  (λ_max = {float(lam):.6g})")
    print("\nratio = reference time / method time (dense: autograd.functional.hessian; eigenvalue: power "
          "iteration); max|Δ| relative to the largest entry of the reference Hessian / to its top eigenvalue. "
          "Power iteration converges to the eigenvalue of largest magnitude, which is the top one only when "
          "it is positive.")


if __name__ == "__main__":
    main()
