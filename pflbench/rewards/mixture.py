"""The loaded reward models of a reward card, combined by each client's weights (drawn by
``data.mixture``): r_i = sum_k w_ik R_k.

Rewards are combined on one scale, points (``Reward.points``): for a reward model the suite
trained, 0 is the mean reward of the rejected answers of its held-out preference pairs and 100
the mean of the chosen ones; a rule reward in [0, 1] times 100; a Hugging Face reward model's
sigmoid times 100.
"""

from __future__ import annotations

from typing import Any


class Mixture:
    """The loaded reward models of a reward card, by role."""

    def __init__(self, rewards: dict[str, Any]):
        self.rewards = rewards  # role -> Reward

    def points(self, prompts: list[str], responses: list[str]) -> dict[str, list[float]]:
        """Every role's reward of each (prompt, response), in points."""
        return {role: r.points(prompts, responses) for role, r in self.rewards.items()}

    @staticmethod
    def combine(points: dict[str, list[float]], weights: dict[str, float]) -> list[float]:
        """sum_k w_k R_k, per response."""
        n = len(next(iter(points.values())))
        return [sum(weights[role] * points[role][i] for role in points) for i in range(n)]

    def reward_fn(self, weights: dict[str, float]):
        """A client's reward, ``(prompts, responses) -> list[float]`` in points, for the RL update."""
        return lambda prompts, responses: self.combine(self.points(prompts, responses), weights)
