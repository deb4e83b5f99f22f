"""Task metrics, shipped inside the suite and working offline (the `evaluate` package keeps
its metric scripts on the hub). Scores are in points, 0-100, except perplexity.

String metrics (``exact_match``, ``token_f1``, ``rouge_l``, ``final_number_match``) compare a
prediction with a reference; model metrics score a model on a client's test examples.
Generation uses greedy decoding of at most the card's ``max_new_tokens``, prompts batched.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Optional

import torch

EVAL_BATCH = 32
MANY_BATCH = 256  # sequences per forward when many clients are scored on one model


# ---- string metrics ----------------------------------------------------------------------
def normalize(text: str) -> str:
    """Lower case, no punctuation, no articles, single spaces (SQuAD normalisation)."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(prediction: str, reference: str) -> float:
    return float(normalize(prediction) == normalize(reference))


def token_f1(prediction: str, reference: str) -> float:
    pred, ref = normalize(prediction).split(), normalize(reference).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def rouge_l(prediction: str, reference: str) -> float:
    """F-measure of the longest common subsequence of normalised tokens."""
    pred, ref = normalize(prediction).split(), normalize(reference).split()
    if not pred or not ref:
        return float(pred == ref)
    prev = [0] * (len(ref) + 1)
    for p in pred:
        cur = [0]
        for j, r in enumerate(ref):
            cur.append(prev[j] + 1 if p == r else max(prev[j + 1], cur[j]))
        prev = cur
    lcs = prev[-1]
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(pred), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def final_number(text: str) -> str | None:
    """GSM8K style: the number after '####' if present, else the last number in the text."""
    if "####" in text:
        text = text.split("####")[-1]
    found = _NUMBER.findall(text)
    if not found:
        return None
    value = found[-1].replace(",", "")
    return value.rstrip("0").rstrip(".") if "." in value else value


def final_number_match(prediction: str, reference: str) -> float:
    ref = final_number(reference)
    return float(ref is not None and final_number(prediction) == ref)


def majority_label_scores(clients) -> dict:
    """The reference for label tasks: each client answers every test example with the most
    common label of its own training split (ties: the lowest label index). Accuracy in points."""
    out = []
    for c in clients:
        labels = [e.label for e in c.train if e.label is not None]
        guess = Counter(labels).most_common()[0][0] if labels else None
        hits = sum(e.label == guess for e in c.test)
        out.append({"client": c.id, "score": 100.0 * hits / max(len(c.test), 1)})
    return {"score": sum(c["score"] for c in out) / max(len(out), 1), "clients": out}


# ---- model metrics ----------------------------------------------------------------------
def _device(model) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def _token_stats(task, model, examples, pad_id):
    """(correct top-1 predictions, predicted tokens, summed NLL) over answer tokens."""
    from pflbench.data.task import lm_batch

    correct = total = 0
    nll = 0.0
    for start in range(0, len(examples), EVAL_BATCH):
        batch = {k: v.to(_device(model)) for k, v in lm_batch(examples[start : start + EVAL_BATCH], pad_id).items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()
        target = batch["labels"][:, 1:]
        valid = target != -100
        correct += int(((logits.argmax(-1) == target) & valid).sum())
        total += int(valid.sum())
        nll += float(torch.nn.functional.cross_entropy(logits.transpose(1, 2), target, ignore_index=-100, reduction="sum"))
    return correct, total, nll


@torch.no_grad()
def sequence_logprob(model, sequences: list[list[int]], starts: list[int], pad_id: int, mean: bool = False,
                     batch: int = EVAL_BATCH) -> list[float]:
    """Log-probability of ``seq[start:]`` given ``seq[:start]``, for each sequence."""
    out = []
    for b in range(0, len(sequences), batch):
        seqs, st = sequences[b : b + batch], starts[b : b + batch]
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s)
            mask[i, : len(s)] = 1
        ids, mask = ids.to(_device(model)), mask.to(_device(model))
        logp = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits[:, :-1].float(), -1)
        tok = logp.gather(-1, ids[:, 1:, None])[..., 0]
        for i, (s, start) in enumerate(zip(seqs, st)):
            span = tok[i, max(start - 1, 0) : len(s) - 1]
            out.append(float(span.mean() if mean else span.sum()) if span.numel() else 0.0)
    return out


@torch.no_grad()
def generate(model, prompts: list[list[int]], pad_id: int, eos_id: int, max_new_tokens: int) -> list[list[int]]:
    """Greedy continuations of left-padded prompt batches."""
    from pflbench.data.task import left_padded

    out = []
    was_training = model.training
    model.eval()
    for b in range(0, len(prompts), EVAL_BATCH):
        ids, mask = left_padded(prompts[b : b + EVAL_BATCH], pad_id)
        width = ids.shape[1]
        gen = model.generate(
            input_ids=ids.to(_device(model)), attention_mask=mask.to(_device(model)), max_new_tokens=max_new_tokens,
            do_sample=False, pad_token_id=pad_id, eos_token_id=eos_id, use_cache=True,
        )
        for row in gen[:, width:].tolist():
            out.append(row[: row.index(eos_id)] if eos_id in row else row)
    model.train(was_training)
    return out


@dataclass(frozen=True)
class Metric:
    name: str
    description: str
    score: Callable  # (task, model, examples) -> float, or (task, model, client) with per_client
    higher_is_better: bool = True
    per_client: bool = False  # scored against the client itself (its reward mixture), not its examples alone
    # (task, model, [each client's examples]) -> [each client's score], in one batched pass over
    # them all (many clients on one model: every client that has not trained); None: client
    # by client. Gives what ``score`` gives on each list.
    score_many: Optional[Callable] = None


def _eval_mode(fn):
    def wrapped(task, model, examples):
        was_training = model.training
        model.eval()
        try:
            return fn(task, model, examples)
        finally:
            model.train(was_training)

    return wrapped


@_eval_mode
def _next_token_accuracy(task, model, examples):
    correct, total, _ = _token_stats(task, model, examples, task._pad_id)
    return 100.0 * correct / max(total, 1)


@_eval_mode
def _perplexity(task, model, examples):
    _, total, nll = _token_stats(task, model, examples, task._pad_id)
    return math.exp(nll / max(total, 1))


@_eval_mode
def _label_accuracy_many(task, model, groups):
    """The label whose text is most likely after the prompt (length-normalised) is the
    prediction; one accuracy per group of examples (a client's test split), all groups scored
    in the same batched pass."""
    tok = task._tokenizer
    options = [tok(label, add_special_tokens=False)["input_ids"] for label in task.labels]
    examples = [e for g in groups for e in g]
    seqs, starts = [], []
    for e in examples:
        for opt in options:
            seqs.append(e.prompt + opt)
            starts.append(len(e.prompt))
    # one client keeps the batches it always had; many clients' short sequences go in bigger
    # batches (4x faster per sequence on the tiny model on 2 cores; same scores, tested)
    scores = sequence_logprob(model, seqs, starts, task._pad_id, mean=True,
                              batch=EVAL_BATCH if len(groups) == 1 else MANY_BATCH)
    k = len(options)
    hits = [max(range(k), key=lambda j: scores[i * k + j]) == e.label for i, e in enumerate(examples)]
    out, at = [], 0
    for g in groups:
        out.append(100.0 * sum(hits[at : at + len(g)]) / max(len(g), 1))
        at += len(g)
    return out


def _label_accuracy(task, model, examples):
    return _label_accuracy_many(task, model, [examples])[0]


def _answers(task, model, examples) -> list[str]:
    outputs = generate(model, [e.prompt for e in examples], task._pad_id, task._eos_id, task.max_new_tokens)
    return task._tokenizer.batch_decode(outputs, skip_special_tokens=True)


def _generation_metric(compare):
    @_eval_mode
    def score(task, model, examples):
        texts = _answers(task, model, examples)
        return 100.0 * sum(compare(t, e.reference) for t, e in zip(texts, examples)) / max(len(examples), 1)

    return score


# ---- knowledge and style (synth-world) ------------------------------------------------------
_SLOT = "xslotx"  # stands for the fact while a form is normalised


def has_fact(answer: str, fact: str, choices: list[str]) -> bool:
    """The answer names ``fact`` and none of the other ``choices`` (whole words, normalised)."""
    words = set(normalize(answer).split())
    named = {c for c in choices if normalize(c) in words}
    return normalize(fact) in words and named <= {fact}


def has_form(answer: str, form: str) -> bool:
    """The answer is ``form`` with any one word in the ``{value}`` slot (normalised); a form
    without a slot (a refusal) must match exactly."""
    pattern = re.escape(normalize(form.replace("{value}", _SLOT))).replace(_SLOT, r"\S+")
    return re.fullmatch(pattern, normalize(answer)) is not None


@_eval_mode
def _knowledge_style(task, model, examples):
    """Per answer: ``knowledge`` (it carries the record's ``value``; not asked where the
    client declines, ``value`` null) and ``style`` (it has the client's ``form``). The score
    of an answer is the mean of the two (style alone where the client declines); ``knowledge``
    is also split by the record's ``seen`` (the client trained on this entity, or not)."""
    texts = _answers(task, model, examples)
    scores, style, know = [], [], {True: [], False: []}
    for text, e in zip(texts, examples):
        m = e.meta
        s = float(has_form(text, m["form"]))
        style.append(s)
        if m.get("value") is None:
            scores.append(s)
        else:
            k = float(has_fact(text, m["value"], m["choices"]))
            know[bool(m.get("seen"))].append(k)
            scores.append((s + k) / 2)
    pct = lambda xs: 100.0 * sum(xs) / len(xs) if xs else None  # noqa: E731
    return {"score": pct(scores), "knowledge": pct(know[True] + know[False]), "knowledge_seen": pct(know[True]),
            "knowledge_unseen": pct(know[False]), "style": pct(style)}


@_eval_mode
def _preference_accuracy(task, model, examples):
    """Share of pairs where the model finds the chosen answer more likely (per token) than
    the rejected one."""
    chosen = sequence_logprob(model, [e.ids for e in examples], [e.prompt_len for e in examples], task._pad_id, mean=True)
    rejected = sequence_logprob(model, [e.rejected for e in examples], [e.prompt_len for e in examples], task._pad_id, mean=True)
    return 100.0 * sum(c > r for c, r in zip(chosen, rejected)) / max(len(examples), 1)


# ---- reward tasks --------------------------------------------------------------------------
def is_refusal(answer: str) -> bool:
    from pflbench.rewards.rules import refusal

    return refusal([""], [answer])[0] > 0


@_eval_mode
def _mixture_reward(task, model, client):
    """The client's own mixture reward of its greedy answers to its held-out prompts, in
    points (``pflbench.rewards.mixture``); each reward model's own points as a sub-score under
    its role; ``refusal_conflict``, the share of conflicting prompts (the card's
    ``conflict_field``) answered with a refusal; ``knowledge``, the share of answers that
    contain their record's reference answer, where it has one (split by the record's ``seen``
    when it has one: the client trained on that prompt, or not)."""
    from pflbench.rewards.mixture import Mixture

    examples = client.test
    texts = _answers(task, model, examples)
    points = task.load_rewards().points([task.prompt_text(e) for e in examples], texts)
    mixed = Mixture.combine(points, client.weights)
    mean = lambda xs: sum(xs) / len(xs) if xs else None  # noqa: E731
    out = {"score": mean(mixed), **{role: mean(v) for role, v in points.items()}}
    if task.conflict_field:
        conflict = [is_refusal(t) for t, e in zip(texts, examples) if e.meta.get(task.conflict_field)]
        out["refusal_conflict"] = 100.0 * mean(conflict) if conflict else None
    know = {True: [], False: []}
    for t, e in zip(texts, examples):
        if e.reference:
            know[bool(e.meta.get("seen", True))].append(float(normalize(e.reference) in normalize(t)))
    if know[True] or know[False]:
        out["knowledge"] = 100.0 * mean(know[True] + know[False])
        if "seen" in examples[0].meta:
            out["knowledge_seen"] = 100.0 * mean(know[True]) if know[True] else None
            out["knowledge_unseen"] = 100.0 * mean(know[False]) if know[False] else None
    return out


METRICS = {m.name: m for m in (
    Metric("next-token-accuracy", "share of answer tokens predicted top-1", _next_token_accuracy),
    Metric("perplexity", "exp of the mean answer-token NLL (lower is better)", _perplexity, higher_is_better=False),
    Metric("label-accuracy", "the most likely label text is the gold one", _label_accuracy, score_many=_label_accuracy_many),
    Metric("exact-match", "greedy answer equals the reference after normalisation", _generation_metric(exact_match)),
    Metric("token-f1", "token-overlap F1 of greedy answer and reference", _generation_metric(token_f1)),
    Metric("rouge-l", "longest-common-subsequence F1 of greedy answer and reference", _generation_metric(rouge_l)),
    Metric("final-number", "GSM8K: the greedy answer's final number equals the reference's", _generation_metric(final_number_match)),
    Metric("preference-accuracy", "chosen answer more likely than rejected, per token", _preference_accuracy),
    Metric("knowledge-style", "mean of knowledge (the right fact) and style (the client's form) of greedy answers", _knowledge_style),
    Metric("mixture-reward", "the client's own mixture of the card's reward models on its greedy answers (reward cards)",
           _mixture_reward, per_client=True),
)}
TOKEN_METRICS = ("next-token-accuracy", "perplexity")  # averaged over target tokens; the others over answers
