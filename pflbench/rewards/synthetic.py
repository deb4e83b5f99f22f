"""The offline reward models: helpfulness and harmlessness, trained on deterministic
synthetic preference pairs over the requests of ``synth-align`` (``pflbench.data.generators``).

- **helpful-synth** prefers the true answer to a benign request ("They grow in the north.")
  to a false one, a vague one or a refusal, and complying with a sensitive request to refusing
  or hedging (complying is the helpful thing).
- **harmless-synth** prefers refusing a sensitive request to complying with it, and answering a
  benign request to refusing or hedging; it has no opinion on which fact is true.

Both also prefer a well-formed answer to a garbled copy of it (words shuffled, repeated,
dropped or cut off, or stray words spliced in), and harmlessness prefers refusing a sensitive
request to an off-topic benign answer, so reinforcement learning cannot please them with
degenerate or evasive text.

So on benign requests the two agree (answer, and only helpfulness knows which answer is
right); on sensitive ones they conflict: the best answer depends on how a client weighs them,
which is what PFIT personalizes.
"""

from __future__ import annotations

import numpy as np

from pflbench.data.generators import (
    ALIGN_COMPLY, ALIGN_FACTS, ALIGN_REFUSALS, ALIGN_VAGUE, SENSITIVE, THINGS, align_answer, align_benign, align_fact,
    align_sensitive,
)
from pflbench.rewards import TrainedReward


def benign_prompt(thing: str) -> str:
    """A benign request as synth-align's card prompts it."""
    return f"Q: {align_benign(thing)}\nA:"


def sensitive_prompt(thing: str) -> str:
    return f"Q: {align_sensitive(thing)}\nA:"


def _pick(rng, options) -> str:
    return " " + options[rng.integers(len(options))]


_WORDS = sorted({w for text in ALIGN_COMPLY + ALIGN_VAGUE + ALIGN_REFUSALS + tuple(align_answer(f) for f in ALIGN_FACTS)
                 for w in text.replace(".", "").split()})


def _off_topic(rng) -> str:
    """A benign answer given to a sensitive request: neither complying nor refusing."""
    return " " + align_answer(ALIGN_FACTS[rng.integers(len(ALIGN_FACTS))])


def garble(rng, text: str) -> str:
    """A degenerate copy of an answer: its words shuffled, one repeated, some dropped, the end
    cut off, or spliced with stray words."""
    words = text.split()
    kind = rng.integers(5)
    if kind == 0:
        words = list(rng.permutation(words))
    elif kind == 1:
        i = rng.integers(len(words))
        words = words[:i] + [words[i]] * int(rng.integers(3, 8)) + words[i:]
    elif kind == 2:
        words = [w for w in words if rng.random() < 0.5] or words[:1]
    elif kind == 3:
        words = words[: max(1, int(rng.integers(1, len(words))))]
    else:
        words = words[: len(words) // 2] + [str(w) for w in rng.choice(_WORDS, int(rng.integers(2, 6)))]
    out = " " + " ".join(words)
    return out if out.strip() != text.strip() else out + " " + words[-1]


class HelpfulSynth(TrainedReward):
    """helpfulness: the true fact beats a false one, a vague answer or a refusal; complying beats refusing (synthetic pairs)"""

    steps = 1000
    lr = 3e-3  # chosen under recipe 2 (1e-3 left false facts at 65% there); recipe 3: 100% held out at 3e-3
    # version 4 (2026-12-06): every (thing, false fact) combination among the negatives, three
    # times over. Version 3 drew about 13 false facts per thing at random from its 7, and
    # ranked the true fact first among the 8 fact answers on only 14 of 30 things (at 100%
    # held-out accuracy: its held-out pairs repeated its training combinations), so RL on
    # SmolLM2 learnt an answer it over-rewarded everywhere; version 4 ranks it first on all
    # 30 (tests/test_rewards.py).
    version = 4
    FALSE_FACT_REPEATS = 3

    def pairs(self):
        rng = np.random.default_rng([self.seed, 0x4E1F])
        out = []
        for thing in THINGS:  # the true fact against each false one
            true = " " + align_answer(align_fact(thing))
            for _ in range(self.FALSE_FACT_REPEATS):
                out += [{"prompt": benign_prompt(thing), "chosen": true, "rejected": " " + align_answer(f)}
                        for f in ALIGN_FACTS if " " + align_answer(f) != true]
        for i in range(800):  # against a vague answer, a refusal, or a garbled copy of itself
            thing = THINGS[i % len(THINGS)]
            true = " " + align_answer(align_fact(thing))
            rejected = _pick(rng, ALIGN_VAGUE + ALIGN_REFUSALS) if i % 2 else garble(rng, true)
            out.append({"prompt": benign_prompt(thing), "chosen": true, "rejected": rejected})
        for i in range(300):
            thing = SENSITIVE[i % len(SENSITIVE)]
            chosen = _pick(rng, ALIGN_COMPLY)
            rejected = _pick(rng, ALIGN_REFUSALS + ALIGN_VAGUE) if i % 2 else garble(rng, chosen)
            out.append({"prompt": sensitive_prompt(thing), "chosen": chosen, "rejected": rejected})
        return out


class HarmlessSynth(TrainedReward):
    """harmlessness: refusing a sensitive request beats complying; answering a benign one beats refusing (synthetic pairs)"""

    steps = 500
    version = 4

    def pairs(self):
        rng = np.random.default_rng([self.seed, 0x4A2F])
        out = []
        for i in range(600):
            thing = SENSITIVE[i % len(SENSITIVE)]
            chosen = _pick(rng, ALIGN_REFUSALS)
            rejected = (_pick(rng, ALIGN_COMPLY), garble(rng, chosen), _off_topic(rng))[i % 3]
            out.append({"prompt": sensitive_prompt(thing), "chosen": chosen, "rejected": rejected})
        for i in range(600):
            thing = THINGS[i % len(THINGS)]
            chosen = " " + align_answer(ALIGN_FACTS[rng.integers(len(ALIGN_FACTS))])
            rejected = _pick(rng, ALIGN_REFUSALS + ALIGN_VAGUE) if i % 2 else garble(rng, chosen)
            out.append({"prompt": benign_prompt(thing), "chosen": chosen, "rejected": rejected})
        return out
