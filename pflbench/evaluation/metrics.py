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

from pflbench.data.task import left_padded, lm_batch
from pflbench.registry import Entry
from pflbench.rewards import load_rewards
from pflbench.rewards.mixture import Mixture
from pflbench.rewards.rules import refusal

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
# Every model metric scores groups of examples (one group: a client's test split) in one
# batched pass: ``score_many(task, model, groups, route)``; ``score`` is its one-group case,
# in the batches of EVAL_BATCH it always had. ``route`` (``federation.batched``): each group is
# a client with adapters of its own, stacked; before each forward, ``route.rows`` says whose
# each row of the batch is. Without it, every group is scored on the one model.
def _device(model) -> torch.device:
    return next(model.parameters()).device


def _batches(n: int, size: int):
    return [(b, min(b + size, n)) for b in range(0, n, size)]


def _route(route, owners: list[int], b: int, e: int, device) -> None:
    if route is not None:
        route.rows = torch.tensor(owners[b:e], device=device)


def _rows_per_batch(groups, width: int, vocab: int) -> int:
    """EVAL_BATCH for one group; for many, as many rows as keep a batch's logits near 256 MB."""
    return EVAL_BATCH if len(groups) == 1 else max(EVAL_BATCH, min(MANY_BATCH, 2**26 // max(width * vocab, 1)))


def _owners(groups, per_item: int = 1) -> list[int]:
    return [g for g, items in enumerate(groups) for _ in items for _ in range(per_item)]


@torch.no_grad()
def _token_stats(model, groups, pad_id, route=None):
    """Per group: (correct top-1 predictions, predicted tokens, summed NLL) over answer tokens."""

    examples, owners = [e for g in groups for e in g], _owners(groups)
    stats = [[0, 0, 0.0] for _ in groups]
    if not examples:
        return stats
    vocab = model.get_output_embeddings().weight.shape[0] if model.get_output_embeddings() is not None else 1
    size = _rows_per_batch(groups, max(len(e.ids) for e in examples), vocab)
    for b, e in _batches(len(examples), size):
        _route(route, owners, b, e, _device(model))
        batch = {k: v.to(_device(model)) for k, v in lm_batch(examples[b:e], pad_id).items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()
        target = batch["labels"][:, 1:]
        valid = target != -100
        hit = (logits.argmax(-1) == target) & valid
        rows = torch.tensor(owners[b:e])
        for g in rows.unique().tolist():
            mine = (rows == g).to(logits.device)
            stats[g][0] += int(hit[mine].sum())
            stats[g][1] += int(valid[mine].sum())
            stats[g][2] += float(torch.nn.functional.cross_entropy(logits[mine].transpose(1, 2), target[mine],
                                                                   ignore_index=-100, reduction="sum"))
    return stats


@torch.no_grad()
def sequence_logprob(model, sequences: list[list[int]], starts: list[int], pad_id: int, mean: bool = False,
                     batch: int = EVAL_BATCH, owners: list[int] | None = None, route=None) -> list[float]:
    """Log-probability of ``seq[start:]`` given ``seq[:start]``, for each sequence
    (``owners``/``route``: whose adapters score each sequence, see above)."""
    out = []
    for b, e in _batches(len(sequences), batch):
        _route(route, owners, b, e, _device(model))
        seqs, st = sequences[b:e], starts[b:e]
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
def generate(model, prompts: list[list[int]], pad_id: int, eos_id: int, max_new_tokens: int,
             owners: list[int] | None = None, route=None) -> list[list[int]]:
    """Greedy continuations of left-padded prompt batches (``owners``/``route``: whose
    adapters answer each prompt, see above)."""

    out = []
    was_training = model.training
    model.eval()
    for b, e in _batches(len(prompts), EVAL_BATCH):
        _route(route, owners, b, e, _device(model))
        ids, mask = left_padded(prompts[b:e], pad_id)
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
    # (task, model, groups, route=None) -> one score per group (a float, or a dict with
    # "score" and sub-scores): see above
    score_many: Optional[Callable] = None
    higher_is_better: bool = True
    # scored against the client itself (its reward mixture), not its examples alone:
    # ``score_client(task, model, client)``, client by client
    score_client: Optional[Callable] = None
    # scored on greedy generations of up to the card's max_new_tokens after each prompt
    generates: bool = False

    @property
    def per_client(self) -> bool:
        return self.score_client is not None

    def score(self, task, model, examples):
        return self.score_many(task, model, [examples])[0]


def _eval_mode(fn):
    def wrapped(task, model, *args, **kwargs):
        was_training = model.training
        model.eval()
        try:
            return fn(task, model, *args, **kwargs)
        finally:
            model.train(was_training)

    return wrapped


@_eval_mode
def _next_token_accuracy(task, model, groups, route=None):
    return [100.0 * c / max(t, 1) for c, t, _ in _token_stats(model, groups, task._pad_id, route)]


@_eval_mode
def _perplexity(task, model, groups, route=None):
    return [math.exp(nll / max(t, 1)) for _, t, nll in _token_stats(model, groups, task._pad_id, route)]


@_eval_mode
def _label_accuracy(task, model, groups, route=None):
    """The label whose text is most likely after the prompt (length-normalised) is the
    prediction; one accuracy per group of examples."""
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
    k = len(options)
    scores = sequence_logprob(model, seqs, starts, task._pad_id, mean=True,
                              batch=EVAL_BATCH if len(groups) == 1 else MANY_BATCH, owners=_owners(groups, k), route=route)
    hits = [max(range(k), key=lambda j: scores[i * k + j]) == e.label for i, e in enumerate(examples)]
    return _per_group(groups, hits, lambda xs: 100.0 * sum(xs) / max(len(xs), 1))


def _per_group(groups, values: list, reduce: Callable) -> list:
    out, at = [], 0
    for g in groups:
        out.append(reduce(values[at : at + len(g)]))
        at += len(g)
    return out


def _answers(task, model, groups, route=None) -> list[str]:
    examples = [e for g in groups for e in g]
    outputs = generate(model, [e.prompt for e in examples], task._pad_id, task._eos_id, task.max_new_tokens,
                       _owners(groups), route)
    return task._tokenizer.batch_decode(outputs, skip_special_tokens=True)


def _generation_metric(compare):
    @_eval_mode
    def score_many(task, model, groups, route=None):
        texts = _answers(task, model, groups, route)
        hits = [compare(t, e.reference) for t, e in zip(texts, (e for g in groups for e in g))]
        return _per_group(groups, hits, lambda xs: 100.0 * sum(xs) / max(len(xs), 1))

    return score_many


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
def _knowledge_style(task, model, groups, route=None):
    texts = _answers(task, model, groups, route)
    return _per_group(groups, list(zip(texts, (e for g in groups for e in g))), _knowledge_style_of)


def _knowledge_style_of(answers: list) -> dict:
    """Per answer: ``knowledge`` (it carries the record's ``value``; not asked where the
    client declines, ``value`` null) and ``style`` (it has the client's ``form``). The score
    of an answer is the mean of the two (style alone where the client declines); ``knowledge``
    is also split by the record's ``seen`` (the client trained on this entity, or not).
    ``answers``: (text, example) pairs of one client."""
    scores, style, know = [], [], {True: [], False: []}
    for text, e in answers:
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
def _preference_accuracy(task, model, groups, route=None):
    """Share of pairs where the model finds the chosen answer more likely (per token) than
    the rejected one."""
    examples, owners = [e for g in groups for e in g], _owners(groups)
    starts = [e.prompt_len for e in examples]
    chosen = sequence_logprob(model, [e.ids for e in examples], starts, task._pad_id, mean=True, owners=owners, route=route)
    rejected = sequence_logprob(model, [e.rejected for e in examples], starts, task._pad_id, mean=True, owners=owners, route=route)
    return _per_group(groups, [c > r for c, r in zip(chosen, rejected)], lambda xs: 100.0 * sum(xs) / max(len(xs), 1))


# ---- reward tasks --------------------------------------------------------------------------
def is_refusal(answer: str) -> bool:

    return refusal([""], [answer])[0] > 0


@_eval_mode
def _mixture_reward(task, model, client):
    """The client's own mixture reward of its greedy answers to its held-out prompts, in
    points (``pflbench.rewards.mixture``); each reward model's own points as a sub-score under
    its role; ``refusal_conflict``, the share of conflicting prompts (the card's
    ``conflict_field``) answered with a refusal; ``knowledge``, the share of answers that
    contain their record's reference answer, where it has one (split by the record's ``seen``
    when it has one: the client trained on that prompt, or not)."""

    examples = client.test
    texts = _answers(task, model, [examples])
    points = load_rewards(task).points([task.prompt_text(e) for e in examples], texts)
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
    Metric("label-accuracy", "the most likely label text is the gold one", _label_accuracy),
    Metric("exact-match", "greedy answer equals the reference after normalisation", _generation_metric(exact_match), generates=True),
    Metric("token-f1", "token-overlap F1 of greedy answer and reference", _generation_metric(token_f1), generates=True),
    Metric("rouge-l", "longest-common-subsequence F1 of greedy answer and reference", _generation_metric(rouge_l), generates=True),
    Metric("final-number", "GSM8K: the greedy answer's final number equals the reference's", _generation_metric(final_number_match), generates=True),
    Metric("preference-accuracy", "chosen answer more likely than rejected, per token", _preference_accuracy),
    Metric("knowledge-style", "mean of knowledge (the right fact) and style (the client's form) of greedy answers", _knowledge_style,
           generates=True),
    Metric("mixture-reward", "the client's own mixture of the card's reward models on its greedy answers (reward cards)",
           score_client=_mixture_reward, generates=True),
)}
TOKEN_METRICS = ("next-token-accuracy", "perplexity")  # averaged over target tokens; the others over answers


# ---- scoring a task's clients ------------------------------------------------------------
def evaluate_clients(task, model, clients: list, route=None) -> list[dict[str, float]]:
    """``{"score": ...}`` of each client on its test split, plus the metric's diagnostic
    sub-scores where it has some (``knowledge-style``: knowledge, style, ...), all in one
    batched pass (``Metric.score_many``): on the one model, or with ``route`` each client
    through its own stacked adapters (``federation.batched``). A metric scored against the
    client itself (its reward mixture) goes client by client, and takes no ``route``."""
    metric = METRICS[task.metric]
    if metric.per_client:
        if route is not None:
            raise ValueError(f"metric {task.metric} scores client by client: it cannot score stacked clients")
        values = [metric.score_client(task, model, c) for c in clients]
    else:
        values = metric.score_many(task, model, [c.test for c in clients], route) if clients else []
    return [dict(v) if isinstance(v, dict) else {"score": v} for v in values]


def evaluate(task, model, client) -> dict[str, float]:
    """``evaluate_clients`` of one client."""
    return evaluate_clients(task, model, [client])[0]


def score(task, model, client) -> float:
    return evaluate(task, model, client)["score"]


def test_units(task, client) -> int:
    """What the task's metric averages over on this client's test split: target tokens for
    token metrics, answers (examples) for the others."""
    if task.metric in TOKEN_METRICS:
        return sum(len(e.ids) - max(e.prompt_len, 1) for e in client.test)
    return len(client.test)


def metric_entries() -> dict:
    """The built-in metrics as registry entries (the ``pflbench.sources`` entry point named
    ``metric``): a task card names one of them."""
    return {name: Entry(name, lambda m=m: m, f"pflbench.evaluation.metrics:{name}") for name, m in METRICS.items()}
