"""FedDPA (Yang et al., "Dual-Personalizing Adapter for Federated Foundation Models",
NeurIPS 2024), its fine-tuning variant on LoRA: a global LoRA, trained first each round and
averaged, and a local LoRA, trained next with the global one frozen and kept on the client.
Deployed (``mixing=sum``): both adapters add up. ``mixing=instance``: FedDPA's instance-wise
dynamic weighting at inference: for each test example, alpha = max(0, cosine similarity of
its representation to the centroid of the client's training examples), and the model is
W0 x + (1 - alpha) global(x) + alpha local(x). A representation is the mean of the base
model's input embeddings over the example's tokens (cheaper than the paper's hidden states)."""
from dataclasses import dataclass

import torch

from pflbench.methods import LocalResult, LoraOptions, Method, Parts, train_in_phases
from pflbench.models.adapters import weigh_adapters

MIXING = ("sum", "instance")


def _represent(model, ids: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean input embedding per example (padding left out): [batch, hidden]."""
    emb = model.get_input_embeddings()(ids).float()
    m = torch.ones(ids.shape, device=ids.device) if mask is None else mask.float()
    return (emb * m[..., None]).sum(1) / m.sum(1, keepdim=True).clamp(min=1)


class FedDPA(Method):
    name = "feddpa"
    description = "global LoRA averaged, local LoRA private, trained one after the other; instance-wise mixing optional"

    @dataclass(frozen=True)
    class Options(LoraOptions):
        mixing: str = "sum"  # sum | instance
        global_fraction: float = 0.5  # of the local steps spent on the global LoRA (first)

        def __post_init__(self):
            super().__post_init__()
            if self.mixing not in MIXING:
                raise ValueError(f"mixing must be one of {', '.join(MIXING)}, got {self.mixing!r}")
            if not 0 <= self.global_fraction <= 1:
                raise ValueError("global_fraction must be in [0, 1]")

    def prepare(self, model):
        return Parts(shared=self.options.lora(model, "global"), private=self.options.lora(model, "local"))

    def local_update(self, ctx):
        first = round(ctx.steps * self.options.global_fraction)
        loss = train_in_phases(ctx, [(ctx.parts.shared, first), (ctx.parts.private, ctx.steps - first)])
        if self.options.mixing == "instance":
            with torch.no_grad():
                reps = [_represent(ctx.model, torch.tensor([e.ids], device=ctx.device), None) for e in ctx.client.train]
            ctx.state["centroid"] = torch.cat(reps).mean(0).cpu()
        return LocalResult(ctx.num_samples, loss)

    def deployed(self, model, state):
        if self.options.mixing == "sum" or "centroid" not in state:
            return super().deployed(model, state)
        centroid = state["centroid"]

        def weights(ids, mask):
            alpha = torch.cosine_similarity(_represent(model, ids, mask), centroid.to(ids.device)[None], dim=1).clamp(min=0)
            return {"local": alpha, "global": 1 - alpha}

        return weigh_adapters(model, weights)
