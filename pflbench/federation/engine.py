"""The round loop (DESIGN.md, "One round, as data flows"), local in-process backend.

One base model is held in memory. Before a client trains, the global shared tensors and
that client's private tensors are copied into it; afterwards the shared delta is encoded
(the bytes counted are the payload's length) and the private tensors go back to the store.
All randomness comes from generators seeded by (seed, round, client).
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from pflbench import __version__
from pflbench.channel.base import DELIVERED, LATE, LOST
from pflbench.channel.scheduling import History, RandomScheduler, View, check_selection, uniform_draw
from pflbench.config import RunSpec
from pflbench.errors import UserError
from pflbench.evaluation.metrics import majority_label_scores, test_units
from pflbench.evaluation.personalization import summarize_scores
from pflbench.federation.backends import Backend, LocalBackend, check_backend, make_backend
from pflbench.federation.batched import evaluate_batched, evaluates_batched
from pflbench.federation.client import (
    ClientJob, PluginFailed, evaluate_client, evaluate_shared_alone, payload_schema, plugin_hook, upload_membership,
)
from pflbench.federation.codec import FP32Codec, Schema
from pflbench.federation.resolve import Experiment, method_provenance, resolve, resolve_components
from pflbench.federation.store import ClientStore
from pflbench.methods.base import Method, RoundInfo, Update
from pflbench.models import Progress
from pflbench.models.precision import machine
from pflbench.results.record import SCHEMA, RunWriter

# tags that keep the generators of different purposes apart
SAMPLE_TAG, CHANNEL_TAG = 1, 2  # 3: the client generators (federation.client); 4: the initial weights (federation.resolve)

# on_round(record): called after each round with its record (progress display)
RoundHook = Callable[[dict[str, Any]], None]


def round_rng(seed: int, round_idx: int, tag: int) -> np.random.Generator:
    return np.random.default_rng([seed, round_idx, tag])


def payload_bytes(method: str, model: str = "tiny", codec: str = "fp32", options: dict[str, str] | None = None) -> int:
    """The exact length of one client's upload in one round of ``method`` on ``model`` under
    ``codec`` (one client, one local step of batch 2): what its payload really holds, messages
    and subsets included. The communication budget's figure."""
    spec = RunSpec(method=method, codec=codec, model=model, clients=2, clients_per_round=1, rounds=1, local_steps=1,
                   batch_size=2, method_options=dict(options or {}))
    return run(spec, None)["rounds"][0]["uplink_bytes"]


def run(spec: RunSpec, results_dir: Path | str | None = None, *,
        progress: Progress | None = None, on_round: RoundHook | None = None,
        backend: str = "local", workers: int | None = None, ray_address: str | None = None) -> dict[str, Any]:
    """Run one experiment; return its record (and write it under ``results_dir``: see
    ``pflbench.results.record``). An interrupted run of the same spec in ``results_dir``
    resumes from its last finished round. ``backend``: where the sampled clients train
    (``federation.backends``); it does not change the record apart from timing. How many
    clients train in one pass is the spec's ``parallel_clients`` (``federation.batched``)."""
    t_start = time.perf_counter()
    components = resolve_components(spec)  # a typo fails here, before a results folder exists
    check_backend(backend, workers, ray_address)
    writer = RunWriter(results_dir, spec.run_id, spec.to_dict()) if results_dir is not None else None
    runner_backend = None
    try:
        exp = resolve(spec, progress, components)
        runner_backend = make_backend(backend, exp, workers, ray_address)
        return Runner(exp, writer, on_round, runner_backend).run(t_start)
    except PluginFailed as exc:  # the traceback to a log file, the terminal gets one line
        log = _log_path(results_dir, spec.run_id)
        try:
            log.write_text(exc.trace, encoding="utf-8")
            where = f"; traceback in {log}"
        except OSError:
            where = ""
        raise UserError(f"{exc}{where}") from None
    finally:
        if runner_backend is not None:
            runner_backend.close()
        if writer is not None:
            writer.close(keep=False)  # removes the folder of an attempt that finished no round


def _log_path(results_dir: Path | str | None, run_id: str) -> Path:
    """Where a failed run's traceback goes: ``RESULTS_DIR/RUN_ID.log`` (beside the run's
    folder, which a run that finished no round does not keep), else the temporary folder."""
    import tempfile

    return Path(results_dir) / f"{run_id}.log" if results_dir is not None else Path(tempfile.gettempdir()) / f"pflbench-{run_id}.log"


class Diverged(UserError):
    """A local update produced non-finite numbers: the run stops (a diverged run has no score)."""


def measured_on(exp: Experiment) -> dict[str, Any]:
    """What a record's numbers depend on beyond its spec: the machine (float sums follow its
    kernels), the libraries doing the arithmetic, and the fingerprints of the weights the run
    started from (the tiny models and the reward models are built on the machine that first
    needs them). Not in the run id: a sweep resumed on another machine keeps its finished runs,
    and the tables say when their rows mix machines or weights."""
    import transformers

    return {"machine": machine(exp.device), "torch": torch.__version__, "transformers": transformers.__version__,
            "weights": exp.weights}


class Runner:
    def __init__(self, exp: Experiment, writer: RunWriter | None, on_round: RoundHook | None, backend: Backend | None = None):
        self.exp, self.writer, self.on_round = exp, writer, on_round
        self.backend = backend or LocalBackend(exp)  # where the sampled clients train
        model = exp.loaded.model
        self.params = dict(model.named_parameters())
        self.global_shared = {n: self.params[n].detach().clone() for n in exp.parts.shared}
        # what an upload may carry: the shared tensors, then the method's messages
        self.schema = payload_schema(exp)
        self.store = ClientStore({n: self.params[n] for n in exp.parts.private})
        self.codec_memory: dict[int, dict] = {}  # per client, e.g. top-k's error-feedback residual
        self.participation: dict[int, int] = {}  # client -> rounds it trained in (a key: it has trained)
        self.last_delivered: dict[int, bool] = {}  # client -> did its last upload arrive
        self.delivered_count: dict[int, int] = {}  # client -> updates of it that arrived
        self.delivered_round: dict[int, int] = {}  # client -> the last round an update of it arrived
        # the uniform draw of the clients, then their links from the round's generator, exactly as
        # before schedulers existed; any other scheduler (or a channel that changes over time) sees
        # every client's link first, each client's drawn from its own generator
        self.legacy_draws = type(exp.scheduler) is RandomScheduler and not exp.channel.time_varying
        exp.channel.per_client = not self.legacy_draws
        exp.channel.setup(exp.spec.clients, exp.spec.seed, exp.spec.local_steps, self.schema.numel)
        self.payload_hint: int | None = None  # one upload's length, for the scheduler: the last round's largest
        self.downlink_codec = FP32Codec()  # the server broadcasts full-precision weights
        self.rounds: list[dict[str, Any]] = []
        if exp.spec.dp:  # client-level DP (federation.privacy): refuse what its accounting would not cover
            from pflbench.federation import privacy

            privacy.check(exp.spec.dp, exp.spec.method, exp.parts)
            privacy.accounting()  # installed, before any round is trained
        if exp.spec.secagg:
            from pflbench.federation.secagg import check

            check(exp.spec, exp.channel)

    # ---- one round ----------------------------------------------------------------------
    def round(self, r: int) -> dict[str, Any]:
        exp, spec, method = self.exp, self.exp.spec, self.exp.method
        t0 = time.perf_counter()
        # a backend over a real transport (Flower) counts the bytes of its own messages
        wire_before = dict(getattr(self.backend, "transport", None) or {})
        chan_rng = round_rng(spec.seed, r, CHANNEL_TAG)
        if self.legacy_draws:
            sampled = uniform_draw(round_rng(spec.seed, r, SAMPLE_TAG), spec.clients, spec.clients_per_round)
            links = exp.channel.realize(r, sampled, chan_rng)
        else:
            sampled = self.schedule(r, chan_rng)
            links = exp.channel.realize(r, sampled, chan_rng, share=len(sampled))

        # the server broadcasts full-precision global weights and its state to the sampled clients
        # (what the method says it sends: nothing for central, which has no network)
        with plugin_hook(exp, "broadcast", r):
            broadcast = method.broadcast(self.global_shared)
        downlink = len(self.downlink_codec.encode(broadcast, Schema.of(broadcast))) * len(sampled) if broadcast else 0
        lr = spec.lr if spec.lr is not None else method.default_lr
        # --secagg: the protocol's keys and shares among the sampled clients, before they train;
        # each masks its own upload (federation.secagg)
        masking = self.secure_round(r, sampled) if spec.secagg and method.federated and len(self.schema) else None
        jobs = [ClientJob(round=r, client=c, lr=lr, global_shared=self.global_shared, private=self.store.get(c),
                          state=self.store.get_state(c), server=dict(method.server),
                          codec_memory=self.codec_memory.get(c, {}), participation=self.participation.get(c, 0),
                          delivered=self.last_delivered.get(c), secagg=masking.setup(c) if masking else None)
                for c in sampled]
        payloads: list[bytes] = []
        sent_links = []  # payloads[i] goes over sent_links[i] (a failed client sends nothing)
        weights, losses, rewards, compute_s = [], [], [], 0.0
        failed: list[dict[str, Any]] = []  # clients whose device or worker died before their update came back
        for out in self.backend.train(jobs):
            c = out.client
            if out.failed:  # nothing came back: its update is lost, its state stays as it was
                failed.append({"client": c, "reason": out.failed})
                self.last_delivered[c] = False
                continue
            compute_s += out.compute_s
            if out.diverged:
                raise Diverged(f"the run diverged: round {r}, client {exp.clients[c].name} (id {c}) got {out.diverged} at --lr {lr:g}; "
                               f"a diverged run has no score (try a lower --lr); the rounds before it are kept")
            payloads.append(out.payload)
            sent_links.append(links[sampled.index(c)])
            if not self.backend.holds_client_state:  # else the client keeps them (a Flower federation)
                if out.codec_memory:
                    self.codec_memory[c] = out.codec_memory
                if exp.parts.private:
                    self.store.put(c, out.private)
                self.store.put_state(c, out.state)
            self.participation[c] = self.participation.get(c, 0) + 1
            weights.append(out.num_samples)
            losses.append(out.train_loss)
            rewards.append(out.reward)
        train_s = time.perf_counter() - t0

        # only clients that produced a payload transmit (local-only sends nothing)
        sending = [i for i, p in enumerate(payloads) if p]
        outcomes, latency = exp.channel.transmit([len(payloads[i]) for i in sending], [sent_links[i] for i in sending], chan_rng)
        updates = []
        self.payload_hint = max((len(p) for p in payloads), default=0)
        for i, o in zip(sending, outcomes):
            self.last_delivered[o.client] = o.status == DELIVERED
            if o.status == DELIVERED:
                self.delivered_count[o.client] = self.delivered_count.get(o.client, 0) + 1
                self.delivered_round[o.client] = r
            if o.status == DELIVERED and masking is None:
                decoded = exp.codec.decode(payloads[i], self.schema)
                updates.append(Update(client=o.client, num_samples=weights[i],
                                      delta={n: t for n, t in decoded.items() if n not in exp.parts.messages},
                                      messages={n: t for n, t in decoded.items() if n in exp.parts.messages}))
        # --membership at an evaluation round: the attack on each delivered upload as the server
        # decoded it; none under secure aggregation or over the air (no one holds a single upload)
        uploads_leaked = {}
        evaluated = r in spec.eval_rounds()
        if spec.membership and evaluated and masking is None and not getattr(exp.channel, "superposes", False):
            uploads_leaked = {u.client: upload_membership(exp, exp.clients[u.client], self.global_shared, u.delta,
                                                          self.store.initial) for u in updates if u.delta}
        secagg = None
        if masking is not None:  # the server learns the survivors' weighted mean, nothing else
            result = masking.unmask({o.client: payloads[i] for i, o in zip(sending, outcomes) if o.status == DELIVERED},
                                    set(exp.parts.messages))
            if result.delta is not None:
                updates = [Update(client=-1, num_samples=sum(weights[i] for i, o in zip(sending, outcomes)
                                                              if o.status == DELIVERED),
                                  delta=result.delta, messages=result.messages)]
            protocol_up = sum(result.uplink.values())
            downlink += result.downlink
            secagg = {"survivors": result.survivors, "dropped": result.dropped, "aborted": result.delta is None,
                      "threshold": masking.t, "protocol_uplink_bytes": protocol_up, "protocol_downlink_bytes": result.downlink}
        dp = spec.dp
        if dp and dp["mode"] == "central":  # the server clips what it decoded (local DP clipped on the client)
            from pflbench.federation.privacy import clip

            updates = [replace(u, delta=clip(u.delta, dp["clip"])[0]) for u in updates]
        updates = exp.channel.combine(updates, chan_rng)  # over-the-air aggregation superposes them
        info = RoundInfo(round=r, num_clients=spec.clients, sampled=sampled,
                         delivered=[o.client for o in outcomes if o.status == DELIVERED],
                         lost=[o.client for o in outcomes if o.status != DELIVERED] + [f["client"] for f in failed],
                         participation=dict(self.participation))
        with plugin_hook(exp, "aggregate", r):
            aggregated = method.aggregate(self.global_shared, updates, info)
        if dp and dp["mode"] == "central" and updates:
            from pflbench.federation.privacy import central_noise

            aggregated = central_noise(dp, self.global_shared, aggregated, len(updates), spec.seed, r)
        self.global_shared = {n: t.detach().clone() for n, t in aggregated.items()}

        rec: dict[str, Any] = {
            "round": r,
            "sampled": sampled,
            "delivered": info.delivered,
            "lost": [o.client for o in outcomes if o.status == LOST] + [f["client"] for f in failed],
            "late": [o.client for o in outcomes if o.status == LATE],
            "train_loss": _weighted_mean(losses, weights),
            "train_reward": _weighted_mean(rewards, weights),  # reward tasks: mean reward of the sampled responses
            "uplink_bytes": sum(len(p) for p in payloads) + (secagg["protocol_uplink_bytes"] if secagg else 0),
            "downlink_bytes": downlink,
            "airtime_s": sum(o.airtime_s for o in outcomes),
            "energy_j": sum(o.energy_j for o in outcomes),
            "latency_s": latency,
            "links": [o.to_dict() for o in outcomes],
            "eval": None,
        }
        if failed:  # lost before the channel: which client, and what the backend saw
            rec["failed"] = failed
        if dp:
            rec["dp"] = self.privacy_spent(r)
        if secagg:
            rec["secagg"] = secagg
        if not self.legacy_draws:  # who the scheduler chose is "sampled"; what it keeps, here
            rec["scheduler"] = {"name": spec.scheduler, "state": exp.scheduler.state()}
        t1 = time.perf_counter()
        if evaluated:
            rec["eval"] = self.evaluate(uploads_leaked)
        rec["timing"] = {"train_s": train_s, "compute_s": compute_s, "eval_s": time.perf_counter() - t1,
                         "clients_per_pass": getattr(self.backend, "parallel", 1)}
        if wire_before:  # the round's messages, evaluation included, as the transport counted them
            rec["transport"] = {k: v - wire_before[k] for k, v in self.backend.transport.items()}
        return rec

    def schedule(self, r: int, chan_rng: np.random.Generator) -> list[int]:
        """The scheduler's choice for round r, from every client's link this round (at an equal
        share of the band among clients-per-round clients), the upload's size and each
        client's history (``channel.scheduling.View``)."""
        exp, spec = self.exp, self.exp.spec
        everyone = list(range(spec.clients))
        seen = {link.client: link for link in exp.channel.realize(r, everyone, chan_rng, share=spec.clients_per_round)}
        payload = self.payload_hint if self.payload_hint is not None else self.zero_payload_bytes()
        history = {c: History(scheduled=self.participation.get(c, 0), delivered=self.delivered_count.get(c, 0),
                              age=r - self.delivered_round.get(c, 0)) for c in everyone}
        view = View(round=r, clients=spec.clients, k=spec.clients_per_round, links=seen, payload_bytes=payload,
                    history=history, airtime=lambda c, m: exp.channel.airtime(seen[c], payload, m),
                    compute_s=float(getattr(exp.channel, "compute_s", 0.0)), deadline_s=exp.channel.deadline_s,
                    rng=round_rng(spec.seed, r, SAMPLE_TAG))
        with plugin_hook(exp, "select", r, kind="scheduler"):
            chosen = exp.scheduler.select(view)
        return check_selection(chosen, view, spec.scheduler)

    def secure_round(self, r: int, sampled: list[int]):
        """Secure aggregation's first two phases among round ``r``'s sampled clients, each
        weighted by its training examples (what it advertises with its keys); the protocol's
        state, whose ``setup(c)`` each client masks its upload with and whose ``unmask`` the
        server recovers the survivors' weighted mean from. A sampled client whose upload never
        arrives (lost, late, failed) is a dropped client."""
        from pflbench.federation.secagg import SecAgg

        counts = {c: float(self.exp.task.num_train(self.exp.clients[c])) for c in sampled}
        return SecAgg(sampled, counts, list(self.schema.names), [tuple(s) for s in self.schema.shapes], self.exp.spec.seed, r)

    def privacy_spent(self, rounds: int) -> dict[str, float]:
        """The (epsilon, delta) spent after ``rounds`` rounds (``federation.privacy.epsilon``); a
        method that uploads nothing spends none."""
        from pflbench.federation.privacy import delta_of, epsilon

        spec = self.exp.spec
        uploads = self.exp.method.federated and len(self.schema) > 0
        eps = epsilon(spec.dp, spec.clients, spec.clients_per_round, rounds,
                      uniform=type(self.exp.scheduler) is RandomScheduler) if uploads else 0.0
        return {"epsilon": eps, "delta": delta_of(spec.dp, spec.clients)}

    def zero_payload_bytes(self) -> int:
        """The length of an upload of zeros under the run's codec: round 1's payload size."""
        if not len(self.schema):
            return 0
        zeros = {n: torch.zeros(shape) for n, shape in zip(self.schema.names, self.schema.shapes)}
        return len(self.exp.codec.encode(zeros, self.schema, {}))

    # ---- checkpoints ----------------------------------------------------------------------
    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor the next round needs: global shared, the method's server state, each
        client's private tensors, non-parameter state and codec memory."""
        out = {f"global/{n}": t for n, t in self.global_shared.items()}
        out.update({f"server/{k}": t for k, t in self.exp.method.server.items()})
        private = {c: self.store.get(c) for c in self.store.clients()}
        for prefix, per_client in (("client", private), ("state", self.store.states()), ("codec", self.codec_memory)):
            for c, tensors in per_client.items():
                out.update({f"{prefix}/{c}/{n}": t for n, t in tensors.items()})
        return out

    def state(self) -> dict[str, Any]:
        return {"rounds": self.rounds, "reference": self.reference,
                "participation": {str(c): n for c, n in self.participation.items()},
                "last_delivered": {str(c): d for c, d in self.last_delivered.items()},
                "delivered_count": {str(c): n for c, n in self.delivered_count.items()},
                "delivered_round": {str(c): n for c, n in self.delivered_round.items()},
                "payload_hint": self.payload_hint, "scheduler": self.exp.scheduler.state()}

    def restore(self, tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
        self.global_shared = {n: tensors[f"global/{n}"] for n in self.exp.parts.shared}
        per_client: dict[str, dict[int, dict[str, torch.Tensor]]] = {"client": {}, "state": {}, "codec": self.codec_memory}
        for key, t in tensors.items():
            kind, _, rest = key.partition("/")
            if kind == "server":
                self.exp.method.server[rest] = t
            elif kind in per_client:
                c, _, name = rest.partition("/")
                per_client[kind].setdefault(int(c), {})[name] = t
        for c, private in per_client["client"].items():
            self.store.put(c, {n: private[n] for n in self.store.initial})
        for c, st in per_client["state"].items():
            self.store.put_state(c, st)
        self.rounds, self.reference = state["rounds"], state["reference"]
        # a checkpoint from before participation counts holds who trained only
        self.participation = {int(c): n for c, n in state.get("participation", {c: 1 for c in state.get("trained", [])}).items()}
        self.last_delivered = {int(c): d for c, d in state.get("last_delivered", {}).items()}
        self.delivered_count = {int(c): n for c, n in state.get("delivered_count", {}).items()}
        self.delivered_round = {int(c): n for c, n in state.get("delivered_round", {}).items()}
        self.payload_hint = state.get("payload_hint")
        self.exp.scheduler.load_state(state.get("scheduler", {}))

    def evaluate(self, uploads_leaked: dict[int, float | None] | None = None) -> dict[str, Any]:
        """Every client, sampled or not (``federation.client.evaluate_client``): the deployed
        model and the shared part alone; on a backend whose clients keep their own state (a
        Flower federation), each client scores itself. ``uploads_leaked``: the membership
        attack's AUC on this round's delivered uploads (``upload_membership``), by client."""
        exp, method = self.exp, self.exp.method
        if self.backend.holds_client_state:
            clients = self.backend.evaluate(self.global_shared, dict(method.server), self.participation)
        else:  # clients without private tensors of their own share one model; the others, with
            # batched clients, K at a time through their stacked tensors, else one by one
            alone = [c for c in exp.clients if not self.store.has(c.id)]
            scored = {s["client"]: s for s in evaluate_shared_alone(exp, alone, self.global_shared, self.store.initial,
                                                                    self.participation)}
            own = [c for c in exp.clients if self.store.has(c.id)]
            k = getattr(self.backend, "parallel", 1)  # > 1: the run is batchable
            if k > 1 and own and evaluates_batched(exp):
                scored.update((s["client"], s) for s in evaluate_batched(
                    exp, own, self.global_shared, [self.store.get(c.id) for c in own], self.store.initial,
                    self.participation, k))
            clients = [scored.get(c.id) or evaluate_client(exp, c, self.global_shared, self.store.get(c.id),
                                                           self.store.get_state(c.id), self.store.initial,
                                                           c.id in self.participation)
                       for c in exp.clients]
        for c in clients:
            if c["client"] in (uploads_leaked or {}):
                c.setdefault("membership", {})["upload"] = uploads_leaked[c["client"]]
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
        if exp.spec.dp:  # the (epsilon, delta) of the whole run
            summary.update(epsilon=rounds[-1]["dp"]["epsilon"], dp_delta=rounds[-1]["dp"]["delta"])
        if exp.spec.membership:  # the attack on the untrained model: what the splits differ by before training
            summary["base_membership_auc"] = self.reference["base"].get("membership_auc")
        return {
            "schema": SCHEMA,
            "run_id": exp.spec.run_id,
            "pflbench_version": __version__,
            "spec": exp.spec.to_dict(),
            "measured_on": measured_on(exp),
            "method": method_identity(exp.spec, exp.method),
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
                "test_examples": [len(c.test) for c in exp.clients], "test_units": [test_units(exp.task, c) for c in exp.clients],
                **({"rewards": exp.task.rewards, "roles": list(exp.task.rewards), "weights": [c.weights for c in exp.clients]}
                   if exp.task.kind == "reward" else {}),
            },
            "reference": self.reference,
            "channel": exp.spec.channel,
            "rounds": rounds,
            "summary": summary,
        }


def method_identity(spec: RunSpec, method: Method) -> dict[str, Any]:
    """The method as the record names it: registered name, options, the package that provides
    it, that package's version and a hash of the method's source (the spec's provenance, or
    read now for a spec built without one)."""

    package, _, rest = (spec.provenance.get("method") or method_provenance(spec.method, type(method))).partition("==")
    version, _, code = rest.partition(" code:")
    return {"name": spec.method, "options": dict(spec.method_options), "package": package, "version": version, "code": code}


def _weighted_mean(values: list[float], weights: list[int]) -> float | None:
    pairs = [(v, w) for v, w in zip(values, weights) if v == v]  # drop NaN (nothing trained)
    total = sum(w for _, w in pairs)
    return sum(v * w for v, w in pairs) / total if total else None
