"""The FlashAttention accuracy rule for fused tensor attention (SPEC §2 via P15, L4).

For each of O, LSE, dQ, dK1, dK2, dV1, dV2: the kernel's max error against an exact result (the float64
reference, or the mpmath oracle for tiny cases) must be at most twice the max error of torch run in the
same dtype, plus a rounding floor. "Torch in the same dtype" is the worst of the standard evaluations:
the chunked reference (q∘k1 first), SDPA over the Kronecker-expanded keys (k1∘k2 first) and, up to
:data:`MATERIALISED_MAX_SCORES` scores, FlashAttention's own reference formulation (materialised scores, softmax,
P rounded to the dtype, P·V). One alone can be exact by accident where another summation order is not (n = 1:
a single score; seen at 15× the chunked reference's error; at scores near 50 in float32 the materialising
einsum was seen at 10× the chunked reference), which would make the rule test luck rather than accuracy. The floor is FlashAttention's: twice the error of adding and
subtracting 0.3 in the dtype, 2·max|fl(fl(x + 0.3) − 0.3) − x| (≈ 2u·(|x| + 0.3)), which covers values that
the same-dtype reference happens to get exactly. Inputs are rounded to the dtype first and the exact
result is computed from the rounded values, so only the arithmetic is compared.

Two rounding-level terms join the floor where the rule degenerates (:func:`rounding_floors`): the LSE is a
score when one pair dominates, so it gets the score rounding bound; dQ, dK1, dK2 carry dS = P∘(dP − δ),
which cancels exactly when n1·n2 = 1 (then both torch evaluations can be exact while any other summation
order is not: seen at 10⁸× the rule), so they get the propagated rounding bound of dP − δ. Both are
Higham γ-bounds (fp_bounds) for the kernel's arithmetic contract: operands rounded once to the dtype,
sums in float32.

Run as ``python -m verified_ta.kernels.accuracy`` with a JSON list of cases on stdin, it checks the Triton
kernels (under ``TRITON_INTERPRET=1`` on a CPU) and prints the rows as JSON: the interpreter tests use this
to get a fresh process in which Triton reads the interpreter flag before any kernel is defined.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import torch

from ..blocked import blocked_tensor_attention
from ..fp_bounds import gamma
from ..reference import resolve_scale, tensor_attention_backward, tensor_attention_forward, tensor_attention_reference
from ..report import CheckRow
from .baselines import expanded_lse, expanded_sdpa, naive_attention

if TYPE_CHECKING:
    from ..masks import Window
    from .configs import KernelConfig

__all__ = [
    "QUANTITIES",
    "AttentionResult",
    "make_inputs",
    "autograd_result",
    "reference_result",
    "expanded_result",
    "MATERIALISED_MAX_SCORES",
    "materialised_result",
    "same_dtype_results",
    "kernel_result",
    "oracle_result",
    "rounding_floor",
    "rounding_floors",
    "abs_error",
    "flash_rule_tolerance",
    "flash_rule_rows",
    "check_case",
]

#: the materialised baseline of :func:`same_dtype_results` runs up to this many scores (2^24: 64 MiB in float32)
MATERIALISED_MAX_SCORES = 1 << 24

QUANTITIES = ("out", "lse", "dq", "dk1", "dk2", "dv1", "dv2")
_SPEC = {"out": "P15", "lse": "P15"}  # gradients: L4


@dataclass
class AttentionResult:
    """Forward output, natural-log LSE and the five L4 gradients for one upstream dO."""

    out: torch.Tensor
    lse: torch.Tensor
    grads: tuple[torch.Tensor, ...]

    def get(self, name: str) -> torch.Tensor:
        return {"out": self.out, "lse": self.lse, **dict(zip(QUANTITIES[2:], self.grads))}[name]


def make_inputs(
    shape_q: Sequence[int], n1: int, n2: int, *, dtype: torch.dtype, input_scale: float = 1.0,
    seed: int = 0, device: str | torch.device = "cpu", kv_heads: int | None = None,
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Random ``(q, k1, k2, v1, v2)`` and dO: standard normal × input_scale, rounded to ``dtype`` (values exact in it).

    ``kv_heads`` gives k1, k2, v1, v2 fewer heads than q (dimension -3; grouped-query heads)."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    *batch, n_q, d = shape_q
    kv_batch = batch if kv_heads is None else [*batch[:-1], kv_heads]
    shapes = [(*b, n, d) for b, n in ((batch, n_q), (kv_batch, n1), (kv_batch, n2), (kv_batch, n1), (kv_batch, n2))]
    xs = [(torch.randn(s, generator=g, dtype=torch.float64) * input_scale).to(dtype) for s in shapes]
    dout = torch.randn((*batch, n_q, d), generator=g, dtype=torch.float64).to(dtype)
    return [x.to(device) for x in xs], dout.to(device)


def autograd_result(fn: Callable[..., tuple[torch.Tensor, torch.Tensor]], inputs: Sequence[torch.Tensor],
                    grad_out: torch.Tensor) -> AttentionResult:
    """Run a differentiable ``fn(q, k1, k2, v1, v2) -> (out, lse)`` and backpropagate dO through ``out``."""
    xs = [x.detach().clone().requires_grad_(True) for x in inputs]
    out, lse = fn(*xs)
    grads = torch.autograd.grad(out, xs, grad_out)
    return AttentionResult(out.detach(), lse.detach(), tuple(grads))


def reference_result(inputs: Sequence[torch.Tensor], grad_out: torch.Tensor, *, scale: float | None, causal: bool,
                     dtype: torch.dtype, window: Window | None = None, chunk_size: int | None = None) -> AttentionResult:
    """The chunked torch reference (SPEC §2, L4) evaluated in ``dtype``."""
    return autograd_result(
        lambda *x: tensor_attention_reference(*x, scale=scale, causal=causal, window=window, return_lse=True,
                                              chunk_size=chunk_size),
        [x.to(dtype) for x in inputs], grad_out.to(dtype),
    )


def expanded_result(inputs: Sequence[torch.Tensor], grad_out: torch.Tensor, *, scale: float | None, causal: bool,
                    dtype: torch.dtype, window: Window | None = None) -> AttentionResult:
    """SDPA over the Kronecker-expanded keys (and logsumexp of the expanded scores) evaluated in ``dtype``."""
    return autograd_result(
        lambda *x: (expanded_sdpa(*x, scale=scale, causal=causal, window=window),
                    expanded_lse(x[0], x[1], x[2], scale=scale, causal=causal, window=window)),
        [x.to(dtype) for x in inputs], grad_out.to(dtype),
    )


def materialised_result(inputs: Sequence[torch.Tensor], grad_out: torch.Tensor, *, scale: float | None,
                        causal: bool, dtype: torch.dtype, window: Window | None = None) -> AttentionResult:
    """FlashAttention's ``attention_ref`` formulation in ``dtype``: the materialised n_q × n1 × n2 scores (einsum),
    torch.softmax, P·(V1⊘V2) (:func:`verified_ta.kernels.baselines.naive_attention`), autograd for the gradients."""
    return autograd_result(
        lambda *x: (naive_attention(*x, scale=scale, causal=causal, window=window),
                    expanded_lse(x[0], x[1], x[2], scale=scale, causal=causal, window=window)),
        [x.to(dtype) for x in inputs], grad_out.to(dtype),
    )


def same_dtype_results(inputs: Sequence[torch.Tensor], grad_out: torch.Tensor, *, scale: float | None, causal: bool,
                       dtype: torch.dtype, window: Window | None = None,
                       chunk_size: int | None = None) -> list[AttentionResult]:
    """The same-dtype torch evaluations the rule measures an implementation against: the package reference (q∘k1
    first), SDPA over the expanded keys (k1∘k2 first) and, while its batch·heads·n_q·n1·n2 scores number at most
    :data:`MATERIALISED_MAX_SCORES`, the materialised scores of FlashAttention's own rule (P rounded to ``dtype``
    before P·V, so a correct materialising implementation meets the rule against itself)."""
    q, k1, k2 = inputs[:3]
    results = [reference_result(inputs, grad_out, scale=scale, causal=causal, dtype=dtype, window=window,
                                chunk_size=chunk_size),
               expanded_result(inputs, grad_out, scale=scale, causal=causal, dtype=dtype, window=window)]
    if q.numel() // q.shape[-1] * k1.shape[-2] * k2.shape[-2] <= MATERIALISED_MAX_SCORES:
        results.append(materialised_result(inputs, grad_out, scale=scale, causal=causal, dtype=dtype, window=window))
    return results


def kernel_result(inputs: Sequence[torch.Tensor], grad_out: torch.Tensor, *, scale: float | None, causal: bool,
                  window: Window | None = None, config: KernelConfig | None = None, splits: int | None = None,
                  deterministic: bool = True, trap: str | None = None) -> AttentionResult:
    """The Triton launchers called directly (tile ``config``, k1 ``splits``, atomic dQ and planted ``trap`` for tests)."""
    from . import load

    tk = load()
    s = resolve_scale(scale, inputs[0].shape[-1])
    out, lse = tk.forward(*inputs, s, causal, window=window, config=config, splits=splits, trap=trap)
    grads = tk.backward(grad_out, *inputs, out, lse, s, causal, window=window, deterministic=deterministic,
                        config=config, trap=trap)
    return AttentionResult(out, lse, tuple(grads))


def oracle_result(inputs: Sequence[torch.Tensor], grad_out: torch.Tensor, *, scale: float | None, causal: bool,
                  window: Window | None = None, dps: int = 30) -> AttentionResult:
    """The mpmath oracle at ``dps`` digits (forward and ⟨dO, Att⟩'s gradient), rounded to float64; tiny sizes only.

    Grouped-query heads: each query head's vjp is taken against its key head and the key gradients summed per group.
    """
    from ..oracles import mp_attention, mp_attention_vjp

    def f64(a) -> torch.Tensor:
        return torch.tensor(a.astype(float), dtype=torch.float64)

    cpu = [x.detach().to("cpu", torch.float64) for x in inputs]
    dout = grad_out.detach().to("cpu", torch.float64)
    out, lse = mp_attention(*cpu, scale=scale, causal=causal, window=window, dps=dps)
    batch = cpu[0].shape[:-2]
    group = cpu[0].shape[-3] // cpu[1].shape[-3] if cpu[0].dim() >= 3 else 1
    grads = [torch.zeros_like(x) for x in cpu]
    for idx in np.ndindex(tuple(batch)):
        kdx = (*idx[:-1], idx[-1] // group) if group > 1 else idx
        vjp = mp_attention_vjp(cpu[0][idx], *(x[kdx] for x in cpu[1:]), dout[idx], scale=scale, causal=causal,
                               window=window, dps=dps)
        grads[0][idx] = f64(vjp[0])
        for g, gh in zip(grads[1:], vjp[1:]):
            g[kdx] += f64(gh)
    return AttentionResult(f64(out), f64(lse), tuple(grads))


def rounding_floor(exact: torch.Tensor, dtype: torch.dtype) -> float:
    """FlashAttention's absolute floor: 2·max|fl(fl(x + 0.3) − 0.3) − x| with the arithmetic in ``dtype``."""
    x = exact.to(torch.float64)
    return 2.0 * float(((x.to(dtype) + 0.3 - 0.3).to(torch.float64) - x).abs().max())


def rounding_floors(inputs: Sequence[torch.Tensor], grad_out: torch.Tensor, exact: AttentionResult, *,
                    scale: float | None, causal: bool, dtype: torch.dtype, window: Window | None = None,
                    chunk_size: int | None = None) -> dict[str, float]:
    """Per quantity: FlashAttention's floor, plus the score bound (LSE) and the dP − δ cancellation bound (dQ, dK).

    Scores: |Δs| ≤ (γ_1(dtype) + γ_{d+2}(fp32))·s·Σ_l max|q_l|·max|k1_l|·max|k2_l| (one rounding of q∘k1, an fp32 dot).
    dP − δ for query i: |Δ| ≤ c_i = (γ_2(dtype) + γ_{d+2}(fp32))·Σ_l |dO_il|(max_a|v1_al|·max_b|v2_bl| + |O_il|).
    Propagated through L4 with P ≥ 0 (float64 reference contractions, O(n·d) memory):
    dQ_i ≤ s·c_i·Σ_ab P|k1_a|∘|k2_b|, dK1_a ≤ s·Σ_ib P c_i|q_i|∘|k2_b|, dK2_b ≤ s·Σ_ia P c_i|q_i|∘|k1_a|.
    """
    x64 = [x.detach().to(torch.float64) for x in inputs]
    q, k1, k2, v1, v2 = x64
    d = q.shape[-1]
    s = resolve_scale(scale, d)
    u_scores = gamma(1, dtype) + gamma(d + 2, torch.float32)
    u_cancel = gamma(2, dtype) + gamma(d + 2, torch.float32)
    group = q.shape[-3] // k1.shape[-3] if q.dim() >= 3 else 1  # grouped-query heads: key maxima per query head
    col_max = [x.abs().amax(dim=-2, keepdim=True) for x in (q, k1, k2, v1, v2)]
    col_max = col_max[:1] + [m.repeat_interleave(group, dim=-3) if group > 1 else m for m in col_max[1:]]
    score_bound = abs(s) * float((col_max[0] * col_max[1] * col_max[2]).sum(-1).max())
    out, lse = exact.out.to(q.device, torch.float64), exact.lse.to(q.device, torch.float64)
    do = grad_out.detach().to(torch.float64).abs()
    c = u_cancel * (do * (col_max[3] * col_max[4] + out.abs())).sum(-1, keepdim=True)
    kk, _ = tensor_attention_forward(q, k1, k2, k1.abs(), k2.abs(), scale=s, causal=causal, window=window,
                                     chunk_size=chunk_size)
    _, _, _, dk1_mag, dk2_mag = tensor_attention_backward(
        c * q.abs(), q, k1, k2, k1.abs(), k2.abs(), out, lse, scale=s, causal=causal, window=window,
        chunk_size=chunk_size)
    extra = {"lse": u_scores * score_bound, "dq": abs(s) * float((c * kk).max()),
             "dk1": abs(s) * float(dk1_mag.max()), "dk2": abs(s) * float(dk2_mag.max())}
    return {name: rounding_floor(exact.get(name), dtype) + extra.get(name, 0.0) for name in QUANTITIES}


def abs_error(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """|a − b| entrywise, in float64 on the CPU (NaN stays NaN)."""
    return (a.detach().to("cpu", torch.float64) - b.detach().to("cpu", torch.float64)).abs()


def flash_rule_tolerance(reference_error: float, floor: float) -> float:
    """The FlashAttention rule (P15, L4): 2 × the same-dtype torch reference's max error + a rounding floor."""
    return 2.0 * reference_error + floor


def _max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(abs_error(a, b).max())


def flash_rule_rows(candidate: AttentionResult, same_dtype: Sequence[AttentionResult], exact: AttentionResult,
                    floors: dict[str, float], dtype: torch.dtype, label: str) -> list[CheckRow]:
    """One row per quantity: error(candidate) <= 2·max error(same-dtype torch) + rounding floor."""
    rows = []
    for name in QUANTITIES:
        ex = exact.get(name).detach().to("cpu", torch.float64)
        ref_err = max(_max_err(r.get(name), ex) for r in same_dtype)
        floor = floors[name]
        rows.append(CheckRow.compare(
            _SPEC.get(name, "L4"), f"{label} {name}", _max_err(candidate.get(name), ex), flash_rule_tolerance(ref_err, floor),
            detail=f"2×{ref_err:.2e} (torch {str(dtype).removeprefix('torch.')}) + floor {floor:.1e}",
            reference_error=ref_err, floor=floor,
        ))
    return rows


def check_case(*, shape_q: Sequence[int], n1: int, n2: int, dtype: torch.dtype, causal: bool,
               scale: float | None = None, window: Window | None = None, kv_heads: int | None = None,
               input_scale: float = 1.0, seed: int = 0, exact: str = "float64", config: KernelConfig | None = None,
               splits: int | None = None, deterministic: bool = True, trap: str | None = None,
               via: str = "launchers", label: str = "") -> list[CheckRow]:
    """Kernel vs exact under the FlashAttention rule for one random case (CPU tensors; the interpreter path).

    ``via="interface"`` runs :func:`verified_ta.tensor_attention` with ``backend="triton"`` and autograd instead
    of the launchers (then ``config``, ``splits`` and ``trap`` must be None).
    """
    window = tuple(window) if window is not None else None
    inputs, dout = make_inputs(shape_q, n1, n2, dtype=dtype, input_scale=input_scale, seed=seed, kv_heads=kv_heads)
    if exact == "mpmath":
        ex = oracle_result(inputs, dout, scale=scale, causal=causal, window=window)
    elif exact == "float64":  # the blocked CPU path: within the rigorous float64 bound (tests/test_blocked.py)
        ex = autograd_result(lambda *x: blocked_tensor_attention(*x, scale=scale, causal=causal, window=window,
                                                                 return_lse=True),
                             [x.to(torch.float64) for x in inputs], dout.to(torch.float64))
    else:
        raise ValueError(f"exact must be 'float64' or 'mpmath'; got {exact!r}")
    same = same_dtype_results(inputs, dout, scale=scale, causal=causal, window=window, dtype=dtype)
    if via == "interface" and config is None and trap is None and splits is None:
        from ..interface import tensor_attention

        cand = autograd_result(lambda *x: tensor_attention(*x, scale=scale, causal=causal, window=window,
                                                           return_lse=True, backend="triton"), inputs, dout)
    elif via == "launchers":
        cand = kernel_result(inputs, dout, scale=scale, causal=causal, window=window, config=config, splits=splits,
                             deterministic=deterministic, trap=trap)
    else:
        raise ValueError(f"via must be 'launchers' or 'interface' (without config/splits/trap); got {via!r}")
    floors = rounding_floors(inputs, dout, ex, scale=scale, causal=causal, window=window, dtype=dtype)
    return flash_rule_rows(cand, same, ex, floors, dtype, label)


def main() -> None:
    """Read ``[{"label", "shape_q", "n1", "n2", "dtype", "causal", ..., "config": [bm, bn]}]`` from stdin; print rows."""
    from .configs import KernelConfig

    results = {}
    for case in json.load(sys.stdin):
        case = dict(case)
        case["dtype"] = getattr(torch, case["dtype"])
        if case.get("config") is not None:
            case["config"] = KernelConfig(*case["config"])
        results[case["label"]] = [asdict(r) for r in check_case(**case)]
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
