"""Central: no federation. One LoRA trained on every client's data, as a data centre holding
all of it would: each local update continues from where the previous one stopped (within and
across rounds), on batches drawn from the pooled training data of every client (on reward
cards, on the client's own prompts and reward mixture in turn). Nothing is uploaded or
broadcast; the ceiling a table reads federated methods against, beside ``base``. Its compute per round
equals FedAvg-LoRA's (clients per round x local steps)."""
import torch

from pflbench.data.task import ClientData
from pflbench.methods import LocalResult, LoraOptions, Method, Parts, train_steps


class Central(Method):
    name = "central"
    description = "every client's data pooled in one LoRA, no federation, no uplink (the ceiling)"
    Options = LoraOptions
    federated = False  # nothing uploaded, nothing broadcast: the pooled LoRA never leaves the data centre

    def __init__(self, options=None):
        super().__init__(options)
        self._latest = None  # (round, values) after the last local update
        self._pooled = None

    def prepare(self, model):
        return Parts(shared=self.options.lora(model, "global"))

    def local_update(self, ctx):
        params = dict(ctx.model.named_parameters())
        if self._latest is not None and self._latest[0] == ctx.round:  # continue this round's training
            for n, v in self._latest[1].items():
                with torch.no_grad():
                    params[n].copy_(v)
        own = ctx.client
        if ctx.task.kind != "reward":
            if self._pooled is None:
                self._pooled = ClientData(-1, "pooled", [e for c in ctx.all_clients for e in c.train], [])
            ctx.client = self._pooled
        try:
            loss = train_steps(ctx, ctx.parameters(), ctx.steps)
        finally:
            ctx.client = own
        self._latest = (ctx.round, {n: params[n].detach().clone() for n in ctx.parts.shared})
        return LocalResult(ctx.num_samples, loss)

    def aggregate(self, shared, updates, info):
        if self._latest is None or self._latest[0] != info.round:
            return shared
        return self._latest[1]
