"""Adapters attached to the one base model: LoRA (through peft) and helpers to name them."""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import torch

from pflbench.errors import UserError

# Llama-style names (Llama, SmolLM2, Gemma, Qwen, Mistral): the query and value projections
ATTENTION_PROJECTIONS = ("q_proj", "v_proj")
# the same choice (LoRA's paper: query and value) for architectures that name them otherwise,
# keyed by ``config.model_type``; any other model is probed for these names in this order
ARCHITECTURE_TARGETS = {
    "gpt2": ("c_attn",), "gpt_neox": ("query_key_value",), "falcon": ("query_key_value",),
    "bloom": ("query_key_value",), "phi3": ("qkv_proj",), "gpt_bigcode": ("c_attn",),
    "opt": ("q_proj", "v_proj"), "t5": ("q", "v"),
}


def default_targets(model: torch.nn.Module) -> tuple[str, ...]:
    """The LoRA targets of ``model``'s architecture: its query and value projections."""
    kind = getattr(getattr(model, "config", None), "model_type", None)
    if kind in ARCHITECTURE_TARGETS:
        return ARCHITECTURE_TARGETS[kind]
    leaves = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    for targets in (ATTENTION_PROJECTIONS, *ARCHITECTURE_TARGETS.values()):
        if set(targets) <= leaves:
            return targets

    raise UserError(f"no known attention projections in model type {kind!r}; name the LoRA targets with --opt targets=NAME,NAME")


@dataclass(frozen=True)
class LoraOptions:
    """The options of a method that attaches one LoRA (``--opt rank=4`` and so on)."""

    rank: int = 8
    alpha: int = 16
    targets: tuple[str, ...] = ()  # empty: the architecture's (``default_targets``)

    def __post_init__(self):
        if self.rank <= 0 or self.alpha <= 0:
            raise ValueError("rank and alpha must be positive")

    def lora(self, model: torch.nn.Module, adapter: str, layers: tuple[int, ...] | None = None) -> list[str]:
        """``add_lora`` with these options."""
        return add_lora(model, adapter, self.rank, self.alpha, self.targets, layers)


def add_lora(model: torch.nn.Module, adapter: str, rank: int = 8, alpha: int = 16,
             targets: tuple[str, ...] = (), layers: tuple[int, ...] | None = None) -> list[str]:
    """Inject a LoRA adapter named ``adapter`` into ``targets`` (empty: the architecture's
    query and value projections, ``default_targets``), of the blocks numbered in ``layers``
    only, if given; return its parameter names.

    Several adapters may be injected into the same layers (PFTT's global and local LoRA);
    all of them stay active, their outputs add up.
    """
    from peft import LoraConfig, inject_adapter_in_model
    from peft.tuners.lora import LoraLayer

    targets = tuple(targets) or default_targets(model)
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=list(targets), bias="none",
                        layers_to_transform=list(layers) if layers is not None else None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            inject_adapter_in_model(config, model, adapter_name=adapter)
        except ValueError as exc:
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

    def __init__(self, hidden: int, bottleneck: int, adapter: str = "adapter"):
        super().__init__()
        self.adapter, self.active = adapter, True
        self.down = torch.nn.Linear(hidden, bottleneck)
        self.up = torch.nn.Linear(bottleneck, hidden)
        torch.nn.init.zeros_(self.up.weight)
        torch.nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return h
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
        raise UserError(f"bottleneck adapters need blocks with an `mlp` feed-forward; {type(model).__name__} has none")
    ref = next(model.parameters())
    for block, mlp in blocks:
        adapter = BottleneckAdapter(hidden, bottleneck, name).to(device=ref.device, dtype=ref.dtype)
        block.add_module(name, adapter)
        mlp.register_forward_hook(lambda _m, _inp, out, a=adapter: a(out))
    return [n for n, _ in model.named_parameters() if f".{name}." in n]


def adapter_names(model: torch.nn.Module) -> list[str]:
    """Every adapter attached to the model (LoRA and bottleneck), by name."""
    from peft.tuners.lora import LoraLayer

    names: set[str] = set()
    for module in model.modules():
        if isinstance(module, LoraLayer):
            names.update(module.lora_A.keys())
        elif isinstance(module, BottleneckAdapter):
            names.add(module.adapter)
    return sorted(names)


@contextlib.contextmanager
def use_adapters(model: torch.nn.Module, names: Iterable[str] | None) -> Iterator[None]:
    """Inside the block, only the named adapters (LoRA or bottleneck, by the name given when
    they were attached) take part in the forward pass; ``None``: all of them. What is trained
    (``requires_grad``) is left as it was; the previous activation is restored on exit. The
    one supported way for a method to switch adapters (Ditto's personal model, FedDPA's)."""
    if names is None:
        yield
        return
    from peft.tuners.lora import LoraLayer

    wanted = set(names)
    unknown = wanted - set(adapter_names(model))
    if unknown:
        raise ValueError(f"use_adapters: no adapter named {', '.join(sorted(unknown))} (attached: {', '.join(adapter_names(model))})")
    saved = []
    for module in model.modules():
        if isinstance(module, LoraLayer):
            grads = [(p, p.requires_grad) for p in module.parameters()]
            saved.append((module, list(module.active_adapters), grads))
            module.set_adapter([a for a in module.lora_A.keys() if a in wanted])
            for p, g in grads:  # peft's set_adapter also flips requires_grad: undo that
                p.requires_grad_(g)
        elif isinstance(module, BottleneckAdapter):
            saved.append((module, module.active, None))
            module.active = module.adapter in wanted
    try:
        yield
    finally:
        for module, previous, grads in saved:
            if grads is None:
                module.active = previous
            else:
                module.set_adapter(previous)
                for p, g in grads:
                    p.requires_grad_(g)


# weights(input_ids, attention_mask) -> {adapter name: one weight per example}
AdapterWeights = Callable[[torch.Tensor, "torch.Tensor | None"], dict[str, torch.Tensor]]


@contextlib.contextmanager
def weigh_adapters(model: torch.nn.Module, weights: AdapterWeights) -> Iterator[None]:
    """Inside the block, each example's output of LoRA adapter ``a`` is multiplied by its own
    weight ``weights(input_ids, attention_mask)[a][example]`` (FedDPA's instance-wise mixing).
    The weights are computed on each forward pass that sees more than one new token (so during
    generation they come from the prompt and are kept for the tokens that follow)."""
    from peft.tuners.lora import LoraLayer

    layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
    base = [(m, dict(m.scaling)) for m in layers]

    def hook(_module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None or (ids.shape[1] == 1 and getattr(hook, "done", False)):
            return None
        w = weights(ids, kwargs.get("attention_mask"))
        for m, scales in base:
            for a, s in scales.items():
                if a in w:
                    m.scaling[a] = s * w[a].reshape(-1, 1, 1).to(device=ids.device)
        hook.done = True
        return None

    handle = model.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()
        for m, scales in base:
            m.scaling.clear()
            m.scaling.update(scales)
