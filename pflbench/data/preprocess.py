"""Record transforms a card names as ``preprocess:``, for sources whose rows need parsing."""

from __future__ import annotations

import re
from typing import Any

_TURN = re.compile(r"\n\nAssistant:")


def hh_rlhf(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Anthropic hh-rlhf: ``chosen`` and ``rejected`` are whole dialogues
    ("\\n\\nHuman: ... \\n\\nAssistant: ..."); they share everything up to the last
    assistant turn. Adds ``prompt`` (that shared part, ending in "Assistant:"), and the two
    final answers as ``chosen_answer`` and ``rejected_answer``."""
    out = []
    for row in rows:
        chosen, rejected = row["chosen"], row["rejected"]
        cut = [m.end() for m in _TURN.finditer(chosen)]
        if not cut:
            continue
        prompt = chosen[: cut[-1]]
        if not rejected.startswith(prompt):
            # the dialogues diverge earlier: keep the common prefix up to an assistant turn
            common = [c for c in cut if rejected[:c] == chosen[:c]]
            if not common:
                continue
            prompt = chosen[: common[-1]]
        out.append({**row, "prompt": prompt, "chosen_answer": chosen[len(prompt):].strip(),
                    "rejected_answer": rejected[len(prompt):].strip()})
    return out


PREPROCESSORS = {"hh-rlhf": hh_rlhf}
