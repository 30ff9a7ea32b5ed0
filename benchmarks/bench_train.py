"""Benchmark: seed-parallel training against a per-seed loop of nn.Module + torch.optim.Adam.

Both sides do the same total work: ``S`` seeds × ``T`` steps × ``B`` fresh prompts per seed per
step (sampled from the same :class:`landscape.tasks.LinearRegression`), an in-context squared loss,
one Adam step. The baseline is written the way published in-context-learning code trains several
seeds: one ``torch.nn.Module`` (its own ``P_l, Q_l`` parameters, forward
``Z + (1/n) P Z M (Zᵀ Q Z)``) and one ``torch.optim.Adam`` per seed, trained one after the other.
The seed-parallel side is :func:`landscape.train.make_step` (stacked engine) plus
:func:`landscape.train.sample_batch`; the ``vmap`` engine is timed too.

Reported: seconds per training step (all seeds), the speed-up over the loop (with and without the
prompt sampling, which both sides pay alike), the matmul FLOPs each side executes per step (counted
by ``torch.utils.flop_counter.FlopCounterMode``) and the achieved GFLOP/s, against the machine's
float32 matmul peak measured in the same run (a large ``A @ B``). Timings are medians over
interleaved repeats, so a busy machine slows both sides alike.

Run: ``python benchmarks/bench_train.py`` (about 1-2 minutes); ``--help`` for the options.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from landscape.train import TrainConfig, init_state, make_generator, make_step, make_task, sample_batch  # noqa: E402


# ---------------------------------------------------------------------- the baseline
class LinearTransformer(torch.nn.Module):
    """One seed's model, as published ICL code writes it: parameters as module attributes."""

    def __init__(self, P: list[torch.Tensor], Q: list[torch.Tensor]) -> None:
        super().__init__()
        self.P = torch.nn.ParameterList([torch.nn.Parameter(p.clone()) for p in P])
        self.Q = torch.nn.ParameterList([torch.nn.Parameter(q.clone()) for q in Q])

    def forward(self, Z: torch.Tensor) -> torch.Tensor:
        n = Z.shape[-1] - 1
        for P, Q in zip(self.P, self.Q):
            Zs = Z[..., :n]  # Z M: the query is not a source
            Z = Z + (P @ Zs) @ (Zs.transpose(-1, -2) @ (Q @ Z)) / n
        return -Z[..., -1, -1]


def loop_trainer(cfg: TrainConfig) -> Callable[[], None]:
    """One step of the per-seed loop: for every seed, sample, forward, backward, Adam."""
    state = init_state(cfg, "cpu")
    params = state.params
    L = cfg.layers
    models = [LinearTransformer([params[f"layer{l}.head0.P"][i] for l in range(L)],
                                [params[f"layer{l}.head0.Q"][i] for l in range(L)]) for i in range(cfg.seeds)]
    lr = float(cfg.lr) if not isinstance(cfg.lr, tuple) else cfg.lr[0]
    opts = [torch.optim.Adam(m.parameters(), lr=lr) for m in models]
    task = make_task(cfg)
    gens = [torch.Generator().manual_seed(1000 + i) for i in range(cfg.seeds)]

    def step() -> None:
        for m, o, g in zip(models, opts, gens):
            batch = task.sample(cfg.batch, g)
            o.zero_grad()
            loss = ((m(batch.Z) - batch.target) ** 2).mean()
            loss.backward()
            o.step()

    return step


def stacked_trainer(cfg: TrainConfig) -> tuple[Callable[[], None], Callable[[], None]]:
    """One seed-parallel step (sample S*B prompts, one stacked step), and the step alone."""
    state = init_state(cfg, "cpu")
    step_fn = make_step(cfg)
    task = make_task(cfg)
    gen = make_generator(cfg, "data")
    lr = cfg.lr_vector()
    box = {"flat": state.flat, "opt": state.opt, "alive": state.alive, "div": state.diverged_step, "t": 0}
    fixed = sample_batch(task, cfg, gen)

    def run(Z: torch.Tensor, y: torch.Tensor) -> None:
        out = step_fn(box["flat"], box["opt"], box["alive"], box["div"], box["t"], Z, y, lr)
        box["flat"], box["opt"], box["alive"], box["div"] = out[:4]
        box["t"] += 1

    def full() -> None:
        run(*sample_batch(task, cfg, gen))

    def step_only() -> None:
        run(*fixed)

    return full, step_only


# ---------------------------------------------------------------------- measurement
def time_per_call(fn: Callable[[], None], calls: int, clock: Callable[[], float] = time.perf_counter) -> float:
    t0 = clock()
    for _ in range(calls):
        fn()
    return (clock() - t0) / calls


def count_flops(fn: Callable[[], None]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        fn()
    return int(fc.get_total_flops())


def matmul_peak(size: int = 2048, reps: int = 5) -> float:
    """float32 GFLOP/s of a large square matrix product (best of ``reps``)."""
    A = torch.randn(size, size)
    B = torch.randn(size, size)
    A @ B
    best = min(time_per_call(lambda: A @ B, 1) for _ in range(reps))
    return 2 * size**3 / best / 1e9


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=32)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--d", type=int, default=5)
    p.add_argument("--n", type=int, default=20)
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--steps", type=int, default=10, help="timed steps per repeat")
    p.add_argument("--repeats", type=int, default=3, help="interleaved repeats (median reported)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: on a small shared machine more threads slow tiny ops down)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    cfg = TrainConfig(task="linear", d=args.d, n=args.n, sigma="random:0", task_cov="inverse", attention="linear",
                      layers=args.layers, seeds=args.seeds, batch=args.batch, steps=10**6, lr=1e-3,
                      dtype=args.dtype, device="cpu")
    vcfg = TrainConfig(**{**{f: getattr(cfg, f) for f in cfg.__dataclass_fields__}, "engine": "vmap"})
    peak = matmul_peak()
    loop = loop_trainer(cfg)
    full, step_only = stacked_trainer(cfg)
    vfull, vstep = stacked_trainer(vcfg)

    def loop_step_only_factory() -> Callable[[], None]:
        """The loop without sampling: every seed reuses one pre-drawn batch."""
        state = init_state(cfg, "cpu")
        params = state.params
        models = [LinearTransformer([params[f"layer{l}.head0.P"][i] for l in range(cfg.layers)],
                                    [params[f"layer{l}.head0.Q"][i] for l in range(cfg.layers)])
                  for i in range(cfg.seeds)]
        opts = [torch.optim.Adam(m.parameters(), lr=1e-3) for m in models]
        batch = make_task(cfg).sample(cfg.batch, torch.Generator().manual_seed(0))

        def step() -> None:
            for m, o in zip(models, opts):
                o.zero_grad()
                ((m(batch.Z) - batch.target) ** 2).mean().backward()
                o.step()

        return step

    loop_only = loop_step_only_factory()
    fns = {"loop": loop, "stacked": full, "vmap": vfull, "loop (no sampling)": loop_only,
           "stacked (no sampling)": step_only, "vmap (no sampling)": vstep}
    for fn in fns.values():  # warm-up (first-call costs: imports, allocator)
        fn()
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(args.repeats):
        for name, fn in fns.items():
            c0, t0 = time.process_time(), time.perf_counter()
            for _ in range(args.steps):
                fn()
            times[name].append((time.perf_counter() - t0) / args.steps)
            cpu[name].append((time.process_time() - c0) / args.steps)
    med = {k: statistics.median(v) for k, v in times.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    flops = {"loop": count_flops(loop_only), "stacked": count_flops(step_only), "vmap": count_flops(vstep)}
    out = {
        "config": {"seeds": cfg.seeds, "batch": cfg.batch, "layers": cfg.layers, "d": cfg.d, "n": cfg.n,
                   "dtype": cfg.dtype, "threads": torch.get_num_threads(), "torch": torch.__version__},
        "load_average": os.getloadavg(),
        "matmul_peak_gflops": peak,
        "seconds_per_step": med,
        "cpu_seconds_per_step": med_cpu,
        "speedup_vs_loop": med["loop"] / med["stacked"],
        "speedup_vs_loop_cpu_time": med_cpu["loop"] / med_cpu["stacked"],
        "speedup_vs_loop_no_sampling": med["loop (no sampling)"] / med["stacked (no sampling)"],
        "vmap_speedup_vs_loop": med["loop"] / med["vmap"],
        "matmul_flops_per_step": flops,
        "achieved_gflops_no_sampling": {
            "loop": flops["loop"] / med["loop (no sampling)"] / 1e9,
            "stacked": flops["stacked"] / med["stacked (no sampling)"] / 1e9,
            "vmap": flops["vmap"] / med["vmap (no sampling)"] / 1e9,
        },
        # the work of the plain formulation (the loop's FLOPs) per second of each implementation
        "effective_gflops_no_sampling": {
            k: flops["loop"] / med[f"{k} (no sampling)"] / 1e9 for k in ("loop", "stacked", "vmap")
        },
        "seed_steps_per_second": {k: cfg.seeds / v for k, v in med.items()},
    }
    if args.json:
        print(json.dumps(out))
        return 0
    c = out["config"]
    print(f"S={c['seeds']} seeds, B={c['batch']}, L={c['layers']}, d={c['d']}, n={c['n']}, {c['dtype']}, "
          f"{c['threads']} threads, torch {c['torch']}; load average {out['load_average'][0]:.1f}")
    print(f"float32 matmul peak (2048^3): {peak:.1f} GFLOP/s")
    for name, t in med.items():
        print(f"  {name:24s} {t * 1e3:9.2f} ms/step (cpu {med_cpu[name] * 1e3:8.2f} ms)   "
              f"{cfg.seeds / t:9.1f} seed-steps/s")
    print(f"speed-up of the stacked step over the loop: {out['speedup_vs_loop']:.1f}x wall, "
          f"{out['speedup_vs_loop_cpu_time']:.1f}x cpu time "
          f"(without sampling: {out['speedup_vs_loop_no_sampling']:.1f}x wall); "
          f"vmap engine: {out['vmap_speedup_vs_loop']:.1f}x wall")
    for k, f in flops.items():
        g = out["achieved_gflops_no_sampling"][k]
        e = out["effective_gflops_no_sampling"][k]
        print(f"  {k:8s} {f / 1e6:8.1f} MFLOP/step executed (matmul): {g:6.2f} GFLOP/s = {100 * g / peak:5.1f}% "
              f"of peak; plain-formulation work rate {e:6.2f} GFLOP/s = {100 * e / peak:5.1f}% of peak")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
