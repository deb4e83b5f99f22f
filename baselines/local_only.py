from pflbench.methods import Method, Parts
from pflbench.models.adapters import LoraOptions


class LocalOnly(Method):
    """Each client trains its own LoRA and keeps it: nothing is shared, nothing uploaded."""

    name = "local-only"
    description = "each client trains a private LoRA; no uploads (uplink exactly 0)"
    Options = LoraOptions

    def prepare(self, model):
        o = self.options
        return Parts(shared=[], private=o.lora(model, "local"))
