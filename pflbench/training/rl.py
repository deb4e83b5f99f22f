"""The reinforcement-learning update: group-relative policy optimisation (GRPO).

For each step: take a batch of prompts, sample ``group_size`` responses to each from the
current policy, score them with a reward function, normalise the rewards within each prompt's
group into advantages, and take one AdamW step on

    loss = mean over responses of mean over their tokens of
           -min(rho * A, clip(rho, 1 - eps, 1 + eps) * A) + beta * KL(pi || pi_ref)

where rho is the probability ratio to the policy that sampled (1 at the one update per batch,
so the clipped term is the plain policy gradient; kept so more updates per batch stay
correct), and KL is the k3 estimator exp(r) - r - 1 with r = log pi_ref - log pi, against the
reference policy: the trainable parameters as they were when the update began (the round's
start). The reference is not a second model: its parameters are swapped in for one no-grad
forward. Token log-probabilities come from trl's ``selective_log_softmax``. trl 1.16 has no PPO
trainer, and a GRPOTrainer built per client-round would cost more than the engine's 5%
overhead target; this loop is the same mathematics on the one base model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from pflbench.data.task import left_padded

# (prompts, responses) -> one reward per response
RewardFn = Callable[[list[str], list[str]], list[float]]


@dataclass(frozen=True)
class RLConfig:
    group_size: int = 4  # responses sampled per prompt
    temperature: float = 1.0
    max_new_tokens: int = 12
    kl_weight: float = 0.1  # beta
    clip: float = 0.2  # epsilon

    def __post_init__(self):
        if self.group_size < 2:
            raise ValueError("group_size must be at least 2: advantages are relative to the group")
        if not self.temperature > 0 or self.max_new_tokens < 1 or self.kl_weight < 0 or not 0 < self.clip < 1:
            raise ValueError("temperature > 0, max_new_tokens >= 1, kl_weight >= 0 and 0 < clip < 1 are required")


@dataclass(frozen=True)
class RLStats:
    loss: float  # mean over steps
    reward: float  # mean reward of the sampled responses, over steps
    kl: float  # mean KL to the reference, over steps


def _token_logprobs(model, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log p(ids[:, t+1] | ids[:, :t+1]) for every position, with positions counted from each
    row's first real token (left padding), as generation counts them."""
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits[:, :-1].float()
    # imported here: trl.trainer.utils pulls datasets, pandas, pyarrow and accelerate (85 MB
    # of a process), which a supervised run (it imports this module for ``adamw``) never needs
    from trl.trainer.utils import selective_log_softmax

    return selective_log_softmax(logits, ids[:, 1:])


@torch.no_grad()
def sample(model, prompts: list[list[int]], cfg: RLConfig, pad_id: int, eos_id: int, seed: int):
    """``group_size`` sampled continuations of each prompt: (ids, attention mask, response
    mask over ``ids[:, 1:]``, response token lists)."""
    ids, mask = left_padded([p for p in prompts for _ in range(cfg.group_size)], pad_id)
    ids, mask = ids.to(model.device), mask.to(model.device)
    was_training = model.training
    model.eval()
    torch.manual_seed(seed)  # generate draws from the global generator
    out = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=cfg.temperature, top_k=0,
                         top_p=1.0, max_new_tokens=cfg.max_new_tokens, pad_token_id=pad_id, eos_token_id=eos_id,
                         use_cache=True)
    model.train(was_training)
    width = ids.shape[1]
    responses, resp_mask = [], torch.zeros_like(out)
    for i, row in enumerate(out[:, width:].tolist()):
        n = row.index(eos_id) + 1 if eos_id in row else len(row)  # the end-of-sequence token is part of the answer
        responses.append(row[:n])
        resp_mask[i, width:width + n] = 1
    full_mask = torch.cat([mask, resp_mask[:, width:]], dim=1)
    return out, full_mask, resp_mask[:, 1:].float(), responses


def grpo_rows(logp: torch.Tensor, ref_logp: torch.Tensor, adv: torch.Tensor, resp: torch.Tensor, cfg: RLConfig):
    """Per response (row): the GRPO objective's mean over its tokens (see the module doc), and
    its mean KL to the reference (detached)."""
    ratio = torch.exp(logp - logp.detach())
    pg = -torch.min(ratio * adv, ratio.clamp(1 - cfg.clip, 1 + cfg.clip) * adv)
    diff = ref_logp - logp
    kl = torch.exp(diff) - diff - 1
    tokens = resp.sum(1).clamp(min=1)
    return ((pg + cfg.kl_weight * kl) * resp).sum(1) / tokens, (kl.detach() * resp).sum(1) / tokens


def group_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """(reward - group mean) / (group standard deviation + 1e-4), per prompt's group."""
    r = rewards.view(-1, group_size)
    return ((r - r.mean(1, keepdim=True)) / (r.std(1, keepdim=True) + 1e-4)).view(-1)


def draw(model, tokenizer, prompts: list[list[int]], reward: RewardFn, cfg: RLConfig, seed: int, compute=None):
    """One step's sampled responses to ``prompts`` and their rewards: (ids, attention mask,
    response mask, rewards); ``compute`` wraps generation and reward scoring (see ``rl_steps``)."""
    import contextlib

    compute = compute or contextlib.nullcontext
    with compute():
        ids, mask, resp, responses = sample(model, prompts, cfg, tokenizer.pad_token_id, tokenizer.eos_token_id, seed)
    texts = tokenizer.batch_decode(responses, skip_special_tokens=True)
    prompt_texts = [t for t in tokenizer.batch_decode(prompts, skip_special_tokens=True) for _ in range(cfg.group_size)]
    with compute():  # reward models are model compute too
        r = torch.tensor(reward(prompt_texts, texts), dtype=torch.float32, device=ids.device)
    return ids, mask, resp, r


@torch.no_grad()
def reference_logprobs(model, tensors: list[torch.Tensor], reference: list[torch.Tensor], ids: torch.Tensor,
                       mask: torch.Tensor) -> torch.Tensor:
    """``_token_logprobs`` under the reference policy: ``reference`` swapped into the trained
    ``tensors`` for one forward, then put back."""
    current = [t.detach().clone() for t in tensors]
    for t, ref in zip(tensors, reference):
        t.copy_(ref)
    out = _token_logprobs(model, ids, mask)
    for t, cur in zip(tensors, current):
        t.copy_(cur)
    return out


def adamw(params: list[torch.nn.Parameter], lr: float) -> torch.optim.Optimizer:
    """The suite's default local optimizer: AdamW without weight decay."""
    return torch.optim.AdamW(params, lr=lr, weight_decay=0.0)


def rl_steps(model, tokenizer, params: list[torch.nn.Parameter], prompts: Iterator[list[list[int]]], reward: RewardFn,
             steps: int, lr: float, cfg: RLConfig, generator: torch.Generator,
             extra_loss: Callable[[], torch.Tensor] | None = None, compute=None, optimizer=None) -> RLStats:
    """``steps`` GRPO steps on ``params`` (see the module doc). ``prompts`` yields batches of
    prompt token ids; ``extra_loss`` (e.g. a proximal term) is added to each step's loss;
    ``compute`` (a context-manager factory) wraps model compute (generation, reward scoring,
    forward, backward, optimizer) for the engine's accounting; ``optimizer(params, lr)`` builds
    the optimizer (default AdamW without weight decay)."""
    import contextlib

    compute = compute or contextlib.nullcontext
    opt = (optimizer or adamw)(params, lr)
    reference = [p.detach().clone() for p in params]
    losses, rewards_seen, kls = [], [], []
    for _ in range(steps):
        batch = next(prompts)
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        ids, mask, resp, r = draw(model, tokenizer, batch, reward, cfg, seed, compute)
        adv = group_advantages(r, cfg.group_size)[:, None]
        with compute():
            ref_logp = reference_logprobs(model, params, reference, ids, mask)
            logp = _token_logprobs(model, ids, mask)
            per_row, kl_rows = grpo_rows(logp, ref_logp, adv, resp, cfg)
            loss = per_row.mean()
            if extra_loss is not None:
                loss = loss + extra_loss()
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        rewards_seen.append(float(r.mean()))
        kls.append(float(kl_rows.mean()))
    n = max(len(losses), 1)
    return RLStats(sum(losses) / n, sum(rewards_seen) / n, sum(kls) / n)
