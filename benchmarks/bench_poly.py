"""Causal polynomial path (method="poly": feature scan + written backward) against the exact causal reference, CPU.

    python benchmarks/bench_poly.py [--max-log2n 16] [--max-exact-n 512] [--out benchmarks/bench_poly.json]

d = 4, float64, entries in [−B, B] with ``bound=B`` (B = 1: scores in [−1, 1]), ε = 1e-3: the certificate of
``verified_ta.poly_attention.certify_poly`` (built once per n, not timed). Times are the best of ``--repeats`` runs
of the forward alone and of forward + backward (⟨dO, out⟩.backward()). The exact causal reference
(``tensor_attention_reference``, Θ(n³d)) runs up to ``--max-exact-n``. Prints a table, writes JSON and a log-log
PNG, fits log-log slopes (poly on n ≥ ``--fit-min-n``, exact on n ≥ 64) and reports the measured crossover n.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch

from bench_fast import best_time, slope
from verified_ta.features import scan_memory_bytes
from verified_ta.fast import scan_chunk_size, scan_row_bytes
from verified_ta.interface import tensor_attention


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--d", type=int, default=4)
    parser.add_argument("--B", type=float, default=1.0)
    parser.add_argument("--eps", type=float, default=1e-3)
    parser.add_argument("--min-log2n", type=int, default=4)
    parser.add_argument("--max-log2n", type=int, default=16)
    parser.add_argument("--max-exact-n", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--fit-min-n", type=int, default=2048, help="fit the poly slopes on n >= this")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1: steadier on a shared box)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/bench_poly.json"))
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    d, B = args.d, args.B
    rows = []
    print(f"{'n':>6} {'poly fwd s':>11} {'poly f+b s':>11} {'exact fwd s':>12} {'exact f+b s':>12} {'f+b ratio':>10}")
    for k in range(args.min_log2n, args.max_log2n + 1):
        n = 2**k
        x = [((torch.rand(n, d, dtype=torch.float64) * 2 - 1) * B).requires_grad_() for _ in range(5)]
        dout = torch.rand(n, d, dtype=torch.float64)
        with torch.no_grad():  # the certificate for this n, built once (cached), not timed
            _, cert = tensor_attention(*x, causal=True, method="poly", eps=args.eps, bound=B, return_certificate=True)

        def poly_fwd():
            with torch.no_grad():
                tensor_attention(*x, causal=True, method="poly", eps=args.eps, bound=B)

        def poly_fb():
            (tensor_attention(*x, causal=True, method="poly", eps=args.eps, bound=B) * dout).sum().backward()

        def exact_fwd():
            with torch.no_grad():
                tensor_attention(*x, causal=True)

        def exact_fb():
            (tensor_attention(*x, causal=True) * dout).sum().backward()

        reps = args.repeats if n <= 16384 else 1
        row = {"n": n, "poly_forward_s": best_time(poly_fwd, reps), "poly_forward_backward_s": best_time(poly_fb, reps),
               "exact_forward_s": None, "exact_forward_backward_s": None, "degree": cert.degree, "rank": cert.rank,
               "delta": float(cert.delta),
               "scan_memory_bytes": scan_memory_bytes(
                   n, n, cert.degree, d, scan_chunk_size(n, scan_row_bytes(x[0], cert.degree)), 8)}
        if n <= args.max_exact_n:
            er = args.repeats if n <= 256 else 1
            row["exact_forward_s"] = best_time(exact_fwd, er)
            row["exact_forward_backward_s"] = best_time(exact_fb, er)
        rows.append(row)
        ratio = (f"{row['exact_forward_backward_s'] / row['poly_forward_backward_s']:10.2f}"
                 if row["exact_forward_s"] else f"{'-':>10}")
        fmt = lambda v: f"{v:12.5f}" if v is not None else f"{'-':>12}"  # noqa: E731
        print(f"{n:>6} {row['poly_forward_s']:11.5f} {row['poly_forward_backward_s']:11.5f} "
              f"{fmt(row['exact_forward_s'])} {fmt(row['exact_forward_backward_s'])} {ratio}", flush=True)
    fit = [r for r in rows if r["n"] >= args.fit_min_n]
    ex = [r for r in rows if r["exact_forward_s"] is not None and r["n"] >= 64]
    slopes = {
        "poly_forward": slope([r["n"] for r in fit], [r["poly_forward_s"] for r in fit]) if len(fit) >= 2 else None,
        "poly_forward_backward": (slope([r["n"] for r in fit], [r["poly_forward_backward_s"] for r in fit])
                                  if len(fit) >= 2 else None),
        "exact_forward": slope([r["n"] for r in ex], [r["exact_forward_s"] for r in ex]) if len(ex) >= 2 else None,
        "exact_forward_backward": (slope([r["n"] for r in ex], [r["exact_forward_backward_s"] for r in ex])
                                   if len(ex) >= 2 else None),
    }
    measured = [r for r in rows if r["exact_forward_s"] is not None]
    crossover = {
        "forward": next((r["n"] for r in measured if r["poly_forward_s"] < r["exact_forward_s"]), None),
        "forward_backward": next((r["n"] for r in measured
                                  if r["poly_forward_backward_s"] < r["exact_forward_backward_s"]), None),
    }
    summary = {
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
                   f"torch {torch.__version__}",
        "command": "python benchmarks/bench_poly.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "out"),
        "d": d, "B": B, "eps": args.eps, "fit_min_n": args.fit_min_n, "slopes": slopes,
        "measured_crossover_n": crossover, "rows": rows,
    }
    print("fitted log-log slopes: " + ", ".join(f"{k} {v:.2f}" for k, v in slopes.items() if v is not None))
    print(f"measured crossover (poly faster than exact from n =): {crossover}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for key, style, label in (("poly_forward_s", "o-", "poly forward"), ("poly_forward_backward_s", "s-", "poly fwd+bwd"),
                              ("exact_forward_s", "^--", "exact forward"),
                              ("exact_forward_backward_s", "v--", "exact fwd+bwd")):
        pts = [(r["n"], r[key]) for r in rows if r[key] is not None]
        name = key[:-2]
        ax.loglog([p[0] for p in pts], [p[1] for p in pts], style,
                  label=f"{label} (slope {slopes[name]:.2f})" if slopes.get(name) is not None else label)
    ax.set(xlabel="n (causal)", ylabel="seconds", title=f"causal tensor attention, d={d}, B={B}, ε={args.eps:g}, "
           f"g={rows[-1]['degree']}, r={rows[-1]['rank']}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out.with_suffix(".png"), dpi=120)
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
