"""What a model gives away about a client's training data: a loss-threshold membership-inference
attack (Yeom et al., CSF 2018), scored as an AUC (``--membership``).

The attacker holds a model and an example and guesses "trained on it" when the model finds the
example likely. On each client, members are its own training examples and non-members its
held-out test examples (up to ``MAX_EXAMPLES`` of each, drawn by the run's seed); an example's
score is the model's mean log-probability of its answer tokens (of the whole sequence where the
example is a prompt alone, as on reward cards). The AUC is the probability that a member
scores higher than a non-member (ties half; the Mann-Whitney U statistic over n1 * n2,
``scipy.stats``): 0.5 is a model that tells nothing, 1.0 one that gives every member away.

Scored at the final evaluation on two models of each client: the deployed one (the global
shared tensors with the client's private tensors) and the shared part alone (what the server
and every other client hold). A gap between them is what keeping a private part local buys or
costs: a private LoRA that memorises its client's data leaks through the deployed model, never
through the shared part.
"""

from __future__ import annotations

import numpy as np
import torch

from pflbench.evaluation.metrics import sequence_logprob

MAX_EXAMPLES = 64  # members and non-members per client
MEMBERSHIP_TAG = 0x3E3B  # keeps the example draws apart from every other draw of the seed


def _scored(examples: list) -> tuple[list[list[int]], list[int]]:
    seqs = [e.ids for e in examples]
    starts = [e.prompt_len if 0 < e.prompt_len < len(e.ids) else 1 for e in examples]
    return seqs, starts


def _draw(examples: list, seed: int, client: int, which: int) -> list:
    if len(examples) <= MAX_EXAMPLES:
        return list(examples)
    rng = np.random.default_rng([seed, client, which, MEMBERSHIP_TAG])
    return [examples[i] for i in sorted(rng.choice(len(examples), MAX_EXAMPLES, replace=False))]


def auc(members: list[float], others: list[float]) -> float | None:
    """P(member > non-member), ties half; None without both kinds."""
    if not members or not others:
        return None
    from scipy.stats import mannwhitneyu

    u = mannwhitneyu(members, others, alternative="two-sided").statistic
    return float(u) / (len(members) * len(others))


@torch.no_grad()
def membership_auc(task, model, client, seed: int) -> float | None:
    """The attack's AUC on ``client`` against ``model`` as it stands (the caller puts the
    client's tensors in place)."""
    members, others = _draw(client.train, seed, client.id, 0), _draw(client.test, seed, client.id, 1)
    scores = []
    was_training = model.training
    model.eval()
    try:
        for group in (members, others):
            seqs, starts = _scored(group)
            scores.append(sequence_logprob(model, seqs, starts, task._pad_id, mean=True) if group else [])
    finally:
        model.train(was_training)
    return auc(*scores)
