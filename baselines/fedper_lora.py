"""FedPer (Arivazhagan et al., "Federated Learning with Personalization Layers", 2019) and
FedRep (Collins et al., "Exploiting Shared Representations for Personalized Federated
Learning", ICML 2021) on LoRA: the LoRA of the lower blocks (the representation) is shared
and averaged, the LoRA of the top ``private_layers`` blocks (the head) stays on the client.
FedPer trains both together; FedRep trains the head first (``head_fraction`` of the local
steps, the body frozen), then the body (the head frozen)."""
from dataclasses import dataclass

from pflbench.errors import UserError
from pflbench.methods import LocalResult, LoraOptions, Method, Parts, train_in_phases


class FedPerLoRA(Method):
    name = "fedper-lora"
    description = "LoRA of the lower blocks shared, LoRA of the top block(s) private; trained together"

    @dataclass(frozen=True)
    class Options(LoraOptions):
        private_layers: int = 1  # top blocks whose LoRA stays on the client

    def prepare(self, model):
        n, k = model.config.num_hidden_layers, self.options.private_layers
        if not 0 < k < n:
            raise UserError(f"{self.name}: private_layers={k}, but the model has {n} blocks (use 1 to {n - 1})")
        return Parts(shared=self.options.lora(model, "body", tuple(range(n - k))),
                     private=self.options.lora(model, "head", tuple(range(n - k, n))))


class FedRepLoRA(FedPerLoRA):
    name = "fedrep-lora"
    description = "as fedper-lora, but the private head trains first, then the shared body"

    @dataclass(frozen=True)
    class Options(FedPerLoRA.Options):
        head_fraction: float = 0.5  # of the local steps spent on the head

        def __post_init__(self):
            super().__post_init__()
            if not 0 <= self.head_fraction <= 1:
                raise ValueError("head_fraction must be in [0, 1]")

    def local_update(self, ctx):
        head = round(ctx.steps * self.options.head_fraction)
        loss = train_in_phases(ctx, [(ctx.parts.private, head), (ctx.parts.shared, ctx.steps - head)])
        return LocalResult(ctx.num_samples, loss)
