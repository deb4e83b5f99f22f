"""Adapters attached to the one base model: LoRA (through peft) and helpers to name them."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

# Llama-style names; GPT-2 style models use c_attn (fused q/k/v).
ATTENTION_PROJECTIONS = ("q_proj", "v_proj")


@dataclass(frozen=True)
class LoraOptions:
    """The options of a method that attaches one LoRA (``--opt rank=4`` and so on)."""

    rank: int = 8
    alpha: int = 16
    targets: tuple[str, ...] = ATTENTION_PROJECTIONS


def add_lora(model: torch.nn.Module, adapter: str, rank: int = 8, alpha: int = 16,
             targets: tuple[str, ...] = ATTENTION_PROJECTIONS, layers: tuple[int, ...] | None = None) -> list[str]:
    """Inject a LoRA adapter named ``adapter`` into ``targets`` (of the blocks numbered in
    ``layers`` only, if given); return its parameter names.

    Several adapters may be injected into the same layers (PFTT's global and local LoRA);
    all of them stay active, their outputs add up.
    """
    from peft import LoraConfig, inject_adapter_in_model
    from peft.tuners.lora import LoraLayer

    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=list(targets), bias="none",
                        layers_to_transform=list(layers) if layers is not None else None)
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


class BottleneckAdapter(torch.nn.Module):
    """Houlsby-style adapter: h + up(act(down(h))). The up-projection starts at zero, so a
    fresh adapter is the identity."""

    def __init__(self, hidden: int, bottleneck: int):
        super().__init__()
        self.down = torch.nn.Linear(hidden, bottleneck)
        self.up = torch.nn.Linear(bottleneck, hidden)
        torch.nn.init.zeros_(self.up.weight)
        torch.nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.up(torch.nn.functional.gelu(self.down(h)))


def feed_forward_blocks(model: torch.nn.Module) -> list[tuple[torch.nn.Module, torch.nn.Module]]:
    """(transformer block, its feed-forward module) for every block: the child named
    ``mlp`` (Llama, Mistral, Qwen, GPT-2...) of each decoder layer."""
    out = []
    for module in model.modules():
        mlp = getattr(module, "mlp", None)
        if isinstance(mlp, torch.nn.Module) and module is not model:
            out.append((module, mlp))
    return out


def add_bottleneck_adapters(model: torch.nn.Module, name: str, bottleneck: int) -> list[str]:
    """Attach a ``BottleneckAdapter`` after each block's feed-forward output (as a child
    ``name`` of the block, applied by a forward hook); return its parameter names."""
    hidden = model.config.hidden_size
    blocks = feed_forward_blocks(model)
    if not blocks:
        from pflbench.errors import UserError

        raise UserError(f"bottleneck adapters need blocks with an `mlp` feed-forward; {type(model).__name__} has none")
    ref = next(model.parameters())
    for block, mlp in blocks:
        adapter = BottleneckAdapter(hidden, bottleneck).to(device=ref.device, dtype=ref.dtype)
        block.add_module(name, adapter)
        mlp.register_forward_hook(lambda _m, _inp, out, a=adapter: a(out))
    return [n for n, _ in model.named_parameters() if f".{name}." in n]
