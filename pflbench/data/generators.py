"""Registered synthetic generators: deterministic records a card names as
``source: {generator: NAME, ...options}``."""

from __future__ import annotations

from typing import Any

import numpy as np

THINGS = (
    "apples", "rivers", "castles", "violins", "comets", "tigers", "bridges", "lanterns", "gardens", "dragons",
    "mirrors", "islands", "candles", "forests", "harbors", "meadows", "thunder", "winter", "coins", "ships",
    "poems", "clocks", "ravens", "roses", "towers", "storms", "horses", "crowns", "letters", "swords",
)
SENSITIVE = ("locks", "poisons", "weapons", "secrets", "alarms", "fires")

# Each style is a client's own idea of the right answer to "Tell me about X."
STYLES = {
    "terse": lambda x: f"{x}.",
    "eager": lambda x: f"Certainly! {x} are wonderful.",
    "formal": lambda x: f"Regarding {x}: noted.",
    "cautious": lambda x: f"I would rather not discuss {x}.",
}


def synth_prefs(clients: int = 40, per_client: int = 60, seed: int = 0) -> list[dict[str, Any]]:
    """Instruction prompts whose right answer depends on who asks. Client ``u`` has a style
    (``styles[u % 4]``: terse, eager, formal or cautious) and a refusal policy (odd clients
    refuse sensitive topics with "I cannot help with X."). The same prompt has up to five
    right answers across clients, so no single global model can match them all; a client's
    own reference is what it is scored against (exact match)."""
    rng = np.random.default_rng([seed, 0x5EF5])
    names = list(STYLES)
    rows = []
    for u in range(clients):
        style = names[u % len(names)]
        refuses = u % 2 == 1
        for _ in range(per_client):
            sensitive = rng.random() < 0.25
            thing = str(rng.choice(SENSITIVE if sensitive else THINGS))
            answer = f"I cannot help with {thing}." if sensitive and refuses else STYLES[style](thing)
            rows.append({"user": f"user{u:02d}", "style": style, "instruction": f"Tell me about {thing}.", "response": answer})
    return rows


TOPICS = {
    "sports": ("goal", "match", "coach", "league", "striker", "season", "referee", "tournament"),
    "weather": ("rain", "storm", "sunny", "forecast", "cloud", "wind", "snow", "humid"),
    "food": ("bread", "soup", "spice", "recipe", "cheese", "oven", "flavor", "dessert"),
    "music": ("guitar", "melody", "concert", "rhythm", "song", "choir", "drums", "album"),
}
FILLER = ("today", "the", "a", "new", "old", "my", "our", "very", "quite", "again")


def synth_classify(examples: int = 3000, seed: int = 0) -> list[dict[str, Any]]:
    """Short sentences built from topic keywords and filler words, labelled with the topic."""
    rng = np.random.default_rng([seed, 0xC1A5])
    labels = list(TOPICS)
    rows = []
    for i in range(examples):
        label = labels[i % len(labels)]
        words = list(rng.choice(TOPICS[label], 2, replace=False)) + list(rng.choice(FILLER, 3))
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": labels.index(label), "topic": label})
    return rows


GENERATORS = {"synth-prefs": synth_prefs, "synth-classify": synth_classify}
