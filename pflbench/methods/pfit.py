"""PFIT, personalized federated instruction tuning (the paper's first method): its structure.

- **shared**: LoRA on the attention projections of the last ``layers`` blocks only (default:
  the last half), the paper's "sparse self-attention": fewer trained and uploaded parameters;
  uploaded as deltas and averaged by sample count.
- **private**: a local LoRA on the attention projections of every block (``private=lora``), kept
  in the client store, never uploaded; ``private=none`` drops it.
- **local update**: the task's objective on both parts, plus the proximal term
  (mu / 2) * ||theta_shared - theta_global||^2 that keeps the client near the global model
  (theta_global: the shared values the round started from).

The objective belongs to the task: on reward cards (``synth-align``, ``hh-align``) it is the
reinforcement-learning update (GRPO, ``pflbench.training.rl``) on the client's own mixture of
reward models, the paper's setting; on instruction, task and text cards the supervised step.
``group_size``, ``kl_weight`` and ``temperature`` tune the RL update (0: the card's or the
suite's value). See docs/methods/pfit.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from pflbench.errors import UserError
from pflbench.methods.base import LocalContext, LocalResult, Method, Parts, proximal, train_steps
from pflbench.models.adapters import LoraOptions

PRIVATE = ("lora", "none")


class PFIT(Method):
    name = "pfit"
    description = "attention LoRA of the last blocks shared, a local LoRA private, proximal pull to the global model (paper's PFIT structure)"

    @dataclass(frozen=True)
    class Options(LoraOptions):
        layers: int = 0  # the last blocks whose attention LoRA is shared; 0: the last half
        mu: float = 0.01  # weight of the proximal term
        private: str = "lora"  # lora | none
        group_size: int = 0  # RL: responses sampled per prompt; 0: the card's
        kl_weight: float = 0.1  # RL: weight of the KL penalty toward the round's starting policy
        temperature: float = 0.0  # RL: sampling temperature; 0: the card's

        def __post_init__(self):
            super().__post_init__()
            if self.private not in PRIVATE:
                raise ValueError(f"private must be one of {', '.join(PRIVATE)}, got {self.private!r}")
            if self.layers < 0 or self.mu < 0:
                raise ValueError("layers and mu must be >= 0")
            if self.group_size == 1 or self.group_size < 0 or self.kl_weight < 0 or self.temperature < 0:
                raise ValueError("group_size must be 0 (the card's) or at least 2; kl_weight and temperature >= 0")

    def shared_layers(self, model) -> tuple[int, ...]:
        n = model.config.num_hidden_layers
        k = self.options.layers or max(1, n // 2)
        if k > n:
            raise UserError(f"pfit: layers={k}, but the model has {n} blocks")
        return tuple(range(n - k, n))

    def prepare(self, model) -> Parts:
        o = self.options
        shared = o.lora(model, "global", layers=self.shared_layers(model))
        private = o.lora(model, "local") if o.private == "lora" else []
        return Parts(shared=shared, private=private)

    def local_update(self, ctx: LocalContext) -> LocalResult:
        o = self.options
        pull = proximal(ctx, o.mu) if o.mu > 0 else None  # toward the global values this round started from
        loss = train_steps(ctx, ctx.parameters(), ctx.steps, extra_loss=pull,
                           group_size=o.group_size or None, kl_weight=o.kl_weight, temperature=o.temperature or None)
        return LocalResult(ctx.num_samples, loss)
