"""The Method interface: three hooks on top of an engine that owns the round loop.

- ``prepare(model) -> Parts``: attach adapters and name the shared parameters (uploaded
  and aggregated) and the private ones (kept on the client, never uploaded).
- ``local_update(ctx) -> LocalResult``: train on one client. Default: ``train_steps``, the
  task's objective (supervised language-modelling steps, or the reinforcement-learning update
  on reward cards) with AdamW on the shared and private parameters.
- ``aggregate(shared, updates) -> shared``: default FedAvg of the delivered deltas,
  weighted by each client's number of training samples.

Options: a method declares a nested ``Options`` dataclass; ``--opt key=value`` on the
command line fills it (values are converted to the field's type).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import torch

from pflbench.errors import UserError


@dataclass(frozen=True)
class Parts:
    """Parameter names, as in ``model.named_parameters()``."""

    shared: list[str]
    private: list[str] = field(default_factory=list)


@dataclass
class LocalContext:
    """What a client's local update sees."""

    model: torch.nn.Module
    client: Any  # pflbench.data.ClientData
    task: Any  # pflbench.data.Task
    parts: Parts
    round: int
    steps: int
    batch_size: int
    lr: float
    generator: torch.Generator  # seeded by (seed, round, client)
    device: torch.device = torch.device("cpu")
    compute_s: float = 0.0  # filled by ``compute()``: time in forward/backward/optimizer (RL: also generation and reward scoring)
    rewards: list[float] = field(default_factory=list)  # reward tasks: mean sampled reward of each RL update

    def parameters(self, names: list[str] | None = None) -> list[torch.nn.Parameter]:
        """The trainable parameters (shared + private), or the named subset."""
        wanted = set(self.parts.shared + self.parts.private if names is None else names)
        return [p for n, p in self.model.named_parameters() if n in wanted]

    def batches(self):
        """Endless training batches for this client, drawn with the client-round generator."""
        while True:
            batch = self.task.train_batch(self.client, self.batch_size, self.generator)
            yield {k: v.to(self.device) for k, v in batch.items()}

    @contextlib.contextmanager
    def compute(self):
        """Wrap model compute (forward, backward, optimizer step) so the engine can tell
        its own overhead apart from training time."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.compute_s += time.perf_counter() - t0


@dataclass(frozen=True)
class LocalResult:
    num_samples: int  # the weight of this client's update in FedAvg
    train_loss: float


@dataclass(frozen=True)
class Update:
    """A delivered upload, decoded: the delta of the shared tensors."""

    client: int
    num_samples: int
    delta: dict[str, torch.Tensor]


def sft_steps(ctx: LocalContext, params: list[torch.nn.Parameter], steps: int,
              extra_loss: Callable[[], torch.Tensor] | None = None) -> float:
    """``steps`` supervised steps of AdamW on ``params``; returns the mean task loss.
    ``extra_loss`` (a proximal term, say) is added to each step's objective, not to the loss
    reported."""
    if not params or steps <= 0:
        return float("nan")
    opt = torch.optim.AdamW(params, lr=ctx.lr, weight_decay=0.0)
    ctx.model.train()
    total, batches = 0.0, ctx.batches()
    for _ in range(steps):
        batch = next(batches)
        with ctx.compute():
            loss = ctx.model(**batch).loss
            (loss + extra_loss() if extra_loss is not None else loss).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        total += loss.item()
    return total / steps


def rl_update(ctx: LocalContext, params: list[torch.nn.Parameter], steps: int,
              extra_loss: Callable[[], torch.Tensor] | None = None, **settings: Any) -> float:
    """``steps`` GRPO steps (``pflbench.training.rl``) on a reward task: prompts from the
    client's training split, rewards from its own mixture of the card's reward models. The
    card sets group size, temperature and response length; ``settings`` (RLConfig fields; None:
    the card's, else the suite's) override them. Returns the mean RL loss; the mean sampled reward goes
    to ``ctx.rewards``."""
    from pflbench.training.rl import RLConfig, rl_steps

    if not params or steps <= 0:
        return float("nan")
    task = ctx.task
    card = {"group_size": task.group_size, "temperature": task.temperature, "max_new_tokens": task.max_new_tokens}
    cfg = RLConfig(**{**card, **{k: v for k, v in settings.items() if v is not None}})
    reward = task.load_rewards().reward_fn(ctx.client.weights)

    def prompts():
        while True:
            yield [e.ids for e in task.train_prompts(ctx.client, ctx.batch_size, ctx.generator)]

    ctx.model.train()
    stats = rl_steps(ctx.model, task._tokenizer, params, prompts(), reward, steps, ctx.lr, cfg, ctx.generator,
                     extra_loss=extra_loss, compute=ctx.compute)
    ctx.rewards.append(stats.reward)
    return stats.loss


def train_steps(ctx: LocalContext, params: list[torch.nn.Parameter], steps: int,
                extra_loss: Callable[[], torch.Tensor] | None = None, **rl_settings: Any) -> float:
    """The task's objective: ``sft_steps`` on instruction, task and text cards, ``rl_update``
    on reward cards (``rl_settings`` go to it). So every method runs on every kind of task."""
    if ctx.task.kind == "reward":
        return rl_update(ctx, params, steps, extra_loss, **rl_settings)
    return sft_steps(ctx, params, steps, extra_loss)


class Method:
    """Base class of every method. Subclasses set ``name``, ``description`` and implement
    ``prepare``; ``local_update`` and ``aggregate`` have FedAvg defaults."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    default_lr: ClassVar[float] = 1e-3

    @dataclass(frozen=True)
    class Options:
        pass

    def __init__(self, options: dict[str, str] | None = None):
        self.options = parse_method_options(self.Options, options or {}, self.name)

    def prepare(self, model: torch.nn.Module) -> Parts:
        raise NotImplementedError

    def local_update(self, ctx: LocalContext) -> LocalResult:
        loss = train_steps(ctx, ctx.parameters(), ctx.steps)
        return LocalResult(num_samples=ctx.task.num_train(ctx.client), train_loss=loss)

    def aggregate(self, shared: dict[str, torch.Tensor], updates: list[Update]) -> dict[str, torch.Tensor]:
        return fedavg(shared, updates)


def fedavg(shared: dict[str, torch.Tensor], updates: list[Update]) -> dict[str, torch.Tensor]:
    """shared + sum_k n_k delta_k / sum_k n_k. With no updates, shared is unchanged."""
    total = sum(u.num_samples for u in updates)
    if not updates or total <= 0:
        return shared
    out = {}
    for name, value in shared.items():
        acc = torch.zeros_like(value)
        for u in updates:
            acc += u.delta[name].to(device=value.device, dtype=value.dtype) * (u.num_samples / total)
        out[name] = value + acc
    return out


def _convert(value: str, kind: Any, key: str, method: str) -> Any:
    try:
        if kind in (bool, "bool"):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if kind in (int, "int"):
            return int(value)
        if kind in (float, "float"):
            return float(value)
        if kind in (tuple[str, ...], "tuple[str, ...]"):
            return tuple(v.strip() for v in value.split(",") if v.strip())
        return value
    except ValueError:
        raise UserError(f"option {key}={value!r} of method {method!r} is not a valid {getattr(kind, '__name__', kind)}") from None


def parse_method_options(options_cls: type, raw: dict[str, str], method: str) -> Any:
    fields_ = {f.name: f for f in dataclasses.fields(options_cls)}
    unknown = sorted(set(raw) - set(fields_))
    if unknown:
        valid = ", ".join(fields_) or "(this method takes no options)"
        raise UserError(f"unknown option(s) {', '.join(unknown)} for method {method!r}; valid: {valid}")
    values = {k: _convert(v, fields_[k].type, k, method) for k, v in raw.items()}
    try:
        return options_cls(**values)
    except (ValueError, TypeError) as exc:
        raise UserError(f"bad options for method {method!r}: {exc}") from None
