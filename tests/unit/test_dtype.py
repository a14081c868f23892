"""dtype: auto on a CPU picks bf16 only where it measures faster than float32 (rapid_core/models.py)."""

from pathlib import Path

import pytest
import torch

from rapid_core import models
from rapid_core.config import make_config

CPU = torch.device("cpu")
HAS_BF16_FLAG = any(f in Path("/proc/cpuinfo").read_text() for f in ("amx_bf16", "avx512_bf16"))


def test_measuring_bf16_leaves_the_seeded_generator_alone():
    torch.manual_seed(3)
    expected = torch.rand(4)
    torch.manual_seed(3)
    models.cpu_bf16_speedup.cache_clear()
    assert models.cpu_bf16_speedup(torch.get_num_threads()) > 0
    assert torch.equal(torch.rand(4), expected)


@pytest.mark.parametrize("speedup", [0.56, 1.1, 1.25, 4.0])
def test_auto_dtype_follows_the_measured_speedup_on_a_cpu_with_bf16_instructions(monkeypatch, speedup):
    monkeypatch.setattr(models, "cpu_bf16_speedup", lambda threads: speedup)
    cfg = make_config(model="tiny-random")
    bf16 = HAS_BF16_FLAG and speedup >= models.BF16_MIN_SPEEDUP  # no bf16 instructions: never
    assert models.pick_dtype(cfg, CPU) == (torch.bfloat16 if bf16 else torch.float32)
    assert models.pick_dtype(make_config(model="tiny-random", dtype="bf16"), CPU) == torch.bfloat16
    assert models.pick_dtype(make_config(model="tiny-random", dtype="fp32"), CPU) == torch.float32
