"""The round loop (DESIGN.md, "One round, as data flows"), local in-process backend.

One base model is held in memory. Before a client trains, the global shared tensors and
that client's private tensors are copied into it; afterwards the shared delta is encoded
(the bytes counted are the payload's length) and the private tensors go back to the store.
All randomness comes from generators seeded by (seed, round, client).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from pflbench import __version__, registry
from pflbench.channel.base import DELIVERED, LATE, LOST, Channel
from pflbench.config import RunSpec
from pflbench.channel.cards import resolve_channel
from pflbench.data.cards import resolve_task
from pflbench.data.task import ClientData, Task
from pflbench.errors import UserError
from pflbench.evaluation.metrics import majority_label_scores
from pflbench.evaluation.personalization import summarize_scores
from pflbench.federation.codec import Codec, FP32Codec, Schema, make_codec
from pflbench.federation.store import ClientStore
from pflbench.methods.base import LocalContext, Method, Parts, Update
from pflbench.models import LoadedModel, Progress, load_model
from pflbench.results.record import SCHEMA, RunWriter

# tags that keep the generators of different purposes apart
SAMPLE_TAG, CHANNEL_TAG, CLIENT_TAG, INIT_TAG = 1, 2, 3, 4

# on_round(record): called after each round with its record (progress display)
RoundHook = Callable[[dict[str, Any]], None]


def client_generator(seed: int, round_idx: int, client: int) -> torch.Generator:
    state = np.random.SeedSequence([seed, round_idx, client, CLIENT_TAG]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def round_rng(seed: int, round_idx: int, tag: int) -> np.random.Generator:
    return np.random.default_rng([seed, round_idx, tag])


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


def resolve_components(spec: RunSpec) -> tuple[Method, Task, Channel, Codec]:
    """The cheap part of resolving a spec: names and options, checked before anything heavy."""
    method = registry.methods.get(spec.method)(spec.method_options)
    return method, resolve_task(spec.task), resolve_channel(spec.channel), make_codec(spec.codec)


def resolve(spec: RunSpec, progress: Progress | None = None,
            components: tuple[Method, Task, Channel, Codec] | None = None) -> Experiment:
    method, task, channel, codec = components or resolve_components(spec)
    dev = _device(spec.device)  # before the model loads: a typo costs nothing
    loaded = load_model(spec.model, progress)
    clients = task.clients(loaded.tokenizer, spec.clients, spec.seed)
    if task.kind == "reward":
        task.load_rewards(progress, dev)
    torch.manual_seed(int(np.random.SeedSequence([spec.seed, INIT_TAG]).generate_state(1)[0]))
    parts = method.prepare(loaded.model)
    _check_parts(parts, loaded.model, spec.method)
    loaded.model.to(dev)
    trainable = set(parts.shared) | set(parts.private)
    for name, p in loaded.model.named_parameters():
        p.requires_grad_(name in trainable)
    return Experiment(spec, method, task, channel, codec, loaded, clients, parts, dev)


def payload_bytes(method: str, model: str = "tiny", codec: str = "fp32", options: dict[str, str] | None = None) -> int:
    """The exact length of one client's upload for a method on a model under a codec,
    measured by encoding its shared tensors (no training, no data)."""
    method_obj = registry.methods.get(method)(options or {})
    loaded = load_model(model)
    parts = method_obj.prepare(loaded.model)
    params = dict(loaded.model.named_parameters())
    shared = {n: params[n].detach() for n in parts.shared}
    return len(make_codec(codec).encode(shared, Schema.of(shared))) if shared else 0


def _device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda asked for, but no CUDA device is available; use --device cpu")
    try:
        return torch.device(device)
    except RuntimeError:
        raise UserError(f"unknown --device {device!r}; use cpu, cuda, cuda:N or auto") from None


def _check_parts(parts: Parts, model: torch.nn.Module, method: str) -> None:
    names = {n for n, _ in model.named_parameters()}
    missing = [n for n in parts.shared + parts.private if n not in names]
    if missing:
        raise ValueError(f"method {method!r} named parameters the model does not have: {missing[:3]}")
    both = set(parts.shared) & set(parts.private)
    if both:
        raise ValueError(f"method {method!r} declared parameters both shared and private: {sorted(both)[:3]}")


def run(spec: RunSpec, results_dir: Path | str | None = None, *,
        progress: Progress | None = None, on_round: RoundHook | None = None) -> dict[str, Any]:
    """Run one experiment; return its record (and write it under ``results_dir``: see
    ``pflbench.results.record``). An interrupted run of the same spec in ``results_dir``
    resumes from its last finished round."""
    t_start = time.perf_counter()
    components = resolve_components(spec)  # a typo fails here, before a results folder exists
    writer = RunWriter(results_dir, spec.run_id, spec.to_dict()) if results_dir is not None else None
    try:
        exp = resolve(spec, progress, components)
        return Runner(exp, writer, on_round).run(t_start)
    finally:
        if writer is not None:
            writer.close(keep=False)  # removes the folder of an attempt that finished no round


class Diverged(UserError):
    """A local update produced non-finite numbers: the run stops (a diverged run has no score)."""


class Runner:
    def __init__(self, exp: Experiment, writer: RunWriter | None, on_round: RoundHook | None):
        self.exp, self.writer, self.on_round = exp, writer, on_round
        model = exp.loaded.model
        self.params = dict(model.named_parameters())
        self.global_shared = {n: self.params[n].detach().clone() for n in exp.parts.shared}
        self.schema = Schema.of(self.global_shared)
        self.store = ClientStore({n: self.params[n] for n in exp.parts.private})
        self.codec_memory: dict[int, dict] = {}  # per client, e.g. top-k's error-feedback residual
        exp.channel.setup(exp.spec.clients, exp.spec.seed, exp.spec.local_steps, self.schema.numel)
        self.downlink_codec = FP32Codec()  # the server broadcasts full-precision weights
        self.rounds: list[dict[str, Any]] = []
        self.trained: set[int] = set()

    # ---- tensor plumbing --------------------------------------------------------------
    @torch.no_grad()
    def _load(self, tensors: dict[str, torch.Tensor]) -> None:
        for name, value in tensors.items():
            self.params[name].copy_(value)

    def _snapshot(self, names: list[str]) -> dict[str, torch.Tensor]:
        return {n: self.params[n].detach() for n in names}

    # ---- one round ----------------------------------------------------------------------
    def round(self, r: int) -> dict[str, Any]:
        exp, spec = self.exp, self.exp.spec
        t0 = time.perf_counter()
        sampled = sorted(round_rng(spec.seed, r, SAMPLE_TAG).choice(spec.clients, spec.clients_per_round, replace=False).tolist())
        chan_rng = round_rng(spec.seed, r, CHANNEL_TAG)
        links = exp.channel.realize(r, sampled, chan_rng)

        downlink = len(self.downlink_codec.encode(self.global_shared, self.schema)) * len(sampled) if len(self.schema) else 0
        lr = spec.lr if spec.lr is not None else exp.method.default_lr
        payloads: list[bytes] = []
        weights, losses, rewards, compute_s = [], [], [], 0.0
        for c in sampled:
            self._load(self.global_shared)
            self._load(self.store.get(c))
            ctx = LocalContext(
                model=exp.loaded.model, client=exp.clients[c], task=exp.task, parts=exp.parts, round=r,
                steps=spec.local_steps, batch_size=spec.batch_size, lr=lr,
                generator=client_generator(spec.seed, r, c), device=exp.device,
            )
            result = exp.method.local_update(ctx)
            compute_s += ctx.compute_s
            self._check_finite(r, c, result.train_loss if ctx.compute_s > 0 else 0.0, lr)
            if len(self.schema):
                delta = {n: self.params[n].detach() - self.global_shared[n] for n in exp.parts.shared}
                payloads.append(exp.codec.encode(delta, self.schema, self.codec_memory.setdefault(c, {})))
            else:
                payloads.append(b"")  # nothing shared: nothing sent
            if exp.parts.private:
                self.store.put(c, self._snapshot(exp.parts.private))
            self.trained.add(c)
            weights.append(result.num_samples)
            losses.append(result.train_loss)
            rewards.append(sum(ctx.rewards) / len(ctx.rewards) if ctx.rewards else float("nan"))
        train_s = time.perf_counter() - t0

        # only clients that produced a payload transmit (local-only sends nothing)
        sending = [i for i, p in enumerate(payloads) if p]
        outcomes, latency = exp.channel.transmit([len(payloads[i]) for i in sending], [links[i] for i in sending], chan_rng)
        updates = [
            Update(client=o.client, num_samples=weights[i], delta=exp.codec.decode(payloads[i], self.schema))
            for i, o in zip(sending, outcomes)
            if o.status == DELIVERED
        ]
        updates = exp.channel.combine(updates, chan_rng)  # over-the-air aggregation superposes them
        if updates:
            self.global_shared = {n: t.clone() for n, t in exp.method.aggregate(self.global_shared, updates).items()}

        rec: dict[str, Any] = {
            "round": r,
            "sampled": sampled,
            "delivered": [o.client for o in outcomes if o.status == DELIVERED],
            "lost": [o.client for o in outcomes if o.status == LOST],
            "late": [o.client for o in outcomes if o.status == LATE],
            "train_loss": _weighted_mean(losses, weights),
            "train_reward": _weighted_mean(rewards, weights),  # reward tasks: mean reward of the sampled responses
            "uplink_bytes": sum(len(p) for p in payloads),
            "downlink_bytes": downlink,
            "airtime_s": sum(o.airtime_s for o in outcomes),
            "energy_j": sum(o.energy_j for o in outcomes),
            "latency_s": latency,
            "links": [o.to_dict() for o in outcomes],
            "eval": None,
        }
        t1 = time.perf_counter()
        if r in spec.eval_rounds():
            rec["eval"] = self.evaluate()
        rec["timing"] = {"train_s": train_s, "compute_s": compute_s, "eval_s": time.perf_counter() - t1}
        return rec

    def _check_finite(self, r: int, c: int, loss: float, lr: float) -> None:
        """A non-finite loss or trained tensor stops the run (``Diverged``)."""
        exp = self.exp
        bad = [n for n in exp.parts.shared + exp.parts.private if not bool(torch.isfinite(self.params[n]).all())]
        if math.isfinite(loss) and not bad:
            return
        what = f"a non-finite training loss ({loss})" if not math.isfinite(loss) else f"non-finite values in {bad[0]}"
        raise Diverged(f"the run diverged: round {r}, client {exp.clients[c].name} (id {c}) got {what} at --lr {lr:g}; "
                       f"a diverged run has no score (try a lower --lr); the rounds before it are kept")

    # ---- checkpoints ----------------------------------------------------------------------
    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor the next round needs: global shared, each client's private tensors and
        codec memory."""
        out = {f"global/{n}": t for n, t in self.global_shared.items()}
        for c, tensors in self.store._state.items():
            out.update({f"client/{c}/{n}": t for n, t in tensors.items()})
        for c, memory in self.codec_memory.items():
            out.update({f"codec/{c}/{k}": t for k, t in memory.items()})
        return out

    def state(self) -> dict[str, Any]:
        return {"rounds": self.rounds, "reference": self.reference, "trained": sorted(self.trained)}

    def restore(self, tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
        self.global_shared = {n: tensors[f"global/{n}"] for n in self.exp.parts.shared}
        for key, t in tensors.items():
            kind, _, rest = key.partition("/")
            if kind == "client":
                c, _, name = rest.partition("/")
                self.store._state.setdefault(int(c), {})[name] = t
            elif kind == "codec":
                c, _, name = rest.partition("/")
                self.codec_memory.setdefault(int(c), {})[name] = t
        self.rounds, self.reference, self.trained = state["rounds"], state["reference"], set(state["trained"])

    @torch.no_grad()
    def evaluate(self) -> dict[str, Any]:
        """Every client, sampled or not: the deployed model (shared + its private tensors)
        and the shared part alone (private tensors at their initial state, which for LoRA
        and adapters is the identity)."""
        exp = self.exp
        self._load(self.global_shared)
        clients = []
        for c in exp.clients:
            self._load(self.store.get(c.id))
            personal = exp.task.evaluate(exp.loaded.model, c)
            if self.store.has(c.id):  # trained private tensors: score the shared part alone too
                self._load(self.store.initial)
                shared = exp.task.score(exp.loaded.model, c)
            else:  # no private state, or still the initial one: the same model
                shared = personal["score"]
            clients.append({"client": c.id, "name": c.name, "personal": personal.pop("score"), "shared": shared,
                            "trained": c.id in self.trained, "diagnostics": personal})
        return {**summarize_scores(clients), "clients": clients}

    def references(self) -> dict[str, Any]:
        """What a score is read against: ``base``, the model before any training, scored on
        every client (adapters start as the identity, so it is the untrained base model), and
        on label tasks ``majority_label``, each client always answering its own training
        split's most common label."""
        ref = {"base": self.evaluate()}
        if self.exp.task.labels:
            ref["majority_label"] = majority_label_scores(self.exp.clients)
        return ref

    # ---- the whole run --------------------------------------------------------------------
    def run(self, t_start: float) -> dict[str, Any]:
        spec = self.exp.spec
        resumed = self.writer.resume_state() if self.writer else None
        if resumed is not None:
            self.restore(*resumed)
        else:
            self.reference = self.references()
        if self.writer:
            self.writer.start(self.rounds)
        for r in range(len(self.rounds) + 1, spec.rounds + 1):
            rec = self.round(r)
            self.rounds.append(rec)
            if self.writer:
                self.writer.checkpoint(rec, self.state_tensors(), self.state())
            if self.on_round:
                self.on_round(rec)
        record = self.record(time.perf_counter() - t_start)
        if self.writer:
            self.writer.finish(record)
        return record

    def record(self, wall_s: float) -> dict[str, Any]:
        exp, rounds = self.exp, self.rounds
        last_eval = next(r["eval"] for r in reversed(rounds) if r["eval"] is not None)
        numel = lambda names: sum(self.params[n].numel() for n in names)  # noqa: E731
        summary = {
            "metric": exp.task.metric,
            "codec": exp.codec.name,
            **{k: v for k, v in last_eval.items() if k != "clients"},
            "uplink_bytes": sum(r["uplink_bytes"] for r in rounds),
            "downlink_bytes": sum(r["downlink_bytes"] for r in rounds),
            "airtime_s": sum(r["airtime_s"] for r in rounds),
            "latency_s": sum(r["latency_s"] for r in rounds),
            "energy_j": sum(r["energy_j"] for r in rounds),
            "delivered_updates": sum(len(r["delivered"]) for r in rounds),
            "lost_updates": sum(len(r["lost"]) for r in rounds),
            "late_updates": sum(len(r["late"]) for r in rounds),
            # reward cards: each reward model's mean points (the same numbers as its diagnostics column)
            "rewards": {role: last_eval["diagnostics"].get(role) for role in exp.task.rewards} if exp.task.kind == "reward" else None,
            "base_score": self.reference["base"]["score"],
            "majority_label_score": self.reference["majority_label"]["score"] if "majority_label" in self.reference else None,
            "wall_s": wall_s,
        }
        return {
            "schema": SCHEMA,
            "run_id": exp.spec.run_id,
            "pflbench_version": __version__,
            "spec": exp.spec.to_dict(),
            "model": {
                "name": exp.loaded.name,
                "parameters": sum(p.numel() for p in self.params.values()),
                "shared_parameters": numel(exp.parts.shared),
                "private_parameters": numel(exp.parts.private),
                "shared_tensors": list(self.schema.names),
                "private_tensors": list(exp.parts.private),
            },
            "task": {
                "name": exp.task.name, "kind": exp.task.kind, "metric": exp.task.metric, "clients": [c.name for c in exp.clients],
                "test_examples": [len(c.test) for c in exp.clients], "test_units": [exp.task.test_units(c) for c in exp.clients],
                **({"rewards": exp.task.rewards, "roles": list(exp.task.rewards), "weights": [c.weights for c in exp.clients]}
                   if exp.task.kind == "reward" else {}),
            },
            "reference": self.reference,
            "channel": exp.spec.channel,
            "rounds": rounds,
            "summary": summary,
        }


def _weighted_mean(values: list[float], weights: list[int]) -> float | None:
    pairs = [(v, w) for v, w in zip(values, weights) if v == v]  # drop NaN (nothing trained)
    total = sum(w for _, w in pairs)
    return sum(v * w for v, w in pairs) / total if total else None
