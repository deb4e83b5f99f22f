"""RL starting policies: a registered model after a short central SFT on ``chat_demonstrations``
(requests about things and sensitive topics no synth-align client asks about, answered with a
fact, vaguely, or with a refusal), so that it already says every kind of answer synth-align's
reward models tell apart and reinforcement learning has something to choose from.

- ``tiny-chat`` (``models.tiny``): ``tiny`` after 300 steps of batch 32 at lr 2e-3.
- ``smollm2-135m-chat`` (``models.smollm2``): SmolLM2-135M-Instruct after 60 steps of batch 16 at
  lr 1e-4, every weight, fp32 (2 min 20 s on a 2-core Xeon, once; cached like the others). Untuned,
  SmolLM2 answers the invented world's requests with fluent non-answers to which both reward
  models give the same few points (leaderboard/smollm2.md); tuned, it answers in the
  demonstrations' forms and the reward models' points spread over their range.

Both are built on the machine that first needs them, seeded, and cached under ``cache_dir()``.
"""

from __future__ import annotations

from typing import Callable

import torch

from pflbench.data.generators import chat_demonstrations
from pflbench.data.task import Example, lm_batch
from pflbench.models.base import Progress

CHAT_PROMPT = "Q: {question}\nA:"  # the prompt format of synth-align's card
SEED = 1234


def demonstrations(tokenizer) -> list[Example]:
    """``chat_demonstrations`` in synth-align's prompt format, each answer ended by the
    tokenizer's end-of-sequence token, only the answer learnt."""
    out = []
    for question, answer in chat_demonstrations(seed=SEED):
        prompt = tokenizer(CHAT_PROMPT.format(question=question))["input_ids"]
        out.append(Example(prompt + tokenizer(" " + answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id],
                           len(prompt)))
    return out


def tune(model, tokenizer, steps: int, batch_size: int, lr: float, label: str, progress: Progress | None,
         train: Callable) -> tuple[float, int]:
    """``steps`` of AdamW (no weight decay) on batches of demonstrations drawn with the seeded
    generator, through ``train(model, batch, opt, steps, label, progress)``; (the last loss,
    the number of demonstrations)."""
    demos = demonstrations(tokenizer)
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)

    def batch():
        idx = torch.randint(0, len(demos), (batch_size,), generator=gen).tolist()
        return lm_batch([demos[i] for i in idx], tokenizer.pad_token_id)

    return train(model, batch, opt, steps, label, progress), len(demos)
