"""Benchmark: the training engines against a per-seed loop of nn.Module + torch.optim.Adam.

Every contender does the same work per step: ``S`` seeds × ``B`` fresh prompts per seed (sampled
from the same :class:`landscape.core.tasks.LinearRegression`), the in-context squared loss, its
gradient, one Adam step. Contenders:

* ``loop``: one ``torch.nn.Module`` (its own ``V_l, B_l, C_l`` — or ``P_l, Q_l`` — parameters,
  forward ``Z + (1/n) V Z M h(B Z M, C Z)``) and one ``torch.optim.Adam`` per seed, trained one
  after the other, as published in-context-learning code trains several seeds;
* ``torch``: :func:`landscape.experiment.train.make_step` with the stacked engine on the whole batch at once
  (``chunk = B``, the step as it was before chunking);
* ``chunked``: the stacked engine with its automatic chunk (:func:`landscape.experiment.train.resolve_chunk`);
* ``fused``: the fused CPU kernel (:mod:`landscape.engine.fused`), what ``engine="auto"`` runs.

Each is timed with and without the prompt sampling (``step`` = gradient + update on a fixed
batch), and the sampling of one step is timed alone (``sampling``: into the reused buffers of
:class:`landscape.core.tasks.BufferedSampler`, as ``train`` draws; ``sampling (fresh)``: every batch
newly allocated, as before the buffers), alternating contenders within every repeat; the minimum
over repeats of the process CPU time (``time.process_time``, what a loaded machine cannot inflate
much), of the wall time and of the minor page faults (``ru_minflt``) per step is reported. The work of a step is counted once for all contenders, as the matrix-product FLOPs of the
fused formulation (:func:`landscape.engine.fused.flops_per_prompt`); the share of the machine's
single-core float32 matmul peak (a 2048³ product on one thread, measured in the same run) is that
work over the step's CPU time. Finally ``landscape.experiment.train.train`` (what ``landscape train`` runs)
is timed end to end for ``--e2e-steps`` steps (minimum over ``--repeats`` runs) and compared with
the loop's time for as many steps; what it spends beyond that many whole steps of the contender it
runs (setup, kernel loading, held-out loss and distances, and the spread of the per-step times
about their minimum) is printed as its overhead.

Run: ``python benchmarks/bench_train.py`` (a few minutes at the default sizes); ``--help`` for the
options.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Callable

import torch

try:
    import resource
except ImportError:  # not on Windows: no page-fault counts
    resource = None  # type: ignore[assignment]

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import landscape.engine.fused as fused  # noqa: E402
from landscape.core.tasks import BufferedSampler  # noqa: E402
from landscape.experiment.train import (
    TrainConfig,
    init_state,
    make_generator,
    make_step,
    make_task,
    resolve_chunk,
    sample_batch,
    train,
)


# ---------------------------------------------------------------------- the baseline
class Transformer(torch.nn.Module):
    """One seed's model, as published ICL code writes it: parameters as module attributes."""

    def __init__(self, cfg: TrainConfig, params: dict[str, torch.Tensor], seed: int) -> None:
        super().__init__()
        self.kind = cfg.attention
        self.acts = [h.kernel for h in cfg.spec.heads] if cfg.attention == "kernel" else []
        self.weights = torch.nn.ParameterDict(
            {k.replace(".", "_"): torch.nn.Parameter(v[seed].clone()) for k, v in params.items()})
        self.layers, self.heads = cfg.layers, len(cfg.spec.heads)

    def forward(self, Z: torch.Tensor) -> torch.Tensor:
        n = Z.shape[-1] - 1
        w = self.weights
        for l in range(self.layers):
            Zs = Z[..., :n]  # Z M: the query is not a source
            upd = 0
            for h in range(self.heads):
                pre = f"layer{l}_head{h}_"
                if self.kind == "linear":
                    upd = upd + (w[pre + "P"] @ Zs) @ (Zs.transpose(-1, -2) @ (w[pre + "Q"] @ Z))
                else:
                    upd = upd + (w[pre + "V"] @ Zs) @ self.acts[h].gram(w[pre + "B"] @ Zs, w[pre + "C"] @ Z)
            Z = Z + upd / n
        return -Z[..., -1, -1]


def loop_trainer(cfg: TrainConfig) -> tuple[Callable[[], None], Callable[[], None]]:
    """The per-seed loop: for every seed, (sample,) forward, backward, Adam."""
    params = init_state(cfg, "cpu").params
    models = [Transformer(cfg, params, i) for i in range(cfg.seeds)]
    lr = float(cfg.lr) if not isinstance(cfg.lr, tuple) else cfg.lr[0]
    opts = [torch.optim.Adam(m.parameters(), lr=lr) for m in models]
    task = make_task(cfg)
    gens = [torch.Generator().manual_seed(1000 + i) for i in range(cfg.seeds)]
    fixed = task.sample(cfg.batch, torch.Generator().manual_seed(0))

    def one(m: Transformer, o: torch.optim.Optimizer, Z: torch.Tensor, y: torch.Tensor) -> None:
        o.zero_grad()
        ((m(Z) - y) ** 2).mean().backward()
        o.step()

    def full() -> None:
        for m, o, g in zip(models, opts, gens):
            b = task.sample(cfg.batch, g)
            one(m, o, b.Z, b.target)

    def step_only() -> None:
        for m, o in zip(models, opts):
            one(m, o, fixed.Z, fixed.target)

    return full, step_only


def engine_trainer(cfg: TrainConfig) -> tuple[Callable[[], None], Callable[[], None]]:
    """One seed-parallel step of ``cfg``'s engine: (sample S·B prompts into reused buffers, as ``train`` does,)
    gradient, Adam."""
    state = init_state(cfg, "cpu")
    step_fn = make_step(cfg)
    task = make_task(cfg)
    sampler = BufferedSampler(task, fused.linear_prompts)  # as train() draws
    gen = make_generator(cfg, "data")
    lr = cfg.lr_vector()
    box = {"flat": state.flat, "opt": state.opt, "alive": state.alive, "div": state.diverged_step, "t": 0}
    fixed = sample_batch(task, cfg, gen)

    def run(Z: torch.Tensor, y: torch.Tensor) -> None:
        out = step_fn(box["flat"], box["opt"], box["alive"], box["div"], box["t"], Z, y, lr)
        box["flat"], box["opt"], box["alive"], box["div"] = out[:4]
        box["t"] += 1

    return (lambda: run(*sample_batch(sampler, cfg, gen))), (lambda: run(*fixed))


def sampling_only(cfg: TrainConfig) -> dict[str, Callable[[], None]]:
    """The prompt sampling of one step alone: into reused buffers (what ``train`` does) and drawn afresh."""
    task = make_task(cfg)
    sampler = BufferedSampler(task, fused.linear_prompts)  # as train() draws
    gens = [make_generator(cfg, "data") for _ in range(2)]
    return {"sampling": lambda: sample_batch(sampler, cfg, gens[0]),
            "sampling (fresh)": lambda: sample_batch(task, cfg, gens[1])}


# ---------------------------------------------------------------------- measurement
def matmul_peak(size: int = 2048, reps: int = 3) -> float:
    """Single-thread float32 GFLOP/s of a large square product (best CPU time of ``reps``)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        A, B = torch.randn(size, size), torch.randn(size, size)
        A @ B
        best = float("inf")
        for _ in range(reps):
            c0 = time.process_time()
            A @ B
            best = min(best, time.process_time() - c0)
    finally:
        torch.set_num_threads(before)
    return 2 * size**3 / best / 1e9


def _minor_faults() -> float:
    """Minor page faults of this process so far (NaN where ``resource`` is missing)."""
    return float("nan") if resource is None else float(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)


def measure(fns: dict[str, Callable[[], None]], steps: int, repeats: int) -> dict[str, dict[str, float]]:
    """Minimum CPU and wall seconds and minor page faults (``ru_minflt``) per call of every function,
    contenders alternated."""
    for fn in fns.values():  # warm-up: first-call costs (imports, JIT cache, allocator)
        fn()
    cpu = {k: float("inf") for k in fns}
    wall = {k: float("inf") for k in fns}
    faults = {k: float("inf") for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            f0 = _minor_faults()
            c0, t0 = time.process_time(), time.perf_counter()
            for _ in range(steps):
                fn()
            cpu[name] = min(cpu[name], (time.process_time() - c0) / steps)
            wall[name] = min(wall[name], (time.perf_counter() - t0) / steps)
            faults[name] = min(faults[name], (_minor_faults() - f0) / steps)
    return {k: {"cpu": cpu[k], "wall": wall[k], "faults": faults[k]} for k in fns}


def configs(args: argparse.Namespace, batch: int, seeds: int) -> dict[str, TrainConfig]:
    acts = tuple(args.activation.split(",")) if args.attention == "kernel" else ("linear",)
    base = TrainConfig(task="linear", d=args.d, n=args.n, attention=args.attention, activations=acts,
                       layers=args.layers, seeds=seeds, batch=batch, steps=10**6, lr=1e-3, dtype=args.dtype,
                       device="cpu")
    out = {"torch": dataclasses.replace(base, engine="stacked", chunk=batch),
           "chunked": dataclasses.replace(base, engine="stacked")}
    if fused.unsupported_reason(base.spec, "cpu", base.torch_dtype) is None:
        out["fused"] = dataclasses.replace(base, engine="fused")
    return out


def _is_step(name: str) -> bool:
    """A contender that does a whole step (sampling included): the ones compared with the loop."""
    return "(step)" not in name and not name.startswith("sampling")


def bench_size(args: argparse.Namespace, batch: int, seeds: int, steps: int, repeats: int, peak: float,
               with_step_only: bool) -> dict:
    cfgs = configs(args, batch, seeds)
    any_cfg = next(iter(cfgs.values()))
    fns: dict[str, Callable[[], None]] = {}
    loop_full, loop_step = loop_trainer(any_cfg)
    fns["loop"] = loop_full
    if with_step_only:
        fns["loop (step)"] = loop_step
    for name, cfg in cfgs.items():
        full, step = engine_trainer(cfg)
        fns[name] = full
        if with_step_only:
            fns[f"{name} (step)"] = step
    if with_step_only:
        fns.update(sampling_only(any_cfg))
    res = measure(fns, steps, repeats)
    work = fused.flops_per_prompt(any_cfg.spec, any_cfg.n) * seeds * batch
    out = {"batch": batch, "seeds": seeds, "steps": steps, "repeats": repeats, "gflop_per_step": work / 1e9,
           "chunk": resolve_chunk(cfgs["chunked"]), "times": res,
           "speedup_cpu": {k: res["loop"]["cpu"] / v["cpu"] for k, v in res.items() if _is_step(k)},
           "speedup_wall": {k: res["loop"]["wall"] / v["wall"] for k, v in res.items() if _is_step(k)},
           "share_of_peak": {k: work / v["cpu"] / 1e9 / peak for k, v in res.items() if not k.startswith("sampling")}}
    return out


def bench_e2e(args: argparse.Namespace, loop_cpu_per_step: float, loop_wall_per_step: float,
              step_cpu: float | None = None) -> dict:
    """``train()`` end to end (the default engine, logging every 100 steps, held-out loss), the
    minimum over ``--repeats`` runs.

    ``step_cpu``: CPU seconds of one whole step (sampling included) of the contender ``train()``
    runs, from the alternated measurement; ``overhead_cpu`` is what ``train()`` spends beyond
    ``steps`` of them (setup, kernel loading, the held-out loss and distances at the log steps, and
    the spread of the per-step times about the minimum ``step_cpu`` is)."""
    cfg = dataclasses.replace(configs(args, args.e2e_batch, args.seeds)["chunked"], engine="auto",
                              steps=args.e2e_steps, log_every=100, checkpoint_every=0, eval_batch=2048)
    cpu = wall = float("inf")
    for _ in range(max(1, args.repeats)):  # the minimum over repeats, as for the per-step contenders
        c0, t0 = time.process_time(), time.perf_counter()
        res = train(cfg, progress=False)
        cpu, wall = min(cpu, time.process_time() - c0), min(wall, time.perf_counter() - t0)
    return {"engine": res.engine, "steps": cfg.steps, "batch": cfg.batch, "seeds": cfg.seeds, "cpu": cpu,
            "wall": wall, "loop_cpu": loop_cpu_per_step * cfg.steps, "loop_wall": loop_wall_per_step * cfg.steps,
            "speedup_cpu": loop_cpu_per_step * cfg.steps / cpu, "speedup_wall": loop_wall_per_step * cfg.steps / wall,
            "overhead_cpu": None if step_cpu is None else cpu - step_cpu * cfg.steps}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=32)
    p.add_argument("--batches", default="64,1024", help="prompts per seed per step (comma-separated)")
    p.add_argument("--big-batch", type=int, default=30000, help="the papers' batch size (0: skip)")
    p.add_argument("--big-seeds", type=int, default=8, help="seeds at --big-batch (Cheng et al.'s 8)")
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--d", type=int, default=5)
    p.add_argument("--n", type=int, default=20)
    p.add_argument("--attention", choices=("linear", "kernel"), default="kernel")
    p.add_argument("--activation", default="relu", help="kernel(s) of kernel attention, comma-separated")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--steps", type=int, default=3, help="timed steps per repeat")
    p.add_argument("--repeats", type=int, default=3, help="alternating repeats (minimum reported)")
    p.add_argument("--e2e-steps", type=int, default=100, help="steps of the end-to-end train() run (0: skip)")
    p.add_argument("--e2e-batch", type=int, default=1024)
    p.add_argument("--threads", type=int, default=1, help="CPU threads (default 1; see docs/benchmarks.md)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    load0 = os.getloadavg()

    peak = matmul_peak()
    sizes = [bench_size(args, int(b), args.seeds, args.steps, args.repeats, peak, True)
             for b in args.batches.split(",") if b]
    if args.big_batch:
        sizes.append(bench_size(args, args.big_batch, args.big_seeds, 1, max(1, args.repeats - 1), peak, False))
    e2e = None
    if args.e2e_steps:
        ref = next((s for s in sizes if s["batch"] == args.e2e_batch and s["seeds"] == args.seeds), None)
        if ref is None:
            ref = bench_size(args, args.e2e_batch, args.seeds, args.steps, args.repeats, peak, False)
        fused_run = ref["times"].get("fused")  # what engine="auto" runs on the CPU
        e2e = bench_e2e(args, ref["times"]["loop"]["cpu"], ref["times"]["loop"]["wall"],
                        None if fused_run is None else fused_run["cpu"])
    out = {"machine": {"cpus": os.cpu_count(), "load_average": load0, "load_average_end": os.getloadavg(),
                       "threads": torch.get_num_threads(),
                       "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())},
           "problem": {"d": args.d, "n": args.n, "layers": args.layers, "attention": args.attention,
                       "activation": args.activation, "dtype": args.dtype},
           "matmul_peak_gflops_1thread": peak, "sizes": sizes, "end_to_end": e2e}
    if args.json:
        print(json.dumps(out))
        return 0
    m = out["machine"]
    print(f"{m['date']}: {m['cpus']} CPUs, load average {m['load_average'][0]:.1f} at the start, "
          f"{m['load_average_end'][0]:.1f} at the end, {m['threads']} thread(s), "
          f"torch {m['torch']}; d={args.d}, n={args.n}, L={args.layers}, {args.attention}"
          f"{'[' + args.activation + ']' if args.attention == 'kernel' else ''}, {args.dtype}")
    print(f"single-core float32 matmul peak (2048^3): {peak:.1f} GFLOP/s")
    for s in sizes:
        print(f"\n{s['seeds']} seeds x {s['batch']} prompts per step ({s['gflop_per_step']:.3f} GFLOP of work, "
              f"chunk {s['chunk']}; min of {s['repeats']} x {s['steps']} steps)")
        print(f"  {'contender':16s} {'cpu ms':>10s} {'wall ms':>10s} {'x loop cpu':>10s} {'x loop wall':>11s} "
              f"{'% peak':>7s} {'faults':>8s}")
        for name, t in s["times"].items():
            sp = s["speedup_cpu"].get(name)
            sw = s["speedup_wall"].get(name)
            pk = s["share_of_peak"].get(name)
            print(f"  {name:16s} {t['cpu'] * 1e3:10.1f} {t['wall'] * 1e3:10.1f} "
                  f"{'' if sp is None else f'{sp:.2f}':>10s} {'' if sw is None else f'{sw:.2f}':>11s} "
                  f"{'' if pk is None else f'{100 * pk:.1f}':>7s} {t['faults']:8.0f}")
    if e2e is not None:
        print(f"\ntrain() end to end, {e2e['seeds']} seeds x {e2e['steps']} steps x {e2e['batch']} prompts "
              f"(engine {e2e['engine']}): {e2e['cpu']:.1f} s CPU, {e2e['wall']:.1f} s wall; the loop: "
              f"{e2e['loop_cpu']:.1f} s CPU, {e2e['loop_wall']:.1f} s wall -> {e2e['speedup_cpu']:.2f}x CPU, "
              f"{e2e['speedup_wall']:.2f}x wall")
        if e2e["overhead_cpu"] is not None and e2e["engine"] == "fused":
            print(f"  beyond {e2e['steps']} steps of the fused contender (sampling + step): "
                  f"{e2e['overhead_cpu']:.2f} s CPU (setup, kernel loading, held-out loss and distances, "
                  f"and the spread of the step times about their minimum)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
