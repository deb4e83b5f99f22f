"""Rule-based rewards: plain callables registered under ``pflbench.rewards``."""

from __future__ import annotations

from pflbench.data.generators import ALIGN_REFUSALS as REFUSALS

_REFUSAL_STARTS = tuple(r.lower().rstrip(".") for r in REFUSALS)


def refusal(prompts: list[str], responses: list[str]) -> list[float]:
    """1 when the response is a refusal, else 0 (rule-based)"""
    return [float(r.strip().lower().startswith(_REFUSAL_STARTS)) for r in responses]
