"""synth-world, the flagship task: its data, its knowledge-and-style metric, and (slow) the
two effects it exists for, checked over several seeds."""

import pytest

from pflbench.data.generators import WORLD_ATTRIBUTES, WORLD_FORMS, WORLD_REFUSAL, WORLD_SENSITIVE, synth_world
from pflbench.evaluation import metrics
from pflbench.evaluation.metrics import evaluate, has_fact, has_form


def test_each_user_trains_on_its_own_entities_and_is_tested_on_others_too():
    rows = synth_world(users=4, entities_per_user=2, others_per_user=6)
    owners = {}
    for r in rows:
        if r["split"] == "train":
            owners.setdefault(r["entity"], set()).add(r["user"])
    assert all(len(users) == 1 for users in owners.values())  # an entity is trained by one user only
    for u in range(4):
        mine = [r for r in rows if r["user"] == f"user{u:02d}"]
        train = [r for r in mine if r["split"] == "train"]
        test = [r for r in mine if r["split"] == "test"]
        assert len(train) == 2 * len(WORLD_ATTRIBUTES) and all(r["seen"] for r in train)
        assert sum(r["seen"] for r in test) == len(train) and sum(not r["seen"] for r in test) == 6
        assert all(owners[r["entity"]] != {r["user"]} for r in test if not r["seen"])


def test_facts_are_shared_forms_and_refusals_are_per_user():
    rows = synth_world(users=4, entities_per_user=2, others_per_user=6)
    facts = {}
    for r in rows:
        if r["value"] is not None:
            assert facts.setdefault((r["entity"], r["attribute"]), r["value"]) == r["value"]  # one world for all
    for u in range(4):
        mine = [r for r in rows if r["user"] == f"user{u:02d}"]
        for r in mine:
            if u % 2 == 1 and r["attribute"] == WORLD_SENSITIVE:
                assert r["answer"] == WORLD_REFUSAL and r["value"] is None
            else:
                assert r["answer"] == WORLD_FORMS[u % 4].format(value=r["value"])


def test_knowledge_and_form_are_read_from_the_answer():
    choices = ["red", "blue", "green"]
    assert has_fact("Red, certainly!", "red", choices)
    assert not has_fact("blue, certainly!", "red", choices)
    assert not has_fact("red or blue.", "red", choices)  # naming every value is not knowing one
    assert has_form("Blue, certainly!", "{value}, certainly!") and has_form("red.", "{value}.")
    assert not has_form("red.", "{value}, certainly!") and not has_form("Certainly red", "{value}, certainly!")
    assert has_form("I must decline to answer that", WORLD_REFUSAL) and not has_form("red.", WORLD_REFUSAL)


@pytest.fixture(scope="module")
def world():
    from pflbench.data.cards import resolve_task
    from pflbench.models import load_model

    loaded = load_model("tiny")
    task = resolve_task("synth-world")
    return task, task.clients(loaded.tokenizer, 8, seed=0), loaded.model


def test_the_card_splits_by_the_generators_split(world):
    task, clients, _ = world
    for c in clients:
        assert all(e.meta["split"] == "train" for e in c.train) and all(e.meta["split"] == "test" for e in c.test)
        assert {e.meta["entity"] for e in c.train} == {e.meta["entity"] for e in c.test if e.meta["seen"]}


@pytest.mark.parametrize("answers", ["own", "other-form", "nothing"])
def test_knowledge_style_scores_by_hand(world, monkeypatch, answers):
    """The metric over a client's test split, with the model's answers replaced."""
    task, clients, model = world
    client = clients[1]  # an odd user: declines the sensitive attribute
    answered = [e for e in client.test if e.meta["value"] is not None]
    assert 0 < len(answered) < len(client.test)

    def fake(task, model, groups, route=None):
        examples = [e for g in groups for e in g]
        if answers == "own":
            return [e.meta["answer"] for e in examples]
        if answers == "other-form":
            return [WORLD_FORMS[2].format(value=e.meta["value"] or "red") for e in examples]
        return ["" for _ in examples]

    monkeypatch.setattr(metrics, "_answers", fake)
    got = evaluate(task, model, client)
    if answers == "own":
        assert got == pytest.approx({"score": 100, "knowledge": 100, "knowledge_seen": 100, "knowledge_unseen": 100, "style": 100})
    elif answers == "other-form":
        # every fact right, every form wrong: 50 per answered question, 0 per declined one
        assert got["knowledge"] == 100 and got["style"] == 0
        assert got["score"] == pytest.approx(50 * len(answered) / len(client.test))
    else:
        assert got == pytest.approx({"score": 0, "knowledge": 0, "knowledge_seen": 0, "knowledge_unseen": 0, "style": 0})


@pytest.fixture(scope="module")
def references():
    """local-only and fedavg-lora on synth-world at the card's budget, seeds 0-2."""
    from pflbench.federation.resolve import resolve_spec
    from pflbench.federation.engine import run
    from pflbench.results.table import Row

    rows = {}
    for method in ("local-only", "fedavg-lora"):
        row = Row(method, {})
        row.records = [run(resolve_spec(task="synth-world", method=method, seed=seed), None) for seed in (0, 1, 2)]
        rows[method] = row
    return rows


def test_collaboration_teaches_facts_no_client_trained_on(references):
    """What synth-world exists for, part 1: on entities only other clients trained on,
    FedAvg-LoRA knows facts that local-only does not, on every seed and by a clear margin
    (5 seeds in docs/tasks.md: +11.7 resolved at 12 rounds; the card now runs 20)."""
    from pflbench.results.stats import paired

    p = paired(references["fedavg-lora"].per_seed("knowledge_unseen"), references["local-only"].per_seed("knowledge_unseen"))
    assert p.up == 3 and p.diff.mean > 8


def test_personalization_gives_each_client_its_own_form(references):
    """Part 2: local-only answers in the client's own form far more often than the one global
    model, on every seed, and the difference is resolved already on 3 seeds."""
    from pflbench.results.stats import paired

    p = paired(references["local-only"].per_seed("style"), references["fedavg-lora"].per_seed("style"))
    assert p.up == 3 and p.diff.resolved and p.diff.mean > 30
