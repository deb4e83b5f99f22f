"""FedProx (Li et al., "Federated Optimization in Heterogeneous Networks", MLSys 2020) on
LoRA: FedAvg-LoRA plus the proximal term (mu / 2) ||theta - theta_global||^2 in every local
step. mu = 0 is FedAvg-LoRA exactly."""
from dataclasses import dataclass

from pflbench.methods import LocalResult, LoraOptions, Method, Parts, proximal, train_steps


class FedProx(Method):
    name = "fedprox"
    description = "FedAvg-LoRA with a proximal pull (mu) toward the round's global LoRA"

    @dataclass(frozen=True)
    class Options(LoraOptions):
        mu: float = 0.01

    def prepare(self, model):
        return Parts(shared=self.options.lora(model, "global"))

    def local_update(self, ctx):
        mu = self.options.mu
        loss = train_steps(ctx, ctx.parameters(), ctx.steps, extra_loss=proximal(ctx, mu) if mu else None)
        return LocalResult(ctx.num_samples, loss)
