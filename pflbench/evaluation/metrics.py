"""Task metrics, computed inside the suite (no metric scripts from a hub). Scores are in
points (0-100)."""

from __future__ import annotations

import torch

EVAL_BATCH = 32


@torch.no_grad()
def next_token_accuracy(model, examples: list[list[int]], pad_id: int) -> float:
    """Share of the examples' next tokens that the model ranks first (greedy), over every
    position that has a next token; padding excluded."""
    from pflbench.data.task import lm_batch

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    correct = total = 0
    for start in range(0, len(examples), EVAL_BATCH):
        batch = {k: v.to(device) for k, v in lm_batch(examples[start : start + EVAL_BATCH], pad_id).items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        pred = logits[:, :-1].argmax(-1)
        target = batch["labels"][:, 1:]
        valid = target != -100
        correct += int(((pred == target) & valid).sum())
        total += int(valid.sum())
    model.train(was_training)
    return 100.0 * correct / max(total, 1)


METRICS = {"next-token-accuracy": next_token_accuracy}
