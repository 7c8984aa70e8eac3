"""Tile configs of the kernels (verified_ta.kernels.configs): what the dispatcher may launch and how it chooses."""

from __future__ import annotations

import pytest
import torch

from verified_ta.kernels import configs
from verified_ta.kernels.configs import INTERPRETER_CONFIG, KernelConfig, candidates, pick_config, split_count


@pytest.fixture(autouse=True)
def _fresh_cache(monkeypatch):
    monkeypatch.setattr(configs, "_TUNED", {})
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)


def test_autotune_picks_the_fastest_candidate_once_per_key():
    options = candidates("forward", torch.bfloat16, 64)
    assert len(options) >= 2
    calls = []

    def timer(cfg):  # the last candidate is "fastest"
        calls.append(cfg)
        return 1.0 if cfg == options[-1] else 2.0

    assert pick_config("forward", torch.bfloat16, 64, 1000, True, False, timer) == options[-1]
    assert calls == list(options)
    # same n bucket (513..1024), same key: cached, no new timing
    assert pick_config("forward", torch.bfloat16, 64, 600, True, False, timer) == options[-1]
    assert len(calls) == len(options)
    # another bucket, or the windowed forward, is tuned separately
    pick_config("forward", torch.bfloat16, 64, 4096, True, False, timer)
    assert len(calls) == 2 * len(options)


def test_without_a_timer_the_first_candidate_and_under_the_interpreter_its_tile(monkeypatch):
    assert pick_config("dq", torch.float32, 128, 64, False, False) == candidates("dq", torch.float32, 128)[0]
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert pick_config("dq", torch.float32, 128, 64, False, False) == INTERPRETER_CONFIG


def test_windowed_forward_has_its_own_candidates():
    assert candidates("forward", torch.float16, 128, windowed=True) != candidates("forward", torch.float16, 128)
    assert candidates("dq", torch.float16, 128, windowed=True) == candidates("dq", torch.float16, 128)


def test_bad_config_and_kernel_names_are_value_errors():
    for bad in (dict(block_m=8, block_n=16), dict(block_m=16, block_n=48), dict(block_m=16, block_n=16, num_warps=3),
                dict(block_m=16, block_n=16, num_stages=0), dict(block_m=True, block_n=16)):
        with pytest.raises(ValueError, match="must be"):
            KernelConfig(**bad)
    with pytest.raises(ValueError, match="kernel must be one of"):
        candidates("combine", torch.float16, 64)


def test_no_k1_splits_off_the_gpu():
    assert split_count(1, 1 << 20, torch.device("cpu")) == 1
