"""Schedulers: which clients transmit this round (docs/channels.md, "Scheduling").

Before the uplink a base station knows this round's link realisation of every client (rate,
SNR, loss probability), the size of an upload and each client's history. A scheduler turns
that into the clients scheduled this round. The built-ins follow the wireless-FL literature
(Yang, Liu, Quek and Poor, IEEE TCOM 2020: random, round robin, proportional fair; age-based
scheduling, Yang et al. 2020 and Amiri et al. 2021; deadline-aware selection, Shi et al.,
IEEE TWC 2021). A plugin scheduler is a class with ``select`` (and, when it keeps any, its
state), registered under the entry-point group ``pflbench.schedulers``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import numpy as np

from pflbench.channel.base import Link
from pflbench.errors import UserError

@dataclass(frozen=True)
class History:
    """One client's record before this round: rounds it was scheduled, updates it delivered,
    and rounds since its last delivered update (the round number itself if none arrived yet)."""

    scheduled: int = 0
    delivered: int = 0
    age: int = 0


@dataclass(frozen=True)
class View:
    """What a scheduler sees before the uplink of round ``round`` (1-based)."""

    round: int
    clients: int  # clients 0 .. clients-1
    k: int  # clients per round: how many to schedule (deadline-aware may schedule fewer)
    links: dict[int, Link]  # every client's link, its rate at an equal share of the band among k clients
    payload_bytes: int  # one upload's length: the last round's largest, else an encoded zero payload
    history: dict[int, History]
    # airtime(client, m): seconds for one upload when m scheduled clients share the band equally
    airtime: Callable[[int, int], float]
    compute_s: float  # each client's local compute time this round
    deadline_s: float | None  # the channel card's round deadline, if any
    rng: np.random.Generator = field(repr=False)  # seeded by (seed, round): for draws and ties


class Scheduler:
    """Base class. ``select(view)`` returns the clients to schedule. A scheduler that keeps
    state across rounds (running averages, a pointer) returns it from ``state`` as JSON, is
    given it back by ``load_state`` on resume, and the record holds it per round."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""

    def select(self, view: View) -> list[int]:
        raise NotImplementedError

    def state(self) -> dict[str, Any]:
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what ``state`` returned (a resumed run)."""


def _rate(link: Link) -> float:
    return math.inf if link.rate_bps is None else link.rate_bps


def _top(view: View, key: Callable[[int], float]) -> list[int]:
    """The k clients with the largest key; ties broken by a seeded shuffle."""
    order = view.rng.permutation(view.clients).tolist()
    return sorted(sorted(order, key=lambda c: -key(c))[: view.k])


def uniform_draw(rng: np.random.Generator, clients: int, k: int) -> list[int]:
    """k of the clients drawn uniformly without replacement, sorted: the random scheduler's
    choice, and the engine's draw when no scheduler needs the links first."""
    return sorted(rng.choice(clients, k, replace=False).tolist())


class RandomScheduler(Scheduler):
    """Uniform: k clients drawn without replacement (the suite's default)."""

    name = "random"
    description = "k clients drawn uniformly without replacement, whatever their channel"

    def select(self, view):
        return uniform_draw(view.rng, view.clients, view.k)


class RoundRobin(Scheduler):
    """Clients in turn: round r schedules the k after those of round r - 1."""

    name = "round-robin"
    description = "clients in turn, k a round, whatever their channel"

    def select(self, view):
        start = (view.round - 1) * view.k
        return sorted({(start + i) % view.clients for i in range(view.k)})


class BestChannel(Scheduler):
    """The k clients with the highest rate this round."""

    name = "best-channel"
    description = "the k clients with the highest rate this round (greedy; the far clients may never train)"

    def select(self, view):
        return _top(view, lambda c: _rate(view.links[c]))


class ProportionalFair(Scheduler):
    """The k clients with the highest rate over their running average throughput,
    T <- (1 - 1/tc) T + (1/tc) R (R: the rate if scheduled, else 0), tc rounds."""

    name = "proportional-fair"
    description = "rate over its running average (time constant 10 rounds): good channels, every client in time"
    tc: ClassVar[float] = 10.0

    def __init__(self) -> None:
        self.average: dict[int, float] = {}

    def select(self, view):
        rate = {c: 1.0 if view.links[c].rate_bps is None else view.links[c].rate_bps for c in range(view.clients)}
        for c, r in rate.items():
            self.average.setdefault(c, r)  # the first round's rate: every ratio starts at 1
        chosen = _top(view, lambda c: rate[c] / max(self.average[c], 1e-12))
        for c in range(view.clients):
            self.average[c] = (1 - 1 / self.tc) * self.average[c] + (rate[c] / self.tc if c in chosen else 0.0)
        return chosen

    def state(self):
        return {"average_bps": {str(c): v for c, v in sorted(self.average.items())}}

    def load_state(self, state):
        self.average = {int(c): float(v) for c, v in state.get("average_bps", {}).items()}


class AgeBased(Scheduler):
    """The k clients whose last delivered update is oldest."""

    name = "age-based"
    description = "the k clients whose last delivered update is oldest (age of information)"

    def select(self, view):
        return _top(view, lambda c: view.history[c].age)


class DeadlineAware(Scheduler):
    """The largest set, up to k, whose uploads all fit the deadline: the m fastest clients when
    m share the band, for the largest m that fits. Without a deadline, the k fastest. When not
    even one upload fits, the single fastest client (its update will be late)."""

    name = "deadline-aware"
    description = "the most clients (up to k) whose uploads fit the round's deadline, fastest first"

    def select(self, view):
        for m in range(view.k, 0, -1):
            fastest = sorted(range(view.clients), key=lambda c: (view.airtime(c, m), c))[:m]
            if view.deadline_s is None or all(view.compute_s + view.airtime(c, m) <= view.deadline_s for c in fastest):
                return sorted(fastest)
        return [min(range(view.clients), key=lambda c: (view.airtime(c, 1), c))]


def check_selection(chosen: Any, view: View, name: str) -> list[int]:
    """A scheduler's answer as a sorted list of distinct clients; one clear line otherwise."""
    try:
        out = sorted({int(c) for c in chosen})
    except (TypeError, ValueError):
        raise UserError(f"scheduler {name!r} returned {chosen!r} in round {view.round}, not a list of client ids") from None
    if not out:
        raise UserError(f"scheduler {name!r} scheduled no client in round {view.round}; a round needs at least one")
    bad = [c for c in out if not 0 <= c < view.clients]
    if bad:
        raise UserError(f"scheduler {name!r} scheduled unknown client {bad[0]} in round {view.round} "
                        f"(clients are 0-{view.clients - 1})")
    if len(out) > view.k:
        raise UserError(f"scheduler {name!r} scheduled {len(out)} clients in round {view.round}; at most {view.k} "
                        f"(--clients-per-round)")
    return out


def check_scheduler(obj: Any, name: str, package: str) -> None:
    """What the registry runs on a loaded scheduler: a class with ``select``."""
    if not (isinstance(obj, type) and callable(getattr(obj, "select", None))):
        raise UserError(f"scheduler {name!r} (package {package}) is not a class with a select(view) method")

