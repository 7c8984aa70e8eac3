"""Rank-side code for tests/test_distributed.py: runs inside the processes that ``launch_local`` spawns.

One call of :func:`run_cases` per world size runs every case in one process group and returns this rank's shards
of out, LSE and the five gradients; the parent process puts the shards together and compares them with the
single-process reference (the rounding bounds are computed there, once per case, not once per rank). The upstream
gradient is dO on out only (a scalar ⟨out, dO⟩ is differentiated), which is what the rounding bounds cover.

Planted bugs (each patches one piece of ``verified_ta.distributed`` for the duration of one case):
``mask_at_local_rows`` (the causal local backend, the blocked CPU path, gets the shard's local rows
0 … n_local − 1 as positions),
``no_reduce_scatter`` (each rank keeps only its own queries' part of dK1, dK2, dV1, dV2: the other ranks' terms
are missing), ``keys_in_rank_order`` (the gathered keys are left in rank order instead of position order, wrong for
the zigzag and snake layouts), and ``module_drops_window`` (the TensorAttention branch loses the window).
"""

from __future__ import annotations

import functools
from contextlib import contextmanager
from typing import Iterator

import torch
import torch.distributed as dist

from verified_ta import distributed as cp
from verified_ta.interface import TensorAttention

F64 = torch.float64
NAMES = ("out", "lse", "dq", "dk1", "dk2", "dv1", "dv2")
#: the clean functional call, kept while ``module_drops_window`` patches the module attribute the layer reads
_functional = cp.context_parallel_tensor_attention

#: name → (n, q heads, kv heads, causal, window, layout); n is uneven for 2, 3 and 4 ranks except where noted
CASES = {
    "full_contiguous": (13, 2, 2, False, None, "contiguous"),
    "causal_snake": (11, 2, 2, True, None, "snake"),
    "causal_contiguous": (10, 1, 1, True, None, "contiguous"),  # n = 10 is even for 2 ranks
    "window_zigzag": (13, 2, 2, True, (3, 5), "zigzag"),
    "window_snake_gqa": (13, 4, 2, True, (None, 4), "snake"),
    "full_snake_gqa": (9, 4, 2, False, None, "snake"),
    "window_contiguous_gqa_reference": (11, 2, 1, True, (4, None), "contiguous"),
}
#: the local backend of the cases that do not use the default "auto" (on the CPU: the blocked path)
BACKEND = {"window_contiguous_gqa_reference": "reference"}
D = 3
#: planted bug → the case it runs on
PLANTS = {
    "mask_at_local_rows": "causal_contiguous",
    "no_reduce_scatter": "full_contiguous",
    "keys_in_rank_order": "causal_snake",
}


def case_inputs(name: str) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The full-sequence inputs q, k1, k2, v1, v2 and upstream dO of a case (same seed on every rank)."""
    n, hq, hkv, *_ = CASES[name]
    g = torch.Generator().manual_seed(sorted(CASES).index(name) + 100)
    q = torch.rand(2, hq, n, D, generator=g, dtype=F64) * 2 - 1
    kv = [torch.rand(2, hkv, n, D, generator=g, dtype=F64) * 2 - 1 for _ in range(4)]
    return [q, *kv], torch.rand(2, hq, n, D, generator=g, dtype=F64) - 0.5


def run_case(name: str, group) -> list[torch.Tensor]:
    """This rank's shards of out, LSE, dQ, dK1, dK2, dV1, dV2 from the distributed operator."""
    rank, world_size = dist.get_rank(group), dist.get_world_size(group)
    *_, causal, window, layout = CASES[name]
    inputs, grad_out = case_inputs(name)
    shards = [cp.shard_sequence(x, rank, world_size, layout=layout).requires_grad_(True) for x in inputs]
    out, lse = cp.context_parallel_tensor_attention(*shards, group=group, causal=causal, window=window, layout=layout,
                                                    return_lse=True, backend=BACKEND.get(name, "auto"))
    local_do = cp.shard_sequence(grad_out, rank, world_size, layout=layout)
    grads = torch.autograd.grad((out * local_do).sum(), shards)
    return [out.detach(), lse.detach(), *grads]


@contextmanager
def planted(bug: str) -> Iterator[None]:
    """Patch one piece of verified_ta.distributed (module docstring) for the duration of the block."""
    if bug == "mask_at_local_rows":
        attr, clean = "BlockedTensorAttention", cp.BlockedTensorAttention

        class _Buggy:
            @staticmethod
            def apply(*args):
                return clean.apply(*args[:-1], torch.arange(len(args[-1]), device=args[-1].device))

        patch = _Buggy
    elif bug == "no_reduce_scatter":
        attr, clean = "_reduce_scatter_sequence", cp._reduce_scatter_sequence
        patch = lambda g, plan: g.index_select(g.dim() - 2, plan.positions)  # noqa: E731
    elif bug == "keys_in_rank_order":
        attr, clean = "_all_gather_sequence", cp._all_gather_sequence
        patch = lambda x, plan: clean(x, cp._Plan(**{**plan.__dict__, "order": None}))  # noqa: E731
    elif bug == "module_drops_window":
        attr, clean = "context_parallel_tensor_attention", cp.context_parallel_tensor_attention
        patch = lambda *a, window=None, **kw: clean(*a, **kw)  # noqa: E731
    else:
        raise ValueError(f"unknown planted bug {bug!r}")
    setattr(cp, attr, patch)
    try:
        yield
    finally:
        setattr(cp, attr, clean)


def mismatches(group) -> dict[str, str]:
    """Each way one rank's call can disagree with the others → the ValueError message this rank raised."""
    rank, world_size = dist.get_rank(group), dist.get_world_size(group)
    attention = functools.partial(cp.context_parallel_tensor_attention, group=group)
    inputs, _ = case_inputs("causal_snake")
    shards = [cp.shard_sequence(x, rank, world_size) for x in inputs]
    contiguous = [cp.shard_sequence(x, rank, world_size, layout="contiguous") for x in inputs]
    last = rank == world_size - 1
    calls = {
        # one rank's own inputs are invalid (its q has another head dimension than its keys)
        "local_shapes": lambda: attention(
            torch.cat([shards[0], shards[0][..., :1]], -1) if last else shards[0], *shards[1:], causal=True),
        # valid on each rank, but the head dimension differs between ranks
        "head_dim": lambda: attention(
            *(torch.cat([x, x[..., :1]], -1) if last else x for x in shards), causal=True),
        # contiguous shards: the last rank holds two tokens more than the layout gives it (sizes must not increase)
        "lengths": lambda: attention(
            *(torch.cat([x, x[..., :2, :]], -2) if last else x for x in contiguous), causal=True, layout="contiguous"),
        "causal": lambda: attention(*shards, causal=not last),
        "layout": lambda: attention(*shards, causal=True,
                                                               layout="zigzag" if last else "snake"),
    }
    messages = {}
    for what, call in calls.items():
        try:
            call()
            messages[what] = "no error"
        except ValueError as e:
            messages[what] = str(e)
    return messages


def module_wiring(group) -> bool:
    """TensorAttention(process_group=...) equals the functional distributed call on its own projections."""
    rank, world_size = dist.get_rank(group), dist.get_world_size(group)
    torch.manual_seed(5)
    m = TensorAttention(8, 4, num_kv_heads=2, causal=True, window=(3, 2), scale=0.3, dtype=F64,
                        process_group=group)
    x = cp.shard_sequence(torch.rand(2, 11, 8, dtype=F64, generator=torch.Generator().manual_seed(6)), rank,
                          world_size, dim=1)
    heads = lambda t, h: t.reshape(2, -1, h, 2).transpose(1, 2)  # noqa: E731
    q, k1, k2, v1, v2 = (heads(p(x), h) for p, h in ((m.q_proj, 4), (m.k1_proj, 2), (m.k2_proj, 2),
                                                        (m.v1_proj, 2), (m.v2_proj, 2)))
    att = _functional(q, k1, k2, v1, v2, group=group, causal=True, window=(3, 2), scale=0.3)
    expected = m.out_proj(att.transpose(1, 2).reshape(2, -1, 8))
    return bool(torch.equal(m(x), expected))


def run_group(group) -> dict:
    """Every check in one process group (mismatches first: the group must survive them)."""
    size = dist.get_world_size(group)
    results: dict = {"mismatches": mismatches(group) if size > 1 else {}}
    results["cases"] = {name: run_case(name, group) for name in CASES}
    results["module"] = module_wiring(group)
    results["plants"] = {}
    if size > 1:
        for bug, name in PLANTS.items():
            with planted(bug):
                results["plants"][bug] = run_case(name, group)
        with planted("module_drops_window"):
            results["plants"]["module_drops_window"] = module_wiring(group)
    return results


def run_cases(rank: int, world_size: int) -> dict[int, dict]:
    """Every check in the groups of ranks 0 … P − 1 for P = 1 … world_size: process groups of every size from one
    launch (spawning costs seconds per process). Returns this rank's results per group size it belongs to."""
    torch.set_num_threads(1)  # world_size processes share the machine's cores
    results = {}
    for size in range(1, world_size + 1):
        group = dist.new_group(list(range(size)))  # collective: every rank calls it
        if rank < size:
            results[size] = run_group(group)
    return results


def unequal_all_gather(rank: int, world_size: int) -> None:
    """A raw gloo all_gather whose ranks disagree on the size: the collective this module's exchange prevents."""
    blocks = [torch.zeros(rank + 1) for _ in range(world_size)]
    dist.all_gather(blocks, torch.zeros(rank + 1))


def sleep_forever(rank: int, world_size: int) -> None:
    """Stands for a rank stuck in a collective that another rank never entered."""
    import time

    time.sleep(3600)


#: the Triton local backend (non-causal): (batch, heads, n, d), float32 (run under TRITON_INTERPRET=1 on a CPU)
TRITON_SHAPE = (1, 2, 7, 16)


def triton_case(rank: int, world_size: int) -> dict[str, list[torch.Tensor]]:
    """This rank's shards of out, LSE and the five gradients with ``backend="triton"`` (layout snake, n = 7), clean
    and with the ``no_reduce_scatter`` bug planted."""
    from verified_ta.kernels.accuracy import make_inputs

    *_, n, _ = TRITON_SHAPE
    inputs, grad_out = make_inputs(TRITON_SHAPE, n, n, dtype=torch.float32, seed=3)

    def run() -> list[torch.Tensor]:
        shards = [cp.shard_sequence(x, rank, world_size).requires_grad_(True) for x in inputs]
        out, lse = cp.context_parallel_tensor_attention(*shards, return_lse=True, backend="triton")
        grads = torch.autograd.grad((out * cp.shard_sequence(grad_out, rank, world_size)).sum(), shards)
        return [out.detach(), lse.detach(), *grads]

    results = {"clean": run()}
    with planted("no_reduce_scatter"):
        results["no_reduce_scatter"] = run()
    return results
