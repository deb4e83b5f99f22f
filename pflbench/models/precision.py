"""Numeric precision of a run (``--precision``): ``fp32``, or ``bf16`` where the hardware has
bf16 matrix instructions.

``bf16`` stores the frozen base weights in bfloat16 (half the memory, no cast per step) and
runs every forward of the model under ``torch.autocast`` in bfloat16, so the base's matrix
products run in bf16 while the trained tensors (LoRA, adapters, or every weight under full
fine-tuning) keep fp32 values, fp32 gradients and an fp32 optimizer. Losses and logits are
taken in fp32. A CPU without bf16 instructions is refused: there torch emulates bf16 hundreds
of times slower than fp32 (seen: a 2048 x 2048 product at 0.28 GFLOP/s against 124 in fp32)."""

from __future__ import annotations

import functools
import platform
from pathlib import Path

import torch

from pflbench.errors import UserError

# CPU flags (/proc/cpuinfo) of bf16 matrix instructions: x86 AVX-512 BF16 or AMX; Arm BF16
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return flags


def bf16_supported(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(set(CPU_BF16_FLAGS) & cpu_flags())


# set to 1 to run bf16 anyway where it is emulated (slow): for studying its numerics on such a CPU
ALLOW_EMULATED = "PFLBENCH_ALLOW_EMULATED_BF16"


def check_precision(precision: str, device: torch.device) -> None:
    """One line, before anything heavy, when ``precision`` cannot run fast on ``device``."""
    import os

    if precision == "bf16" and not bf16_supported(device) and os.environ.get(ALLOW_EMULATED) != "1":
        where = "this GPU" if device.type == "cuda" else f"this CPU ({platform.machine()}, no avx512_bf16/amx_bf16/bf16 flag)"
        raise UserError(f"--precision bf16: {where} has no bf16 matrix instructions, so bf16 would run far slower "
                        f"than fp32; use --precision fp32 (or set {ALLOW_EMULATED}=1 to study its numerics slowly)")


def apply_precision(model: torch.nn.Module, precision: str, device: torch.device) -> None:
    """Cast the frozen weights (``requires_grad`` False) and wrap the model's entry points
    (the model, its decoder, its output layer) in autocast. Call after the trainable tensors
    are marked. fp32 leaves the model as it is."""
    if precision == "fp32":
        return
    dtype = torch.bfloat16
    for p in model.parameters():
        if not p.requires_grad:
            p.data = p.data.to(dtype)  # a tied weight is one Parameter: cast once, still tied
    entry_points = [model]
    for getter in ("get_decoder", "get_output_embeddings"):
        part = getattr(model, getter, lambda: None)()
        if part is not None and all(part is not e for e in entry_points):
            entry_points.append(part)
    for module in entry_points:
        module.forward = _autocast(module.forward, device.type, dtype)


def _autocast(forward, device_type: str, dtype: torch.dtype):
    @functools.wraps(forward)
    def wrapped(*args, **kwargs):
        with torch.autocast(device_type=device_type, dtype=dtype):
            return forward(*args, **kwargs)

    return wrapped
