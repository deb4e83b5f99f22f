"""One client's part of a round, as plain data in and out, so that any backend can run it:
the local loop in-process, a Ray worker, a Flower ClientApp.

A ``ClientJob`` holds everything the client needs from the server and from its own store
(the global shared values, its private tensors, its state, the method's server state, its
codec memory); ``train_client`` loads them into a model that holds the experiment's base,
runs the method's local update, encodes the upload with the run's codec (the bytes counted
are that payload's length) and returns a ``ClientOutcome``: the payload, the client's new
private tensors, state and codec memory, and its training figures. Nothing else is carried
from one client to the next, so the outcome does not depend on which process ran it or in
which order.
"""

from __future__ import annotations

import contextlib
import math
import traceback
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

import torch

from pflbench import registry
from pflbench.errors import UserError
from pflbench.evaluation.membership import membership_auc
from pflbench.evaluation.metrics import evaluate, evaluate_clients, score
from pflbench.federation.codec import Schema
from pflbench.methods.base import LocalContext


class PluginFailed(UserError):
    """A plugin method's hook raised: one line for the terminal, ``trace`` for the run's log."""

    trace: str = ""


@contextlib.contextmanager
def plugin_hook(exp, hook: str, round_: int, client: int | None = None, kind: str = "method") -> Iterator[None]:
    """Around a call of the run's method's (or, ``kind="scheduler"``, its scheduler's) ``hook``:
    an exception from a plugin's code becomes one line naming the plugin, the hook, the round
    and the client (its traceback kept for the run's log file, ``engine.run``). A built-in's
    exception is the suite's bug: raised as is."""
    try:
        yield
    except UserError:
        raise
    except Exception as exc:
        name = getattr(exp.spec, kind)
        entry = getattr(registry, f"{kind}s").entries().get(name)
        if entry is None or entry.package == registry.BUILTIN:
            raise
        who = f"client {exp.clients[client].name} (id {client})" if client is not None else "the server"
        first = (str(exc).strip().splitlines() or [""])[0]
        err = PluginFailed(f"{kind} {name!r} (package {entry.package}) raised {type(exc).__name__}"
                           f"{': ' + first if first else ''} in {hook}, round {round_}, {who}")
        err.trace = traceback.format_exc()
        raise err from None


@dataclass
class ClientJob:
    round: int
    client: int
    lr: float
    global_shared: dict[str, torch.Tensor]
    private: dict[str, torch.Tensor]  # the client's private tensors (the store's initial ones if it never trained)
    state: dict[str, torch.Tensor]  # its non-parameter state (``ctx.state``)
    server: dict[str, torch.Tensor]  # the method's server state as broadcast
    codec_memory: dict[str, Any]  # e.g. top-k's error-feedback residual
    participation: int = 0
    delivered: Optional[bool] = None
    # --secagg: this client's part of the round's protocol (``secagg.Setup``); it masks its
    # upload with it before sending (``outgoing``)
    secagg: Optional[Any] = None


@dataclass
class ClientOutcome:
    client: int
    payload: bytes  # b"": the client sends nothing
    private: dict[str, torch.Tensor]
    state: dict[str, torch.Tensor]
    codec_memory: dict[str, Any]
    num_samples: int
    train_loss: float
    reward: float  # mean sampled reward (reward tasks), NaN otherwise
    compute_s: float
    diverged: Optional[str] = None  # what went non-finite; the run stops (``engine.Diverged``)
    # why nothing came back (a killed device or worker, after the backend's retries): the engine
    # records the update as lost and the client's state as it was; payload and the rest are empty
    failed: Optional[str] = None

    @classmethod
    def lost(cls, client: int, reason: str) -> "ClientOutcome":
        """The outcome of a client whose device or worker died: nothing came back."""
        nan = float("nan")
        return cls(client=client, payload=b"", private={}, state={}, codec_memory={}, num_samples=0, train_loss=nan,
                   reward=nan, compute_s=0.0, failed=reason)
    timing: dict[str, float] = field(default_factory=dict)


def payload_schema(exp) -> Schema:
    """What an upload of the run may carry (``upload_schema`` of its model and parts)."""
    return upload_schema(exp.loaded.model, exp.parts)


def upload_schema(model: torch.nn.Module, parts) -> Schema:
    """What an upload may carry: the shared tensors, then the method's messages (the model may
    live on the meta device: only shapes are read)."""
    params = dict(model.named_parameters())
    return Schema(tuple(parts.shared) + tuple(parts.messages),
                  tuple(tuple(params[n].shape) for n in parts.shared) + tuple(tuple(s) for s in parts.messages.values()))


@torch.no_grad()
def load_into(params: dict[str, torch.nn.Parameter], tensors: dict[str, torch.Tensor]) -> None:
    """Copy ``tensors`` into the model's parameters of the same names (``dict(model.named_parameters())``):
    how a client's model is rebuilt from the global shared tensors and its own private ones."""
    for name, value in tensors.items():
        params[name].copy_(value)


def train_client(exp, schema: Schema, job: ClientJob) -> ClientOutcome:
    """Run ``job`` on ``exp`` (an ``engine.Experiment``: its model is overwritten)."""
    spec, method, model = exp.spec, exp.method, exp.loaded.model
    params = dict(model.named_parameters())
    load_into(params, job.global_shared)
    load_into(params, job.private)
    ctx = LocalContext(
        model=model, client=exp.clients[job.client], task=exp.task, parts=exp.parts, round=job.round,
        steps=spec.local_steps, batch_size=spec.batch_size, lr=job.lr,
        generator=client_generator(spec.seed, job.round, job.client), device=exp.device,
        global_shared=job.global_shared, state=dict(job.state), server=dict(job.server),
        num_clients=spec.clients, participation=job.participation, delivered=job.delivered, all_clients=exp.clients,
    )
    with plugin_hook(exp, "local_update", job.round, job.client):
        result = method.local_update(ctx)
    diverged = divergence(result.train_loss if ctx.compute_s > 0 else 0.0,
                          {n: params[n] for n in exp.parts.shared + exp.parts.private})
    memory = dict(job.codec_memory)
    payload = outgoing(exp, schema, job, _upload(exp, schema, ctx, result), memory) if diverged is None else b""
    return ClientOutcome(
        client=job.client, payload=payload,
        private={n: params[n].detach().clone() for n in exp.parts.private},
        state=ctx.state, codec_memory=memory, num_samples=result.num_samples, train_loss=result.train_loss,
        reward=sum(ctx.rewards) / len(ctx.rewards) if ctx.rewards else float("nan"),
        compute_s=ctx.compute_s, diverged=diverged)


def outgoing(exp, schema: Schema, job: ClientJob, upload: dict[str, torch.Tensor], memory: dict[str, Any]) -> bytes:
    """The bytes a client sends for its upload: clipped and noised under ``--dp mode=local``
    (``privatized``), then encoded by the run's codec or, in a ``--secagg`` round, masked
    (``secagg.Setup.mask``: the server never sees a single upload); b"" for no upload."""
    upload = privatized(exp, upload, job.round, job.client)
    if not upload:
        return b""
    if job.secagg is not None:
        return job.secagg.mask(upload, exp.spec.seed, list(schema.names), [tuple(s) for s in schema.shapes])
    return exp.codec.encode(upload, schema, memory)


def privatized(exp, upload: dict[str, torch.Tensor], round_idx: int, client: int) -> dict[str, torch.Tensor]:
    """The upload as it leaves the client: under ``--dp mode=local`` clipped and noised
    (``federation.privacy``); else as it is. The codec encodes what this returns."""
    dp = exp.spec.dp
    if not upload or not dp or dp["mode"] != "local":
        return upload
    from pflbench.federation.privacy import local_upload

    return local_upload(dp, upload, exp.spec.seed, round_idx, client)


def divergence(loss: float, trained: dict[str, torch.Tensor]) -> Optional[str]:
    """What went non-finite in a client's update (its loss first, then the first trained
    tensor), or None: the run stops on it (``engine.Diverged``)."""
    if not math.isfinite(loss):
        return f"a non-finite training loss ({loss})"
    bad = next((n for n, t in trained.items() if not bool(torch.isfinite(t).all())), None)
    return f"non-finite values in {bad}" if bad is not None else None


@torch.no_grad()
def evaluate_client(exp, client, global_shared: dict[str, torch.Tensor], private: dict[str, torch.Tensor],
                    state: dict[str, torch.Tensor], initial_private: dict[str, torch.Tensor], trained: bool) -> dict[str, Any]:
    """The scores of a client with trained private tensors of its own: the deployed model
    (global shared + its private tensors, inside the method's ``deployed`` hook) and the
    shared part alone (private tensors at their initial state, which for LoRA and adapters is
    the identity, inside its ``shared_alone`` hook). With ``--membership``, the attack's AUC
    on both (``membership``)."""
    method, model = exp.method, exp.loaded.model
    params = dict(model.named_parameters())
    load_into(params, global_shared)
    load_into(params, private)
    leaked = {}
    with method.deployed(model, state):
        personal = evaluate(exp.task, model, client)
        if exp.spec.membership:
            leaked["personal"] = membership_auc(exp.task, model, client, exp.spec.seed)
    load_into(params, initial_private)
    with method.shared_alone(model):
        shared = score(exp.task, model, client)
        if exp.spec.membership:
            leaked["shared"] = membership_auc(exp.task, model, client, exp.spec.seed)
    return {"client": client.id, "name": client.name, "personal": personal.pop("score"), "shared": shared,
            "trained": trained, "diagnostics": personal, **({"membership": leaked} if leaked else {})}


@torch.no_grad()
def evaluate_shared_alone(exp, clients: list, global_shared: dict[str, torch.Tensor],
                          initial_private: dict[str, torch.Tensor], participation: dict[int, int]) -> list[dict[str, Any]]:
    """The scores of clients without private tensors of their own: each is deployed with the
    shared part alone (private tensors at their initial values, the method's ``shared_alone``
    hook), the same model for all of them, so the task scores them together
    (``Task.evaluate_many``: one batched pass where the metric allows); with ``--membership``,
    the attack's AUC of each on that model (deployed and shared alone are the same model)."""
    method, model = exp.method, exp.loaded.model
    params = dict(model.named_parameters())
    load_into(params, global_shared)
    load_into(params, initial_private)
    with method.shared_alone(model):
        results = evaluate_clients(exp.task, model, clients)
        leaked = [membership_auc(exp.task, model, c, exp.spec.seed) for c in clients] if exp.spec.membership else []
    out = []
    for i, (client, personal) in enumerate(zip(clients, results)):
        score = personal.pop("score")
        out.append({"client": client.id, "name": client.name, "personal": score, "shared": score,
                    "trained": client.id in participation, "diagnostics": personal,
                    **({"membership": {"personal": leaked[i], "shared": leaked[i]}} if leaked else {})})
    return out


@torch.no_grad()
def upload_membership(exp, client, global_shared: dict[str, torch.Tensor], delta: dict[str, torch.Tensor],
                      initial_private: dict[str, torch.Tensor]) -> float | None:
    """The attack on what the server receives from one client (``--membership``): the model
    an honest-but-curious server rebuilds from that upload alone, the round's global shared
    tensors plus the client's delta as decoded (top-k's zeros, local DP's noise and all),
    private tensors at their initial values, inside the method's ``shared_alone`` hook."""
    model = exp.loaded.model
    params = dict(model.named_parameters())
    load_into(params, global_shared)
    load_into(params, {n: global_shared[n] + d.to(global_shared[n].device, global_shared[n].dtype) for n, d in delta.items()})
    load_into(params, initial_private)
    with exp.method.shared_alone(model):
        return membership_auc(exp.task, model, client, exp.spec.seed)


def _upload(exp, schema: Schema, ctx: LocalContext, result: Any) -> dict[str, torch.Tensor]:
    """The tensors this client sends: the delta of every shared tensor by default, else
    what the method's ``LocalResult.upload`` names (checked against the schema); nothing from
    a method that is not ``federated``."""
    if not exp.method.federated:
        return {}
    if result.upload is None:
        return ctx.delta() if exp.parts.shared else {}
    allowed = set(exp.parts.shared) | set(exp.parts.messages)
    bad = sorted(set(result.upload) - allowed)
    if bad:
        raise ValueError(f"method {exp.spec.method!r} uploaded {bad[0]!r}, which is neither a shared tensor nor one of its messages")
    for name, t in result.upload.items():
        want = tuple(schema.shapes[schema.names.index(name)])
        if tuple(t.shape) != want:
            raise ValueError(f"method {exp.spec.method!r} uploaded {name!r} with shape {tuple(t.shape)}, expected {want}")
    return dict(result.upload)


def client_generator(seed: int, round_idx: int, client: int) -> torch.Generator:
    """The client-round generator: data order and every draw of the local update."""
    import numpy as np

    state = np.random.SeedSequence([seed, round_idx, client, CLIENT_TAG]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


CLIENT_TAG = 3  # keeps the client generators apart from the engine's (sampling 1, channel 2, init 4)
