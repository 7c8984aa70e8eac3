"""Match3 demo (verified_ta.match3, ``verified-ta demo match3``): a tiny fixed-seed run, its audits, the CLI's exit codes.

The tiny run (n = 4, M = 8, 2 heads of d = 2, 30 steps) checks what the full demo claims: every audited poly
gradient within its certified per-call bound, the held-out loss falling for each kind, equal parameter counts.
Planted bugs: bounds shrunk a millionfold (the audit must report a violation and the CLI exit 1) and a
task whose labels ignore the modulus (the label check must see it).
"""

from __future__ import annotations

import json

import jsonschema
import pytest
import torch
from typer.testing import CliRunner

from verified_ta import match3
from verified_ta.cli import ExitCode, app, demo
from verified_ta.spec import spec

TINY = dict(n=4, modulus=8, embed_dim=8, heads=2, head_dim=2, hidden=16, batch=16, steps=30, seeds=(0,), audit_every=10,
            eval_batches=2)


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread, as the CLI's default: tiny matmuls on a shared 2-core box are ~20× slower with two."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _brute_force_labels(x: torch.Tensor, modulus: int) -> torch.Tensor:
    n = x.shape[-1]
    return torch.tensor([[float(any((int(r[i]) + int(r[j]) + int(r[k])) % modulus == 0 for j in range(n)
                                    for k in range(n))) for i in range(n)] for r in x], dtype=torch.float64)


@spec("A1")
def test_labels_match_the_definition():
    x, y = match3.match3_batch(32, 5, 7, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (32, 5) and int(x.min()) >= 0 and int(x.max()) < 7
    assert torch.equal(y, _brute_force_labels(x, 7))
    wrong = (((x[:, :, None] + x[:, None, :]).reshape(32, 1, 25) + x[:, :, None]) % 6 == 0).any(-1).double()
    assert not torch.equal(wrong, _brute_force_labels(x, 7))  # a planted modulus bug is visible to this check


@spec("A1", "L4", "L9")
def test_tiny_run_bounds_hold_and_loss_falls():
    record = match3.run(match3.Match3Config(**TINY))
    assert record["audit_count"] == 4 and record["bounds_held"]  # steps 0, 10, 20, 30
    assert all(0 <= r <= 1 for r in record["worst_ratio"].values())
    params = {r["kind"]: r["parameters"] for r in record["runs"]}
    assert len(set(params.values())) == 1, params
    for r in record["runs"]:
        assert r["eval_loss"][-1] < r["eval_loss"][0], (r["kind"], r["eval_loss"])
    poly = next(r for r in record["runs"] if r["kind"] == "poly")
    assert all(a["delta"] <= 1e-3 and a["degree"] >= 1 for a in poly["audits"])


def _shrunk_bounds(*args, **kwargs):
    return {k: v * 1e-6 for k, v in _genuine_bounds(*args, **kwargs).items()}


_genuine_bounds = match3.gradient_bounds


@spec("A1")
def test_cli_writes_outputs_and_exit_codes(tmp_path, monkeypatch):
    args = ["demo", "match3", "--steps", "6", "--seeds", "0", "--n", "4", "--modulus", "8", "--batch", "8",
            "--heads", "2", "--head-dim", "2", "--audit-every", "3"]
    runner = CliRunner()
    ok = runner.invoke(app, [*args, "--out", str(tmp_path / "ok")])
    assert ok.exit_code == ExitCode.OK, ok.output
    data = json.loads((tmp_path / "ok.json").read_text())
    jsonschema.validate(data, demo.JSON_SCHEMA)
    assert data["tool"] == "verified-ta" and data["bounds_held"] and data["audit_count"] == 3
    assert (tmp_path / "ok.png").stat().st_size > 10_000
    monkeypatch.setattr(match3, "gradient_bounds", _shrunk_bounds)
    bad = runner.invoke(app, [*args, "--out", str(tmp_path / "bad")])
    assert bad.exit_code == ExitCode.FAILED
    assert json.loads((tmp_path / "bad.json").read_text())["bounds_held"] is False
    usage = runner.invoke(app, ["demo", "match3", "--heads", "3", "--head-dim", "3", "--out", str(tmp_path / "u")])
    assert usage.exit_code == ExitCode.USAGE and "multiple of heads" in usage.output
    missing = runner.invoke(app, [*args, "--out", str(tmp_path / "no" / "such" / "dir")])
    assert missing.exit_code == ExitCode.USAGE and "does not exist" in missing.output  # before any training


@pytest.mark.parametrize("kwargs,match", [(dict(steps=0), "steps"), (dict(seeds=()), "seeds"), (dict(lr=-1.0), "lr")])
def test_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        match3.Match3Config(**kwargs)
