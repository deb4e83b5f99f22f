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

from pflbench.methods.base import LocalContext, LocalResult, Method, Parts, train_in_phases
from pflbench.models.adapters import LoraOptions, add_bottleneck_adapters

GLOBAL_PARTS = ("adapter", "lora")
SCHEDULES = ("joint", "alternate")
FIRST = ("local", "global")


class PFTT(Method):
    name = "pftt"
    description = "global bottleneck adapters aggregated, local LoRA kept on each client (paper's PFTT)"

    @dataclass(frozen=True)
    class Options(LoraOptions):  # rank, alpha, targets: the local LoRA's (and the global one's, with global_part=lora)
        bottleneck: int = 8  # adapter width
        global_part: str = "adapter"  # adapter | lora
        schedule: str = "joint"  # joint | alternate
        first: str = "local"  # with schedule=alternate: which part trains first

        def __post_init__(self):
            super().__post_init__()
            for field, value, choices in (("global_part", self.global_part, GLOBAL_PARTS),
                                          ("schedule", self.schedule, SCHEDULES), ("first", self.first, FIRST)):
                if value not in choices:
                    raise ValueError(f"{field} must be one of {', '.join(choices)}, got {value!r}")
            if self.bottleneck <= 0:
                raise ValueError("bottleneck must be positive")

    def prepare(self, model) -> Parts:
        o = self.options
        if o.global_part == "adapter":
            shared = add_bottleneck_adapters(model, "pftt_adapter", o.bottleneck)
        else:
            shared = o.lora(model, "global")
        private = o.lora(model, "local")
        return Parts(shared=shared, private=private)

    def batchable(self) -> bool:
        return self.options.schedule == "joint"  # then the local update is the default one

    def local_update(self, ctx: LocalContext) -> LocalResult:
        if self.options.schedule == "joint":
            return super().local_update(ctx)
        order = [ctx.parts.private, ctx.parts.shared]
        if self.options.first == "global":
            order.reverse()
        first_steps = ctx.steps // 2
        loss = train_in_phases(ctx, list(zip(order, (first_steps, ctx.steps - first_steps))))
        return LocalResult(ctx.num_samples, loss)
