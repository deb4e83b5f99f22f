"""Wireless uplink models: link realization per round and client, and delivery."""

from pflbench.channel.base import Channel, Link, Outcome

__all__ = ["Channel", "Link", "Outcome"]
