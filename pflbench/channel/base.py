"""The Channel interface.

Each round the engine asks the channel to ``realize`` a link for every sampled client
(rate, SNR, loss probability: drawn from the round's generator), lets the clients encode
their uploads, then hands the payloads to ``transmit``, which decides for each one whether
it was delivered, lost or late, and what airtime and energy it cost.
"""

from __future__ import annotations

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

    def realize(self, round_idx: int, clients: Sequence[int], rng: np.random.Generator) -> list[Link]:
        raise NotImplementedError

    def transmit(self, payload_bytes: Sequence[int], links: Sequence[Link], rng: np.random.Generator) -> tuple[list[Outcome], float]:
        """Returns one outcome per upload (same order) and the round's latency in seconds."""
        raise NotImplementedError
