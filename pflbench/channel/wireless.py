"""The wireless uplink every non-ideal run is measured under (docs/channels.md).

Per seed, once: clients are placed uniformly over the area of an annulus [r_min, r_max];
line-of-sight state, path loss and log-normal shadowing are drawn per client.
Per round, per sampled client: Rayleigh block fading |g|^2 ~ Exp(1) (and, where the card
says so, interference), then

    SNR_k[dB] = P_tx - PL_k - X_k + 10 log10 |g_k|^2 - (-174 + 10 log10 B_k + NF + margin)
    R_k       = eta B_k min(log2(1 + SNR_k), SE_max)
    q_k       = 1 - exp(-gamma_th / mean SNR_k)          (mean SNR: without fading)

B_k is the round's uplink bandwidth shared equally among the clients of the round (OFDMA),
or a fixed amount per client. An upload of n bytes takes 8 n / R_k seconds; it is lost with
probability q_k (``drop``) or its airtime is stretched by 1 / (1 - q_k) (``retransmit``);
if compute time plus airtime exceeds the deadline it is late and not aggregated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pflbench.channel import pathloss
from pflbench.channel.base import DELIVERED, LATE, LOST, Channel, Link, Outcome
from pflbench.config import Update

PLACE_TAG = 0x91ACE


def dbm_to_w(dbm: float) -> float:
    return 10 ** ((dbm - 30) / 10)


@dataclass(frozen=True)
class WirelessParams:
    """The fields of a channel card (kind ``ofdma`` or ``aircomp``)."""

    name: str
    description: str
    kind: str = "ofdma"
    r_min: float = 10.0
    r_max: float = 100.0
    h_bs: float = 25.0
    h_ut: float = 1.5
    path_loss: str = "uma"
    fc_ghz: float | None = None
    exponent: float = 2.0  # power-law path loss only
    shadowing_los_db: float = 0.0
    shadowing_nlos_db: float = 0.0
    p_tx_dbm: float = 23.0
    bandwidth_hz: float = 10e6  # the uplink band shared by a round's clients
    bandwidth_share: float = 1.0  # e.g. TDD uplink fraction
    bandwidth_per_client_hz: float | None = None  # a fixed allocation instead of sharing
    eta: float = 1.0
    noise_figure_db: float = 5.0
    margin_db: float = 0.0
    interference_w: tuple[float, float] | None = None  # uniform range, per client-round
    se_max: float | None = None
    gamma_th_db: float = 0.0
    loss_mode: str = "drop"  # drop | retransmit
    deadline_s: float | None = None
    compute_s_per_step: float = 0.0
    compute_power_w: float = 0.0
    # aircomp only
    truncation: float = 0.1  # share of fading states below the inversion threshold
    receive_snr_db: float = 10.0
    source: dict[str, str] = field(default_factory=dict)  # where each number comes from

    def path_params(self) -> dict[str, Any]:
        return {"fc_ghz": self.fc_ghz, "h_bs": self.h_bs, "h_ut": self.h_ut, "exponent": self.exponent}


class WirelessChannel(Channel):
    """OFDMA uplink with path loss, shadowing, block fading, packet errors and a deadline."""

    def __init__(self, params: WirelessParams):
        self.p = params
        self.name = params.name
        self.description = params.description
        self.setup(1, 0, 1, 0)

    # ---- once per run ---------------------------------------------------------------------
    def setup(self, n_clients: int, seed: int, local_steps: int, n_values: int) -> None:
        p = self.p
        rng = np.random.default_rng([seed, PLACE_TAG])
        self.distance = np.sqrt(rng.uniform(p.r_min**2, p.r_max**2, n_clients))
        self.los = rng.random(n_clients) < pathloss.los_probability(p.path_loss, self.distance, p.path_params())
        sigma = np.where(self.los, p.shadowing_los_db, p.shadowing_nlos_db)
        self.shadowing_db = rng.normal(0.0, 1.0, n_clients) * sigma
        self.path_loss_db = pathloss.path_loss(p.path_loss, self.distance, self.los, p.path_params())
        self.compute_s = p.compute_s_per_step * local_steps
        self.n_values = n_values

    # ---- per round --------------------------------------------------------------------------
    def bandwidth(self, k: int) -> float:
        if self.p.bandwidth_per_client_hz:
            return self.p.bandwidth_per_client_hz
        return self.p.bandwidth_hz * self.p.bandwidth_share / max(k, 1)

    def realize(self, round_idx, clients, rng):
        p = self.p
        clients = list(clients)
        k = len(clients)
        b = self.bandwidth(k)
        fading = rng.exponential(1.0, k)
        noise_w = dbm_to_w(-174 + 10 * math.log10(b) + p.noise_figure_db + p.margin_db)
        if p.interference_w:
            noise_w = noise_w + rng.uniform(*p.interference_w, k)
        noise_dbm = 10 * np.log10(noise_w) + 30
        idx = np.array(clients, dtype=int)
        mean_snr_db = p.p_tx_dbm - self.path_loss_db[idx] - self.shadowing_db[idx] - noise_dbm
        snr_db = mean_snr_db + 10 * np.log10(fading)
        se = np.log2(1 + 10 ** (snr_db / 10))
        if p.se_max is not None:
            se = np.minimum(se, p.se_max)
        rate = p.eta * b * se
        q = 1 - np.exp(-(10 ** (p.gamma_th_db / 10)) / 10 ** (mean_snr_db / 10))
        return [Link(c, float(r), float(s), float(l), float(g)) for c, r, s, l, g in zip(clients, rate, snr_db, q, fading)]

    def transmit(self, payload_bytes, links, rng):
        p = self.p
        draws = rng.random(len(links))
        p_w = dbm_to_w(p.p_tx_dbm)
        outcomes = []
        for n, link, u in zip(payload_bytes, links, draws):
            airtime = 8 * n / link.rate_bps if link.rate_bps > 0 else math.inf
            lost = False
            if p.loss_mode == "retransmit":
                airtime /= max(1 - link.loss_prob, 1e-12)
            else:
                lost = u < link.loss_prob
            late = self._late(airtime)
            status = LOST if lost else LATE if late else DELIVERED
            energy = p_w * airtime + p.compute_power_w * self.compute_s
            outcomes.append(Outcome(link.client, int(n), status, airtime, energy, link.rate_bps, link.snr_db))
        return outcomes, self._latency(outcomes)

    def _late(self, airtime: float) -> bool:
        """Compute time plus airtime past the round's deadline."""
        return self.p.deadline_s is not None and self.compute_s + airtime > self.p.deadline_s

    def delivery_probability(self, link: Link, outcome: Outcome) -> float:
        if self._late(outcome.airtime_s):
            return 0.0
        return 1.0 if self.p.loss_mode == "retransmit" else 1.0 - link.loss_prob

    def _latency(self, outcomes: list[Outcome]) -> float:
        done = [self.compute_s + o.airtime_s for o in outcomes if o.status == DELIVERED]
        slowest = max(done) if done else (max((self.compute_s + o.airtime_s for o in outcomes), default=0.0))
        return min(self.p.deadline_s, slowest) if self.p.deadline_s is not None else slowest


class AirCompChannel(WirelessChannel):
    """Over-the-air aggregation with truncated channel inversion.

    Clients whose fading |h|^2 falls below the threshold (the ``truncation`` quantile of
    Exp(1)) stay silent; the others invert their channel and transmit their weighted deltas
    at once on the whole band, so the server receives their weighted mean plus Gaussian noise
    whose variance is the mean's power over the receive SNR. Airtime is the number of values
    (one channel use each) over the bandwidth, whatever the number of clients."""

    def realize(self, round_idx, clients, rng):
        clients = list(clients)
        fading = rng.exponential(1.0, len(clients))
        threshold = -math.log(1 - self.p.truncation)
        return [
            Link(c, None, float(self.p.receive_snr_db), 0.0 if g >= threshold else 1.0, float(g))
            for c, g in zip(clients, fading)
        ]

    def transmit(self, payload_bytes, links, rng):
        b = self.p.bandwidth_hz * self.p.bandwidth_share
        airtime = self.n_values / b
        p_w = dbm_to_w(self.p.p_tx_dbm)
        outcomes = []
        for n, link in zip(payload_bytes, links):
            silent = link.loss_prob >= 1.0
            status = LOST if silent else DELIVERED
            t = 0.0 if silent else airtime
            outcomes.append(Outcome(link.client, int(n), status, t, p_w * t, None, link.snr_db))
        return outcomes, airtime if any(o.status == DELIVERED for o in outcomes) else 0.0

    def combine(self, updates, rng):
        import torch

        if not updates:
            return updates
        total = sum(u.num_samples for u in updates)

        def superpose(field: str) -> dict:
            # each tensor: the sample-weighted mean over the updates that carry it
            names = list(dict.fromkeys(n for u in updates for n in getattr(u, field)))
            out = {}
            for n in names:
                carrying = [u for u in updates if n in getattr(u, field)]
                weight = sum(u.num_samples for u in carrying)
                out[n] = sum(getattr(u, field)[n] * (u.num_samples / weight) for u in carrying)
            return out

        mean, messages = superpose("delta"), superpose("messages")
        values = [*mean.values(), *messages.values()]
        power = sum(float((t.double() ** 2).sum()) for t in values) / max(sum(t.numel() for t in values), 1)
        sigma = math.sqrt(power / 10 ** (self.p.receive_snr_db / 10))
        gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
        noisy = lambda d: {n: t + sigma * torch.randn(t.shape, generator=gen, dtype=t.dtype) for n, t in d.items()}  # noqa: E731
        return [Update(client=-1, num_samples=total, delta=noisy(mean), messages=noisy(messages))]
