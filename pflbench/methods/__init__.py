"""The Method interface, its value types and the helpers a method is written with; the
paper's methods (PFTT, PFIT) live beside it."""

from pflbench.methods.base import (
    LocalContext,
    LocalResult,
    Method,
    Parts,
    RoundInfo,
    Update,
    fedavg,
    proximal,
    sft_steps,
    sgd,
    train_in_phases,
    train_steps,
)
from pflbench.models.adapters import LoraOptions, use_adapters

__all__ = ["LocalContext", "LocalResult", "LoraOptions", "Method", "Parts", "RoundInfo", "Update", "fedavg",
           "proximal", "sft_steps", "sgd", "train_in_phases", "train_steps", "use_adapters"]
