from pflbench.methods import Method, Parts
from pflbench.models.adapters import all_parameters


class FedAvgFull(Method):
    """Full fine-tuning: every parameter trained, uploaded and averaged."""

    name = "fedavg-full"
    description = "every parameter trained and uploaded, FedAvg of deltas"
    default_lr = 3e-4

    def prepare(self, model):
        return Parts(shared=all_parameters(model))
