"""Fast path (A1, A2) versus the exact Θ(n³d) reference on this CPU (SPEC P37, L11).

    python benchmarks/bench_fast.py [--max-exact-n 1024] [--out benchmarks/bench_fast.json]

d = 4, float64, degree = the least certified degree over the families at B = 1, ε = 1e-6
(``verified_ta.certificate.minimal_degree`` on [0, 2B³]). Times are the best of ``--repeats`` runs.
The exact path runs only up to ``--max-exact-n`` (its time grows like n³: n = 1024 took 80 s here). Prints a table, writes JSON and,
when matplotlib is installed, a log-log PNG next to the JSON; reports fitted slopes and the measured crossover.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from fractions import Fraction
from pathlib import Path

import torch

from verified_ta.certificate import minimal_degree
from verified_ta.fast import fast_objective_gradient, fast_tensor_attention
from verified_ta.features import feature_rank
from verified_ta.polynomial import FAMILIES
from verified_ta.reference import tensor_attention_forward


def best_time(fn, repeats: int) -> float:
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def slope(ns: list[int], ts: list[float]) -> float:
    """Least-squares slope of log t against log n."""
    xs, ys = [math.log(n) for n in ns], [math.log(t) for t in ts]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--d", type=int, default=4)
    parser.add_argument("--B", type=float, default=1.0)
    parser.add_argument("--eps", type=float, default=1e-6)
    parser.add_argument("--min-log2n", type=int, default=2)
    parser.add_argument("--max-log2n", type=int, default=16)
    parser.add_argument("--max-exact-n", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--fit-min-n", type=int, default=2048, help="fit the fast slopes on n >= this (below it fixed overhead dominates)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1: steadier on a shared 2-core box)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/bench_fast.json"))
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    d, M = args.d, Fraction(args.B) ** 3
    degrees = {f: minimal_degree(f, [0, 2 * M], args.eps) for f in FAMILIES}
    family = min(degrees, key=lambda f: degrees[f].degree)
    chosen = degrees[family]
    a = chosen.polynomial.shifted(M)
    g = chosen.degree
    print(f"degree table (B={args.B}, eps={args.eps:g}): " + ", ".join(f"{f} {r.degree}" for f, r in degrees.items()))
    print(f"using {family} degree {g}, certified error <= {float(chosen.bound.upper):.3e}, rank r = {feature_rank(g, d)}")
    rows = []
    print(f"{'n':>7} {'fast fwd s':>11} {'fast grad s':>12} {'exact fwd s':>12} {'speedup':>9}")
    for k in range(args.min_log2n, args.max_log2n + 1):
        n = 2**k
        x = [(torch.rand(n, d, dtype=torch.float64) * 2 - 1) * args.B for _ in range(5)]
        reps = args.repeats if n <= 16384 else 2
        fast = best_time(lambda: fast_tensor_attention(*x, a), reps)
        A = x + [torch.rand(n, d, dtype=torch.float64)]
        eye = torch.eye(d, dtype=torch.float64)
        grad = best_time(lambda: fast_objective_gradient(*A, eye, eye, eye, eye, eye, a), reps)
        exact = best_time(lambda: tensor_attention_forward(*x), reps if n <= 256 else 1) if n <= args.max_exact_n else None
        rows.append({"n": n, "fast_forward_s": fast, "fast_gradient_s": grad, "exact_forward_s": exact})
        sp = f"{exact / fast:9.1f}" if exact else f"{'-':>9}"
        print(f"{n:>7} {fast:11.5f} {grad:12.5f} {exact if exact is not None else float('nan'):12.5f} {sp}")
    fit = [r for r in rows if r["n"] >= args.fit_min_n]
    fast_slope = slope([r["n"] for r in fit], [r["fast_forward_s"] for r in fit])
    grad_slope = slope([r["n"] for r in fit], [r["fast_gradient_s"] for r in fit])
    ex = [r for r in rows if r["exact_forward_s"] is not None and r["n"] >= 64]
    exact_slope = slope([r["n"] for r in ex], [r["exact_forward_s"] for r in ex]) if len(ex) >= 2 else None
    crossover = next((r["n"] for r in rows if r["exact_forward_s"] is not None and r["fast_forward_s"] < r["exact_forward_s"]), None)
    summary = {
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "d": d, "B": args.B, "eps": args.eps, "family": family, "degree": g, "rank": feature_rank(g, d),
        "degree_table": {f: r.degree for f, r in degrees.items()},
        "certified_error_upper": float(chosen.bound.upper),
        "fit_min_n": args.fit_min_n, "fast_forward_slope": fast_slope, "fast_gradient_slope": grad_slope,
        "exact_forward_slope_n_ge_64": exact_slope, "measured_crossover_n": crossover,
        "max_exact_n": args.max_exact_n, "rows": rows,
    }
    print(f"fitted slope (n >= {args.fit_min_n}): fast forward {fast_slope:.3f}, fast gradient {grad_slope:.3f}; "
          f"exact forward (n >= 64) {exact_slope if exact_slope is None else round(exact_slope, 3)}")
    print(f"measured crossover: fast forward faster than exact from n = {crossover}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no PNG")
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.loglog([r["n"] for r in rows], [r["fast_forward_s"] for r in rows], "o-", label=f"fast forward (slope {fast_slope:.2f})")
    ax.loglog([r["n"] for r in rows], [r["fast_gradient_s"] for r in rows], "s-", label=f"fast gradient (slope {grad_slope:.2f})")
    ax.loglog([r["n"] for r in ex], [r["exact_forward_s"] for r in ex], "^-", label=f"exact forward (slope {exact_slope:.2f})")
    ax.set_xlabel("n")
    ax.set_ylabel("seconds")
    ax.set_title(f"d={d}, B={args.B}, eps={args.eps:g}, {family} g={g}, r={feature_rank(g, d)}")
    ax.legend()
    fig.tight_layout()
    png = args.out.with_suffix(".png")
    fig.savefig(png, dpi=120)
    print(f"wrote {args.out} and {png}")


if __name__ == "__main__":
    main()
