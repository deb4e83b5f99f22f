"""RunSpec: everything that defines one federated experiment.

Frozen and validated on construction; its canonical JSON (sorted keys, no whitespace)
is hashed into the run id, so the same spec always gets the same id.

A value type only: building the spec of a command line from the task card's and the
method's defaults is ``pflbench.federation.resolve.resolve_spec``, one layer above the
things it resolves.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

from pflbench.errors import UserError

if TYPE_CHECKING:  # annotations only: the value types need no torch at run time
    import torch


PRECISIONS = ("fp32", "bf16")  # --precision (pflbench.models.precision)
INITS = ("pretrained", "random")  # --init (pflbench.models.random_model)
MAX_BATCH = 4096  # examples per local step; far above any fine-tuning batch, far below an allocation failure


@dataclass(frozen=True)
class RunSpec:
    method: str = "fedavg-lora"
    task: str = "shakespeare-roles"
    model: str = "tiny"
    channel: str = "ideal"
    # who transmits each round (``channel.scheduling``); left out of the spec's JSON at
    # "random", the uniform draw every earlier record used, so their run ids stay
    scheduler: str = "random"
    codec: str = "fp32"
    clients: int = 8
    clients_per_round: int = 4
    rounds: int = 5
    local_steps: int = 20
    batch_size: int = 8
    lr: float | None = None  # None: the method's own default
    seed: int = 0
    eval_every: int = 0  # 0: evaluate after the last round only
    method_options: dict[str, str] = field(default_factory=dict)
    device: str = "cpu"  # where it trains (cpu, cuda, cuda:N): results may differ across devices
    # sampled clients trained in one pass (``federation.batched``): a positive integer or
    # "auto" (the CLI's and suites' default). Results agree with 1 (one client after another)
    # within a floating-point tolerance, not bit for bit, so it is part of the run id; at 1 it
    # is left out of the spec's JSON, which keeps the run ids of records from before it
    parallel_clients: int | str = 1
    # numeric precision (``models.precision``): fp32, or bf16 (the frozen base in bf16 under
    # autocast, trained tensors in fp32); left out of the spec's JSON at fp32, like parallel_clients
    precision: str = "fp32"
    # the model's weights: "pretrained", or "random" (its architecture with random weights, for
    # timing a model's size without its weights; left out of the tables and, at "pretrained",
    # of the spec's JSON)
    init: str = "pretrained"
    # where a task given as a card file was read from (``task`` is then the card's identity,
    # ``NAME@HASH``, ``data.cards.card_identity``): how to find it, not what it is, so it is
    # carried to workers and written in the record but is no part of the run id
    card: str = ""
    # client-level differential privacy on the uplink (``federation.privacy``, ``parse_dp``):
    # {} (none, left out of the spec's JSON) or {clip, noise, mode: local | central, delta}
    dp: dict[str, Any] = field(default_factory=dict)
    # score a loss-threshold membership-inference attack at every evaluation
    # (``evaluation.membership``); left out of the spec's JSON when off
    membership: bool = False
    # pairwise-masked secure aggregation (``federation.secagg``); left out of the spec's JSON when off
    secagg: bool = False
    # what else changes a result, filled by ``federation.resolve.resolve_spec``: the suite's version, the method's
    # package, version and code, the data actually read (see docs/results.md)
    provenance: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("clients", "clients_per_round", "rounds", "local_steps", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise UserError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}")
        if self.batch_size > MAX_BATCH:
            raise UserError(f"--batch-size {self.batch_size} is beyond what a step holds in memory; at most {MAX_BATCH}")
        if self.clients_per_round > self.clients:
            raise UserError(
                f"--clients-per-round ({self.clients_per_round}) cannot exceed --clients ({self.clients})"
            )
        if self.eval_every < 0:
            raise UserError(f"--eval-every must be 0 (last round only) or positive, got {self.eval_every}")
        if self.lr is not None and (isinstance(self.lr, bool) or not isinstance(self.lr, (int, float))
                                    or not self.lr > 0 or not math.isfinite(self.lr)):
            raise UserError(f"--lr must be a positive finite number, got {self.lr}")
        if self.seed < 0:
            raise UserError(f"--seed must be non-negative, got {self.seed}")
        object.__setattr__(self, "parallel_clients", parse_parallel(self.parallel_clients))
        if self.init not in INITS:
            raise UserError(f"--init must be pretrained or random, got {self.init!r}")
        if self.precision not in PRECISIONS:
            raise UserError(f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        object.__setattr__(self, "dp", parse_dp(self.dp))
        for name in ("membership", "secagg"):
            if not isinstance(getattr(self, name), bool):
                raise UserError(f"{name} must be true or false, got {getattr(self, name)!r}")
        # canonical, immutable-looking copy of the options
        object.__setattr__(self, "method_options", dict(sorted(self.method_options.items())))
        object.__setattr__(self, "provenance", dict(sorted(self.provenance.items())))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if out["parallel_clients"] == 1:
            del out["parallel_clients"]
        if out["precision"] == "fp32":
            del out["precision"]
        if out["init"] == "pretrained":
            del out["init"]
        if out["scheduler"] == "random":
            del out["scheduler"]
        if not out["card"]:
            del out["card"]
        if not out["dp"]:
            del out["dp"]
        if not out["membership"]:
            del out["membership"]
        if not out["secagg"]:
            del out["secagg"]
        return out

    def canonical_json(self) -> str:
        """The spec's identity: every field but ``card`` (a path says where, not what)."""
        out = self.to_dict()
        out.pop("card", None)
        return json.dumps(out, sort_keys=True, separators=(",", ":"))

    @property
    def run_id(self) -> str:
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()[:12]

    def eval_rounds(self) -> set[int]:
        last = {self.rounds}
        if self.eval_every:
            return last | set(range(self.eval_every, self.rounds + 1, self.eval_every))
        return last

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunSpec":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise UserError(f"unknown spec field(s): {', '.join(sorted(unknown))}")
        return cls(**data)


# settings a task card may recommend (``defaults:``), with their types
CARD_DEFAULTS = {"lr": float, "local_steps": int, "rounds": int, "clients": int, "clients_per_round": int,
                 "batch_size": int, "model": str}


DP_MODES = ("local", "central")


def parse_dp(value: str | dict[str, Any] | None) -> dict[str, Any]:
    """``--dp clip=C,noise=Z[,mode=local|central][,delta=D]`` (or the same as a mapping) ->
    ``{clip, noise, mode, delta}`` (delta None: 1 / clients, filled by the accountant); empty:
    no differential privacy. One clear error for anything else."""
    if not value:
        return {}
    if isinstance(value, str):
        pairs = {}
        for part in value.split(","):
            key, sep, v = part.partition("=")
            if not sep or not key.strip():
                raise UserError(f"--dp expects clip=C,noise=Z[,mode=local|central][,delta=D], got {value!r}")
            pairs[key.strip()] = v.strip()
        value = pairs
    if not isinstance(value, dict):
        raise UserError(f"--dp expects clip=C,noise=Z[,mode=local|central][,delta=D], got {value!r}")
    unknown = set(value) - {"clip", "noise", "mode", "delta"}
    if unknown or "clip" not in value or "noise" not in value:
        raise UserError(f"--dp needs clip and noise (and optionally mode, delta); got {', '.join(sorted(value)) or 'nothing'}")

    def number(key: str, low: float, strict: bool) -> float:
        try:
            x = float(value[key])
        except (TypeError, ValueError):
            x = float("nan")
        if isinstance(value[key], bool) or not math.isfinite(x) or x < low or (strict and x == low):
            raise UserError(f"--dp {key} must be a finite number {'>' if strict else '>='} {low:g}, got {value[key]!r}")
        return x

    mode = str(value.get("mode", "local"))
    if mode not in DP_MODES:
        raise UserError(f"--dp mode must be local (each client noises its upload) or central (the server noises the "
                        f"aggregate), got {mode!r}")
    delta = None if value.get("delta") in (None, "") else number("delta", 0.0, True)
    if delta is not None and delta >= 1:
        raise UserError(f"--dp delta must be below 1, got {delta:g}")
    return {"clip": number("clip", 0.0, True), "noise": number("noise", 0.0, False), "mode": mode, "delta": delta}


def parse_parallel(value: int | str) -> int | str:
    """``--parallel-clients``: a positive integer or ``auto``."""
    if value == "auto":
        return value
    try:
        k = int(value)
    except (TypeError, ValueError):
        k = 0
    if isinstance(value, (bool, float)) or k < 1 or str(k) != str(value).strip():
        raise UserError(f"--parallel-clients must be a positive integer or auto, got {value!r}")
    return k


def parse_options(pairs: list[str]) -> dict[str, str]:
    """``["rank=8", "global_part=lora"]`` -> dict; one clear error for a malformed pair."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--opt expects KEY=VALUE, got {pair!r}")
        out[key.strip().replace("-", "_")] = value.strip()
    return out


def parse_seeds(text: str) -> list[int]:
    """``"0-4"``, ``"0,2,5"``, ``"0-2,7"`` -> sorted distinct seeds."""
    seeds: set[int] = set()
    for part in (p.strip() for p in text.split(",")):
        lo, dash, hi = part.partition("-")
        try:
            first, last = int(lo), int(hi if dash else lo)
        except ValueError:
            raise UserError(f"--seeds expects non-negative integers and ranges such as 0-4 or 0,2,5; got {text!r}") from None
        if first < 0 or last < first:
            raise UserError(f"--seeds: {part!r} is not a range of non-negative seeds (low-high)")
        if last - first + 1 + len(seeds) > MAX_SEEDS:  # checked before the range is built
            raise UserError(f"--seeds {text!r} asks for more than {MAX_SEEDS:,} seeds; a sweep of that many runs is not a benchmark")
        seeds.update(range(first, last + 1))
    return sorted(seeds)


MAX_SEEDS = 10_000


@dataclass(frozen=True)
class Update:
    """A delivered upload, decoded: the deltas of the shared tensors it carried (all of them
    unless the client uploaded a subset) and its messages."""

    client: int
    num_samples: int
    delta: dict[str, torch.Tensor]
    messages: dict[str, torch.Tensor] = field(default_factory=dict)
