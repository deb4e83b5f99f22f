"""From a RunSpec to the objects it names, one layer above all of them: the spec of a
command line (flag, then the task card's recommended budget, then the method's learning
rate, then the suite's defaults), its provenance, and the experiment it resolves to (method,
task, channel, scheduler, codec, model, clients), checked cheaply before anything heavy loads."""

from __future__ import annotations

import hashlib
import inspect
import sys
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pflbench import __version__, registry
from pflbench.channel.base import Channel
from pflbench.channel.cards import resolve_channel
from pflbench.channel.scheduling import Scheduler
from pflbench.config import RunSpec
from pflbench.data.cards import resolve_task
from pflbench.data.sources import fingerprint
from pflbench.data.task import ClientData, Task
from pflbench.errors import UserError
from pflbench.federation.codec import Codec, make_codec
from pflbench.methods.base import Method, Parts
from pflbench.models import LoadedModel, Progress, load_model, weights_fingerprint
from pflbench.models.precision import apply_precision, check_precision
from pflbench.rewards import load_rewards

INIT_TAG = 4  # the seed tag of the methods' initial weights (engine: 1 sampling, 2 channel; client: 3)


def resolve_spec(**given: Any) -> RunSpec:
    """A RunSpec from the settings the user gave (``None``: not given): flag, then the task
    card's defaults, then the method's learning rate, then the suite's defaults."""
    flags = {k: v for k, v in given.items() if v is not None}
    task = resolve_task(flags.get("task", RunSpec.task))
    values = {**task.defaults, **flags}
    if task.identity:  # a card given by path: its identity, whatever path was typed
        values["task"], values["card"] = task.identity, task.origin
    method = registry.methods.get(values.get("method", RunSpec.method))
    if values.get("lr") is None:
        values["lr"] = method.default_lr
    if values.get("parallel_clients") is None:
        values["parallel_clients"] = "auto"
    if values.get("device") == "auto":
        values["device"] = "cuda" if torch.cuda.is_available() else "cpu"
    values["provenance"] = provenance(values.get("method", RunSpec.method), method, task)
    return RunSpec(**values)


def provenance(name: str, method: Any, task: Any) -> dict[str, str]:
    """The suite's version; the method's package, its version and a hash of its module's
    source (editing a plugin changes the run id); the data the task reads."""
    return {"pflbench": __version__, "method": method_provenance(name, method),
            "data": fingerprint(task.name, task.source, Path(task.origin).parent if task.origin else None)}


def method_provenance(name: str, method: Any) -> str:
    """``PACKAGE==VERSION code:HASH`` of a registered method class."""
    package = registry.methods.entries()[name].package
    try:
        package_version = version(package)
    except PackageNotFoundError:
        package_version = "?"
    try:
        code = hashlib.sha256(Path(inspect.getfile(method)).read_bytes()).hexdigest()[:12]
    except (OSError, TypeError):
        code = "?"
    return f"{package}=={package_version} code:{code}"


@dataclass
class Experiment:
    """Everything a RunSpec resolves to."""

    spec: RunSpec
    method: Method
    task: Task
    channel: Channel
    codec: Codec
    loaded: LoadedModel
    clients: list[ClientData]
    parts: Parts
    device: torch.device
    scheduler: Scheduler
    # fingerprints of the weights the run started from (``models.base.weights_fingerprint``):
    # {"model": ..., "rewards": {role: ... or None for a rule}}; the record's ``measured_on``
    weights: dict


def resolve_components(spec: RunSpec) -> tuple[Method, Task, Channel, Codec, Scheduler]:
    """The cheap part of resolving a spec: names and options, checked before anything heavy."""
    method = registry.methods.get(spec.method)(spec.method_options)
    scheduler = registry.schedulers.get(spec.scheduler)()
    task = resolve_task(spec.card or spec.task)
    if spec.card and task.identity != spec.task:
        raise UserError(f"task card {spec.card} changed after this run was planned ({spec.task}, now {task.identity}); "
                        f"plan it again")
    channel = resolve_channel(spec.channel)
    if spec.scheduler != "random" and not channel.supports_scheduling:
        raise UserError(f"channel {spec.channel!r} cannot show a scheduler every client's link (its class does not "
                        f"support_scheduling); use --scheduler random, or a channel card")
    return method, task, channel, make_codec(spec.codec), scheduler


def resolve(spec: RunSpec, progress: Progress | None = None,
            components: tuple[Method, Task, Channel, Codec, Scheduler] | None = None) -> Experiment:
    method, task, channel, codec, scheduler = components or resolve_components(spec)
    dev = device_of(spec.device)  # before the model loads: a typo costs nothing
    check_precision(spec.precision, dev)
    loaded = load_model(spec.model, progress, spec.init)
    weights: dict = {"model": weights_fingerprint(loaded.model)}
    clients = task.clients(loaded.tokenizer, spec.clients, spec.seed)
    check_positions(task, loaded, clients)
    if task.kind == "reward":
        mixture = load_rewards(task, progress, dev)
        weights["rewards"] = {role: weights_fingerprint(r.model) if getattr(r, "model", None) is not None else None
                              for role, r in mixture.rewards.items()}
    torch.manual_seed(int(np.random.SeedSequence([spec.seed, INIT_TAG]).generate_state(1)[0]))
    parts = method.prepare(loaded.model)
    _check_parts(parts, loaded.model, spec.method)
    loaded.model.to(dev)
    trainable = set(parts.shared) | set(parts.private)
    for name, p in loaded.model.named_parameters():
        p.requires_grad_(name in trainable)
    apply_precision(loaded.model, spec.precision, dev)
    return Experiment(spec, method, task, channel, codec, loaded, clients, parts, dev, scheduler, weights)


def device_of(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda asked for, but no CUDA device is available; use --device cpu")
    try:
        return torch.device(device)
    except RuntimeError:
        raise UserError(f"unknown --device {device!r}; use cpu, cuda, cuda:N or auto") from None


_WARNED: set[tuple[str, str, int]] = set()  # (model, task, longest): said once a process


def check_positions(task: Task, loaded, clients: list) -> None:
    """The longest sequence a run feeds the model (a training example, or a prompt plus
    ``max_new_tokens`` where the metric or the RL update generates) against the model's
    positions. Past them a model with learned position embeddings (GPT-2, OPT) fails
    mid-run: refused in one line; a rotary one (Llama, SmolLM2, Gemma) runs on, out of what
    it was trained for: one warning line."""
    config = loaded.model.config
    limit = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    if not isinstance(limit, int):
        return
    examples = [e for c in clients for e in (*c.train, *c.test)]
    longest = max((len(e.ids) for e in examples), default=0)
    if task.kind == "reward" or registry.metrics.get(task.metric).generates:
        longest = max(longest, max((len(e.prompt) for e in examples), default=0) + task.max_new_tokens)
    if longest <= limit:
        return
    what = (f"task {task.name!r} feeds {loaded.name!r} sequences of up to {longest} tokens (max_length {task.max_length}, "
            f"max_new_tokens {task.max_new_tokens}), past its {limit} positions")
    rotary = any(getattr(config, k, None) is not None for k in ("rope_theta", "rope_scaling", "rope_parameters"))
    if not rotary:
        raise UserError(f"{what}: its position embeddings stop there; lower max_length or max_new_tokens in the card")
    if (loaded.name, task.name, longest) not in _WARNED:
        _WARNED.add((loaded.name, task.name, longest))
        print(f"warning: {what}; its rotary positions run on, beyond what it was trained on", file=sys.stderr)


def _check_parts(parts: Parts, model: torch.nn.Module, method: str) -> None:
    names = {n for n, _ in model.named_parameters()}
    missing = [n for n in parts.shared + parts.private if n not in names]
    if missing:
        raise ValueError(f"method {method!r} named parameters the model does not have: {missing[:3]}")
    both = set(parts.shared) & set(parts.private)
    if both:
        raise ValueError(f"method {method!r} declared parameters both shared and private: {sorted(both)[:3]}")
    clash = sorted(set(parts.messages) & names)
    if clash:
        raise ValueError(f"method {method!r} named a message like a parameter: {clash[0]}")


