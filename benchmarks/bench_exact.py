"""Exact fused tensor attention vs what users run today, in ONE device call (issue 5).

Runs the GPU pytest subset first (`-m gpu` on tests/test_kernels.py, tests/test_interface.py), then times, per
(n, d) in bf16: the Triton kernels (forward; forward+backward), SDPA over the Kronecker-expanded keys
(K1⊘K2, V1⊘V2) and the naive materialised n³ scores, with peak memory. Writes table + JSON + PNG under --out.

FLOP convention: forward = 4·n³·d per head (scores and P·V, non-causal). Backward = 3.5 × forward: the seven
n³·d products L4 needs (S recomputed, dP, dQ, dK1, dK2, dV1, dV2); the kernels execute 11 (5.5×: dQ kernel 3,
K1-owner 4, K2-owner 4), so the reported backward rate counts useful work only.

GPU:   PYTHONPATH=. python3 benchmarks/bench_exact.py --out $OUT
CPU:   python benchmarks/bench_exact.py --smoke --out /tmp/bench_exact   (interpreter, tiny sizes, no timing claims)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

FWD_PER_HEAD = 4  # × n³·d
BWD_MULTIPLIER = 3.5


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="directory for bench_exact.{json,md,png} and the pytest log")
    p.add_argument("--smoke", action="store_true", help="tiny CPU run (Triton interpreter): checks the script only")
    p.add_argument("--ns", type=int, nargs="*", default=None, help="sequence lengths (default 256 … 8192)")
    p.add_argument("--ds", type=int, nargs="*", default=None, help="head dims (default 64 128)")
    p.add_argument("--skip-tests", action="store_true", help="do not run the GPU pytest subset first")
    p.add_argument("--sweep", action="store_true", help="also time alternative forward tile configs at n=2048, d=128")
    return p.parse_args()


def _run_gpu_tests(out: Path) -> dict:
    t = time.time()
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "tests/test_kernels.py", "tests/test_interface.py", "-q",
           "-p", "no:cacheprovider", "--timeout=600"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    (out / "pytest_gpu.log").write_text(proc.stdout + proc.stderr)
    tail = (proc.stdout.strip().splitlines() or [""])[-1]
    print(f"GPU tests: rc={proc.returncode} ({time.time() - t:.0f} s): {tail}", flush=True)
    return {"returncode": proc.returncode, "summary": tail, "seconds": round(time.time() - t, 1)}


def main() -> None:
    args = _parse()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.smoke:
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before the kernels are imported
    import torch

    from verified_ta.interface import tensor_attention
    from verified_ta.kernels import load
    from verified_ta.kernels.baselines import expanded_sdpa, naive_attention

    cuda = torch.cuda.is_available() and not args.smoke
    device = "cuda" if cuda else "cpu"
    dtype = torch.bfloat16 if cuda else torch.float32
    ns = args.ns or ([256, 512, 1024, 2048, 4096, 8192] if cuda else [16, 32])
    ds = args.ds or ([64, 128] if cuda else [16])
    tests = None if args.skip_tests else _run_gpu_tests(args.out)
    tk = load()
    import triton

    def bench(fn) -> float:
        """Median milliseconds (CUDA events via do_bench; wall clock on the CPU)."""
        if cuda:
            return float(triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median"))
        fn()
        t = time.perf_counter()
        fn()
        return 1e3 * (time.perf_counter() - t)

    def measure(fwd, xs, dout) -> dict:
        """Forward ms, forward+backward ms and peak extra memory (MiB) of the forward+backward; None on OOM."""
        try:
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
            with torch.no_grad():
                f_ms = bench(lambda: fwd(*xs))

            def step():
                for x in xs:
                    x.grad = None
                fwd(*xs).backward(dout)

            fb_ms = bench(step)
            peak = (torch.cuda.max_memory_allocated() - base) / 2**20 if cuda else None
            return {"fwd_ms": f_ms, "fwdbwd_ms": fb_ms, "peak_mib": peak}
        except torch.OutOfMemoryError:
            return {"fwd_ms": None, "fwdbwd_ms": None, "peak_mib": None, "oom": True}
        finally:
            for x in xs:
                x.grad = None
            if cuda:
                torch.cuda.empty_cache()

    impls = {
        "triton": lambda *x: tensor_attention(*x, backend="triton"),
        "sdpa_expanded": lambda *x: expanded_sdpa(*x),
        "naive": lambda *x: naive_attention(*x),
    }
    rows = []
    for d in ds:
        for n in ns:
            heads = max(1, min(16, (1 << 21) // (n * n)) if cuda else 2)  # fill the GPU at small n
            flops = FWD_PER_HEAD * n**3 * d * heads
            xs = [torch.randn(1, heads, n, d, device=device, dtype=dtype).requires_grad_(True) for _ in range(5)]
            dout = torch.randn(1, heads, n, d, device=device, dtype=dtype)
            row = {"n": n, "d": d, "heads": heads, "dtype": str(dtype).removeprefix("torch."), "fwd_flops": flops}
            for name, fn in impls.items():
                if name == "naive" and n * n * n * heads * 2 * 6 > (torch.cuda.mem_get_info()[0] if cuda else 1 << 32):
                    row[name] = {"skipped": "n³ scores do not fit"}
                    continue
                r = measure(fn, xs, dout)
                if r.get("fwd_ms"):
                    r["fwd_tflops"] = flops / r["fwd_ms"] / 1e9
                    r["fwdbwd_tflops"] = flops * (1 + BWD_MULTIPLIER) / r["fwdbwd_ms"] / 1e9
                row[name] = r
            base = row["sdpa_expanded"]
            if base.get("fwd_ms") and row["triton"].get("fwd_ms"):
                row["fwd_speedup_vs_sdpa"] = base["fwd_ms"] / row["triton"]["fwd_ms"]
                row["fwdbwd_speedup_vs_sdpa"] = base["fwdbwd_ms"] / row["triton"]["fwdbwd_ms"]
            rows.append(row)
            print(_line(row), flush=True)
            del xs, dout
    sweep = _sweep(tk, bench, torch, device, dtype) if (args.sweep and cuda) else None
    env = {
        "device": torch.cuda.get_device_name() if cuda else platform.processor() or "cpu",
        "torch": torch.__version__, "triton": triton.__version__, "python": platform.python_version(),
        "smoke": args.smoke, "interpreter": os.environ.get("TRITON_INTERPRET", "0"),
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "fwd_flops_per_head": "4·n³·d", "bwd_multiplier": BWD_MULTIPLIER, "executed_bwd_products": 11,
    }
    payload = {"env": env, "tests": tests, "rows": rows, "sweep": sweep}
    (args.out / "bench_exact.json").write_text(json.dumps(payload, indent=2) + "\n")
    table = "\n".join([_header(), *(_line(r) for r in rows)])
    (args.out / "bench_exact.md").write_text(f"{env['device']}, torch {env['torch']}, triton {env['triton']}\n\n```\n{table}\n```\n")
    _plot(rows, args.out / "bench_exact.png")
    print(table)


def _fmt(x, spec=".0f") -> str:
    return "-" if x is None else format(x, spec)


def _header() -> str:
    return (f"{'d':>4} {'n':>5} {'h':>3} | {'tri fwd TF':>10} {'tri f+b TF':>10} {'tri MiB':>8} | "
            f"{'sdpa fwd TF':>11} {'sdpa MiB':>9} {'naive fwd TF':>12} | {'fwd x':>6} {'f+b x':>6}")


def _line(r: dict) -> str:
    t, s, v = r["triton"], r["sdpa_expanded"], r["naive"]
    return (f"{r['d']:>4} {r['n']:>5} {r['heads']:>3} | {_fmt(t.get('fwd_tflops'), '.1f'):>10} "
            f"{_fmt(t.get('fwdbwd_tflops'), '.1f'):>10} {_fmt(t.get('peak_mib')):>8} | "
            f"{_fmt(s.get('fwd_tflops'), '.1f'):>11} {_fmt(s.get('peak_mib')):>9} {_fmt(v.get('fwd_tflops'), '.1f'):>12} | "
            f"{_fmt(r.get('fwd_speedup_vs_sdpa'), '.2f'):>6} {_fmt(r.get('fwdbwd_speedup_vs_sdpa'), '.2f'):>6}")


def _sweep(tk, bench, torch, device, dtype) -> list[dict]:
    """Forward tile configs at n = 2048, d = 128 (the defaults are untuned)."""
    n, d, out = 2048, 128, []
    xs = [torch.randn(1, 1, n, d, device=device, dtype=dtype) for _ in range(5)]
    for bm, bn, w, st in [(128, 64, 8, 3), (128, 128, 8, 3), (64, 64, 4, 3), (128, 64, 8, 4), (64, 128, 4, 2)]:
        cfg = tk.KernelConfig(bm, bn, w, st)
        try:
            ms = bench(lambda: tk.forward(*xs, 1.0 / d, False, config=cfg))
            out.append({"config": [bm, bn, w, st], "fwd_ms": ms, "fwd_tflops": 4 * n**3 * d / ms / 1e9})
        except Exception as e:  # a config that does not compile (shared memory) is a result, not a crash
            out.append({"config": [bm, bn, w, st], "error": f"{type(e).__name__}: {str(e)[:200]}"})
        print("sweep", out[-1], flush=True)
    return out


def _plot(rows: list[dict], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no PNG")
        return
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for d in sorted({r["d"] for r in rows}):
        sub = [r for r in rows if r["d"] == d]
        for name, style in (("triton", "-o"), ("sdpa_expanded", "--s"), ("naive", ":^")):
            pts = [(r["n"], r[name].get("fwd_tflops"), r[name].get("peak_mib")) for r in sub]
            axes[0].plot([p[0] for p in pts if p[1]], [p[1] for p in pts if p[1]], style, label=f"{name} d={d}")
            axes[1].plot([p[0] for p in pts if p[2]], [p[2] for p in pts if p[2]], style, label=f"{name} d={d}")
    for ax, title in zip(axes, ("forward TFLOP/s (4·n³·d per head)", "peak extra memory, fwd+bwd (MiB)")):
        ax.set_xscale("log", base=2)
        ax.set_title(title)
        ax.set_xlabel("n")
        ax.legend(fontsize=7)
    if any(r[name].get("peak_mib") for r in rows for name in ("triton", "sdpa_expanded", "naive")):
        axes[1].set_yscale("log")  # no peak memory on the CPU (smoke)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
