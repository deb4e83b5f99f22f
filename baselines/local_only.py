from dataclasses import dataclass

from pflbench.methods import Method, Parts
from pflbench.models.adapters import ATTENTION_PROJECTIONS, add_lora


class LocalOnly(Method):
    """Each client trains its own LoRA and keeps it: nothing is shared, nothing uploaded."""

    name = "local-only"
    description = "each client trains a private LoRA; no uploads (uplink exactly 0)"

    @dataclass(frozen=True)
    class Options:
        rank: int = 8
        alpha: int = 16
        targets: tuple[str, ...] = ATTENTION_PROJECTIONS

    def prepare(self, model):
        o = self.options
        return Parts(shared=[], private=add_lora(model, "local", o.rank, o.alpha, o.targets))
