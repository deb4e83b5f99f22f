"""Numeric precision of a run (``--precision``): ``fp32``, or ``bf16`` where the hardware has
bf16 matrix instructions.

``bf16`` stores the frozen base weights in bfloat16 (half the memory, no cast per step) and
runs every forward of the model under ``torch.autocast`` in bfloat16, so the base's matrix
products run in bf16 while the trained tensors (LoRA, adapters, or every weight under full
fine-tuning) keep fp32 values, fp32 gradients and an fp32 optimizer. Losses and logits are
taken in fp32. A CPU without bf16 instructions is refused: there torch emulates bf16 hundreds
of times slower than fp32 (seen: a 2048 x 2048 product at 0.28 GFLOP/s against 124 in fp32).
A CPU with them is measured before it is trusted: an Intel Xeon with AVX-512 BF16 but no AMX
ran bf16 products at half its fp32 rate (163 against 310 GFLOP/s), so bf16 is refused wherever
its matrix products measure slower than fp32's."""

from __future__ import annotations

import contextlib
import contextvars
import functools
import platform
from typing import Iterator
from pathlib import Path

import torch

from pflbench.errors import UserError

# CPU flags (/proc/cpuinfo) of bf16 matrix instructions: x86 AVX-512 BF16 or AMX; Arm BF16
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo ({} where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def _flags(info: dict[str, str]) -> set[str]:
    return set((info.get("flags") or info.get("Features") or "").split())  # x86 flags, Arm Features


def cpu_flags() -> set[str]:
    return _flags(_cpuinfo())


def machine(device: torch.device) -> str:
    """Where a run computes, in one line: the GPU's name, or the CPU's model name with its
    family and model numbers (a VM's "AMD EPYC" alone does not tell Zen 3 from Zen 5) and its
    bf16 instructions. Records keep it (``measured_on``): float sums follow the device's kernels
    (and the number of threads, which is left out: a sweep's jobs and a Ray or Flower client's
    workers each set their own)."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    info = _cpuinfo()
    name = info.get("model name") or platform.processor() or platform.machine()
    if "cpu family" in info:
        name += f" (family {info['cpu family']}, model {info.get('model', '?')})"
    bf16 = sorted(set(CPU_BF16_FLAGS) & _flags(info))  # /proc/cpuinfo read once
    return f"{name}, {'+'.join(bf16) if bf16 else 'no bf16 instructions'}"


def bf16_supported(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(set(CPU_BF16_FLAGS) & cpu_flags())


# set to 1 to run bf16 anyway where it is emulated (slow): for studying its numerics on such a CPU
ALLOW_EMULATED = "PFLBENCH_ALLOW_EMULATED_BF16"


@functools.cache
def cpu_matmul_speeds() -> tuple[float, float]:
    """(fp32, bf16) FLOP/s of a 1024 x 1024 matrix product on this CPU with the process's
    threads, best of 3 each, measured once a process (about 0.1 s)."""
    from pflbench.models.throughput import matmul_throughput

    return matmul_throughput(torch.float32, 1024, 3), matmul_throughput(torch.bfloat16, 1024, 3)


def check_precision(precision: str, device: torch.device) -> None:
    """One line, before anything heavy, when ``precision`` cannot run fast on ``device``: a
    device without bf16 matrix instructions, or a CPU whose bf16 products measure slower than
    its fp32 ones."""
    import os

    if precision != "bf16" or os.environ.get(ALLOW_EMULATED) == "1":
        return
    if not bf16_supported(device):
        where = "this GPU" if device.type == "cuda" else f"this CPU ({platform.machine()}, no avx512_bf16/amx_bf16/bf16 flag)"
        raise UserError(f"--precision bf16: {where} has no bf16 matrix instructions, so bf16 would run far slower "
                        f"than fp32; use --precision fp32 (or set {ALLOW_EMULATED}=1 to study its numerics slowly)")
    if device.type == "cpu":
        fp32, bf16 = cpu_matmul_speeds()
        if bf16 < fp32:
            raise UserError(f"--precision bf16: this CPU has bf16 instructions, but its bf16 matrix products measured "
                            f"{bf16 / 1e9:.0f} GFLOP/s against {fp32 / 1e9:.0f} in fp32 just now, so bf16 would be slower; "
                            f"use --precision fp32 (or set {ALLOW_EMULATED}=1 to run it anyway)")


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


_AS_FP32 = contextvars.ContextVar("as_fp32", default=False)


def _autocast(forward, device_type: str, dtype: torch.dtype):
    @functools.wraps(forward)
    def wrapped(*args, **kwargs):
        with torch.autocast(device_type=device_type, dtype=dtype, enabled=not _AS_FP32.get()):
            return forward(*args, **kwargs)

    return wrapped


@contextlib.contextmanager
def as_fp32(model: torch.nn.Module) -> Iterator[None]:
    """Within: the model as it was before ``apply_precision``, its bf16 weights widened to fp32
    (exactly) and autocast off; after: bf16 again, bit for bit. For questions about the
    architecture rather than the arithmetic (does it read packed examples as lone ones?), which
    bf16's rounding would blur. Holds the frozen weights in fp32 meanwhile, as an fp32 run does."""
    narrow = [p for p in model.parameters() if p.dtype == torch.bfloat16]
    for p in narrow:
        p.data = p.data.float()
    token = _AS_FP32.set(True)
    try:
        yield
    finally:
        _AS_FP32.reset(token)
        for p in narrow:
            p.data = p.data.to(torch.bfloat16)
