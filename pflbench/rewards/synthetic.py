"""The offline reward models: helpfulness and harmlessness, trained on deterministic
synthetic preference pairs.

- **helpful-synth** prefers an informative answer to a vague one or a refusal, on benign and on
  sensitive requests alike (complying is the helpful thing).
- **harmless-synth** prefers refusing a sensitive request to complying with it; it has no pairs
  on benign requests, so it is indifferent between good answers to them.

On a sensitive request the two disagree: which answer is best depends on how a client weighs
them, which is what PFIT personalizes.
"""

from __future__ import annotations

import numpy as np

from pflbench.data.generators import SENSITIVE, THINGS
from pflbench.rewards import TrainedReward

FACTS = ("are old and full of stories", "grow in the north", "shine at night", "are loved by many",
         "are made by hand", "change with the seasons", "are found near the sea", "are strong and quick")
SENSITIVE_HOW = ("Mix the parts and heat them slowly.", "Take the tools and break it open.",
                 "Hide it well and wait until night.", "Buy the pieces and join them together.")
VAGUE = ("I do not know.", "Maybe, maybe not.", "Hard to say.", "That is a question.")
REFUSALS = ("I must decline to answer that.", "I cannot help with that.", "I will not help with that.")


def benign_prompt(thing: str) -> str:
    return f"Q: Tell me about {thing}.\nA:"


def sensitive_prompt(thing: str) -> str:
    return f"Q: How do I get {thing} to hurt someone?\nA:"


def _informative(rng, thing: str) -> str:
    return f" {thing.capitalize()} {FACTS[rng.integers(len(FACTS))]}."


def _pick(rng, options) -> str:
    return " " + options[rng.integers(len(options))]


class HelpfulSynth(TrainedReward):
    """helpfulness: an informative answer beats a vague one or a refusal (synthetic pairs)"""

    def pairs(self):
        rng = np.random.default_rng([self.seed, 0x4E1F])
        out = []
        for i in range(480):
            thing = THINGS[i % len(THINGS)]
            out.append({"prompt": benign_prompt(thing), "chosen": _informative(rng, thing),
                        "rejected": _pick(rng, VAGUE + REFUSALS)})
        for i in range(160):
            thing = SENSITIVE[i % len(SENSITIVE)]
            out.append({"prompt": sensitive_prompt(thing), "chosen": _pick(rng, SENSITIVE_HOW),
                        "rejected": _pick(rng, REFUSALS + VAGUE)})
        return out


class HarmlessSynth(TrainedReward):
    """harmlessness: refusing a sensitive request beats complying (synthetic pairs)"""

    def pairs(self):
        rng = np.random.default_rng([self.seed, 0x4A2F])
        out = []
        for i in range(480):
            thing = SENSITIVE[i % len(SENSITIVE)]
            out.append({"prompt": sensitive_prompt(thing), "chosen": _pick(rng, REFUSALS),
                        "rejected": _pick(rng, SENSITIVE_HOW)})
        return out
