"""The offline Hopper compile gate: every kernel variant the dispatcher can launch, compiled for a GPU target on a
CPU (Triton's wheel carries ptxas), with its resources. No GPU and no driver are needed.

A variant = one @triton.jit kernel × dtype × d × causal × every config :mod:`~verified_ta.kernels.configs` may pick
(autotune candidates included) × the kernel's own switches (k1 splits, atomic dQ). The window sizes and the
grouped-head factor are runtime arguments: one binary serves windowed and full, grouped and plain calls, and the
windowed forward's own candidates are listed as variants too. For each: registers, spill bytes, stack
(``ptxas -v`` on the PTX, with the flags Triton uses), shared memory, ``wgmma`` instructions in the PTX, compile
seconds, and what is needed to recompile it (qualified name, signature, constexprs, warps, stages).

A variant passes when it compiles, fits the target's shared memory, and, for fp16/bf16, spills nothing and uses
``wgmma`` (kernels with a tensor-core dot). float32 runs IEEE dots (no tensor cores): spills are reported, not failed.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

import torch

from .configs import KernelConfig, candidates, k1_owner_passes

__all__ = ["TARGETS", "Variant", "GateResult", "variants", "compile_variant", "run_gate", "parse_target"]

#: name -> (compute capability, ptxas --gpu-name, max shared memory per block in bytes)
TARGETS = {"sm_90": (90, "sm_90a", 232_448), "sm_80": (80, "sm_80", 166_912)}
_DTYPES = {"float16": ("fp16", torch.float16), "bfloat16": ("bf16", torch.bfloat16), "float32": ("fp32", torch.float32)}
#: the kernels whose hot loop is a tensor-core dot (combine and δ are elementwise)
_DOT_KERNELS = ("forward", "dq", "k1_owner", "k2_owner")
#: fixed launch parameters of the two elementwise kernels (see triton_kernels.forward / backward)
_FIXED = {"combine": KernelConfig(64, 16, 4, 1), "delta": KernelConfig(64, 16, 4, 1)}


def parse_target(name: str) -> str:
    """ValueError unless ``name`` is a supported target (``sm_90``, ``sm_80``)."""
    if name not in TARGETS:
        raise ValueError(f"target must be one of {sorted(TARGETS)}; got {name!r}")
    return name


@dataclass(frozen=True)
class Variant:
    """One compilable kernel instance and the dispatch contexts it serves."""

    kernel: str
    dtype: str
    d: int
    causal: bool
    config: KernelConfig
    switches: tuple[tuple[str, Any], ...] = ()
    contexts: tuple[str, ...] = ("full",)

    @property
    def label(self) -> str:
        c = self.config
        sw = "".join(f" {k}={v}" for k, v in self.switches)
        return (f"{self.kernel} {self.dtype} d={self.d} {'causal' if self.causal else 'full'} "
                f"{c.block_m}x{c.block_n} w{c.num_warps} s{c.num_stages}{sw}")


@dataclass
class GateResult:
    """Resources of one compiled variant and the verdict (``reasons`` lists every failed criterion)."""

    label: str
    kernel: str
    qualname: str
    dtype: str
    d: int
    causal: bool
    contexts: list[str]
    num_warps: int
    num_stages: int
    signature: dict[str, str]
    constexprs: dict[str, Any]
    registers: int | None = None
    spill_stores: int | None = None
    spill_loads: int | None = None
    stack_bytes: int | None = None
    shared_bytes: int | None = None
    wgmma: int | None = None
    compile_s: float | None = None
    error: str | None = None
    reasons: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.reasons

    def to_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}


def variants(*, dtypes: Iterable[str] = tuple(_DTYPES), head_dims: Iterable[int] = (16, 32, 64, 128),
             causal: Iterable[bool] = (False, True), kernels: Iterable[str] | None = None) -> list[Variant]:
    """Every variant the dispatcher can launch for these dtypes, d and causal flags (deduplicated binaries)."""
    wanted = set(kernels) if kernels is not None else None
    found: dict[tuple, set[str]] = {}

    def add(kernel: str, dtype: str, d: int, c: bool, cfg: KernelConfig, switches: tuple, context: str) -> None:
        if wanted is None or kernel in wanted:
            found.setdefault((kernel, dtype, d, c, cfg, switches), set()).add(context)

    for dtype in dtypes:
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)}; got {dtype!r}")
        tdtype = _DTYPES[dtype][1]
        for d in head_dims:
            add("combine", dtype, d, False, _FIXED["combine"], (), "k1 splits")
            add("delta", dtype, d, False, _FIXED["delta"], (), "backward")
            for c in causal:
                contexts = ("full", "window") if c else ("full",)
                for context in contexts:
                    for cfg in candidates("forward", tdtype, d, windowed=context == "window"):
                        for split in (False, True):
                            add("forward", dtype, d, c, cfg, (("SPLIT", split),), context)
                    for cfg in candidates("dq", tdtype, d):
                        add("dq", dtype, d, c, cfg, (), context)
                    for cfg in candidates("k1_owner", tdtype, d):
                        for want_dk, want_dv in k1_owner_passes(d):
                            for atomic in ((False, True) if want_dk else (False,)):
                                add("k1_owner", dtype, d, c, cfg, (("ATOMIC_DQ", atomic), ("WANT_DK", want_dk),
                                                                   ("WANT_DV", want_dv)), context)
                    for cfg in candidates("k2_owner", tdtype, d):
                        add("k2_owner", dtype, d, c, cfg, (), context)
    return [Variant(k, dt, d, c, cfg, sw, tuple(sorted(ctx))) for (k, dt, d, c, cfg, sw), ctx in found.items()]


def _signature(fn, dtype: str, constexprs: dict[str, Any]) -> tuple[dict[str, str], dict]:
    """Triton signature of ``fn`` for ``dtype`` inputs, and the divisibility attributes a real launch sees."""
    ty = _DTYPES[dtype][0]
    fp32_ptrs = {"LSE", "DELTA", "O_PART", "LSE_PART"}
    if constexprs.get("SPLIT"):
        fp32_ptrs.add("O")
    if fn.__name__ == "_k1_owner_kernel":
        fp32_ptrs.add("DQ")
    sig, attrs = {}, {}
    for index, name in enumerate(fn.arg_names):
        if name in constexprs:
            sig[name] = "constexpr"
        elif name.isupper() or name.startswith(("DQ", "DK", "DV")):
            sig[name] = "*fp32" if name in fp32_ptrs else f"*{ty}"
            attrs[(index,)] = [["tt.divisibility", 16]]
        elif name == "scale":
            sig[name] = "fp32"
        else:
            sig[name] = "i32"
            if name.startswith("stride_") and not name.endswith("n"):  # head and batch strides: multiples of n·d
                attrs[(index,)] = [["tt.divisibility", 16]]
            elif name.startswith("stride_"):  # row strides: d or H·d, multiples of 16 for d >= 16
                attrs[(index,)] = [["tt.divisibility", 16]]
    return sig, attrs


def _constexprs(v: Variant) -> dict[str, Any]:
    c = v.config
    tdtype = _DTYPES[v.dtype][1]
    prec = "ieee" if tdtype == torch.float32 else "tf32"
    if v.kernel == "delta":
        return {"D": v.d, "BLOCK_M": c.block_m}
    if v.kernel == "combine":
        return {"D": v.d, "BLOCK_M": c.block_m, "TRAP": "none"}
    base = {"D": v.d, "BLOCK_M": c.block_m, "BLOCK_N": c.block_n, "CAUSAL": v.causal, "PREC": prec, "TRAP": "none"}
    if v.kernel == "forward":
        base["FOLD"] = tdtype != torch.float32
    return {**base, **dict(v.switches)}


def _ptxas_report(ptx: str, gpu_name: str) -> dict[str, int]:
    """Registers, spill bytes and stack of ``ptx`` from ``ptxas -v`` with Triton's own flags."""
    from triton.backends.nvidia.compiler import get_ptxas

    ptxas = get_ptxas(int(re.sub(r"\D", "", gpu_name))).path
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "k.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        proc = subprocess.run([ptxas, "-lineinfo", "-v", "--regAllocOptLevel=2", f"--gpu-name={gpu_name}", src,
                               "-o", os.path.join(tmp, "k.cubin")], capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise RuntimeError(f"ptxas failed: {log[-2000:]}")

    def grab(pattern: str) -> int:
        m = re.search(pattern, log)
        if m is None:
            raise RuntimeError(f"ptxas -v output lacks {pattern!r}: {log[-2000:]}")
        return int(m.group(1))

    return {"registers": grab(r"Used (\d+) registers"), "spill_stores": grab(r"(\d+) bytes spill stores"),
            "spill_loads": grab(r"(\d+) bytes spill loads"), "stack_bytes": grab(r"(\d+) bytes stack frame")}


def compile_variant(v: Variant, target: str = "sm_90", fn=None) -> GateResult:
    """Compile one variant for ``target`` and judge it (``fn`` overrides the kernel, for planted-bug tests)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from .triton_kernels import KERNELS

    capability, gpu_name, shared_limit = TARGETS[parse_target(target)]
    fn = fn if fn is not None else KERNELS[v.kernel]
    constexprs = _constexprs(v)
    sig, attrs = _signature(fn, v.dtype, constexprs)
    res = GateResult(label=v.label, kernel=v.kernel, qualname=f"{fn.__module__}.{fn.__name__}", dtype=v.dtype, d=v.d,
                     causal=v.causal, contexts=list(v.contexts), num_warps=v.config.num_warps,
                     num_stages=v.config.num_stages, signature=sig, constexprs=constexprs)
    start = time.perf_counter()
    try:
        compiled = triton.compile(ASTSource(fn, sig, constexprs=constexprs, attrs=attrs),
                                  target=GPUTarget("cuda", capability, 32),
                                  options={"num_warps": v.config.num_warps, "num_stages": v.config.num_stages})
        ptx = compiled.asm["ptx"]
        res.shared_bytes = int(compiled.metadata.shared)
        res.wgmma = len(re.findall(r"wgmma\.mma_async", ptx))
        for k, val in _ptxas_report(ptx, gpu_name).items():
            setattr(res, k, val)
    except Exception as exc:  # noqa: BLE001 - any compile failure is the verdict, recorded with its message
        res.error = "".join(traceback.format_exception_only(type(exc), exc)).strip()[-2000:]
        res.reasons.append("does not compile")
    res.compile_s = round(time.perf_counter() - start, 2)
    if res.error is None:
        sixteen = v.dtype in ("float16", "bfloat16")
        if res.shared_bytes > shared_limit:
            res.reasons.append(f"shared memory {res.shared_bytes} B > {shared_limit} B")
        if sixteen and res.spill_stores:
            res.reasons.append(f"spills {res.spill_stores} B")
        if sixteen and v.kernel in _DOT_KERNELS and capability >= 90 and not res.wgmma:
            res.reasons.append("no wgmma")
    return res


def _compile_star(args: tuple[Variant, str]) -> GateResult:
    return compile_variant(*args)


def run_gate(vs: list[Variant], target: str = "sm_90", jobs: int = 1, progress=None) -> list[GateResult]:
    """Compile every variant (``jobs`` processes); results in the order of ``vs``."""
    parse_target(target)
    if jobs <= 1:
        out = []
        for v in vs:
            out.append(compile_variant(v, target))
            if progress:
                progress(out[-1])
        return out
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        out = []
        for res in pool.map(_compile_star, [(v, target) for v in vs]):
            out.append(res)
            if progress:
                progress(res)
        return out
