"""The PyTorch API: dispatch, input errors, autograd through the Triton path (interpreter), the nn.Module."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from verified_ta.interface import TensorAttention, tensor_attention
from verified_ta.kernels import triton_available
from verified_ta.blocked import blocked_tensor_attention
from verified_ta.spec import spec


def _inputs(n=5, d=16, dtype=torch.float64, batch=(2, 3), seed=0, n1=None, n2=None):
    g = torch.Generator().manual_seed(seed)
    ns = (n, n1 or n, n2 or n, n1 or n, n2 or n)
    return [torch.randn(*batch, m, d, generator=g, dtype=dtype) for m in ns]


@spec("P15", "L4")
@pytest.mark.parametrize("causal", [False, True])
def test_cpu_dispatch_is_the_blocked_path(causal):
    """On a CPU, backend='auto' is the blocked exact path: identical outputs, LSE and gradients."""
    xs = [x.requires_grad_(True) for x in _inputs()]
    ys = [x.detach().clone().requires_grad_(True) for x in xs]
    out, lse = tensor_attention(*xs, causal=causal, scale=0.3, return_lse=True)
    ref, ref_lse = blocked_tensor_attention(*ys, causal=causal, scale=0.3, return_lse=True)
    assert torch.equal(out, ref) and torch.equal(lse, ref_lse)
    g = torch.randn_like(out)
    for a, b in zip(torch.autograd.grad(out, xs, g), torch.autograd.grad(ref, ys, g)):
        assert torch.equal(a, b)


def test_default_scale_is_one_over_d():
    xs = _inputs(d=8)
    assert torch.equal(tensor_attention(*xs), tensor_attention(*xs, scale=1 / 8))


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda xs: xs.__setitem__(1, xs[1][..., :4]), "head dimension"),
        (lambda xs: xs.__setitem__(3, xs[3][..., :2, :]), "n1"),
        (lambda xs: xs.__setitem__(2, xs[2].float()), "share one dtype"),
        (lambda xs: xs.__setitem__(4, torch.empty(xs[4].shape, dtype=xs[4].dtype, device="meta")), "one device"),
        (lambda xs: xs.__setitem__(0, xs[0][0]), "q leading dimensions"),
    ],
    ids=["d", "n1", "dtype", "device", "batch"],
)
def test_mismatched_inputs_rejected(mutate, match):
    xs = _inputs()
    mutate(xs)
    with pytest.raises(ValueError, match=match):
        tensor_attention(*xs)


def test_bad_arguments_rejected():
    xs = _inputs()
    with pytest.raises(ValueError, match="backend must be one of"):
        tensor_attention(*xs, backend="cuda")
    with pytest.raises(ValueError, match="scale must be a finite real number"):
        tensor_attention(*xs, scale=float("nan"))
    with pytest.raises(ValueError, match="causal=True needs n_q = n1 = n2"):
        tensor_attention(*_inputs(n=4, n1=5), causal=True)
    with pytest.raises(ValueError, match=r"d must be one of \(16, 32, 64, 128\).*got d=8"):
        tensor_attention(*_inputs(d=8, dtype=torch.float32), backend="triton")
    with pytest.raises(ValueError, match="dtype must be one of float16, bfloat16, float32"):
        tensor_attention(*xs, backend="triton")  # float64
    with pytest.raises(ValueError, match="causal must be a bool; got 'yes'"):
        tensor_attention(*_inputs(n=4, n1=5), causal="yes")
    wide = [torch.zeros(1, 1, 2, 16).expand(65536, 1, 2, 16) for _ in range(5)]  # no memory: a view
    with pytest.raises(ValueError, match=r"batch·heads .* must lie in \[0, 65535\].*got 65536"):
        tensor_attention(*wide, backend="triton")  # CUDA's grid axis 1 cap, checked before the device


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"), reason="interpreter enabled")
def test_triton_backend_on_cpu_needs_the_interpreter():
    with pytest.raises(ValueError, match="TRITON_INTERPRET=1"):
        tensor_attention(*_inputs(dtype=torch.float32), backend="triton")


@pytest.mark.skipif(not triton_available(), reason="triton is not installed")
@spec("P15", "L4")
def test_triton_backend_autograd_under_interpreter():
    """tensor_attention(backend='triton') with autograd (kernels under TRITON_INTERPRET=1) passes the FlashAttention rule."""
    cases = [dict(label="iface", shape_q=[1, 2, 5, 16], n1=5, n2=5, dtype="float32", causal=True, seed=3,
                  via="interface")]
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, "-m", "verified_ta.kernels.accuracy"], input=json.dumps(cases),
                          capture_output=True, text=True, env=env, timeout=200)
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = json.loads(proc.stdout)["iface"]
    assert len(rows) == 7 and all(r["passed"] for r in rows), rows


@pytest.mark.skipif(not triton_available(), reason="triton is not installed")
@spec("L4")
def test_triton_backend_refuses_double_backward():
    """The kernels' backward is not differentiable: create_graph=True raises instead of silently dropping the
    kernel's second-order part (a gradient penalty ‖dQ‖² + Σq would otherwise backpropagate Σq alone)."""
    code = ("import torch\nfrom verified_ta.interface import tensor_attention\n"
            "xs = [torch.randn(1, 1, 2, 16, requires_grad=True) for _ in range(5)]\n"
            "out = tensor_attention(*xs, backend='triton')\n"
            "try:\n    (dq,) = torch.autograd.grad(out.sum(), xs[0], create_graph=True)\n"
            "    (dq.square().sum() + xs[0].sum()).backward()\n    print('no error')\n"
            "except RuntimeError as e:\n    print('RuntimeError', e)\n"
            "(dq1,) = torch.autograd.grad(tensor_attention(*xs, backend='triton').sum(), xs[0])\n"
            "print('first order', dq1.shape)\n")
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-4000:]
    first, second = proc.stdout.splitlines()
    assert first.startswith("RuntimeError") and "no double backward" in first, proc.stdout
    assert second == "first order torch.Size([1, 1, 2, 16])", proc.stdout


@spec("P15")
def test_module_matches_functional():
    """TensorAttention = out_proj(tensor_attention(heads of the five projections)), with gradients to every weight."""
    torch.manual_seed(0)
    m = TensorAttention(12, 3, causal=True, dtype=torch.float64)
    x = torch.randn(2, 6, 12, dtype=torch.float64)
    y = m(x)
    assert y.shape == (2, 6, 12)

    def heads(t):
        return t.reshape(2, 6, 3, 4).transpose(1, 2)

    att = blocked_tensor_attention(heads(m.q_proj(x)), heads(m.k1_proj(x)), heads(m.k2_proj(x)),
                                   heads(m.v1_proj(x)), heads(m.v2_proj(x)), causal=True)
    # the same projections, reshapes, CPU path (scale 1/d either way) and out_proj: identical float operations
    assert torch.equal(y, m.out_proj(att.transpose(1, 2).reshape(2, 6, 12)))
    y.square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())


def test_module_cross_attention_shapes():
    m = TensorAttention(8, 2, head_dim=16)
    y = m(torch.randn(3, 4, 8), torch.randn(3, 7, 8), torch.randn(3, 2, 8))
    assert y.shape == (3, 4, 8)


def test_module_bad_arguments_rejected():
    with pytest.raises(ValueError, match="divisible by num_heads"):
        TensorAttention(10, 3)
    with pytest.raises(ValueError, match="num_heads must be an integer >= 1"):
        TensorAttention(8, 0)
    with pytest.raises(ValueError, match="backend must be one of"):
        TensorAttention(8, 2, backend="fast")
    with pytest.raises(ValueError, match=r"x must have shape \(batch, n, 8\)"):
        TensorAttention(8, 2)(torch.randn(3, 4, 5))
    with pytest.raises(ValueError, match="num_kv_heads must divide num_heads=4; got 3"):
        TensorAttention(8, 4, num_kv_heads=3)
    with pytest.raises(ValueError, match="needs causal=True"):
        TensorAttention(8, 2, window=(4, 2))


@spec("P15")
def test_module_with_grouped_heads_and_window_matches_functional():
    """num_kv_heads=2 of 4 heads, window (3, 2): K/V projections have 2 heads, the call is the grouped, windowed one."""
    torch.manual_seed(1)
    m = TensorAttention(16, 4, num_kv_heads=2, causal=True, window=(3, 2), dtype=torch.float64)
    assert m.k1_proj.out_features == m.v2_proj.out_features == 2 * 4 and m.q_proj.out_features == 16
    x = torch.randn(2, 6, 16, dtype=torch.float64)

    def heads(t, h):
        return t.reshape(2, 6, h, 4).transpose(1, 2)

    att = blocked_tensor_attention(heads(m.q_proj(x), 4), *(heads(p(x), 2) for p in (
        m.k1_proj, m.k2_proj, m.v1_proj, m.v2_proj)), causal=True, window=(3, 2))
    y = m(x)
    assert torch.equal(y, m.out_proj(att.transpose(1, 2).reshape(2, 6, 16)))
    y.square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())
