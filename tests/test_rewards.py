"""Reward models: the registry, the synthetic helpfulness and harmlessness models trained
with trl's RewardTrainer (cached), a rule reward, and the command line."""

import json

import pytest

from pflbench.rewards import resolve_reward
from pflbench.data.generators import ALIGN_COMPLY as SENSITIVE_HOW, ALIGN_REFUSALS as REFUSALS
from pflbench.rewards.synthetic import benign_prompt, sensitive_prompt
from pflbench.rewards.training import preference_accuracy, split_pairs


@pytest.fixture(scope="module")
def trained():
    return {name: resolve_reward(name) for name in ("helpful-synth", "harmless-synth")}


@pytest.mark.parametrize("name", ["helpful-synth", "harmless-synth"])
def test_synthetic_reward_models_reach_90_percent_held_out(trained, name):
    reward = trained[name]
    assert reward.meta["held_out_accuracy"] >= 90
    # recomputed here from the held-out pairs, with the cached model
    _, test = split_pairs(reward.pairs(), reward.seed)
    assert preference_accuracy(reward, test) == pytest.approx(reward.meta["held_out_accuracy"])


def test_helpfulness_knows_each_things_true_fact(trained):
    """For every benign thing of synth-align, helpful-synth scores its true fact above each of
    the seven false ones, by at least 5 points: a reward model that preferred one answer
    everywhere would let RL learn that answer instead of the facts (version 3 ranked the
    true fact first on 14 of 30 things, leaderboard/smollm2.md)."""
    from pflbench.data.generators import ALIGN_FACTS, THINGS, align_answer, align_fact

    answers = [" " + align_answer(f) for f in ALIGN_FACTS]
    for thing in THINGS:
        points = trained["helpful-synth"].points([benign_prompt(thing)] * len(answers), answers)
        true = answers.index(" " + align_answer(align_fact(thing)))
        assert all(points[true] > p + 5 for i, p in enumerate(points) if i != true), (thing, points)


def test_a_cached_reload_scores_identically(trained):
    again = resolve_reward("helpful-synth")  # read back from the cache, not retrained
    prompts = [benign_prompt("rivers"), sensitive_prompt("poisons")]
    responses = [" They grow in the north.", " I cannot help with that."]
    assert again.score(prompts, responses) == trained["helpful-synth"].score(prompts, responses)


def test_the_two_models_disagree_on_sensitive_requests(trained):
    """Helpfulness prefers complying with a sensitive request, harmlessness refusing it: the
    conflict a client's mixture weight resolves."""
    prompts = [sensitive_prompt(t) for t in ("locks", "fires", "alarms")]
    comply = [" " + SENSITIVE_HOW[0]] * 3
    refuse = [" " + REFUSALS[1]] * 3
    for name, prefers_refusal in (("helpful-synth", False), ("harmless-synth", True)):
        r = trained[name]
        wins = [a > b for a, b in zip(r.score(prompts, refuse), r.score(prompts, comply))]
        assert all(w == prefers_refusal for w in wins), name


def test_a_registered_callable_is_a_rule_reward():
    reward = resolve_reward("refusal")
    assert reward.kind == "rule"
    assert reward.score(["q", "q"], [" I cannot help with that.", " Rivers shine at night."]) == [1.0, 0.0]


def test_list_and_show_rewards(cli):
    code, out, _ = cli("list", "rewards", "--json")
    rows = {r["name"]: r for r in json.loads(out)}
    assert code == 0 and rows["helpful-synth"]["kind"] == "trained" and rows["refusal"]["kind"] == "rule"
    code, out, _ = cli("reward", "show", "harmless-synth", "--json")
    info = json.loads(out)
    assert code == 0 and info["held_out_accuracy"] >= 90 and info["backbone"] == "tiny"


def test_an_unknown_reward_offline_is_one_line(cli):
    code, out, err = cli("reward", "show", "no/such-reward-model")
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith("error: cannot load reward model 'no/such-reward-model'") and "helpful-synth" in err
