"""The precision policy: one decision that drives both autocast and DeepSpeed.

`auto` picks fp32 on CPUs without native bf16 (no AVX-512-BF16 or AMX: there bf16 is emulated and
20-30x slower), bf16 on CPUs that have it and on CUDA GPUs of compute capability >= 8.0, and fp16 with
dynamic loss scaling on older GPUs. `train.precision` overrides it. The resolved `Precision` yields the
autocast context and the DeepSpeed `bf16`/`fp16` sections together so the two never disagree.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from reid3dsl.errors import UserError

PrecisionName = Literal["fp32", "bf16", "fp16"]
NATIVE_BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _cpuinfo_field(name: str, cpuinfo: Path) -> str | None:
    try:
        text = cpuinfo.read_text()
    except OSError:
        return None
    return next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith(name)), None)


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The feature flags of this CPU (empty where /proc/cpuinfo does not exist)."""
    return frozenset((_cpuinfo_field("flags", cpuinfo) or "").split())


def machine() -> dict[str, Any]:
    """What numbers were measured on: CPU model, SIMD features that decide the precision, versions, load."""
    import os
    import platform

    import numpy as np

    return {
        "cpu": _cpuinfo_field("model name", Path("/proc/cpuinfo")) or platform.processor(),
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "simd": sorted(cpu_flags() & {"avx2", "avx512f", *NATIVE_BF16_CPU_FLAGS}),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "load_avg_1min_at_start": os.getloadavg()[0],
    }


@dataclass(frozen=True)
class Precision:
    """A resolved precision for one device type ("cpu" or "cuda")."""

    name: PrecisionName
    device_type: str

    @property
    def dtype(self) -> torch.dtype:
        return _DTYPES[self.name]

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """Autocast to `dtype` (a no-op for fp32)."""
        with torch.autocast(self.device_type, dtype=self.dtype, enabled=self.name != "fp32"):
            yield

    def deepspeed_sections(self) -> dict[str, Any]:
        """The DeepSpeed config sections matching `autocast`.

        Mixed precision goes through DeepSpeed's `torch_autocast` section: fp32 master weights, forward passes
        under torch.autocast with the same dtype as `autocast()`, gradients communicated in that dtype, and for
        fp16 dynamic loss scaling (a GradScaler inside DeepSpeed's ZeRO optimizer). DeepSpeed's own `bf16`/`fp16`
        modes are kept off: they cast the module's weights and switch autocast off inside the engine, which
        would disagree with the autocast regions around it (losses, renderer hand-off, discriminator)."""
        sections: dict[str, Any] = {"bf16": {"enabled": False}, "fp16": {"enabled": False}}
        if self.name != "fp32":
            sections["torch_autocast"] = {"enabled": True, "dtype": str(self.dtype)}
        return sections


def resolve_precision(
    requested: str,
    device: torch.device,
    *,
    flags: frozenset[str] | None = None,
    cuda_capability: tuple[int, int] | None = None,
) -> Precision:
    """Decide the precision for `device`; `flags`/`cuda_capability` default to this machine's."""
    if requested not in ("auto", *_DTYPES):
        raise UserError(f"train.precision = {requested!r}: expected auto, fp32, bf16 or fp16")
    if device.type == "cuda":
        if cuda_capability is None:
            cuda_capability = torch.cuda.get_device_capability(device)
        bf16_ok = cuda_capability >= (8, 0)
        if requested == "auto":
            return Precision("bf16" if bf16_ok else "fp16", "cuda")
        if requested == "bf16" and not bf16_ok:
            raise UserError(
                f"train.precision = bf16: this GPU (compute capability {cuda_capability[0]}.{cuda_capability[1]}) "
                "has no native bf16; expected fp16 or fp32 (or auto)"
            )
        return Precision(requested, "cuda")  # type: ignore[arg-type]
    if device.type != "cpu":
        raise UserError(f"device {device}: expected cpu or cuda")
    if requested == "fp16":
        raise UserError(
            "train.precision = fp16: fp16 needs a CUDA GPU (DeepSpeed refuses fp16 on CPU); expected fp32, bf16 or auto"
        )
    if requested == "auto":
        native = bool(NATIVE_BF16_CPU_FLAGS & (cpu_flags() if flags is None else flags))
        return Precision("bf16" if native else "fp32", "cpu")
    return Precision(requested, "cpu")  # type: ignore[arg-type]
