"""How close a training step comes to the machine's limit: the arithmetic a step does, from
its token count and the model's parameter count, against this machine's own matrix-product
throughput measured in the same process.

A LoRA step (frozen base) does a forward (2 FLOPs per weight per token) and a backward that
propagates activation gradients through every weight (2 more) but computes weight gradients
only for the adapters, which are negligible: 4 FLOPs per weight per token. Full fine-tuning
adds the weight gradients: 6. The output layer counts once per position it runs on; the
attention products (QK^T, AV) are left out (about 1% of a step at 40-token examples on
SmolLM2-135M: 4 x layers x hidden x length against 2 x parameters per token)."""

from __future__ import annotations

import time

import torch

LORA_FLOPS_PER_WEIGHT, FULL_FLOPS_PER_WEIGHT = 4, 6


def matmul_weights(model: torch.nn.Module) -> tuple[int, int]:
    """(weights of the transformer body's matrix products, weights of the output layer): the
    embedding lookup is not a product, unless it is tied to the output layer, where it counts
    there."""
    head = model.get_output_embeddings()
    embed = model.get_input_embeddings()
    skip = {id(embed.weight)} | ({id(head.weight)} if head is not None else set())
    body = sum(p.numel() for p in model.parameters() if id(p) not in skip and p.dim() == 2)
    return body, head.weight.numel() if head is not None else 0


def step_flops(model: torch.nn.Module, tokens: int, head_positions: int | None = None, full: bool = False) -> float:
    """FLOPs of one training step over ``tokens`` positions (the output layer over
    ``head_positions``, default all of them)."""
    body, head = matmul_weights(model)
    per = FULL_FLOPS_PER_WEIGHT if full else LORA_FLOPS_PER_WEIGHT
    return float(per * body * tokens + per * head * (tokens if head_positions is None else head_positions))


def matmul_throughput(dtype: torch.dtype = torch.float32, size: int = 2048, repeats: int = 3,
                      device: torch.device | str = "cpu") -> float:
    """FLOP/s of a ``size`` x ``size`` matrix product in ``dtype`` on ``device`` with the
    process's torch threads, best of ``repeats`` after a warm-up: the machine's practical limit."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    best = float("inf")
    for i in range(repeats + 1):
        sync()
        t0 = time.perf_counter()
        a @ b
        sync()
        if i:  # the first is the warm-up
            best = min(best, time.perf_counter() - t0)
    return 2 * size**3 / best
