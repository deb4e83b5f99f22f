"""Metrics on examples checked by hand."""

import math

import pytest

from pflbench.evaluation.metrics import (
    evaluate,
    evaluate_clients,
    exact_match, final_number, final_number_match, normalize, rouge_l, token_f1,
)


def test_normalize_and_exact_match():
    assert normalize("The  Cat, sat!") == "cat sat"
    assert exact_match("Paris.", "paris") == 1.0
    assert exact_match("It is Paris", "Paris") == 0.0


def test_token_f1_by_hand():
    # pred: [cat, sat, on, mat] (the dropped), ref: [cat, sat] -> P 2/4, R 2/2, F1 = 2/3
    assert token_f1("the cat sat on the mat", "a cat sat") == pytest.approx(2 / 3)
    assert token_f1("dog", "cat") == 0.0


def test_rouge_l_by_hand():
    # pred [police, killed, gunman], ref [police, kill, gunman]: LCS 2 -> P = R = 2/3, F = 2/3
    assert rouge_l("police killed the gunman", "police kill the gunman") == pytest.approx(2 / 3)
    # LCS of [a b c d e] and [a c e] is 3: P 3/5, R 1 -> F 0.75 (articles dropped: use letters that are not)
    assert rouge_l("x b y d z", "x y z") == pytest.approx(2 * 0.6 * 1 / 1.6)


def test_final_number_gsm8k_style():
    assert final_number("Natalia sold 48/2 = 24 clips.\n#### 72") == "72"
    assert final_number("so the answer is 1,234.50") == "1234.5"
    assert final_number_match("Thus she has 72 clips.", "48 + 24 = 72\n#### 72") == 1.0
    assert final_number_match("It is 71.", "#### 72") == 0.0
    assert final_number_match("no number", "#### 5") == 0.0


def test_model_metrics_on_a_tiny_model():
    """Label accuracy and next-token accuracy computed against a brute-force count."""
    import torch

    from pflbench.data.cards import resolve_task
    from pflbench.evaluation.metrics import METRICS, sequence_logprob
    from pflbench.models import load_model

    loaded = load_model("tiny")
    task = resolve_task("synth-classify")
    (client,) = task.clients(loaded.tokenizer, 1, seed=0) if False else task.clients(loaded.tokenizer, 2, seed=0)[:1]
    examples = client.test[:10]
    acc = METRICS["label-accuracy"].score(task, loaded.model, examples)
    # by hand: the label with the highest mean log-probability after the prompt
    hits = 0
    for e in examples:
        opts = [loaded.tokenizer(l, add_special_tokens=False)["input_ids"] for l in task.labels]
        s = sequence_logprob(loaded.model, [e.prompt + o for o in opts], [len(e.prompt)] * len(opts), task._pad_id, mean=True)
        hits += max(range(len(opts)), key=lambda j: s[j]) == e.label
    assert acc == pytest.approx(100 * hits / len(examples))

    e = examples[0]
    with torch.no_grad():
        logits = loaded.model(input_ids=torch.tensor([e.ids])).logits[0]
    pred = logits[:-1].argmax(-1).tolist()
    answer = range(e.prompt_len, len(e.ids))
    expected = 100 * sum(pred[i - 1] == e.ids[i] for i in answer) / len(answer)
    assert METRICS["next-token-accuracy"].score(task, loaded.model, [e]) == pytest.approx(expected)
    ppl = METRICS["perplexity"].score(task, loaded.model, [e])
    logp = torch.log_softmax(logits[:-1], -1)
    nll = -sum(float(logp[i - 1, e.ids[i]]) for i in answer) / len(answer)
    assert ppl == pytest.approx(math.exp(nll), rel=1e-4)


def test_many_clients_on_one_model_score_as_each_client_alone():
    """Task.evaluate_many (label accuracy: every client's sequences in one batched pass, as
    the engine scores every client that has not trained) gives each client's own score."""
    from pflbench.data.cards import resolve_task
    from pflbench.models import load_model

    loaded = load_model("tiny")
    task = resolve_task("synth-classify")
    clients = task.clients(loaded.tokenizer, 6, seed=1)
    alone = [evaluate(task, loaded.model, c) for c in clients]
    together = evaluate_clients(task, loaded.model, clients)
    assert together == alone
    assert len({a["score"] for a in alone}) > 1  # the clients differ, so a mix-up would show
    assert evaluate_clients(task, loaded.model, []) == []
