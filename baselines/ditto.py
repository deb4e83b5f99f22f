"""Ditto (Li et al., "Ditto: Fair and Robust Federated Learning Through Personalization",
ICML 2021) on LoRA. Each round a client trains the global LoRA (FedAvg, uploaded) and then its
personal LoRA, the global one switched off, with the pull (lambda / 2) ||v - w||^2 toward the
global values w the round started from. The personal LoRA starts as a copy of the global one
the first time a client trains. Deployed: the personal LoRA alone; shared score: the global
LoRA alone (the global model). Each phase runs the round's local steps (twice the compute of
FedAvg-LoRA, as in the paper)."""
from dataclasses import dataclass

import torch

from pflbench.methods import LocalResult, LoraOptions, Method, Parts, proximal, train_steps, use_adapters


class Ditto(Method):
    name = "ditto"
    description = "global LoRA by FedAvg; a personal LoRA pulled toward it (lam) is deployed"
    deployed_adapters = ("personal",)
    shared_adapters = ("global",)

    @dataclass(frozen=True)
    class Options(LoraOptions):
        lam: float = 0.1

    def prepare(self, model):
        o = self.options
        return Parts(shared=o.lora(model, "global"), private=o.lora(model, "personal"))

    def local_update(self, ctx):
        with use_adapters(ctx.model, ["global"]):
            loss = train_steps(ctx, ctx.parameters(ctx.parts.shared), ctx.steps)
        anchor = {n: ctx.global_shared[n.replace(".personal.", ".global.")] for n in ctx.parts.private}
        if ctx.participation == 0:
            with torch.no_grad():
                for n, p in ctx.model.named_parameters():
                    if n in anchor:
                        p.copy_(anchor[n])
        with use_adapters(ctx.model, ["personal"]):
            pull = proximal(ctx, self.options.lam, ctx.parts.private, anchor) if self.options.lam else None
            train_steps(ctx, ctx.parameters(ctx.parts.private), ctx.steps, extra_loss=pull)
        return LocalResult(ctx.num_samples, loss)
