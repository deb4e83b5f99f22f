"""PFTT, personalized federated task tuning (the paper's second method).

Two trainable parts on the frozen base model:

- **global adapters** (shared): bottleneck adapters after each block's feed-forward output;
  their deltas are uploaded and averaged by sample count. With ``global_part=lora`` a global
  LoRA on the attention projections takes their place (the FedDPA-style variant).
- **local LoRA** (private): LoRA on the attention projections, created on the client, trained
  every round, kept in the client store; never uploaded, never aggregated.

Both train jointly by default; ``schedule=alternate`` spends the first half of the local steps
on one part (``first``: local by default) with the other frozen, then the second half on the
other. See docs/methods/pftt.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from pflbench.methods.base import LocalContext, LocalResult, Method, Parts, train_steps
from pflbench.models.adapters import ATTENTION_PROJECTIONS, add_bottleneck_adapters, add_lora

GLOBAL_PARTS = ("adapter", "lora")
SCHEDULES = ("joint", "alternate")
FIRST = ("local", "global")


class PFTT(Method):
    name = "pftt"
    description = "global bottleneck adapters aggregated, local LoRA kept on each client (paper's PFTT)"

    @dataclass(frozen=True)
    class Options:
        bottleneck: int = 8  # adapter width
        rank: int = 8  # local LoRA rank (and global LoRA's, with global_part=lora)
        alpha: int = 16
        targets: tuple[str, ...] = ATTENTION_PROJECTIONS
        global_part: str = "adapter"  # adapter | lora
        schedule: str = "joint"  # joint | alternate
        first: str = "local"  # with schedule=alternate: which part trains first

        def __post_init__(self):
            for field, value, choices in (("global_part", self.global_part, GLOBAL_PARTS),
                                          ("schedule", self.schedule, SCHEDULES), ("first", self.first, FIRST)):
                if value not in choices:
                    raise ValueError(f"{field} must be one of {', '.join(choices)}, got {value!r}")
            if self.bottleneck <= 0 or self.rank <= 0:
                raise ValueError("bottleneck and rank must be positive")

    def prepare(self, model) -> Parts:
        o = self.options
        if o.global_part == "adapter":
            shared = add_bottleneck_adapters(model, "pftt_adapter", o.bottleneck)
        else:
            shared = add_lora(model, "global", o.rank, o.alpha, o.targets)
        private = add_lora(model, "local", o.rank, o.alpha, o.targets)
        return Parts(shared=shared, private=private)

    def local_update(self, ctx: LocalContext) -> LocalResult:
        if self.options.schedule == "joint":
            return super().local_update(ctx)
        order = [ctx.parts.private, ctx.parts.shared]
        if self.options.first == "global":
            order.reverse()
        first_steps = ctx.steps // 2
        losses = []
        for names, steps in zip(order, (first_steps, ctx.steps - first_steps)):
            training = {id(p) for p in ctx.parameters(names)}
            frozen = [p for p in ctx.parameters() if id(p) not in training]
            for p in frozen:
                p.requires_grad_(False)
            try:
                losses.append((train_steps(ctx, ctx.parameters(names), steps), steps))
            finally:
                for p in frozen:
                    p.requires_grad_(True)
        done = [(l, s) for l, s in losses if s]
        loss = sum(l * s for l, s in done) / sum(s for _, s in done)
        return LocalResult(num_samples=ctx.task.num_train(ctx.client), train_loss=loss)
