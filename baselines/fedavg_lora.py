from pflbench.methods import Method, Parts
from pflbench.models.adapters import LoraOptions


class FedAvgLoRA(Method):
    """LoRA on the attention projections; deltas uploaded and averaged by sample count."""

    name = "fedavg-lora"
    description = "one global LoRA (q, v projections), FedAvg of deltas"
    Options = LoraOptions

    def prepare(self, model):
        o = self.options
        return Parts(shared=o.lora(model, "global"))
