import pytest

from pflbench.data.cards import resolve_task
from pflbench.data.shakespeare import PRETRAIN_PLAYS, parse_speeches, play_files
from pflbench.models import load_model

SNIPPET = """THE TEMPEST

ACT I. SCENE I.

PROSPERO.
Now I arise: [Resumes his mantle.]
Sit still, and hear the last of our sea-sorrow.

Mir.
Heavens thank you for't!

Enter ARIEL.

ARIEL.
All hail, great master!
"""


def test_speeches_are_split_by_speaker_headings_without_stage_directions():
    assert parse_speeches(SNIPPET) == [
        ("PROSPERO", "Now I arise: Sit still, and hear the last of our sea-sorrow."),
        ("MIR", "Heavens thank you for't!"),
        ("ARIEL", "All hail, great master!"),
    ]


@pytest.fixture(scope="module")
def tokenizer():
    return load_model("tiny").tokenizer


def test_clients_are_characters_of_non_pretraining_plays_with_disjoint_splits(tokenizer):
    task = resolve_task("shakespeare-roles")
    clients = task.clients(tokenizer, 12, seed=0)
    assert len(clients) == 12 and len({c.name for c in clients}) == 12
    assert set(PRETRAIN_PLAYS) <= set(play_files())
    for c in clients:
        assert c.name.split("/")[0] not in PRETRAIN_PLAYS
        assert len(c.train) >= 25 and len(c.test) >= 8
        assert all(len(x.ids) <= task.max_length and x.prompt_len == 0 for x in c.train + c.test)


def test_partition_is_deterministic_for_a_seed(tokenizer):
    task = resolve_task("shakespeare-roles")
    a = task.clients(tokenizer, 6, seed=3)
    b = task.clients(tokenizer, 6, seed=3)
    c = task.clients(tokenizer, 6, seed=4)
    assert [(x.name, x.train, x.test) for x in a] == [(x.name, x.train, x.test) for x in b]
    train_ids = {tuple(e.ids) for e in a[0].train}
    assert not all(tuple(e.ids) in train_ids for e in a[0].test)  # a held-out split, not a copy
    assert [x.name for x in a] != [x.name for x in c]
