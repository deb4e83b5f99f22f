"""Adapters attached to the one base model: LoRA (through peft) and helpers to name them."""

from __future__ import annotations

import warnings

import torch

# Llama-style names; GPT-2 style models use c_attn (fused q/k/v).
ATTENTION_PROJECTIONS = ("q_proj", "v_proj")


def add_lora(model: torch.nn.Module, adapter: str, rank: int = 8, alpha: int = 16,
             targets: tuple[str, ...] = ATTENTION_PROJECTIONS) -> list[str]:
    """Inject a LoRA adapter named ``adapter`` into ``targets``; return its parameter names.

    Several adapters may be injected into the same layers (PFTT's global and local LoRA);
    all of them stay active, their outputs add up.
    """
    from peft import LoraConfig, inject_adapter_in_model
    from peft.tuners.lora import LoraLayer

    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=list(targets), bias="none")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            inject_adapter_in_model(config, model, adapter_name=adapter)
        except ValueError as exc:
            from pflbench.errors import UserError

            raise UserError(f"cannot attach LoRA to modules {', '.join(targets)}: {exc}".splitlines()[0]) from None
    for module in model.modules():
        if isinstance(module, LoraLayer):
            module.set_adapter(list(module.lora_A.keys()))
    return [n for n, _ in model.named_parameters() if f".{adapter}." in n and "lora_" in n]


def all_parameters(model: torch.nn.Module) -> list[str]:
    return [n for n, _ in model.named_parameters()]
