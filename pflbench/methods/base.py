"""The Method interface: three hooks on top of an engine that owns the round loop.

- ``prepare(model) -> Parts``: attach adapters and name the shared parameters (uploaded
  and aggregated) and the private ones (kept on the client, never uploaded).
- ``local_update(ctx) -> LocalResult``: train on one client. Default: ``train_steps``, the
  task's objective (supervised language-modelling steps, or the reinforcement-learning update
  on reward cards) with AdamW on the shared and private parameters; the delta of every
  shared tensor is uploaded.
- ``aggregate(shared, updates, info) -> shared``: default FedAvg of the delivered deltas,
  weighted by each client's number of training samples.

What a richer method needs, it gets by name: the round's global values, the federation's
facts and the client's own non-parameter state in ``ctx`` (``LocalContext``); server state in
``self.server``; which adapters are active when a client's model is deployed and when the
shared part is scored alone (``deployed_adapters``, ``shared_adapters``, or the ``deployed`` and
``shared_alone`` hooks, built on ``pflbench.models.adapters.use_adapters``); what is uploaded
(``LocalResult.upload``: every shared delta by default, a subset, extra ``messages``, or
nothing). The engine checkpoints client state and server state with the rest of a run.

Options: a method declares a nested ``Options`` dataclass; ``--opt key=value`` on the
command line fills it (values are converted to the field's type).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, ContextManager

import torch

from pflbench.config import Update  # a value type the channel uses too: it lives at the bottom
from pflbench.errors import UserError
from pflbench.models.adapters import use_adapters
from pflbench.rewards import load_rewards
from pflbench.training.rl import RLConfig, adamw, rl_steps


@dataclass(frozen=True)
class Parts:
    """Parameter names, as in ``model.named_parameters()``."""

    shared: list[str]
    private: list[str] = field(default_factory=list)
    # non-parameter tensors a client may upload beside its shared deltas (name -> shape), such
    # as SCAFFOLD's control-variate change; they follow the shared tensors in the payload schema
    messages: dict[str, tuple[int, ...]] = field(default_factory=dict)


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
    # the global shared values this round started from (read only): a proximal term's anchor
    global_shared: dict[str, torch.Tensor] = field(default_factory=dict)
    # this client's non-parameter state (control variates, counters, ...): read and assign
    # keys freely; the engine keeps it in the client store and checkpoints it
    state: dict[str, torch.Tensor] = field(default_factory=dict)
    # the method's server state as broadcast this round (read only; ``Method.server``)
    server: dict[str, torch.Tensor] = field(default_factory=dict)
    num_clients: int = 1  # clients in the federation
    participation: int = 0  # earlier rounds in which this client trained (0: its first time)
    delivered: bool | None = None  # did this client's previous upload reach the server (None: it never sent one)
    all_clients: list = field(default_factory=list)  # every client's data: for non-federated references (central) only
    compute_s: float = 0.0  # filled by ``compute()``: time in forward/backward/optimizer (RL: also generation and reward scoring)
    rewards: list[float] = field(default_factory=list)  # reward tasks: mean sampled reward of each RL update

    def parameters(self, names: list[str] | None = None) -> list[torch.nn.Parameter]:
        """The trainable parameters (shared + private), or the named subset."""
        wanted = set(self.parts.shared + self.parts.private if names is None else names)
        return [p for n, p in self.model.named_parameters() if n in wanted]

    @property
    def num_samples(self) -> int:
        """This client's training examples: the default weight of its update in FedAvg."""
        return self.task.num_train(self.client)

    def delta(self, names: list[str] | None = None) -> dict[str, torch.Tensor]:
        """Trained minus global values of the shared tensors (or the named ones): what an
        upload carries."""
        params = dict(self.model.named_parameters())
        return {n: params[n].detach() - self.global_shared[n] for n in (self.parts.shared if names is None else names)}

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
    # what this client uploads: None (default) the delta of every shared tensor; otherwise
    # exactly these tensors, keyed by shared name (a delta: see ``ctx.delta``) or by a name in
    # ``Parts.messages``; {} uploads nothing (0 bytes, nothing transmitted)
    upload: dict[str, torch.Tensor] | None = None


@dataclass(frozen=True)
class RoundInfo:
    """The federation's facts in a round, as ``aggregate`` sees them."""

    round: int
    num_clients: int
    sampled: list[int]
    delivered: list[int]  # clients whose upload reached the server this round
    lost: list[int]  # lost or late uploads, and clients whose device or worker died (nothing came back)
    participation: dict[int, int]  # client id -> rounds it has trained in, this one included


# optimizer(params, lr) -> a torch optimizer; None: AdamW without weight decay
OptimizerFactory = Callable[[list[torch.nn.Parameter], float], torch.optim.Optimizer]


def sgd(params: list[torch.nn.Parameter], lr: float) -> torch.optim.Optimizer:
    """Plain SGD (no momentum, no weight decay): for methods whose update rule assumes it."""
    return torch.optim.SGD(params, lr=lr)


def sft_steps(ctx: LocalContext, params: list[torch.nn.Parameter], steps: int,
              extra_loss: Callable[[], torch.Tensor] | None = None, optimizer: OptimizerFactory | None = None) -> float:
    """``steps`` supervised steps of AdamW (or ``optimizer``) on ``params``; returns the mean
    task loss. ``extra_loss`` (a proximal term, say) is added to each step's objective, not to
    the loss reported."""

    if not params or steps <= 0:
        return float("nan")
    opt = (optimizer or adamw)(params, ctx.lr)
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


def rl_config(task, **settings: Any):
    """The RL settings of a reward card (group size, temperature, response length), with
    ``settings`` (RLConfig fields; None: the card's) over them."""

    card = {"group_size": task.group_size, "temperature": task.temperature, "max_new_tokens": task.max_new_tokens}
    return RLConfig(**{**card, **{k: v for k, v in settings.items() if v is not None}})


def rl_update(ctx: LocalContext, params: list[torch.nn.Parameter], steps: int,
              extra_loss: Callable[[], torch.Tensor] | None = None, optimizer: OptimizerFactory | None = None,
              **settings: Any) -> float:
    """``steps`` GRPO steps (``pflbench.training.rl``) on a reward task: prompts from the
    client's training split, rewards from its own mixture of the card's reward models. The
    card sets group size, temperature and response length; ``settings`` (RLConfig fields; None:
    the card's, else the suite's) override them. Returns the mean RL loss; the mean sampled reward goes
    to ``ctx.rewards``."""

    if not params or steps <= 0:
        return float("nan")
    task = ctx.task
    cfg = rl_config(task, **settings)
    reward = load_rewards(task).reward_fn(ctx.client.weights)

    def prompts():
        while True:
            yield [e.ids for e in task.train_prompts(ctx.client, ctx.batch_size, ctx.generator)]

    ctx.model.train()
    stats = rl_steps(ctx.model, task._tokenizer, params, prompts(), reward, steps, ctx.lr, cfg, ctx.generator,
                     extra_loss=extra_loss, compute=ctx.compute, optimizer=optimizer)
    ctx.rewards.append(stats.reward)
    return stats.loss


def train_steps(ctx: LocalContext, params: list[torch.nn.Parameter], steps: int,
                extra_loss: Callable[[], torch.Tensor] | None = None, optimizer: OptimizerFactory | None = None,
                **rl_settings: Any) -> float:
    """The task's objective: ``sft_steps`` on instruction, task and text cards, ``rl_update``
    on reward cards (``rl_settings`` go to it). So every method runs on every kind of task."""
    if ctx.task.kind == "reward":
        return rl_update(ctx, params, steps, extra_loss, optimizer, **rl_settings)
    return sft_steps(ctx, params, steps, extra_loss, optimizer)


class Method:
    """Base class of every method. Subclasses set ``name``, ``description`` and implement
    ``prepare``; ``local_update`` and ``aggregate`` have FedAvg defaults."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    default_lr: ClassVar[float] = 1e-3
    # adapters active when a client's model is deployed (scored) and when the shared part is
    # scored alone; None: every adapter (names as given to add_lora / add_bottleneck_adapters)
    deployed_adapters: ClassVar[tuple[str, ...] | None] = None
    shared_adapters: ClassVar[tuple[str, ...] | None] = None
    # False: a reference with no network between clients and server (central): nothing is
    # uploaded or broadcast, whatever ``local_update`` returns (0 bytes both ways)
    federated: ClassVar[bool] = True

    @dataclass(frozen=True)
    class Options:
        pass

    def __init__(self, options: dict[str, str] | None = None):
        self.options = parse_method_options(self.Options, options or {}, self.name)
        # server state (tensors): kept by the method between rounds, checkpointed by the
        # engine, given to the sampled clients as ``ctx.server`` (broadcast: see ``broadcast``)
        self.server: dict[str, torch.Tensor] = {}

    def prepare(self, model: torch.nn.Module) -> Parts:
        raise NotImplementedError

    def local_update(self, ctx: LocalContext) -> LocalResult:
        loss = train_steps(ctx, ctx.parameters(), ctx.steps)
        return LocalResult(ctx.num_samples, loss)

    def batchable(self) -> bool:
        """Whether several clients' local updates may run in one pass (``--parallel-clients``,
        ``pflbench.federation.batched``): they must be this default update (supervised steps,
        or GRPO steps on a reward card, of AdamW on every trainable tensor, every upload the
        full delta). True unless
        ``local_update`` is overridden; a method whose override reduces to it says so here."""
        return type(self).local_update is Method.local_update

    def aggregate(self, shared: dict[str, torch.Tensor], updates: list[Update], info: RoundInfo) -> dict[str, torch.Tensor]:
        """Called every round, also when no update arrived (``updates`` empty)."""
        return fedavg(shared, updates)

    def broadcast(self, shared: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """What the server sends each sampled client at the start of a round, encoded at fp32
        into the round's downlink bytes: by default the global shared tensors and the server
        state (``server/NAME``); nothing when the method is not ``federated``. A method whose
        clients already hold part of it may leave that part out."""
        if not self.federated:
            return {}
        return {**shared, **{f"server/{k}": v for k, v in self.server.items()}}

    def deployed(self, model: torch.nn.Module, state: dict[str, torch.Tensor]) -> ContextManager:
        """Entered while a trained client's model is scored (its private tensors loaded;
        ``state``: its client state). Default: ``deployed_adapters`` active."""
        return use_adapters(model, self.deployed_adapters)

    def shared_alone(self, model: torch.nn.Module) -> ContextManager:
        """Entered while the shared part alone is scored (private tensors at their initial
        values); also the deployed model of a client that never trained. Default:
        ``shared_adapters`` active."""
        return use_adapters(model, self.shared_adapters)


# The interface's version, raised when a hook's signature or meaning changes (docs/methods/adding.md, "Changes
# to the interface"): 1 prepare, local_update, aggregate(shared, updates); 2 aggregate gets the
# round's ``info``, ``deployed`` and ``shared_alone`` hooks, state and messages in ``ctx``;
# 3 ``batchable``; 4 ``broadcast`` (what the downlink carries) and ``federated``.
INTERFACE = 4
HOOKS = ("prepare", "local_update", "batchable", "aggregate", "broadcast", "deployed", "shared_alone")


def check_interface(cls: Any, name: str, package: str) -> None:
    """A registered method, checked when it loads, before any model: a subclass of ``Method``
    whose overridden hooks take the arguments the engine passes. One line naming the package,
    the class, the hook and the signature expected, else."""
    import inspect

    where = f"method {name!r} (package {package}, class {getattr(cls, '__qualname__', cls)!r})"
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise UserError(f"{where} is not a subclass of pflbench.methods.Method")
    for hook in HOOKS:
        mine, base = getattr(cls, hook, None), getattr(Method, hook)
        if mine is base:
            continue
        expected = list(inspect.signature(base).parameters)
        wanted = len(expected) - 1  # the engine passes these after self, by position
        try:
            inspect.signature(mine).bind(*range(wanted + 1))
        except TypeError:
            got = ", ".join(inspect.signature(mine).parameters)
            raise UserError(f"{where} overrides {hook}({got}), but pflbench's method interface {INTERFACE} calls "
                            f"{hook}({', '.join(expected)}); update the plugin (docs/methods/adding.md, Changes to the interface)") from None
        except ValueError:
            continue  # no signature to read (a builtin): left to the run


def fedavg(shared: dict[str, torch.Tensor], updates: list[Update]) -> dict[str, torch.Tensor]:
    """shared + sum_k n_k delta_k / sum_k n_k, per tensor over the updates that carry it (a
    client may upload a subset). With no updates, shared is unchanged."""
    if not updates:
        return shared
    out = {}
    for name, value in shared.items():
        carrying = [u for u in updates if name in u.delta]
        total = sum(u.num_samples for u in carrying)
        if total <= 0:
            out[name] = value
            continue
        acc = torch.zeros_like(value)
        for u in carrying:
            acc += u.delta[name].to(device=value.device, dtype=value.dtype) * (u.num_samples / total)
        out[name] = value + acc
    return out


def train_in_phases(ctx: LocalContext, phases: list[tuple[list[str], int]], **kwargs: Any) -> float:
    """Train the named parameters of each phase in turn for its number of steps, the other
    trainable ones frozen meanwhile (FedRep's head then body, PFTT's alternate schedule);
    ``kwargs`` go to ``train_steps``. Returns the step-weighted mean loss."""
    losses = []
    for names, steps in phases:
        training = {id(p) for p in ctx.parameters(names)}
        frozen = [p for p in ctx.parameters() if id(p) not in training]
        for p in frozen:
            p.requires_grad_(False)
        try:
            losses.append((train_steps(ctx, ctx.parameters(names), steps, **kwargs), steps))
        finally:
            for p in frozen:
                p.requires_grad_(True)
    done = [(l, s) for l, s in losses if s and l == l]
    return sum(l * s for l, s in done) / sum(s for _, s in done) if done else float("nan")


def proximal(ctx: LocalContext, mu: float, names: list[str] | None = None,
             anchor: dict[str, torch.Tensor] | None = None) -> Callable[[], torch.Tensor]:
    """The proximal term (mu / 2) * sum_n ||theta_n - anchor_n||^2 over the named parameters
    (default: the shared ones), as an ``extra_loss`` for the training steps. ``anchor``:
    name -> values (default: ``ctx.global_shared``, the values the round started from)."""
    anchor = ctx.global_shared if anchor is None else anchor
    wanted = set(ctx.parts.shared if names is None else names)
    pairs = [(p, anchor[n].detach()) for n, p in ctx.model.named_parameters() if n in wanted]
    return lambda: (mu / 2) * sum(((p - a) ** 2).sum() for p, a in pairs)


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
