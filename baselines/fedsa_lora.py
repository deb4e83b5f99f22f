"""FedSA-LoRA (Guo et al., "Selective Aggregation for Low-Rank Adaptation in Federated
Learning", ICLR 2025): the LoRA A matrices, which learn general knowledge, are shared and
averaged; the B matrices, which learn client-specific knowledge, stay on the client."""
from pflbench.methods import LoraOptions, Method, Parts


class FedSALoRA(Method):
    name = "fedsa-lora"
    description = "LoRA A shared and averaged, LoRA B private"
    Options = LoraOptions

    def prepare(self, model):
        names = self.options.lora(model, "lora")
        return Parts(shared=[n for n in names if ".lora_A." in n], private=[n for n in names if ".lora_B." in n])
