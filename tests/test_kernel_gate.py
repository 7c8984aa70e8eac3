"""The offline Hopper compile gate (issue 9): a representative subset of the variants the dispatcher can launch must
compile for sm_90 on this CPU without spills and with wgmma (fp16/bf16), and the gate must fail on planted defects:
a module-level float global (the bug that kept the landed kernels from compiling at all), a spilling tile, a tile
too small for wgmma. The whole set runs as ``verified-ta kernels`` (benchmarks/RESULTS.md)."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import jsonschema
import pytest
import torch
from typer.testing import CliRunner

from verified_ta.kernels import triton_available

pytestmark = pytest.mark.skipif(not triton_available(), reason="triton is not installed")


@pytest.fixture(scope="module")
def gate():
    from verified_ta.kernels import gate

    return gate


def _describe(results) -> list[str]:
    return [f"{r.label}: {'; '.join(r.reasons)} {r.error or ''}" for r in results if not r.passed]


@pytest.mark.timeout(900)
def test_representative_variants_compile_without_spills(gate):
    """bf16 at d = 128 (the register-bound case) for every kernel and switch in its causal form, the windowed forward,
    fp32 at d = 128 (the shared-memory-bound case), and fp16 at d = 64; each with its default (first) candidate."""
    from verified_ta.kernels.configs import TUNABLE, candidates

    def first(vs):
        """Each kernel and switch with its default (first) candidate; elementwise kernels have one config."""
        return [v for v in vs if v.kernel not in TUNABLE
                or any(v.config == candidates(v.kernel, getattr(torch, v.dtype), v.d, ctx == "window")[0]
                       for ctx in v.contexts)]

    subset = first(gate.variants(dtypes=["bfloat16"], head_dims=[128], causal=[True]))
    subset += first(gate.variants(dtypes=["float32"], head_dims=[128], causal=[True], kernels=["forward"]))
    subset += first(gate.variants(dtypes=["float16"], head_dims=[64], causal=[False], kernels=["forward"]))
    assert {v.kernel for v in subset} == {"forward", "combine", "delta", "dq", "k1_owner", "k2_owner"}
    results = gate.run_gate(subset, "sm_90", jobs=2)
    assert not _describe(results), _describe(results)
    sixteen = [r for r in results if r.dtype != "float32" and r.kernel in ("forward", "dq", "k1_owner", "k2_owner")]
    assert sixteen and all(r.wgmma > 0 and r.spill_stores == 0 for r in sixteen)


def test_every_config_the_dispatcher_can_pick_is_a_gate_variant(gate):
    """pick_config only returns configs.candidates(...); each of them is compiled by the full gate."""
    from verified_ta.kernels.configs import TUNABLE, candidates

    listed = {(v.kernel, v.dtype, v.d, v.causal, v.config) for v in gate.variants()}
    for kernel in TUNABLE:
        for dtype in ("float16", "bfloat16", "float32"):
            for d in (16, 32, 64, 128):
                for causal in (False, True):
                    for windowed in ((False, True) if causal else (False,)):
                        for cfg in candidates(kernel, getattr(torch, dtype), d, windowed):
                            assert (kernel, dtype, d, causal, cfg) in listed, (kernel, dtype, d, causal, windowed, cfg)


def _planted_module(tmp_path: Path) -> types.ModuleType:
    """The shipped kernels with LOG2E turned back into a plain module-level float (passes the interpreter)."""
    import importlib.util

    import verified_ta.kernels.triton_kernels as tk

    src = Path(tk.__file__).read_text(encoding="utf-8")
    shipped = "LOG2E: tl.constexpr = tl.constexpr(1.4426950408889634)"
    assert shipped in src
    src = (src.replace(shipped, "LOG2E = 1.4426950408889634")
           .replace("from ..masks", "from verified_ta.masks").replace("from . import", "from verified_ta.kernels import")
           .replace("from .configs", "from verified_ta.kernels.configs"))
    path = tmp_path / "planted_kernels.py"
    path.write_text(src, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("planted_kernels", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["planted_kernels"] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.timeout(600)
def test_gate_rejects_a_module_level_float_global(gate, tmp_path):
    from verified_ta.kernels.configs import KernelConfig

    planted = _planted_module(tmp_path)
    variant = gate.Variant("forward", "bfloat16", 64, False, KernelConfig(128, 64, 8, 3), (("SPLIT", False),))
    clean = gate.compile_variant(variant)
    bad = gate.compile_variant(variant, fn=planted.KERNELS["forward"])
    assert clean.passed, _describe([clean])
    assert not bad.passed and bad.reasons == ["does not compile"]
    assert "LOG2E" in bad.error and "global" in bad.error


@pytest.mark.timeout(600)
def test_gate_rejects_spills_and_tiles_without_wgmma(gate):
    from verified_ta.kernels.configs import KernelConfig

    spilling = gate.Variant("forward", "bfloat16", 128, True, KernelConfig(128, 128, 8, 2), (("SPLIT", False),))
    narrow = gate.Variant("k2_owner", "bfloat16", 128, True, KernelConfig(64, 32, 8, 2))  # Sᵀ tile has M = 32 rows
    spill, no_wgmma = gate.run_gate([spilling, narrow], "sm_90", jobs=2)
    assert any(r.startswith("spills") for r in spill.reasons), _describe([spill]) or "no spill reported"
    assert "no wgmma" in no_wgmma.reasons and no_wgmma.wgmma == 0


@pytest.mark.timeout(600)
def test_kernels_command_json_and_exit_codes(tmp_path):
    """`verified-ta kernels`: strict JSON ('-' = stdout) with what is needed to recompile each variant; exit 0 when
    all pass, 2 on a bad target or dtype (before compiling anything)."""
    from verified_ta.cli import app
    from verified_ta.cli.kernels import JSON_SCHEMA

    runner = CliRunner()
    ok = runner.invoke(app, ["kernels", "--dtypes", "bfloat16", "--head-dims", "32", "--kernel", "delta,combine",
                             "--jobs", "1", "--json", "-"])
    assert ok.exit_code == 0, ok.output
    doc = json.loads(ok.stdout)
    jsonschema.validate(doc, JSON_SCHEMA)
    assert doc["passed"] and doc["target"] == "sm_90" and len(doc["variants"]) == 2
    for v in doc["variants"]:
        assert {"qualname", "signature", "constexprs", "num_warps", "num_stages", "registers", "spill_stores",
                "shared_bytes", "wgmma", "compile_s"} <= set(v)
        assert v["qualname"].startswith("verified_ta.kernels.triton_kernels.")
    for bad in (["--target", "sm_70"], ["--dtypes", "float64"], ["--head-dims", "x"],
                ["--json", str(tmp_path / "missing" / "k.json")]):
        res = runner.invoke(app, ["kernels", *bad])
        assert res.exit_code == 2, (bad, res.output)
