"""Exact tensor attention on the CPU (issue 15): verified-ta against what users run today, in one run, as ratios.

Implementations (all exact, same inputs, same process settings):
- ``verified-ta``: ``verified_ta.tensor_attention`` (on CPU tensors: ``verified_ta.blocked``, pair-key tiles through
  torch's fused SDPA kernel);
- ``sdpa-expanded``: torch SDPA over the Kronecker-expanded keys K1⊘K2 and values V1⊘V2 (n² keys; causal needs
  an n × n² mask), ``verified_ta.kernels.baselines.expanded_sdpa``;
- ``einsum``: the materialised n × n² scores (three-way einsum, softmax), as public references do,
  ``verified_ta.kernels.baselines.naive_attention``.

Per (dtype, causal, n): forward and forward+backward time, best of --reps (n >= 1024: one repetition), wall clock
and process CPU time, with --threads intra-op threads after a warm-up at n = 8; and the peak memory of
forward+backward (peak RSS over the RSS after creating the inputs, a fresh process per implementation and size).
A baseline is skipped where its memory estimate exceeds --max-gb. Writes bench_cpu.{json,md,png} into --out.

    python benchmarks/bench_cpu.py                       # the sweep of benchmarks/RESULTS.md
    python benchmarks/bench_cpu.py --tune --ns 512 --dtypes float32 --reps 2   # block sizes, one vs two threads
    python benchmarks/bench_cpu.py --smoke --out /tmp/b  # n = 16, 32, one repetition: checks the script
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

ROOT = Path(__file__).resolve().parents[1]
IMPLS = ("verified-ta", "sdpa-expanded", "einsum")
#: live n·n²-sized tensors (scores, mask, probabilities and their gradients) a baseline's forward+backward holds
N_CUBED_TENSORS = {"sdpa-expanded": 0, "einsum": 4}


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks", help="directory for bench_cpu.{json,md,png}")
    p.add_argument("--ns", type=int, nargs="*", default=[64, 128, 256, 512, 1024])
    p.add_argument("--dtypes", nargs="*", default=["float32", "float64"])
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--d", type=int, default=16)
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads (the issue's setting: 2)")
    p.add_argument("--reps", type=int, default=3, help="repetitions (best of) for n < 1024")
    p.add_argument("--max-gb", type=float, default=4.0, help="skip a baseline whose memory estimate exceeds this")
    p.add_argument("--smoke", action="store_true", help="n = 16, 32 and one repetition: checks the script only")
    p.add_argument("--tune", action="store_true", help="measure block sizes and one vs two threads instead")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    return p.parse_args()


# ---------------------------------------------------------------- one implementation at one size (fresh process)


def _status_kib(field: str) -> int:
    """A ``/proc/self/status`` field in KiB (VmRSS: resident now, VmHWM: its peak since the last reset)."""
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith(field + ":"))
    return int(line.split()[1])


def _reset_peak_rss() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # Linux >= 4.0: VmHWM := VmRSS


def _worker(spec: dict) -> dict:
    import torch

    from verified_ta.interface import tensor_attention
    from verified_ta.kernels.baselines import expanded_sdpa, naive_attention

    torch.set_num_threads(spec["threads"])
    fn = {"verified-ta": tensor_attention, "sdpa-expanded": expanded_sdpa, "einsum": naive_attention}[spec["impl"]]
    dtype, causal, n = getattr(torch, spec["dtype"]), spec["causal"], spec["n"]
    g = torch.Generator().manual_seed(0)

    def inputs(m: int) -> tuple[list, object]:
        shape = (1, spec["heads"], m, spec["d"])
        return [torch.randn(shape, generator=g, dtype=dtype) for _ in range(5)], torch.randn(shape, dtype=dtype)

    def forward(xs: list) -> None:
        with torch.no_grad():
            fn(*xs, causal=causal)

    def forward_backward(xs: list, dout) -> None:
        ys = [x.clone().requires_grad_(True) for x in xs]
        fn(*ys, causal=causal).backward(dout)

    forward_backward(*inputs(8))  # one-time costs (thread pools, lazy initialisation) outside the measurements
    forward(inputs(8)[0])
    xs, dout = inputs(n)
    _reset_peak_rss()
    base = _status_kib("VmRSS")

    fwd_bwd = _best(lambda: forward_backward(xs, dout), spec["reps"])
    peak = (_status_kib("VmHWM") - base) * 1024
    fwd = _best(lambda: forward(xs), spec["reps"])
    return {**spec, "forward_s": fwd[0], "forward_cpu_s": fwd[1], "forward_backward_s": fwd_bwd[0],
            "forward_backward_cpu_s": fwd_bwd[1], "peak_bytes": max(peak, 0)}


def _best(f, reps: int) -> tuple[float, float]:
    """Best wall-clock and best process CPU seconds of ``reps`` runs (CPU time: all threads, immune to waiting)."""
    wall, cpu = [], []
    for _ in range(reps):
        w, c = time.perf_counter(), time.process_time()
        f()
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    return min(wall), min(cpu)


def _estimate_bytes(impl: str, n: int, heads: int, d: int, itemsize: int, causal: bool) -> int:
    """Memory a baseline needs: n·n²-sized tensors (einsum; the causal mask as dtype) plus n²·d pair keys/values."""
    cubes = N_CUBED_TENSORS.get(impl, 0) * heads + (1 if causal and impl == "sdpa-expanded" else 0)
    pairs = 6 * heads * n * n * d if impl == "sdpa-expanded" else 0  # K, V, their gradients, SDPA's temporaries
    return (cubes * n**3 + pairs) * itemsize


def _run_one(spec: dict) -> dict | None:
    cmd = [sys.executable, __file__, "--worker", json.dumps(spec)]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        print(f"  {spec['impl']} failed: {proc.stderr.strip().splitlines()[-1:]}", flush=True)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- the sweep


def _machine(threads: int) -> dict:
    import torch

    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return {"cpu": model, "cores": os.cpu_count(), "threads": threads, "torch": torch.__version__,
            "python": platform.python_version(), "load_average_at_start": os.getloadavg()}


def _sweep(args: argparse.Namespace) -> dict:
    import torch

    rows = []
    for dtype in args.dtypes:
        itemsize = torch.empty((), dtype=getattr(torch, dtype)).element_size()
        for causal in (False, True):
            for n in args.ns:
                row = {"dtype": dtype, "causal": causal, "n": n}
                for impl in IMPLS:
                    est = _estimate_bytes(impl, n, args.heads, args.d, itemsize, causal)
                    if est > args.max_gb * 2**30:
                        row[impl] = None
                        continue
                    spec = {"impl": impl, "dtype": dtype, "causal": causal, "n": n, "heads": args.heads, "d": args.d,
                            "threads": args.threads, "reps": args.reps if n < 1024 else 1}
                    row[impl] = _run_one(spec)
                rows.append(row)
                print(_table_line(row), flush=True)
    return {"rows": rows}


def _ratio(row: dict, impl: str, key: str) -> float | None:
    ours, other = row.get("verified-ta"), row.get(impl)
    return other[key] / ours[key] if ours and other and ours[key] > 0 else None


def _fmt(x: float | None, spec: str) -> str:
    """``x`` formatted by ``spec`` (a trailing × is kept), or – when absent."""
    return "–" if x is None else format(x, spec.rstrip("×")) + spec[len(spec.rstrip("×")):]


def _table_line(row: dict) -> str:
    cells = [row["dtype"], "yes" if row["causal"] else "no", str(row["n"])]
    for key in ("forward_s", "forward_backward_s"):
        for impl in IMPLS:
            r = row.get(impl)
            cells.append(_fmt(r[key] * 1e3 if r else None, ".0f"))
        cells += [_fmt(_ratio(row, impl, key), ".2f×") for impl in IMPLS[1:]]
    for impl in IMPLS:
        r = row.get(impl)
        cells.append(_fmt(r["peak_bytes"] / 2**20 if r else None, ".0f"))
    return "| " + " | ".join(cells) + " |"


TABLE_HEAD = (
    "| dtype | causal | n | fwd ms ours | fwd ms SDPA⊘ | fwd ms einsum | fwd SDPA⊘/ours | fwd einsum/ours "
    "| f+b ms ours | f+b ms SDPA⊘ | f+b ms einsum | f+b SDPA⊘/ours | f+b einsum/ours "
    "| peak MiB ours | peak MiB SDPA⊘ | peak MiB einsum |\n" + "|---" * 16 + "|"
)


def _plot(result: dict, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no PNG")
        return
    combos = [(dt, c) for dt in sorted({r["dtype"] for r in result["rows"]}) for c in (False, True)]
    fig, axes = plt.subplots(2, len(combos), figsize=(4 * len(combos), 7), squeeze=False)
    for j, (dt, causal) in enumerate(combos):
        rows = [r for r in result["rows"] if r["dtype"] == dt and r["causal"] == causal]
        for i, key in enumerate(("forward_s", "forward_backward_s")):
            ax = axes[i][j]
            for impl, marker in zip(IMPLS, "os^"):
                pts = [(r["n"], r[impl][key]) for r in rows if r.get(impl)]
                if pts:
                    ax.loglog(*zip(*pts), marker + "-", label=impl)
            ax.set_title(f"{dt}, {'causal' if causal else 'full'}, {'fwd' if i == 0 else 'fwd+bwd'}")
            ax.set_xlabel("n")
            ax.set_ylabel("seconds")
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


# ---------------------------------------------------------------- --tune: block sizes and threads


def _tune(args: argparse.Namespace) -> dict:
    """Time of verified_ta.blocked per block size (one thread: process CPU time; more: wall time), and one vs
    --threads threads per kernel call size: the measurements behind blocked.default_block and PARALLEL_MIN_WORK."""
    import torch

    from verified_ta import blocked

    n, dtype = max(args.ns), getattr(torch, args.dtypes[0])
    sweeps = [(False, None, [max(1, k // n) for k in (2048, 4096, 8192, 16384, 32768)]),
              (True, None, [4, 8, 16, 32, 64]), (True, (n // 8, n // 8), [4, 8, 16, 32])]
    blocks = []
    for threads in (1, args.threads):
        torch.set_num_threads(threads)
        pick = 1 if threads == 1 else 0  # CPU time on one thread, wall time on more
        xs = [torch.randn(1, args.heads, n, args.d, dtype=dtype) for _ in range(5)]
        for causal, window, sizes in sweeps:
            for block in sizes:
                def fb() -> None:
                    ys = [x.clone().requires_grad_(True) for x in xs]
                    blocked.blocked_tensor_attention(*ys, causal=causal, window=window, block=block).sum().backward()

                fwd = _best(lambda: blocked.blocked_forward(*xs, causal=causal, window=window, block=block), args.reps)
                row = {"threads": threads, "dtype": args.dtypes[0], "n": n, "causal": causal, "window": window,
                       "block": block, "forward_s": fwd[pick], "forward_backward_s": _best(fb, args.reps)[pick],
                       "clock": "cpu" if pick else "wall"}
                blocks.append(row)
                print(row, flush=True)
    kernel = []
    op = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    for m, keys in ((16, 256), (32, 1024), (64, 4096), (128, 8192), (256, 16384), (512, 32768)):
        q = torch.randn(1, args.heads, m, args.d)
        k = torch.randn(1, args.heads, keys, args.d)
        row = {"queries": m, "pair_keys": keys, "work": args.heads * m * keys * args.d}
        for threads in (1, args.threads):
            torch.set_num_threads(threads)
            row[f"wall_s_{threads}_threads"] = _best(lambda: op(q, k, k), 5)[0]
        kernel.append(row)
        print(row, flush=True)
    return {"blocks": blocks, "kernel_threads": kernel}


def main() -> None:
    args = _parse()
    if args.worker:
        print(json.dumps(_worker(json.loads(args.worker))))
        return
    sys.path.insert(0, str(ROOT))
    from verified_ta.report import write_json

    if args.smoke:
        args.ns, args.reps = [16, 32], 1
    args.out.mkdir(parents=True, exist_ok=True)
    command = "python " + " ".join([Path(__file__).relative_to(ROOT).as_posix(), *sys.argv[1:]])
    start = time.time()
    machine = _machine(args.threads)
    if args.tune:
        result = {"machine": machine, **_tune(args)}
        result["machine"]["load_average_at_end"] = os.getloadavg()
        write_json(args.out / "bench_cpu_tune.json", result, command)
        return
    print(TABLE_HEAD, flush=True)
    result = {"machine": machine, "heads": args.heads, "d": args.d, "max_gb": args.max_gb, **_sweep(args)}
    result["machine"]["load_average_at_end"] = os.getloadavg()
    result["wall_s"] = round(time.time() - start, 1)
    write_json(args.out / "bench_cpu.json", result, command)
    md = [f"Machine: {machine['cpu']}, {machine['cores']} cores, {args.threads} threads, torch {machine['torch']}; "
          f"(1, {args.heads}, n, {args.d}); load average {machine['load_average_at_start'][0]:.1f} at start, "
          f"{result['machine']['load_average_at_end'][0]:.1f} at end; {result['wall_s']:.0f} s.", "",
          f"Command: `{command}`", "", TABLE_HEAD, *(_table_line(r) for r in result["rows"])]
    (args.out / "bench_cpu.md").write_text("\n".join(md) + "\n")
    _plot(result, args.out / "bench_cpu.png")
    print(f"wrote {args.out}/bench_cpu.{{json,md,png}}")


if __name__ == "__main__":
    main()
