"""Derivation time of the exact family loss (Ahn et al. 2023, ``pgd``) for L = 1..4 layers.

Run: ``python benchmarks/bench_symbolic.py [--d 5] [--n 20] [--max-layers 4] [--relaxed] [--solve]``.

For every L it prints the seconds spent deriving

* the loss at numeric ``d, n`` (whitening + Wishart moments, :func:`landscape.symbolic.family_loss`),
* the general loss, symbolic in ``d`` and ``n`` (:attr:`FamilyLoss.general`),
* optionally (``--solve``) its stationary points.

Not a test: timings depend on the machine. L = 3 takes well under a second for ``pgd``; the relaxed
family (``--relaxed``) needs Wishart moments up to order 26 at L = 3 (seconds).
"""

from __future__ import annotations

import argparse
import time

from landscape.theory.families import Problem, get_family
from landscape.symbolic import family_loss, stationary_points


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--d", type=int, default=5)
    p.add_argument("--n", type=int, default=20)
    p.add_argument("--max-layers", type=int, default=4)
    p.add_argument("--relaxed", action="store_true", help="also time pgd-relaxed (Thm 4)")
    p.add_argument("--solve", action="store_true", help="also time the stationary-point search")
    args = p.parse_args()
    names = ["pgd"] + (["pgd-relaxed"] if args.relaxed else [])
    print(f"{'family':<12} {'L':>2} {'loss (s)':>9} {'general (s)':>12} {'terms':>6}" + ("  solve (s) points" if args.solve else ""))
    for name in names:
        for L in range(1, args.max_layers + 1):
            if name == "pgd-relaxed" and L > 3:
                break
            fam = get_family(name, Problem(d=args.d, layers=L, n=args.n, attention="linear"))
            t0 = time.perf_counter()
            fl = family_loss(fam)
            t1 = time.perf_counter()
            general = fl.general
            t2 = time.perf_counter()
            line = f"{name:<12} {L:>2} {t1 - t0:>9.3f} {t2 - t1:>12.3f} {len(general.as_ordered_terms()):>6}"
            if args.solve:
                t3 = time.perf_counter()
                pts = stationary_points(fl, starts=16)
                line += f"  {time.perf_counter() - t3:>9.3f} {len(pts):>6}"
            print(line, flush=True)


if __name__ == "__main__":
    main()
