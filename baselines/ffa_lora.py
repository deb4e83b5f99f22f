"""FFA-LoRA (Sun et al., "Improving LoRA in Privacy-preserving Federated Learning", ICLR
2024): the LoRA A matrices are drawn once from the run's shared seed and frozen; only B is
trained, uploaded and averaged, so averaging the B's averages the LoRA products exactly."""
from pflbench.methods import LoraOptions, Method, Parts


class FFALoRA(Method):
    name = "ffa-lora"
    description = "LoRA A frozen from a shared seed; only B trained, uploaded and averaged"
    Options = LoraOptions

    def prepare(self, model):
        names = self.options.lora(model, "global")
        return Parts(shared=[n for n in names if ".lora_B." in n])  # A is neither: frozen
