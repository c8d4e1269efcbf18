"""The precision policy: one decision for autocast and DeepSpeed."""

from __future__ import annotations

import pytest
import torch

from reid3dsl.errors import UserError
from reid3dsl.precision import NATIVE_BF16_CPU_FLAGS, cpu_flags, resolve_precision

CPU = torch.device("cpu")


def test_auto_on_a_cpu_without_native_bf16_is_fp32() -> None:
    p = resolve_precision("auto", CPU, flags=frozenset({"avx2", "fma", "avx512f", "avx512bw"}))
    assert p.name == "fp32"
    sections = p.deepspeed_sections()
    assert sections["bf16"]["enabled"] is False and sections["fp16"]["enabled"] is False
    assert "torch_autocast" not in sections
    with p.autocast():
        assert not torch.is_autocast_enabled("cpu")


def test_auto_on_a_cpu_with_avx512_bf16_or_amx_is_bf16() -> None:
    for flag in NATIVE_BF16_CPU_FLAGS:
        assert resolve_precision("auto", CPU, flags=frozenset({"avx2", flag})).name == "bf16"


def test_auto_on_this_cpu_follows_its_feature_flags() -> None:
    native = bool(NATIVE_BF16_CPU_FLAGS & cpu_flags())
    assert resolve_precision("auto", CPU).name == ("bf16" if native else "fp32")


def test_forced_bf16_gives_matching_autocast_dtype_and_deepspeed_section() -> None:
    from deepspeed.runtime.config import get_torch_autocast_dtype, get_torch_autocast_enabled

    p = resolve_precision("bf16", CPU, flags=frozenset())
    sections = p.deepspeed_sections()
    assert get_torch_autocast_enabled(sections) is True
    assert get_torch_autocast_dtype(sections) == p.dtype == torch.bfloat16
    layer = torch.nn.Linear(4, 4)
    with p.autocast():
        assert torch.is_autocast_enabled("cpu")
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16
        assert layer(torch.randn(2, 4)).dtype == torch.bfloat16


def test_fp16_on_cpu_is_refused_with_a_clear_message() -> None:
    with pytest.raises(UserError, match="fp16 needs a CUDA GPU"):
        resolve_precision("fp16", CPU)


def test_gpu_policy_by_compute_capability() -> None:
    gpu = torch.device("cuda", 0)
    assert resolve_precision("auto", gpu, cuda_capability=(9, 0)).name == "bf16"
    old = resolve_precision("auto", gpu, cuda_capability=(7, 0))
    assert old.name == "fp16"
    assert old.deepspeed_sections()["torch_autocast"] == {"enabled": True, "dtype": "torch.float16"}
    with pytest.raises(UserError, match="no native bf16"):
        resolve_precision("bf16", gpu, cuda_capability=(7, 5))
    assert resolve_precision("fp32", gpu, cuda_capability=(7, 5)).name == "fp32"
