"""Several clients' local updates in one pass over the one frozen base model
(``--parallel-clients K``, by default ``auto``).

Clients of a LoRA or adapter method share the frozen base and differ only in small tensors.
Here K sampled clients train together: each trainable tensor is stacked on a leading client
axis ([K, ...]); every step draws each client's batch with its own (seed, round, client)
generator and packs the K batches into rows as wide as the longest example, a row holding
one client's examples one after another, each attending only to itself (positions restart
at 0 for each). One forward and backward runs over them, in which each LoRA layer and
bottleneck adapter sends each row through its client's own tensors (``torch.bmm`` over the
rows' tensors), and the output layer runs on the learnt positions only. The loss is the sum
of the clients' own token-mean losses, so each client's gradient is its own; and since AdamW
is elementwise, one AdamW over the stacked tensors is K clients' own AdamWs. On a reward card
(GRPO) each client samples its responses alone, with its own tensors and seed, and only the
objective's forward and backward are shared. ``evaluate_batched`` scores clients with private
tensors of their own the same way, each test example through its client's tensors.

Packing is what pays on a CPU, where the arithmetic sets the time: a right-padded batch of a
client's 8 lines of verse is about half padding, packed rows about an eighth. On a GPU the one
pass instead of K fills a device that small products leave idle.

What differs from training the clients one after another is the order of floating-point
sums: records agree within the tolerance docs/performance.md states, not bit for bit, which is why the
spec's ``parallel_clients`` is part of the run id. Used when the method's local update is the
default step (``Method.batchable``), every trainable tensor is a LoRA or bottleneck-adapter
weight and the model reads packed examples faithfully (checked once on the run's own data).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Iterator

import torch

from pflbench.data.task import lm_batch
from pflbench.evaluation.membership import membership_auc
from pflbench.evaluation.metrics import METRICS, evaluate_clients
from pflbench.federation.client import ClientJob, ClientOutcome, client_generator, divergence, load_into, outgoing
from pflbench.methods.base import Method, rl_config
from pflbench.models.adapters import BottleneckAdapter
from pflbench.models.precision import as_fp32
from pflbench.rewards import load_rewards
from pflbench.training.rl import _token_logprobs, adamw, draw, group_advantages, grpo_rows, reference_logprobs


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
    default step (supervised, or GRPO on a reward card), every trainable tensor is a LoRA or
    adapter weight (not on the output layer, which runs on learnt positions only), and the
    model reads packed examples as it reads them one by one (``_packs_faithfully``)."""
    if not exp.method.batchable():
        return False
    model, trainable = exp.loaded.model, exp.parts.shared + exp.parts.private
    slots = _slots(model)
    head = model.get_output_embeddings()
    return (bool(trainable) and all(n in slots and slots[n][0] is not head for n in trainable)
            and _packs_faithfully(exp))


# ``--parallel-clients auto``: the activations one pass may hold, estimated at
# BYTES_PER_UNIT bytes per token x hidden size x layers (measured on the tiny model: docs/performance.md,
# "Batched clients") at the longest training example, plus the output layer's BYTES_PER_LOGIT per
# vocabulary entry at each learnt position (fp32 logits, their log-softmax and its gradient: Gemma 3's
# 262k-token vocabulary makes that half of a client's activations); a function of the spec, not of the
# memory free at the time, so the same spec trains in the same groups on every machine
AUTO_BUDGET = {"cpu": 2 * 2**30, "cuda": 8 * 2**30}
BYTES_PER_UNIT = 100
BYTES_PER_LOGIT = 12


def clients_per_pass(exp, parallel: int | str = "auto") -> int:
    """How many sampled clients train in one pass: 1 where the run is not ``batchable``;
    ``parallel`` as asked; ``auto``: every sampled client, as far as ``AUTO_BUDGET`` allows."""
    if parallel == 1 or not batchable(exp):
        return 1
    if parallel != "auto":
        return int(parallel)
    config, spec = exp.loaded.model.config, exp.spec
    examples = [e for c in exp.clients for e in c.train]
    longest = max((len(e.ids) for e in examples), default=1)
    learnt = max((len(e.ids) - max(e.prompt_len, 1) for e in examples), default=1)  # positions whose next token is learnt
    rows = spec.batch_size
    if exp.task.kind == "reward":  # each prompt's group of sampled responses

        cfg = rl_config(exp.task)
        rows, longest, learnt = rows * cfg.group_size, longest + cfg.max_new_tokens, cfg.max_new_tokens
    per_client = rows * (longest * config.hidden_size * config.num_hidden_layers * BYTES_PER_UNIT
                         + learnt * config.vocab_size * BYTES_PER_LOGIT)
    budget = AUTO_BUDGET["cuda" if torch.device(exp.device).type == "cuda" else "cpu"]
    return max(1, min(spec.clients_per_round, budget // per_client))


class _Route:
    """Which client each row of the batch in flight belongs to (a [rows] index tensor);
    ``one``: the client, when every row is the same one's (an RL client sampling)."""

    one: int | None = None

    @property
    def rows(self) -> torch.Tensor:
        return self._rows

    @rows.setter
    def rows(self, rows: torch.Tensor) -> None:
        self._rows = rows
        self.one = int(rows[0]) if len(rows) and bool((rows == rows[0]).all()) else None


@contextlib.contextmanager
def _stacked_forward(model: torch.nn.Module, stacked: dict[str, torch.Tensor]) -> Iterator[_Route]:
    """Within: LoRA layers and bottleneck adapters send each row of the batch through the
    stacked tensors of the client ``route.rows`` names for it (a batched matrix product over
    the rows' own tensors); tensors not stacked (ffa-lora's frozen A) are everyone's."""
    slots = _slots(model)
    by_module: dict[torch.nn.Module, dict[str, torch.Tensor]] = {}
    for name, t in stacked.items():
        module, role = slots[name]
        by_module.setdefault(module, {})[role] = t
    route, patched = _Route(), []

    def per_row(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        xr = x.reshape(len(route.rows), -1, x.shape[-1])
        if route.one is not None:  # one client's rows: its own tensors, no gather
            weight = weight[route.one] if weight.dim() == 3 else weight
            bias = bias[route.one] if bias is not None and bias.dim() == 2 else bias
        if weight.dim() == 3:
            y = torch.bmm(xr, weight.index_select(0, route.rows).transpose(1, 2))
        else:
            y = xr @ weight.T
        if bias is not None:
            y = y + (bias.index_select(0, route.rows)[:, None, :] if bias.dim() == 2 else bias)
        return y

    for module in {m for m, _ in slots.values()}:
        own = by_module.get(module, {})
        if isinstance(module, BottleneckAdapter):
            def forward(h, m=module, own=own):
                if not m.active:
                    return h
                w = {r: own.get(r, getattr(getattr(m, r.split(".")[0]), r.split(".")[1])) for r in
                     ("down.weight", "down.bias", "up.weight", "up.bias")}
                z = torch.nn.functional.gelu(per_row(h, w["down.weight"], w["down.bias"]))
                return h + per_row(z, w["up.weight"], w["up.bias"]).reshape(h.shape)
        else:
            def forward(x, *args, m=module, own=own, **kwargs):
                result = m.base_layer(x, *args, **kwargs)
                for a in m.active_adapters:
                    if a not in m.lora_A:
                        continue
                    wa = own.get(f"A:{a}", m.lora_A[a].weight)
                    wb = own.get(f"B:{a}", m.lora_B[a].weight)
                    xa = per_row(x.to(wa.dtype), wa)
                    result = result + (per_row(xa, wb) * m.scaling[a]).reshape(result.shape).to(result.dtype)
                return result
        patched.append(module)
        module.forward = forward
    try:
        yield route
    finally:
        for module in patched:
            del module.forward  # back to the class's forward


def _layout(per_client: list[list], width: int) -> list[tuple[int, list]]:
    """Rows of ``width`` tokens, each (client index, its examples): each client's examples go
    longest first to the first of its rows with room (first fit decreasing)."""
    out = []
    for i, examples in enumerate(per_client):
        rows: list[list] = []
        for e in sorted(examples, key=lambda e: -len(e.ids)):
            row = next((r for r in rows if sum(len(x.ids) for x in r) + len(e.ids) <= width), None)
            if row is None:
                rows.append(row := [])
            row.append(e)
        out += [(i, r) for r in rows]
    return out


def _packed(per_client: list[list], pad_id: int, width: int | None = None) -> dict[str, torch.Tensor]:
    """Every client's examples packed into rows (``_layout``) as wide as the longest example
    (or ``width``), one after another without
    padding between them, each with positions from 0, so the model attends within each
    example only (transformers reads packed sequences from ``position_ids`` when no attention
    mask is given); the tail of a row is padding, a sequence of its own. ``rows``: the client
    (index into ``per_client``) of each row. ``labels[r, p]``: the token position p predicts,
    -100 where nothing is learnt (prompt, an example's last token, padding): the positions
    the sequential path's shifted labels count."""
    width = width or max(len(e.ids) for examples in per_client for e in examples)
    layout = _layout(per_client, width)
    ids = torch.full((len(layout), width), pad_id, dtype=torch.long)
    pos = torch.arange(width).repeat(len(layout), 1)
    labels = torch.full((len(layout), width), -100, dtype=torch.long)
    for r, (_, row_examples) in enumerate(layout):
        at = 0
        for e in row_examples:
            n, row = len(e.ids), torch.tensor(e.ids)
            ids[r, at : at + n] = row
            pos[r, at : at + n] = torch.arange(n)
            first = max(e.prompt_len, 1) - 1  # the first position whose next token is learnt
            labels[r, at + first : at + n - 1] = row[first + 1 :]
            at += n
        pos[r, at:] = torch.arange(width - at)
    return {"input_ids": ids, "position_ids": pos, "labels": labels, "rows": torch.tensor([i for i, _ in layout])}


def _learnt_logits(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Logits at the learnt positions of a ``_packed`` batch ([learnt, vocab], row-major):
    the output layer runs on those positions only."""
    learnt = batch["labels"] != -100
    hidden = model.get_decoder()(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).last_hidden_state
    return model.get_output_embeddings()(hidden[learnt]).float()


def _packs_faithfully(exp) -> bool:
    """Whether the model gives packed examples (``_learnt_logits``) the logits it gives them
    one by one, asked in fp32 whatever the run's precision: true of Llama-style models in
    transformers 5; a model that reads packing otherwise, or whose output is not its output layer's (logit soft-capping, say), trains
    one client at a time."""

    model, task = exp.loaded.model, exp.task
    examples = [e for c in exp.clients[:2] for e in c.train[:2] if len(e.ids) > 1]
    if not examples:
        return True
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), as_fp32(model):  # bf16's rounding (SmolLM2: up to 10% of a position's logits) is not misreading
            width = sum(len(e.ids) for e in examples) + 1  # all in one row, padding after them
            batch = {k: v.to(exp.device) for k, v in _packed([examples], task._pad_id, width).items()}
            packed = _learnt_logits(model, batch)
            single = [model(**{k: v.to(exp.device) for k, v in lm_batch([e], task._pad_id).items()
                               if k != "labels"}).logits[0, max(e.prompt_len, 1) - 1 : -1].float()
                      for _, row in _layout([examples], width) for e in row]
    except (AttributeError, NotImplementedError, TypeError, ValueError, RuntimeError):
        return False
    finally:
        model.train(was_training)
    return packed.shape[0] == sum(s.shape[0] for s in single) and torch.allclose(
        packed, torch.cat(single), rtol=1e-3, atol=1e-3)


def _sft_step(exp, model, route, clients, gens) -> tuple[torch.Tensor, None]:
    """One supervised step's per-client token-mean losses ([k], to be summed and stepped)."""
    task, k = exp.task, len(clients)
    batch = {key: v.to(exp.device) for key, v in
             _packed([task.train_prompts(c, exp.spec.batch_size, g) for c, g in zip(clients, gens)], task._pad_id).items()}
    route.rows = batch["rows"]
    learnt = batch["labels"] != -100
    tok = torch.nn.functional.cross_entropy(_learnt_logits(model, batch), batch["labels"][learnt], reduction="none")
    return _per_client(tok, batch["rows"][learnt.nonzero()[:, 0]], k), None


def _per_client(values: torch.Tensor, owner: torch.Tensor, k: int) -> torch.Tensor:
    """The mean of ``values`` over each client's entries (``owner``: the client of each)."""
    counts = torch.zeros(k, device=values.device).index_add(0, owner, torch.ones_like(values))
    return torch.zeros(k, device=values.device).index_add(0, owner, values) / counts.clamp(min=1)


def _rl_step(exp, model, route, clients, gens, reference, stacked, cfg, rewards) -> tuple[torch.Tensor, torch.Tensor]:
    """One GRPO step (``training.rl``) of every client: each samples its group of responses
    to its own prompts with its own tensors and seed, as one client alone does, and is scored
    by its own reward mixture; the objective's forward and backward then run over every
    client's responses together. Returns the per-client losses ([k]) and mean rewards.
    ``reference``: the stacked tensors as the clients' round began; ``cfg``, ``rewards``: the
    card's RL settings and reward models."""

    task, tok, dev, k = exp.task, exp.task._tokenizer, exp.device, len(clients)
    drawn, advs, means = [], [], []
    for i, (client, g) in enumerate(zip(clients, gens)):
        prompts = [e.ids for e in task.train_prompts(client, exp.spec.batch_size, g)]
        seed = int(torch.randint(0, 2**62, (1,), generator=g))
        route.rows = torch.full((len(prompts) * cfg.group_size,), i, device=dev)
        ids, mask, resp, r = draw(model, tok, prompts, rewards.reward_fn(client.weights), cfg, seed)
        drawn.append((ids, mask, resp))
        advs.append(group_advantages(r, cfg.group_size)[:, None])
        means.append(float(r.mean()))
    width = max(ids.shape[1] for ids, _, _ in drawn)
    ids = torch.cat([torch.nn.functional.pad(x, (0, width - x.shape[1]), value=tok.pad_token_id) for x, _, _ in drawn])
    mask = torch.cat([torch.nn.functional.pad(m, (0, width - m.shape[1])) for _, m, _ in drawn])
    resp = torch.cat([torch.nn.functional.pad(r, (0, width - 1 - r.shape[1])) for _, _, r in drawn])
    owner = torch.cat([torch.full((x.shape[0],), i, device=dev) for i, (x, _, _) in enumerate(drawn)])
    route.rows = owner
    ref_logp = reference_logprobs(model, list(stacked.values()), reference, ids, mask)
    per_row, _ = grpo_rows(_token_logprobs(model, ids, mask), ref_logp, torch.cat(advs), resp, cfg)
    return _per_client(per_row, owner, k), torch.tensor(means, dtype=torch.float64)


def train_batched(exp, schema, jobs: list[ClientJob]) -> Iterator[ClientOutcome]:
    """Train ``jobs`` together (see the module doc); outcomes in the order of ``jobs``."""

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
    losses, rewards = torch.zeros(k, dtype=torch.float64), torch.zeros(k, dtype=torch.float64)
    if task.kind == "reward":
        reference = [t.detach().clone() for t in stacked.values()]
        cfg, reward_models = rl_config(task), load_rewards(task)
        step = lambda route: _rl_step(exp, model, route, clients, gens, reference, stacked, cfg, reward_models)  # noqa: E731
    else:
        step = lambda route: _sft_step(exp, model, route, clients, gens)  # noqa: E731
    model.train()
    with _stacked_forward(model, stacked) as route:
        for _ in range(spec.local_steps):
            per_client, mean_reward = step(route)
            per_client.sum().backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses += per_client.detach().double().cpu()
            if mean_reward is not None:
                rewards += mean_reward
    compute_s = (time.perf_counter() - t0) / k  # the pass, shared out evenly
    for i, job in enumerate(jobs):
        trained = {n: stacked[n][i].detach() for n in names}
        loss = float(losses[i]) / spec.local_steps
        diverged = divergence(loss, trained)
        memory = dict(job.codec_memory)
        upload = {n: trained[n] - job.global_shared[n] for n in exp.parts.shared}
        payload = outgoing(exp, schema, job, upload, memory) if diverged is None else b""
        yield ClientOutcome(client=job.client, payload=payload,
                            private={n: trained[n].clone() for n in exp.parts.private}, state=dict(job.state),
                            codec_memory=memory, num_samples=task.num_train(clients[i]), train_loss=loss,
                            reward=float(rewards[i]) / spec.local_steps if task.kind == "reward" else float("nan"),
                            compute_s=compute_s, diverged=diverged)


def evaluate_batched(exp, clients: list, global_shared: dict[str, torch.Tensor], private: list[dict[str, torch.Tensor]],
                     initial_private: dict[str, torch.Tensor], participation: dict[int, int], k: int) -> list[dict[str, Any]]:
    """``client.evaluate_client``'s scores of ``clients`` (``private``: each one's private
    tensors), ``k`` at a time: their private tensors stacked, every test example scored
    through its own client's tensors in one batched pass (``Task.evaluate_many`` with a
    route); the shared part alone, the same model for all, scored together. With
    ``--membership``, the attack on each client's deployed model and on the shared part alone,
    client by client as ``evaluate_client`` runs it (its scores are the same). Only where the
    method's ``deployed`` hook is the default (it does not read the client's state)."""

    method, model, task, seed = exp.method, exp.loaded.model, exp.task, exp.spec.seed
    params = dict(model.named_parameters())
    out: list[dict[str, Any]] = []
    leaked: list[dict[str, Any]] = [{} for _ in clients]
    with torch.no_grad():
        load_into(params, global_shared)
        personal: list[dict] = []
        for at in range(0, len(clients), k):
            stacked = {n: torch.stack([p[n].to(exp.device) for p in private[at : at + k]]) for n in exp.parts.private}
            with _stacked_forward(model, stacked) as route, method.deployed(model, {}):
                personal += evaluate_clients(task, model, clients[at : at + k], route)
        if exp.spec.membership:  # the attack scores one model at a time
            for client, mine, into in zip(clients, private, leaked):
                load_into(params, mine)
                with method.deployed(model, {}):
                    into["personal"] = membership_auc(task, model, client, seed)
        load_into(params, initial_private)
        with method.shared_alone(model):
            shared = evaluate_clients(task, model, clients)
            if exp.spec.membership:
                for client, into in zip(clients, leaked):
                    into["shared"] = membership_auc(task, model, client, seed)
    for client, mine, alone, attack in zip(clients, personal, shared, leaked):
        out.append({"client": client.id, "name": client.name, "personal": mine.pop("score"), "shared": alone["score"],
                    "trained": client.id in participation, "diagnostics": mine, **({"membership": attack} if attack else {})})
    return out


def evaluates_batched(exp) -> bool:
    """Whether the clients of a ``batchable`` run that hold private tensors may be scored
    together (``evaluate_batched``): the method deploys them with the default hook."""

    return (type(exp.method).deployed is Method.deployed and bool(exp.parts.private)
            and not METRICS[exp.task.metric].per_client)


def groups(jobs: list[ClientJob], size: int) -> list[list[ClientJob]]:
    return [jobs[i : i + size] for i in range(0, len(jobs), size)]

