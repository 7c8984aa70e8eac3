"""Context-parallel exact tensor attention (verified_ta.distributed) against the single-process run.

    python benchmarks/bench_context_parallel.py [--ranks 1,2,4] [--n 96,192] [--causal] [--layout snake]
    python benchmarks/bench_context_parallel.py --backend nccl --ranks 2,4,8 --n 1024,2048 --dtype bfloat16 --d 64
        # on a multi-GPU machine: one GPU per rank (not run in this project yet)

Per rank count P and length n: the slowest rank's forward and forward + backward wall time and the busiest rank's
CPU time (best of ``--repeats``, ranks aligned by a barrier before each run; on a shared box the CPU time is what
a rank would take on a core of its own), the single-process times of the same call on the full sequence
(``tensor_attention`` / the reference, same threads per process) and their ratio ×, and the bytes each rank moves through
collectives in one forward + backward, counted by wrapping ``torch.distributed`` calls: the options exchange
(``all_gather_object``, pickled sizes), the all-gather of K1, K2, V1, V2 (the P − 1 padded blocks other ranks
send) and the reduce-scatter of their gradients (the P − 1 blocks sent to their owners). A ring all-gather or
reduce-scatter moves exactly that much per rank in each direction. Also the causal-work balance table: the worst
rank's share of the visible pairs for P = 2, 4, 8, 16 in each layout (``causal_work``, exact integers).
Writes a table to stdout and strict JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import math
import os
import pickle
import platform
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

from verified_ta import distributed as cp
from verified_ta.interface import tensor_attention
from verified_ta.report import write_json

DTYPES = {"float64": torch.float64, "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def inputs(n: int, cfg: dict, device: torch.device) -> list[torch.Tensor]:
    """q, k1, k2, v1, v2 (1, heads, n, d) with entries in [-1, 1], the same on every rank."""
    g = torch.Generator().manual_seed(n)
    return [(torch.rand(1, cfg["heads"], n, cfg["d"], generator=g, dtype=torch.float64) * 2 - 1)
            .to(device=device, dtype=DTYPES[cfg["dtype"]]) for _ in range(5)]


def best_of(fn, repeats: int, sync) -> dict[str, float]:
    """Best wall-clock and best CPU seconds (this process, all its threads) of ``repeats`` runs."""
    wall, cpu = math.inf, math.inf
    for _ in range(repeats):
        sync()
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        sync()
        wall, cpu = min(wall, time.perf_counter() - start), min(cpu, time.process_time() - start_cpu)
    return {"wall_s": wall, "cpu_s": cpu}


class CollectiveBytes:
    """Counts the bytes of other ranks' blocks in this rank's collectives while installed (module docstring)."""

    def __init__(self) -> None:
        self.bytes = {"options exchange": 0, "all-gather K/V": 0, "reduce-scatter dK/dV": 0}
        self._saved = {}

    def __enter__(self) -> "CollectiveBytes":
        originals = {name: getattr(dist, name) for name in ("all_gather", "reduce_scatter", "all_gather_object")}
        self._saved = originals

        def all_gather(blocks, tensor, *a, **kw):
            self.bytes["all-gather K/V"] += sum(b.nbytes for b in blocks) - tensor.nbytes
            return originals["all_gather"](blocks, tensor, *a, **kw)

        def reduce_scatter(out, blocks, *a, **kw):
            self.bytes["reduce-scatter dK/dV"] += sum(b.nbytes for b in blocks) - out.nbytes
            return originals["reduce_scatter"](out, blocks, *a, **kw)

        def all_gather_object(objects, obj, *a, **kw):
            result = originals["all_gather_object"](objects, obj, *a, **kw)
            mine = len(pickle.dumps(obj))
            self.bytes["options exchange"] += sum(len(pickle.dumps(o)) for o in objects) - mine
            return result

        dist.all_gather, dist.reduce_scatter, dist.all_gather_object = all_gather, reduce_scatter, all_gather_object
        return self

    def __exit__(self, *exc) -> None:
        for name, fn in self._saved.items():
            setattr(dist, name, fn)


def rank_main(rank: int, world_size: int, cfg: dict) -> list[dict]:
    """On every rank: per n, this rank's best forward and forward + backward seconds and its collective bytes."""
    torch.set_num_threads(cfg["threads"])
    device = torch.device("cuda", rank) if cfg["backend"] == "nccl" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    sync = (lambda: (torch.cuda.synchronize(), dist.barrier())) if device.type == "cuda" else dist.barrier
    rows = []
    for n in cfg["n"]:
        shards = [cp.shard_sequence(x, rank, world_size, layout=cfg["layout"]).requires_grad_(True)
                  for x in inputs(n, cfg, device)]

        def forward(shards=shards):
            return cp.context_parallel_tensor_attention(*shards, causal=cfg["causal"], layout=cfg["layout"],
                                                        backend=cfg["local_backend"])

        def both(forward=forward):
            forward().sum().backward()

        both()  # warm-up
        with CollectiveBytes() as counted:
            both()
        rows.append({"n": n, "forward": best_of(forward, cfg["repeats"], sync),
                     "forward_backward": best_of(both, cfg["repeats"], sync), "bytes": counted.bytes})
    return rows


def single_process(cfg: dict) -> list[dict]:
    """The same call on the whole sequence in this process (no process group)."""
    torch.set_num_threads(cfg["threads"])
    device = torch.device("cuda", 0) if cfg["backend"] == "nccl" else torch.device("cpu")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    rows = []
    for n in cfg["n"]:
        xs = [x.requires_grad_(True) for x in inputs(n, cfg, device)]

        def forward(xs=xs):
            return tensor_attention(*xs, causal=cfg["causal"], backend=cfg["local_backend"])

        def both(forward=forward):
            forward().sum().backward()

        both()  # warm-up
        rows.append({"n": n, "forward": best_of(forward, cfg["repeats"], sync),
                     "forward_backward": best_of(both, cfg["repeats"], sync)})
    return rows


def balance_table(n: int) -> list[dict]:
    """Worst rank's share of the causal visible pairs, and that share × P (1 = perfectly balanced)."""
    rows = []
    for p in (2, 4, 8, 16):
        for layout in cp.LAYOUTS:
            work = cp.causal_work(n, p, layout)
            rows.append({"P": p, "layout": layout, "worst_share": max(work) / sum(work),
                         "worst_over_ideal": max(work) * p / sum(work)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ranks", default="1,2,4", help="comma-separated process counts P")
    parser.add_argument("--n", default="96,192", help="comma-separated sequence lengths")
    parser.add_argument("--d", type=int, default=16)
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float64")
    parser.add_argument("--causal", action="store_true")
    parser.add_argument("--layout", choices=cp.LAYOUTS, default=cp.DEFAULT_LAYOUT)
    parser.add_argument("--backend", choices=("gloo", "nccl"), default="gloo", help="nccl: one CUDA device per rank")
    parser.add_argument("--local-backend", choices=("auto", "triton", "reference"), default="auto")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads per process")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--balance-n", type=int, default=32768)
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per launch before it counts as a hang")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/bench_context_parallel.json"))
    args = parser.parse_args()
    cfg = {"n": [int(v) for v in args.n.split(",")], "d": args.d, "heads": args.heads, "dtype": args.dtype,
           "causal": args.causal, "layout": args.layout, "backend": args.backend, "local_backend": args.local_backend,
           "threads": args.threads, "repeats": args.repeats}
    base = {row["n"]: row for row in single_process(cfg)}
    rows = []
    print(f"{'P':>3} {'n':>6} | {'fwd wall':>8} {'cpu':>7} {'1-proc':>7} {'×':>5} | {'f+b wall':>8} {'cpu':>7} "
          f"{'1-proc':>7} {'×':>5} | {'KiB/rank':>8}")
    for p in (int(v) for v in args.ranks.split(",")):
        per_rank = cp.launch_local(rank_main, p, cfg, backend=args.backend, timeout=args.timeout)
        for i, n in enumerate(cfg["n"]):
            ranks = [r[i] for r in per_rank]
            row = {"P": p, "n": n, "single": {k: base[n][k] for k in ("forward", "forward_backward")},
                   "bytes_per_rank_max": {k: max(r["bytes"][k] for r in ranks) for k in ranks[0]["bytes"]}}
            for k in ("forward", "forward_backward"):  # the slowest rank (wall) and the busiest rank (CPU)
                row[k] = {t: max(r[k][t] for r in ranks) for t in ("wall_s", "cpu_s")}
                row[k]["cpu_speedup"] = base[n][k]["cpu_s"] / row[k]["cpu_s"]
            rows.append(row)
            kib = sum(row["bytes_per_rank_max"].values()) / 1024
            cells = [f"{row[k]['wall_s']:8.3f} {row[k]['cpu_s']:7.3f} {base[n][k]['cpu_s']:7.3f} "
                     f"{row[k]['cpu_speedup']:5.2f}" for k in ("forward", "forward_backward")]
            print(f"{p:>3} {n:>6} | {cells[0]} | {cells[1]} | {kib:8.1f}")
    balance = balance_table(args.balance_n)
    print(f"\nworst rank's share of the causal work (n = {args.balance_n}); × P, 1 = balanced")
    print(f"{'P':>3} " + " ".join(f"{layout:>22}" for layout in cp.LAYOUTS))
    for p in (2, 4, 8, 16):
        cells = [r for r in balance if r["P"] == p]
        print(f"{p:>3} " + " ".join(f"{r['worst_share']:>12.6f} ({r['worst_over_ideal']:.4f})" for r in cells))
    machine = f"{platform.machine()} {platform.processor() or ''}".strip()
    payload = {"machine": machine, "cpu_count": os.cpu_count(),
               "torch": torch.__version__, "config": cfg, "rows": rows, "balance_n": args.balance_n,
               "balance": balance}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, payload, command=" ".join(["python", *sys.argv]))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
