"""Fused Triton tensor attention (SPEC §2 forward, L4 backward) under the FlashAttention accuracy rule.

(a) Interpreter: the kernels run under TRITON_INTERPRET=1 on the CPU in ONE subprocess (Triton reads the
flag when the kernels are defined, so it must be set before their module is imported; a fresh process
guarantees that and keeps this process's kernels compiled for a GPU, if any). (b) GPU: @pytest.mark.gpu,
skipped without CUDA. (c) Known traps: each planted bug must be caught by the same checks that the clean
kernel passes on the same inputs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from verified_ta.kernels import MAX_BATCH_HEADS, SUPPORTED_HEAD_DIMS, check_batch_heads, check_head_dim, triton_available
from verified_ta.spec import spec

needs_triton = pytest.mark.skipif(not triton_available(), reason="triton is not installed")

SMALL = [16, 16]  # interpreter tiles: n = 17 leaves a one-row tail in every loop
TRAP_CASES = {  # trap: extra case fields; the dQ grid trap needs BLOCK_N > BLOCK_M to drop a query tile
    "lse_log2": {}, "lse_bf16": {}, "delta_bf16": {}, "scale_bf16": {},
    "causal_strict": dict(causal=True),
    "grid_block": dict(n=17, config=[16, 32]),
    "window_edge": dict(causal=True, n=9, window=[3, 4]),
    "gqa_modulo": dict(kv_heads=2, heads=4),
    "combine_unweighted": dict(n=9, splits=2),
}


def _case(label: str, *, n: int = 5, heads: int = 2, d: int = 16, dtype: str = "float32", causal: bool = False,
          config: list[int] = SMALL, **extra) -> dict:
    return dict(label=label, shape_q=[1, heads, n, d], n1=n, n2=n, dtype=dtype, causal=causal, config=config, **extra)


def _interp_cases() -> list[dict]:
    cases = []
    for dtype in ("float32", "float16"):  # bfloat16: the interpreter's tl.dot multiplies raw uint16 bits
        for n in (1, 5, 17):
            for causal in (False, True):
                seed = 10 * n + causal
                cases.append(_case(f"{dtype}-n{n}-{'causal' if causal else 'full'}", n=n, dtype=dtype, causal=causal,
                                   scale=None if n % 2 else 0.3, input_scale=1 + seed % 3, seed=seed))
    cases.append(dict(label="float32-rect-d32", shape_q=[2, 1, 5, 32], n1=9, n2=3, dtype="float32", causal=False,
                      scale=0.3, input_scale=2.0, seed=5, config=SMALL))
    cases.append(_case("oracle-float32-n3-causal", n=3, heads=1, causal=True, scale=0.3, input_scale=2.0, seed=3,
                       exact="mpmath"))
    # sliding windows: both sides, one side, wider than n; the k2 edge tiles and the k1 row range move per query tile
    for window in ([5, 3], [None, 4], [3, None], [40, 40]):
        cases.append(_case(f"float32-window{window}", n=17, causal=True, window=window, scale=0.3, seed=21))
    cases.append(_case("float16-window[6,2]", n=17, dtype="float16", causal=True, window=[6, 2], seed=22))
    # grouped-query heads (4 query heads over 2 key heads), with a window; k1 splits; atomic dQ
    cases.append(_case("float32-gqa", n=9, heads=4, kv_heads=2, scale=0.3, seed=23))
    cases.append(_case("float32-gqa-window", n=9, heads=4, kv_heads=2, causal=True, window=[4, 6], seed=24))
    cases.append(_case("float32-splits3", n=9, splits=3, scale=0.3, seed=25))
    cases.append(_case("float32-splits2-causal-window", n=17, splits=2, causal=True, window=[9, 5], seed=26))
    cases.append(_case("float32-atomic-dq", n=17, causal=True, deterministic=False, seed=27))
    cases.append(_case("float16-atomic-dq-gqa", n=9, heads=4, kv_heads=2, dtype="float16", deterministic=False,
                       seed=28))
    cases.append(_case("float32-d128-two-pass-k1", n=5, d=128, causal=True, seed=29))  # K1-owner: dK1, dV1 passes
    cases.append(_case("oracle-float32-gqa-window", n=3, heads=2, kv_heads=1, causal=True, window=[2, 1], scale=0.3,
                       input_scale=2.0, seed=30, exact="mpmath"))
    for trap, extra in TRAP_CASES.items():
        base = dict(dict(n=5, causal=False, scale=0.3, seed=7), **extra)
        cases.append(_case(f"trap-{trap}", trap=trap, **base))
        cases.append(_case(f"control-{trap}", **base))
    return cases


INTERP_CASES = _interp_cases()
CLEAN = [c["label"] for c in INTERP_CASES if not c["label"].startswith(("trap-", "control-"))]


_INTERP: dict[str, object] = {}


@pytest.fixture(scope="module")
def interp_rows() -> dict[str, list[dict]]:
    """All interpreter cases in one fresh process with TRITON_INTERPRET=1 (≈ 150 s of CPU), run once per module:
    a failure is kept and reported by every test instead of re-running the subprocess for each."""
    if "rows" not in _INTERP and "error" not in _INTERP:
        env = dict(os.environ, TRITON_INTERPRET="1", PYTHONWARNINGS="ignore")
        try:
            proc = subprocess.run([sys.executable, "-m", "verified_ta.kernels.accuracy"],
                                  input=json.dumps(INTERP_CASES), capture_output=True, text=True, env=env,
                                  timeout=1500)
            if proc.returncode == 0:
                _INTERP["rows"] = json.loads(proc.stdout)
            else:
                _INTERP["error"] = f"interpreter run exited {proc.returncode}: {proc.stderr[-4000:]}"
        except subprocess.TimeoutExpired:
            _INTERP["error"] = "interpreter run exceeded 1500 s"
    if "error" in _INTERP:
        pytest.fail(str(_INTERP["error"]))
    return _INTERP["rows"]


def _failures(rows: list[dict]) -> list[str]:
    return [f"{r['name']}: error {r['error']:.3e} > tolerance {r['tolerance']:.3e} ({r['detail']})"
            for r in rows if not r["passed"]]


@needs_triton
@spec("P15", "L4")
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("label", CLEAN)
def test_interpreter_flash_rule(interp_rows, label):
    """O, LSE and all five gradients of the kernels within the FlashAttention rule (mpmath oracle for 'oracle-')."""
    rows = interp_rows[label]
    assert len(rows) == 7
    assert not _failures(rows), _failures(rows)


@needs_triton
@spec("P15", "L4")
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("trap", sorted(TRAP_CASES))
def test_interpreter_trap_is_caught(interp_rows, trap):
    """Each known bug of earlier 2-simplicial kernels fails the rule that the clean kernel passes on the same inputs."""
    assert not _failures(interp_rows[f"control-{trap}"]), _failures(interp_rows[f"control-{trap}"])
    caught = _failures(interp_rows[f"trap-{trap}"])
    assert caught, f"planted trap {trap!r} passed every check"


def test_head_dim_rejected():
    for d in (8, 24, 48, 256):
        with pytest.raises(ValueError, match=rf"one of \(16, 32, 64, 128\).*got d={d}$"):
            check_head_dim(d)
    assert all(check_head_dim(d) == d for d in SUPPORTED_HEAD_DIMS)


def test_batch_heads_rejected():
    """batch·heads is grid axis 1, which CUDA caps at 65535 programs: more is a ValueError, not a launch failure."""
    assert check_batch_heads(MAX_BATCH_HEADS) == 65535 and check_batch_heads(0) == 0
    with pytest.raises(ValueError, match=r"batch·heads .* must lie in \[0, 65535\].*got 65536$"):
        check_batch_heads(65536)


@needs_triton
def test_launcher_arguments_rejected():
    """Unknown trap name, batch·heads over CUDA's grid cap, tiles tl.dot cannot take: ValueErrors before any launch."""
    code = ("from verified_ta.kernels import load; import torch\n"
            "tk = load()\n"
            "x, wide = torch.zeros(1, 1, 2, 16), torch.zeros(1, 1, 2, 16).expand(65536, 1, 2, 16)\n"
            "for call in (lambda: tk.forward(x, x, x, x, x, 0.25, False, trap='nope'),\n"
            "             lambda: tk.forward(*[wide] * 5, 0.25, False),\n"
            "             lambda: tk.backward(*[wide] * 7, wide[..., 0], 0.25, False),\n"
            "             lambda: tk.KernelConfig(8, 16), lambda: tk.KernelConfig(16, 48)):\n"
            "    try:\n        call()\n        print('no error')\n"
            "    except ValueError as e:\n        print('ValueError', e)\n")
    env = dict(os.environ, TRITON_INTERPRET="1")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120).stdout
    lines = out.splitlines()
    assert len(lines) == 5 and all(line.startswith("ValueError") for line in lines), out
    assert "lse_log2" in lines[0] and "got 65536" in lines[1] and "got 65536" in lines[2]
    assert "block_m must be a power of two >= 16" in lines[3] and "block_n must be a power of two >= 16" in lines[4]


# ---------------------------------------------------------------------------------------------- GPU
needs_cuda_triton = pytest.mark.skipif(not (torch.cuda.is_available() and triton_available()),
                                       reason="needs CUDA and triton")
GPU_NS = (1, 17, 97, 200, 1024)


def _gpu_case(n: int, d: int, dtype: torch.dtype, causal: bool, input_scale: float, seed: int, exact: str = "float64",
              window=None, heads: int = 2, kv_heads: int | None = None, deterministic: bool = True, config=None):
    from verified_ta.kernels.accuracy import (flash_rule_rows, kernel_result, make_inputs, oracle_result,
                                              reference_result, rounding_floors, same_dtype_results)

    torch.backends.cuda.matmul.allow_tf32 = False  # float32 references in true float32
    heads = 1 if n >= 1024 else heads
    chunk = max(1, (1 << 24) // (n * n))
    inputs, dout = make_inputs((1, heads, n, d), n, n, dtype=dtype, input_scale=input_scale, seed=seed, device="cuda",
                               kv_heads=kv_heads)
    if exact == "mpmath":
        ex = oracle_result(inputs, dout, scale=None, causal=causal, window=window)
    else:
        ex = reference_result(inputs, dout, scale=None, causal=causal, window=window, dtype=torch.float64,
                              chunk_size=chunk)
    same = same_dtype_results(inputs, dout, scale=None, causal=causal, window=window, dtype=dtype, chunk_size=chunk)
    cand = kernel_result(inputs, dout, scale=None, causal=causal, window=window, config=config,
                         deterministic=deterministic)
    floors = rounding_floors(inputs, dout, ex, scale=None, causal=causal, window=window, dtype=dtype,
                             chunk_size=chunk)
    rows = flash_rule_rows(cand, same, ex, floors, dtype, f"n={n} d={d} {dtype} causal={causal} window={window}")
    bad = [f"{r.name}: {r.error:.3e} > {r.tolerance:.3e} ({r.detail})" for r in rows if not r.passed]
    assert not bad, bad


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32], ids=str)
@pytest.mark.parametrize("input_scale", [1.0, 3.0])
@pytest.mark.parametrize("n", GPU_NS)
@spec("P15", "L4")
@pytest.mark.gpu
@needs_cuda_triton
def test_gpu_flash_rule(n, input_scale, dtype, causal):
    _gpu_case(n, 64, dtype, causal, input_scale, seed=n + int(10 * input_scale))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32], ids=str)
@pytest.mark.parametrize("d", [16, 32, 128])
@spec("P15", "L4")
@pytest.mark.gpu
@needs_cuda_triton
def test_gpu_head_dims(d, dtype, causal):
    _gpu_case(97, d, dtype, causal, 2.0, seed=d)


@pytest.mark.parametrize("window", [(64, 16), (None, 32), (200, None)], ids=str)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
@spec("P15", "L4")
@pytest.mark.gpu
@needs_cuda_triton
def test_gpu_window_and_grouped_heads(dtype, window):
    """Sliding window with 4 query heads over 2 key heads, deterministic and atomic dQ (n = 300: tails everywhere)."""
    _gpu_case(300, 64, dtype, True, 2.0, seed=7, window=window, heads=4, kv_heads=2)
    _gpu_case(300, 128, dtype, True, 2.0, seed=8, window=window, heads=4, kv_heads=2, deterministic=False)


@pytest.mark.parametrize("mode", ["full", "causal", "window"])
@spec("P15", "L4")
@pytest.mark.gpu
@needs_cuda_triton
def test_gpu_timed_shapes(mode):
    """The benchmark's largest shape (bf16, d = 128, n = 4096), with the configs autotuning picks, under the rule."""
    _gpu_case(4096, 128, torch.bfloat16, mode != "full", 1.0, seed=41, window=(512, 32) if mode == "window" else None,
              heads=1)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
@pytest.mark.parametrize("d", [64, 128])
@spec("P15", "L4")
@pytest.mark.gpu
@needs_cuda_triton
def test_gpu_every_candidate_config(d, dtype):
    """Every config the dispatcher may pick (configs.candidates) runs correctly, not only the tuned winner."""
    from verified_ta.kernels.configs import TUNABLE, candidates

    tables = {k: candidates(k, dtype, d) for k in TUNABLE}
    for i in range(max(len(c) for c in tables.values())):
        config = {k: c[i % len(c)] for k, c in tables.items()}
        _gpu_case(200, d, dtype, True, 2.0, seed=i, config=config)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
@spec("P15", "L4")
@pytest.mark.gpu
@needs_cuda_triton
def test_gpu_mpmath_oracle(dtype):
    _gpu_case(4, 16, dtype, True, 2.0, seed=1, exact="mpmath")
    _gpu_case(5, 16, dtype, True, 2.0, seed=2, exact="mpmath", window=(2, 3), heads=2, kv_heads=1)


@spec("L4")
@pytest.mark.gpu
@needs_cuda_triton
def test_gpu_backward_deterministic():
    """deterministic=True (no atomics): two backward passes on the same inputs agree bit for bit."""
    from verified_ta.kernels.accuracy import kernel_result, make_inputs

    inputs, dout = make_inputs((2, 2, 200, 64), 200, 200, dtype=torch.bfloat16, seed=3, device="cuda")
    a = kernel_result(inputs, dout, scale=None, causal=True)
    b = kernel_result(inputs, dout, scale=None, causal=True)
    assert all(torch.equal(x, y) for x, y in zip(a.grads, b.grads))


@spec("P15")
@pytest.mark.gpu
@needs_cuda_triton
def test_gpu_forward_memory_is_linear():
    """Forward at n = 4096 allocates O(n·d): at most a few copies of the inputs, never n² or n³ objects."""
    from verified_ta.interface import tensor_attention

    n, d = 4096, 128
    xs = [torch.randn(1, 1, n, d, device="cuda", dtype=torch.bfloat16) for _ in range(5)]
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    tensor_attention(*xs, backend="triton")
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - base
    # out + LSE + k1-split partials (≤ 16 float32 copies of out) + slack: n² bf16 alone would be 32 MiB
    assert extra <= 16 * (4 * n * d + 4 * n) + 4 * n * d * 2 + (1 << 20), extra
