"""The Channel interface.

Each round the engine asks the channel to ``realize`` a link for every sampled client
(rate, SNR, loss probability: drawn from the round's generator), lets the clients encode
their uploads, then hands the payloads to ``transmit``, which decides for each one whether
it was delivered, lost or late, and what airtime and energy it cost.

A channel that ``supports_scheduling`` can also realise every client's link before the
round's clients are chosen (``channel.scheduling``): then the engine sets ``per_client``,
and each client's draws come from its own generator, seeded by (seed, round, client), so a
client's channel in a round does not depend on who else was scheduled.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import ClassVar, Sequence

import numpy as np

DELIVERED, LOST, LATE = "delivered", "lost", "late"


@dataclass(frozen=True)
class Link:
    client: int
    rate_bps: float | None  # None: unlimited
    snr_db: float | None
    loss_prob: float = 0.0
    fading: float | None = None  # |g|^2 this round
    path_gain: float | None = None  # linear gain without fading (path loss and shadowing): for allocation
    interference_w: float = 0.0


@dataclass(frozen=True)
class Outcome:
    client: int
    bytes: int
    status: str  # delivered | lost | late
    airtime_s: float
    energy_j: float
    rate_bps: float | None
    snr_db: float | None

    def to_dict(self) -> dict:
        return asdict(self)


class Channel:
    """Base class for channel presets. Subclasses implement ``realize`` and ``transmit``."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    supports_scheduling: ClassVar[bool] = False  # realize(..., share=k) and airtime(...) below
    per_client: bool = False  # set by the engine before setup: per-(seed, round, client) draws
    deadline_s: float | None = None  # the round's deadline a scheduler may plan against
    compute_s: float = 0.0  # a client's local compute time in a round (set in setup)

    @property
    def time_varying(self) -> bool:
        """Whether a round's channel depends on earlier rounds (correlated fading, mobility):
        such a channel draws per client always."""
        return False

    @property
    def draws_per_client(self) -> bool:
        """Each client's draws from its own (seed, round, client) generator, rather than the round's."""
        return self.per_client or self.time_varying

    def airtime(self, link: Link, payload_bytes: int, sharing: int) -> float:
        """Seconds one upload of ``payload_bytes`` takes on ``link`` when ``sharing`` clients
        share the band equally (what a scheduler weighs; ``transmit`` is the real thing)."""
        return 0.0 if link.rate_bps is None else upload_seconds(payload_bytes, link.rate_bps)

    def setup(self, n_clients: int, seed: int, local_steps: int, n_values: int) -> None:
        """Once per run, before the first round: place the clients (seeded), note the local
        steps (compute time) and the number of values a payload carries."""

    def realize(self, round_idx: int, clients: Sequence[int], rng: np.random.Generator,
                share: int | None = None) -> list[Link]:
        """Each client's link this round; ``share``: how many clients share the band (default:
        these clients), given when a scheduler looks at every client's link."""
        raise NotImplementedError

    def transmit(self, payload_bytes: Sequence[int], links: Sequence[Link], rng: np.random.Generator) -> tuple[list[Outcome], float]:
        """Returns one outcome per upload (same order) and the round's latency in seconds."""
        raise NotImplementedError

    def combine(self, updates: list, rng: np.random.Generator) -> list:
        """What the server receives from the delivered updates. Digital channels deliver them
        as they are; over-the-air aggregation returns one noisy superposition."""
        return updates

    def simulate(self, payload_bytes: int, clients_per_round: int, rounds: int = 200, seed: int = 0,
                 local_steps: int = 10, n_values: int | None = None) -> dict[str, np.ndarray]:
        """Many client-rounds of this channel for one payload size: rate, airtime, energy,
        delivered. ``rounds`` rounds of ``clients_per_round`` clients, each round a fresh
        placement draw (the distribution over placements and fading)."""
        n = rounds * clients_per_round
        self.setup(n, seed, local_steps, n_values if n_values is not None else payload_bytes // 4)
        cols: dict[str, list] = {"rate_bps": [], "airtime_s": [], "energy_j": [], "delivered": [], "delivery_prob": []}
        for r in range(rounds):
            rng = np.random.default_rng([seed, r, 0xC4A7])
            clients = list(range(r * clients_per_round, (r + 1) * clients_per_round))
            links = self.realize(r, clients, rng)
            outcomes, _ = self.transmit([payload_bytes] * len(links), links, rng)
            for link, o in zip(links, outcomes):
                cols["rate_bps"].append(np.inf if o.rate_bps is None else o.rate_bps)
                cols["airtime_s"].append(o.airtime_s)
                cols["energy_j"].append(o.energy_j)
                cols["delivered"].append(o.status == DELIVERED)
                cols["delivery_prob"].append(self.delivery_probability(link, o))
        return {k: np.asarray(v) for k, v in cols.items()}

    def delivery_probability(self, link: Link, outcome: Outcome) -> float:
        """Probability that this link delivers, before the random loss draw."""
        return 1.0 if outcome.status == DELIVERED else 0.0


def upload_seconds(payload_bytes: int, rate_bps: float) -> float:
    """8 n / R: the airtime of n bytes at R bit/s (infinite at rate 0)."""
    return 8 * payload_bytes / rate_bps if rate_bps > 0 else math.inf


def link_statistics(sim: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Percentiles (p10, p50, p90) of rate (Mbit/s), airtime (s) and energy (J), and the mean
    and p10 of the delivery probability, over ``Channel.simulate``'s client-rounds."""
    def pct(v: np.ndarray, p: float) -> float:
        with np.errstate(invalid="ignore"):  # inf - inf between two unlimited rates
            q = float(np.percentile(v, p))
        return float("inf") if q != q and not np.isnan(v).any() else q

    stats = {}
    for key, scale, unit in (("rate_bps", 1e-6, "Mbit/s"), ("airtime_s", 1, "s"), ("energy_j", 1, "J")):
        v = sim[key] * scale
        stats[f"{key.split('_')[0]} ({unit})"] = {q: pct(v, p) for q, p in (("p10", 10), ("p50", 50), ("p90", 90))}
    stats["delivery probability"] = {"mean": float(sim["delivery_prob"].mean()), "p10": pct(sim["delivery_prob"], 10)}
    return stats
