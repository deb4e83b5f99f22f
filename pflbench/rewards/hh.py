"""Reward models trained on Anthropic's hh-rlhf preference pairs (the helpful-base and
harmless-base subsets, each a preference card in ``tasks/``): on the hub data, or offline on a
``--data-dir`` copy named after the card (``DIR/hh-helpful-base.jsonl``, ...)."""

from __future__ import annotations

from pflbench.rewards import CardReward


class HHHelpful(CardReward):
    """helpfulness: trained on hh-rlhf helpful-base pairs (card hh-helpful-base)"""

    card = "hh-helpful-base"
    steps = 200


class HHHarmless(CardReward):
    """harmlessness: trained on hh-rlhf harmless-base pairs (card hh-harmless-base)"""

    card = "hh-harmless-base"
    steps = 200
