"""The ideal channel: every update arrives, instantly and for free."""

from __future__ import annotations

from pflbench.channel.base import DELIVERED, Channel, Link, Outcome


class IdealChannel(Channel):
    name = "ideal"
    description = "no losses, no deadline, unlimited rate: zero airtime and energy"
    supports_scheduling = True

    def realize(self, round_idx, clients, rng, share=None):
        return [Link(client=c, rate_bps=None, snr_db=None) for c in clients]

    def transmit(self, payload_bytes, links, rng):
        outcomes = [Outcome(l.client, n, DELIVERED, 0.0, 0.0, None, None) for n, l in zip(payload_bytes, links)]
        return outcomes, 0.0
