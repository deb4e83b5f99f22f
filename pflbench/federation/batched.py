"""Several clients' local updates in one pass over the one frozen base model
(``--parallel-clients K``).

Clients of a LoRA or adapter method share the frozen base and differ only in small tensors.
Here K sampled clients train together: each trainable tensor is stacked on a leading client
axis ([K, ...]); every step draws each client's batch with its own (seed, round, client)
generator, puts the K batches one after another in one right-padded batch, and runs one
forward and backward, in which each LoRA layer and bottleneck adapter sends each client's
examples through that client's own tensors (``torch.bmm`` over the stack). The loss is the
sum of the clients' own token-mean losses, so each client's gradient is its own; and since
AdamW is elementwise, one AdamW over the stacked tensors is K clients' own AdamWs.

What differs from training the clients one after another is the order of floating-point
sums (wider padding, batched matrix products): records agree within the tolerance the README
states, not bit for bit. Used when the method's local update is the default supervised step
(``Method.batchable``) and every trainable tensor is a LoRA or bottleneck-adapter weight.
"""

from __future__ import annotations

import contextlib
import time
from typing import Iterator

import torch

from pflbench.federation.client import ClientJob, ClientOutcome, client_generator, divergence
from pflbench.models.adapters import BottleneckAdapter


def _slots(model: torch.nn.Module) -> dict[str, tuple[torch.nn.Module, str]]:
    """Parameter name -> (module, role) for every LoRA and bottleneck-adapter weight."""
    from peft.tuners.lora import LoraLayer

    out = {}
    for prefix, module in model.named_modules():
        if isinstance(module, LoraLayer):
            for a in module.lora_A:
                out[f"{prefix}.lora_A.{a}.weight"] = (module, f"A:{a}")
                out[f"{prefix}.lora_B.{a}.weight"] = (module, f"B:{a}")
        elif isinstance(module, BottleneckAdapter):
            for part in ("down", "up"):
                for kind in ("weight", "bias"):
                    out[f"{prefix}.{part}.{kind}"] = (module, f"{part}.{kind}")
    return out


def batchable(exp) -> bool:
    """Whether ``exp``'s clients can train in one pass: the method's local update is the
    default supervised step, and every trainable tensor is a LoRA or adapter weight."""
    if exp.task.kind == "reward" or not exp.method.batchable():
        return False
    trainable = exp.parts.shared + exp.parts.private
    slots = _slots(exp.loaded.model)
    return bool(trainable) and all(n in slots for n in trainable)


@contextlib.contextmanager
def _stacked_forward(model: torch.nn.Module, stacked: dict[str, torch.Tensor], k: int):
    """Within: LoRA layers and bottleneck adapters use the stacked tensors, client i's
    examples being rows [i*n, (i+1)*n) of the batch."""
    slots = _slots(model)
    by_module: dict[torch.nn.Module, dict[str, torch.Tensor]] = {}
    for name, t in stacked.items():
        module, role = slots[name]
        by_module.setdefault(module, {})[role] = t
    patched = []

    def per_client(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        xk = x.reshape(k, -1, x.shape[-1])
        y = torch.bmm(xk, weight.transpose(1, 2)) if weight.dim() == 3 else xk @ weight.T
        if bias is not None:
            y = y + (bias[:, None, :] if bias.dim() == 2 else bias)
        return y

    for module in {m for m, _ in slots.values()}:
        own = by_module.get(module, {})
        if isinstance(module, BottleneckAdapter):
            def forward(h, m=module, own=own):
                if not m.active:
                    return h
                w = {r: own.get(r, getattr(getattr(m, r.split(".")[0]), r.split(".")[1])) for r in
                     ("down.weight", "down.bias", "up.weight", "up.bias")}
                z = torch.nn.functional.gelu(per_client(h, w["down.weight"], w["down.bias"]))
                return h + per_client(z, w["up.weight"], w["up.bias"]).reshape(h.shape)
        else:
            def forward(x, *args, m=module, own=own, **kwargs):
                result = m.base_layer(x, *args, **kwargs)
                for a in m.active_adapters:
                    if a not in m.lora_A:
                        continue
                    wa = own.get(f"A:{a}", m.lora_A[a].weight)
                    wb = own.get(f"B:{a}", m.lora_B[a].weight)
                    xa = per_client(x.to(wa.dtype), wa)
                    result = result + (per_client(xa, wb) * m.scaling[a]).reshape(result.shape).to(result.dtype)
                return result
        patched.append(module)
        module.forward = forward
    try:
        yield
    finally:
        for module in patched:
            del module.forward  # back to the class's forward


def train_batched(exp, schema, jobs: list[ClientJob]) -> Iterator[ClientOutcome]:
    """Train ``jobs`` together (see the module doc); outcomes in the order of ``jobs``."""
    from pflbench.data.task import lm_batch
    from pflbench.training.rl import adamw

    spec, task, model = exp.spec, exp.task, exp.loaded.model
    k, dev = len(jobs), exp.device
    names = exp.parts.shared + exp.parts.private
    t0 = time.perf_counter()
    with torch.no_grad():
        stacked = {n: torch.stack([(j.global_shared[n] if n in j.global_shared else j.private[n]).to(dev)
                                   for j in jobs]).requires_grad_(True) for n in names}
    opt = adamw(list(stacked.values()), jobs[0].lr)
    gens = [client_generator(spec.seed, j.round, j.client) for j in jobs]
    clients = [exp.clients[j.client] for j in jobs]
    losses = torch.zeros(k, dtype=torch.float64)
    model.train()
    with _stacked_forward(model, stacked, k):
        for _ in range(spec.local_steps):
            examples = [e for c, g in zip(clients, gens) for e in task.train_prompts(c, spec.batch_size, g)]
            batch = {key: v.to(dev) for key, v in lm_batch(examples, task._pad_id).items()}
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()
            target = batch["labels"][:, 1:]
            tok = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target, ignore_index=-100, reduction="none")
            valid = (target != -100).reshape(k, -1)
            per_client = (tok.reshape(k, -1) * valid).sum(1) / valid.sum(1).clamp(min=1)
            per_client.sum().backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses += per_client.detach().double().cpu()
    compute_s = (time.perf_counter() - t0) / k  # the pass, shared out evenly
    for i, job in enumerate(jobs):
        trained = {n: stacked[n][i].detach() for n in names}
        loss = float(losses[i]) / spec.local_steps
        diverged = divergence(loss, trained)
        upload = {n: trained[n] - job.global_shared[n] for n in exp.parts.shared}
        memory = dict(job.codec_memory)
        payload = exp.codec.encode(upload, schema, memory) if upload and diverged is None else b""
        yield ClientOutcome(client=job.client, payload=payload,
                            private={n: trained[n].clone() for n in exp.parts.private}, state=dict(job.state),
                            codec_memory=memory, num_samples=task.num_train(clients[i]), train_loss=loss,
                            reward=float("nan"), compute_s=compute_s, diverged=diverged)


def groups(jobs: list[ClientJob], size: int) -> list[list[ClientJob]]:
    return [jobs[i : i + size] for i in range(0, len(jobs), size)]

