"""Exact fused tensor attention vs what users run today (issue 9), one table, JSON after every row.

Per (d, n, mode) in bf16, mode ∈ {full, causal, window}: the Triton kernels (forward; forward+backward with the
deterministic backward and with atomic dQ), SDPA over the Kronecker-expanded keys K1⊘K2, V1⊘V2 (full mode, where
its n²·d keys fit; the backend SDPA picked is recorded) and the naive materialised n³ scores (small n), with
per-kernel times (torch.profiler) and peak memory from one plain forward+backward call (not under do_bench).

FLOP convention: forward = 4·d·(visible pairs) per head: n³ full, Σ_i (i+1)² causal, Σ_i min(i+1, w1)·min(i+1, w2)
windowed. Forward+backward = 4.5 × forward (backward = 3.5 × forward: the seven n³d-sized products L4 needs; the
kernels execute 11 (12 at d = 128), or 8 (9) with atomic dQ, so the rate counts useful work only).
batch·heads is chosen so the forward grid (query tiles × heads) holds ≥ 2 waves of the GPU's SMs.

GPU:   PYTHONPATH=. python3 benchmarks/bench_exact.py --out $OUT           (benchmarks/gpu_check.sh runs it)
CPU:   python benchmarks/bench_exact.py --smoke --out /tmp/bench_exact      (interpreter, tiny sizes: the script only)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
import traceback
from pathlib import Path

BWD_MULTIPLIER = 3.5
TARGETS = {"fwd_tflops": 400, "fwdbwd_tflops": 250, "fwd_speedup_vs_sdpa": 1.3}  # issue 9, bf16, d = 128, n >= 4096


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="directory for bench_exact.{json,md,png}")
    p.add_argument("--smoke", action="store_true", help="tiny CPU run (Triton interpreter): checks the script only")
    p.add_argument("--ns", type=int, nargs="*", default=None, help="sequence lengths (default 512 1024 2048 4096)")
    p.add_argument("--ds", type=int, nargs="*", default=None, help="head dims (default 64 128)")
    p.add_argument("--modes", nargs="*", default=["full", "causal", "window"], choices=["full", "causal", "window"])
    p.add_argument("--window", type=int, nargs=2, default=[512, 32], metavar=("W1", "W2"))
    p.add_argument("--max-heads", type=int, default=256, help="cap on batch·heads")
    return p.parse_args()


def visible_pairs(n: int, mode: str, window: tuple[int, int]) -> int:
    """Σ_i |visible pairs of query i| (SPEC §2 masks; verified_ta.masks)."""
    if mode == "full":
        return n**3
    if mode == "causal":
        return n * (n + 1) * (2 * n + 1) // 6
    w1, w2 = window
    return sum(min(i + 1, w1) * min(i + 1, w2) for i in range(n))


def main() -> None:
    args = _parse()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.smoke:
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before the kernels are imported
    import torch
    import triton

    from verified_ta.interface import tensor_attention
    from verified_ta.kernels.baselines import expanded_sdpa, naive_attention

    cuda = torch.cuda.is_available() and not args.smoke
    device = "cuda" if cuda else "cpu"
    dtype = torch.bfloat16 if cuda else torch.float32
    ns = args.ns or ([512, 1024, 2048, 4096] if cuda else [16, 33])
    ds = args.ds or ([64, 128] if cuda else [16])
    window = tuple(args.window) if cuda else (8, 4)
    sms = torch.cuda.get_device_properties(0).multi_processor_count if cuda else 2
    env = {
        "device": torch.cuda.get_device_name() if cuda else platform.processor() or "cpu",
        "sms": sms, "torch": torch.__version__, "triton": triton.__version__, "python": platform.python_version(),
        "cuda": torch.version.cuda, "smoke": args.smoke, "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "flops": "forward 4·d·pairs per head; fwd+bwd 4.5 × forward", "window": list(window), "targets": TARGETS,
    }
    payload: dict = {"env": env, "rows": []}
    out_json = args.out / "bench_exact.json"

    def bench(fn) -> float:
        """Median milliseconds (CUDA events via do_bench; wall clock of a second call on the CPU)."""
        if cuda:
            return float(triton.testing.do_bench(fn, warmup=10, rep=50, return_mode="median"))
        fn()
        t = time.perf_counter()
        fn()
        return 1e3 * (time.perf_counter() - t)

    def peak_mib(fn, xs, dout) -> float | None:
        """Peak memory above the inputs of one plain forward+backward call."""
        if not cuda:
            return None
        for x in xs:
            x.grad = None
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn(*xs).backward(dout)
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20

    def kernel_times(fn, xs, dout) -> dict | None:
        """Per-kernel device milliseconds of one forward+backward (torch.profiler, Triton kernel names)."""
        if not cuda:
            return None
        from torch.profiler import ProfilerActivity, profile

        fn(*xs).backward(dout)  # warm (compiled, tuned)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            fn(*xs).backward(dout)
            torch.cuda.synchronize()
        times: dict[str, float] = {}
        for ev in prof.key_averages():
            if ev.key.startswith("_") and "kernel" in ev.key:
                times[ev.key] = times.get(ev.key, 0.0) + ev.device_time_total / 1e3
        return times

    def measure(name, fn, xs, dout, flops) -> dict:
        r: dict = {}
        try:
            with torch.no_grad():
                r["fwd_ms"] = bench(lambda: fn(*xs))

            def step():
                for x in xs:
                    x.grad = None
                fn(*xs).backward(dout)

            r["fwdbwd_ms"] = bench(step)
            r["fwd_tflops"] = flops / r["fwd_ms"] / 1e9
            r["fwdbwd_tflops"] = flops * (1 + BWD_MULTIPLIER) / r["fwdbwd_ms"] / 1e9
            r["peak_mib"] = peak_mib(fn, xs, dout)
            if name.startswith("triton"):
                r["kernels_ms"] = kernel_times(fn, xs, dout)
        except Exception as exc:  # noqa: BLE001 - every failure is a recorded result, the run goes on
            r["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
            r["traceback"] = traceback.format_exc()[-2000:]
        finally:
            for x in xs:
                x.grad = None
            if cuda:
                torch.cuda.empty_cache()
        return r

    for d in ds:
        for mode in args.modes:
            for n in ns:
                causal = mode != "full"
                win = window if mode == "window" else None
                tiles = math.ceil(n / 128)
                heads = max(1, min(args.max_heads, math.ceil(2 * sms / tiles))) if cuda else 2
                flops = 4 * d * heads * visible_pairs(n, mode, window)
                row = {"d": d, "n": n, "mode": mode, "heads": heads, "dtype": str(dtype).removeprefix("torch."),
                       "fwd_flops": flops}
                try:
                    xs = [torch.randn(1, heads, n, d, device=device, dtype=dtype).requires_grad_(True) for _ in range(5)]
                    dout = torch.randn(1, heads, n, d, device=device, dtype=dtype)
                except Exception as exc:  # noqa: BLE001
                    row["error"] = f"inputs: {type(exc).__name__}: {exc}"
                    payload["rows"].append(row)
                    continue
                impls = {
                    "triton": lambda *x: tensor_attention(*x, causal=causal, window=win, backend="triton"),
                    "triton_atomic_dq": lambda *x: tensor_attention(*x, causal=causal, window=win, backend="triton",
                                                                    deterministic=False),
                }
                if mode == "full" and heads * n * n * d * 2 * 4 < (torch.cuda.mem_get_info()[0] if cuda else 1 << 30):
                    impls["sdpa_expanded"] = lambda *x: expanded_sdpa(*x)
                if heads * n**3 * 4 * 3 < (torch.cuda.mem_get_info()[0] if cuda else 1 << 28):
                    impls["naive"] = lambda *x: naive_attention(*x, causal=causal, window=win)
                for name, fn in impls.items():
                    row[name] = measure(name, fn, xs, dout, flops)
                if "sdpa_expanded" in impls:
                    row["sdpa_backend"] = _sdpa_backend(torch, xs)
                    base, tri = row["sdpa_expanded"], row["triton"]
                    if base.get("fwd_ms") and tri.get("fwd_ms"):
                        row["fwd_speedup_vs_sdpa"] = base["fwd_ms"] / tri["fwd_ms"]
                        row["fwdbwd_speedup_vs_sdpa"] = base["fwdbwd_ms"] / tri["fwdbwd_ms"]
                payload["rows"].append(row)
                out_json.write_text(json.dumps(payload, indent=2) + "\n")  # after every row: a crash loses nothing
                print(_line(row), flush=True)
                del xs, dout
    table = "\n".join([_header(), *(_line(r) for r in payload["rows"])])
    (args.out / "bench_exact.md").write_text(f"{env['device']}, torch {env['torch']}, triton {env['triton']}\n\n"
                                             f"```\n{table}\n```\n")
    _plot(payload["rows"], args.out / "bench_exact.png")
    print(table)


def _sdpa_backend(torch, xs) -> str:
    """Which fused SDPA backend torch picks for the expanded shapes (the first that accepts them)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from verified_ta.products import khatri_rao

    q, k1, k2, v1, v2 = (x.detach() for x in xs)
    kk, vv = khatri_rao(k1, k2), khatri_rao(v1, v2)
    for backend in (SDPBackend.FLASH_ATTENTION, SDPBackend.CUDNN_ATTENTION, SDPBackend.EFFICIENT_ATTENTION,
                    SDPBackend.MATH):
        try:
            with sdpa_kernel(backend):
                torch.nn.functional.scaled_dot_product_attention(q[:, :1, :8], kk[:, :1], vv[:, :1])
            return backend.name
        except RuntimeError:
            continue
    return "none"


def _fmt(x, spec=".0f") -> str:
    return "-" if x is None else format(x, spec)


def _header() -> str:
    return (f"{'d':>4} {'mode':>6} {'n':>5} {'h':>4} | {'fwd TF':>7} {'f+b TF':>7} {'f+b at':>7} {'MiB':>6} | "
            f"{'sdpa TF':>7} {'fwd x':>6} {'f+b x':>6}")


def _line(r: dict) -> str:
    t, a, s = r.get("triton", {}), r.get("triton_atomic_dq", {}), r.get("sdpa_expanded", {})
    err = " ERROR " + t["error"][:60] if "error" in t else ""
    return (f"{r['d']:>4} {r['mode']:>6} {r['n']:>5} {r['heads']:>4} | {_fmt(t.get('fwd_tflops'), '.1f'):>7} "
            f"{_fmt(t.get('fwdbwd_tflops'), '.1f'):>7} {_fmt(a.get('fwdbwd_tflops'), '.1f'):>7} "
            f"{_fmt(t.get('peak_mib')):>6} | {_fmt(s.get('fwd_tflops'), '.1f'):>7} "
            f"{_fmt(r.get('fwd_speedup_vs_sdpa'), '.2f'):>6} {_fmt(r.get('fwdbwd_speedup_vs_sdpa'), '.2f'):>6}{err}")


def _plot(rows: list[dict], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no PNG")
        return
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for (d, mode) in sorted({(r["d"], r["mode"]) for r in rows}):
        sub = [r for r in rows if r["d"] == d and r["mode"] == mode]
        for ax, key in zip(axes, ("fwd_tflops", "fwdbwd_tflops")):
            pts = [(r["n"], r.get("triton", {}).get(key)) for r in sub]
            ax.plot([p[0] for p in pts if p[1]], [p[1] for p in pts if p[1]], "-o", label=f"triton d={d} {mode}")
            if key == "fwd_tflops":
                sd = [(r["n"], r.get("sdpa_expanded", {}).get(key)) for r in sub]
                if any(p[1] for p in sd):
                    ax.plot([p[0] for p in sd if p[1]], [p[1] for p in sd if p[1]], "--s", label=f"sdpa⊘ d={d}")
    for ax, title in zip(axes, ("forward TFLOP/s (4·d·pairs per head)", "forward+backward TFLOP/s (4.5 × forward)")):
        ax.set_xscale("log", base=2)
        ax.set_title(title)
        ax.set_xlabel("n")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
