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

Card options beyond that (docs/channels.md gives the formulas and their sources):
``bandwidth.allocation`` (equal; min-max-airtime: shares that make every upload finish
together; proportional: shares proportional to payload), ``power`` (fixed, or truncated
channel inversion to a target SNR up to ``p_max_dbm``), and ``mobility`` (a speed: fading
correlated across rounds as a Gauss-Markov process with rho = J0(2 pi f_d T), Jakes; with
``waypoints``, random-waypoint movement in the cell, path loss and LOS state recomputed each
round).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pflbench.channel import pathloss
from pflbench.channel.base import DELIVERED, LATE, LOST, Channel, Link, Outcome, upload_seconds
from pflbench.config import Update

PLACE_TAG = 0x91ACE
# per-(seed, round, client) generators of a channel that draws per client
FADE_TAG, LOSS_TAG, INTERFERENCE_TAG, MOVE_TAG, LOS_TAG = 0xFAD, 0x1055, 0x1F, 0x30E, 0x105
ALLOCATIONS = ("equal", "min-max-airtime", "proportional")
POWER_CONTROLS = ("fixed", "inversion")
C = 299_792_458.0


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
    allocation: str = "equal"  # how the band is shared among the round's uploads
    power_control: str = "fixed"  # fixed: p_tx_dbm; inversion: the power that gives target_snr_db, up to p_max_dbm
    target_snr_db: float = 10.0
    p_max_dbm: float | None = None  # default: p_tx_dbm
    speed_kmh: float = 0.0  # 0: fading independent each round, clients static
    round_s: float = 60.0  # time between two rounds' uplinks (Doppler correlation, movement)
    doppler_fc_ghz: float | None = None  # carrier for the Doppler; default path_loss.fc_ghz, else 2 GHz
    waypoints: bool = False  # random-waypoint movement at speed_kmh
    # aircomp only
    truncation: float = 0.1  # share of fading states below the inversion threshold
    receive_snr_db: float = 10.0
    source: dict[str, str] = field(default_factory=dict)  # where each number comes from

    def path_params(self) -> dict[str, Any]:
        return {"fc_ghz": self.fc_ghz, "h_bs": self.h_bs, "h_ut": self.h_ut, "exponent": self.exponent}


class WirelessChannel(Channel):
    """OFDMA uplink with path loss, shadowing, block fading, packet errors and a deadline."""

    supports_scheduling = True

    def __init__(self, params: WirelessParams):
        self.p = params
        self.name = params.name
        self.description = params.description
        self.setup(1, 0, 1, 0)

    @property
    def time_varying(self) -> bool:
        return self.p.speed_kmh > 0

    @property
    def deadline_s(self) -> float | None:  # type: ignore[override]
        return self.p.deadline_s

    # ---- once per run ---------------------------------------------------------------------
    def setup(self, n_clients: int, seed: int, local_steps: int, n_values: int) -> None:
        p = self.p
        rng = np.random.default_rng([seed, PLACE_TAG])
        self.seed, self.n_clients = seed, n_clients
        self.distance = np.sqrt(rng.uniform(p.r_min**2, p.r_max**2, n_clients))
        self.los = rng.random(n_clients) < pathloss.los_probability(p.path_loss, self.distance, p.path_params())
        sigma = np.where(self.los, p.shadowing_los_db, p.shadowing_nlos_db)
        self.shadowing_db = rng.normal(0.0, 1.0, n_clients) * sigma
        self.path_loss_db = pathloss.path_loss(p.path_loss, self.distance, self.los, p.path_params())
        self.compute_s = p.compute_s_per_step * local_steps
        self.n_values = n_values
        self._rounds: dict[int, dict[str, np.ndarray]] = {}  # per-client draws by round (Gauss-Markov, movement)

    # ---- per round --------------------------------------------------------------------------
    def bandwidth(self, k: int) -> float:
        if self.p.bandwidth_per_client_hz:
            return self.p.bandwidth_per_client_hz
        return self.p.bandwidth_hz * self.p.bandwidth_share / max(k, 1)

    def rho(self) -> float:
        """Lag-one correlation of the complex fading between rounds: J0(2 pi f_d T), f_d = v fc / c
        (Jakes' model; Gauss-Markov h_r = rho h_(r-1) + sqrt(1 - rho^2) w_r)."""
        from scipy.special import j0

        p = self.p
        fc = p.doppler_fc_ghz or p.fc_ghz or 2.0
        f_d = p.speed_kmh / 3.6 * fc * 1e9 / C
        return float(j0(2 * math.pi * f_d * p.round_s))

    def _client_round(self, r: int) -> dict[str, np.ndarray]:
        """Every client's draws in round r, each from its own (seed, round, client) generator:
        complex fading (Gauss-Markov across rounds), interference, position and LOS state."""
        if r in self._rounds:
            return self._rounds[r]
        if self.time_varying:  # each round from the one before: fill in any not yet drawn, oldest first
            for earlier in range(max([q for q in self._rounds if q < r], default=0) + 1, r):
                self._client_round(earlier)
        p, n = self.p, self.n_clients
        prev = self._rounds.get(r - 1) if r > 1 and self.time_varying else None
        gens = [np.random.default_rng([self.seed, r, c, FADE_TAG]) for c in range(n)]
        w = np.array([g.normal(0.0, math.sqrt(0.5), 2) for g in gens]) if n else np.zeros((0, 2))
        w = w[:, 0] + 1j * w[:, 1]
        rho = self.rho() if self.time_varying else 0.0
        h = w if prev is None else rho * prev["h"] + math.sqrt(max(1 - rho * rho, 0.0)) * w
        out = {"h": h, "fading": np.abs(h) ** 2}
        if p.interference_w:
            out["interference"] = np.array([np.random.default_rng([self.seed, r, c, INTERFERENCE_TAG]).uniform(*p.interference_w)
                                            for c in range(n)])
        if p.waypoints and p.speed_kmh > 0:
            out.update(self._move(r, prev))
        self._rounds[r] = out
        return out

    def _move(self, r: int, prev: dict[str, np.ndarray] | None) -> dict[str, np.ndarray]:
        """Random waypoint in the annulus: each client walks speed x round_s metres a round
        toward its waypoint, drawing a new one on arrival; path loss and LOS state follow."""
        p, n = self.p, self.n_clients
        step = p.speed_kmh / 3.6 * p.round_s

        def point(g):
            radius, angle = math.sqrt(g.uniform(p.r_min**2, p.r_max**2)), g.uniform(0, 2 * math.pi)
            return np.array([radius * math.cos(angle), radius * math.sin(angle)])

        if prev is None or "pos" not in prev:  # round 1: the placement's distance, a random bearing
            angles = np.array([np.random.default_rng([self.seed, 0, c, MOVE_TAG]).uniform(0, 2 * math.pi) for c in range(n)])
            pos = np.stack([self.distance * np.cos(angles), self.distance * np.sin(angles)], axis=1)
            goal = np.array([point(np.random.default_rng([self.seed, c, MOVE_TAG, 0])) for c in range(n)])
            legs = np.zeros(n, dtype=int)
        else:
            pos, goal, legs = prev["pos"].copy(), prev["goal"].copy(), prev["legs"].copy()
            for c in range(n):
                left = step
                while left > 0:
                    gap = goal[c] - pos[c]
                    dist = float(np.hypot(*gap))
                    if dist > left:
                        pos[c] = pos[c] + gap * (left / dist)
                        break
                    pos[c], left, legs[c] = goal[c].copy(), left - dist, legs[c] + 1
                    goal[c] = point(np.random.default_rng([self.seed, c, MOVE_TAG, int(legs[c])]))
        d = np.maximum(np.hypot(pos[:, 0], pos[:, 1]), max(p.r_min, 1.0))
        los = np.array([np.random.default_rng([self.seed, r, c, LOS_TAG]).random() for c in range(n)]) \
            < pathloss.los_probability(p.path_loss, d, p.path_params())
        return {"pos": pos, "goal": goal, "legs": legs, "distance": d, "los": los,
                "path_loss_db": pathloss.path_loss(p.path_loss, d, los, p.path_params())}

    def _noise_psd_w(self) -> float:
        return dbm_to_w(-174 + self.p.noise_figure_db + self.p.margin_db)

    def realize(self, round_idx, clients, rng, share=None):
        p = self.p
        clients = list(clients)
        k = len(clients)
        b = self.bandwidth(share or k)
        self._current_round = round_idx  # transmit's per-client loss draws are seeded by it
        idx = np.array(clients, dtype=int)
        path_loss_db = self.path_loss_db
        if self.draws_per_client:
            drawn = self._client_round(round_idx)
            fading = drawn["fading"][idx] if k else np.zeros(0)
            interference = drawn["interference"][idx] if "interference" in drawn else 0.0
            path_loss_db = drawn.get("path_loss_db", path_loss_db)
        else:
            fading = rng.exponential(1.0, k)
            interference = rng.uniform(*p.interference_w, k) if p.interference_w else 0.0
        noise_w = dbm_to_w(-174 + 10 * math.log10(b) + p.noise_figure_db + p.margin_db) + interference
        noise_dbm = 10 * np.log10(noise_w) + 30
        mean_snr_db = p.p_tx_dbm - path_loss_db[idx] - self.shadowing_db[idx] - noise_dbm
        snr_db = mean_snr_db + 10 * np.log10(fading)
        se = np.log2(1 + 10 ** (snr_db / 10))
        if p.se_max is not None:
            se = np.minimum(se, p.se_max)
        rate = p.eta * b * se
        q = 1 - np.exp(-(10 ** (p.gamma_th_db / 10)) / 10 ** (mean_snr_db / 10))
        gain = 10 ** (-(path_loss_db[idx] + self.shadowing_db[idx]) / 10)
        interference = np.broadcast_to(np.asarray(interference, dtype=float), (k,))
        return [Link(c, float(r), float(s), float(l), float(g), float(pg), float(i))
                for c, r, s, l, g, pg, i in zip(clients, rate, snr_db, q, fading, gain, interference)]

    # ---- the uplink: allocation, power, airtime ------------------------------------------
    def rate(self, link: Link, bandwidth_hz: float, power_w: float) -> float:
        """eta B min(log2(1 + P G |g|^2 / (N0 B + I)), SE_max): the link's rate on B Hz at P W."""
        p = self.p
        snr = power_w * link.path_gain * link.fading / (self._noise_psd_w() * bandwidth_hz + link.interference_w)
        se = math.log2(1 + snr)
        return p.eta * bandwidth_hz * (min(se, p.se_max) if p.se_max is not None else se)

    def airtime(self, link, payload_bytes, sharing):
        if link.path_gain is None:
            return super().airtime(link, payload_bytes, sharing)
        return upload_seconds(payload_bytes, self.rate(link, self.bandwidth(sharing), dbm_to_w(self.p.p_tx_dbm)))

    def _inversion_power(self, link: Link, bandwidth_hz: float) -> float:
        """The transmit power that makes the received SNR the target (truncated channel inversion)."""
        p = self.p
        return 10 ** (p.target_snr_db / 10) * (self._noise_psd_w() * bandwidth_hz + link.interference_w) / (
            link.path_gain * link.fading)

    def allocate(self, payload_bytes, links) -> tuple[list[float], list[float], list[bool]]:
        """Per upload: bandwidth (Hz), transmit power (W), and whether it transmits at all (a
        client whose inversion power would exceed p_max stays silent). docs/channels.md."""
        p, k = self.p, len(links)
        p_max = dbm_to_w(p.p_max_dbm if p.p_max_dbm is not None else p.p_tx_dbm)
        silent = [False] * k
        if p.power_control == "inversion":  # who can reach the target on an equal share
            silent = [self._inversion_power(l, self.bandwidth(k)) > p_max for l in links]
        sending = [i for i in range(k) if not silent[i]]
        bw = [self.bandwidth(k)] * k
        if p.allocation != "equal" and sending and not p.bandwidth_per_client_hz:
            total = p.bandwidth_hz * p.bandwidth_share
            if p.allocation == "proportional":
                weight = sum(payload_bytes[i] for i in sending)
                for i in sending:
                    bw[i] = total * payload_bytes[i] / weight if weight else total / len(sending)
            else:
                for i, b in zip(sending, self._min_max_airtime([payload_bytes[i] for i in sending],
                                                               [links[i] for i in sending], total)):
                    bw[i] = b
        if p.power_control == "inversion":
            power = [min(self._inversion_power(l, b), p_max) if not s else 0.0 for l, b, s in zip(links, bw, silent)]
        else:
            power = [dbm_to_w(p.p_tx_dbm)] * k
        return bw, power, [not s for s in silent]

    def _min_max_airtime(self, payload_bytes: list[int], links: list[Link], total_hz: float) -> list[float]:
        """Bandwidths summing to the band under which every upload takes the same time t:
        the smallest t for which the bandwidths each needs add up to the band (bisection; each
        link's rate rises with its bandwidth)."""
        inversion = self.p.power_control == "inversion"

        def rate(l: Link, b: float) -> float:
            return self.rate(l, b, self._inversion_power(l, b) if inversion else dbm_to_w(self.p.p_tx_dbm))

        def need(l: Link, n: int, t: float) -> float:  # the bandwidth at which n bytes take t seconds
            lo, hi = 0.0, total_hz
            if rate(l, hi) * t < 8 * n:
                return math.inf
            for _ in range(60):
                mid = (lo + hi) / 2
                lo, hi = (mid, hi) if rate(l, mid) * t < 8 * n else (lo, mid)
            return hi

        equal = total_hz / len(links)
        t_hi = max(8 * n / max(rate(l, equal), 1e-300) for l, n in zip(links, payload_bytes))
        t_lo = 0.0
        for _ in range(60):
            t = (t_lo + t_hi) / 2
            if sum(need(l, n, t) for l, n in zip(links, payload_bytes)) > total_hz:
                t_lo = t
            else:
                t_hi = t
        shares = [need(l, n, t_hi) for l, n in zip(links, payload_bytes)]
        scale = total_hz / sum(shares)  # the last bisection step's slack, spread
        return [b * scale for b in shares]

    def transmit(self, payload_bytes, links, rng):
        p = self.p
        if self.draws_per_client:  # each client's own loss draw
            draws = [np.random.default_rng([self.seed, self._current_round, l.client, LOSS_TAG]).random() for l in links]
        else:
            draws = rng.random(len(links))
        plain = p.allocation == "equal" and p.power_control == "fixed"
        if not plain:
            bw, power, on = self.allocate(list(payload_bytes), list(links))
        outcomes = []
        for i, (n, link, u) in enumerate(zip(payload_bytes, links, draws)):
            if plain:
                rate, p_w, q, snr_db = link.rate_bps, dbm_to_w(p.p_tx_dbm), link.loss_prob, link.snr_db
            elif not on[i]:  # truncated inversion: too weak a channel to reach the target, silent
                outcomes.append(Outcome(link.client, int(n), LOST, 0.0, p.compute_power_w * self.compute_s, 0.0, None))
                continue
            else:
                rate, p_w = self.rate(link, bw[i], power[i]), power[i]
                noise = self._noise_psd_w() * bw[i] + link.interference_w
                snr_db = 10 * math.log10(p_w * link.path_gain * link.fading / noise)
                q = 1 - math.exp(-(10 ** (p.gamma_th_db / 10)) / (p_w * link.path_gain / noise))
            airtime = upload_seconds(n, rate)
            lost = False
            if p.loss_mode == "retransmit":
                airtime /= max(1 - q, 1e-12)
            else:
                lost = u < q
            late = self._late(airtime)
            status = LOST if lost else LATE if late else DELIVERED
            energy = p_w * airtime + p.compute_power_w * self.compute_s
            outcomes.append(Outcome(link.client, int(n), status, airtime, energy, rate, snr_db))
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

    superposes = True  # the clients' analog signals add up in the air (secure aggregation does not compose)

    def realize(self, round_idx, clients, rng, share=None):
        clients = list(clients)
        self._current_round = round_idx
        if self.draws_per_client:
            fading = self._client_round(round_idx)["fading"][np.array(clients, dtype=int)] if clients else np.zeros(0)
        else:
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
