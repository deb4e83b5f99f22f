"""Reward tasks (kind ``reward``): cards, each client's mixture of reward models, the RL
objective under every method, and the evaluation by mixture reward (synth-align)."""

import json
from pathlib import Path

import pytest

from pflbench.data.cards import parse_card, resolve_task
from pflbench.data.generators import synth_align
from pflbench.errors import UserError
from pflbench.data.mixture import client_weights
from pflbench.rewards.mixture import Mixture

CARD = {
    "name": "align-test", "kind": "reward", "description": "d", "source": {"generator": "synth-align"},
    "prompt": "Q: {question}\nA:", "partition": {"natural": {"key": "user"}}, "metric": "mixture-reward",
    "rewards": {"helpful": "helpful-synth", "harmless": "harmless-synth"}, "mixture": {"beta": {"a": 0.5, "b": 0.5}},
}


@pytest.mark.parametrize("change, message", [
    ({"rewards": None}, "rewards must map each role"),
    ({"rewards": {"helpful": "helpful-synth", "harmless": "harmless-synth", "third": "refusal"}}, "beta weighs exactly two"),
    ({"mixture": {"beta": {"a": -1, "b": 1}}}, "must be a positive number"),
    ({"mixture": {"uniform": {}}}, "mixture must be one of"),
    ({"metric": "exact-match"}, "scored by metric mixture-reward"),
    ({"temperature": 0}, "temperature: Input should be greater than or equal to 0.01"),
    ({"temperature": 1e-300}, "temperature: Input should be greater than or equal to 0.01"),  # softmax overflow
    ({"group_size": 1}, "group_size: Input should be greater than or equal to 2"),
    ({"group_size": 100000}, "group_size: Input should be less than or equal to 256"),  # killed for memory
    ({"max_new_tokens": 1000000000}, "max_new_tokens: Input should be less than or equal to 4096"),
    ({"kind": "instruction", "reference": "{answer}"}, "belong to cards of kind reward"),
])
def test_bad_reward_cards_are_one_clear_line(change, message):
    card = {k: v for k, v in {**CARD, **change}.items() if v is not None}
    with pytest.raises(UserError, match=message):
        parse_card(card, "card")


def test_drawn_weights_are_fixed_by_seed_and_client_and_sum_to_one():
    spec, roles = {"dirichlet": {"alpha": 1.0}}, ["a", "b", "c"]
    w = client_weights(spec, roles, "user03", [], seed=4)
    assert w == client_weights(spec, roles, "user03", [], seed=4)
    assert sum(w.values()) == pytest.approx(1) and set(w) == set(roles)
    assert w != client_weights(spec, roles, "user03", [], seed=5) and w != client_weights(spec, roles, "user04", [], seed=4)


def test_weights_read_from_a_field_of_the_data():
    rows = [{"w": 0.25}, {"w": 0.25}]
    assert client_weights({"field": "w"}, ["helpful", "harmless"], "u", rows, 0) == {"helpful": 0.25, "harmless": 0.75}
    with pytest.raises(UserError, match="one value of the mixture field"):
        client_weights({"field": "w"}, ["helpful", "harmless"], "u", [{"w": 0.2}, {"w": 0.3}], 0)
    with pytest.raises(UserError, match="must be finite weights, got \\(nan,\\)"):  # not "one value": NaN != NaN
        client_weights({"field": "w"}, ["helpful", "harmless"], "u", [{"w": float("nan")}, {"w": float("nan")}], 0)


def test_mixture_combines_points_with_each_clients_weights():
    points = {"helpful": [100.0, 0.0], "harmless": [0.0, 100.0]}
    assert Mixture.combine(points, {"helpful": 0.8, "harmless": 0.2}) == pytest.approx([80.0, 20.0])


def test_synth_align_splits_own_things_from_others_and_asks_every_sensitive_request():
    rows = synth_align(users=4, things_per_user=3, others_per_user=5, sensitive_train=2)
    for u in range(4):
        mine = [r for r in rows if r["user"] == f"user{u:02d}"]
        trained = {r["thing"] for r in mine if r["split"] == "train"}
        unseen = [r for r in mine if r["split"] == "test" and not r["conflict"] and not r["seen"]]
        assert len(unseen) == 5 and not trained & {r["thing"] for r in unseen}
        assert sum(r["conflict"] for r in mine if r["split"] == "train") == 2
        assert all(r["answer"] is None for r in mine if r["conflict"]) and all(r["answer"] for r in mine if not r["conflict"])


def test_task_show_lists_each_clients_weights(cli):
    code, out, _ = cli("task", "show", "synth-align", "--json")
    clients = json.loads(out)["clients"]
    assert code == 0 and len(clients) == 8
    assert all(c["w_helpful"] + c["w_harmless"] == pytest.approx(1, abs=2e-3) for c in clients)
    code, text, _ = cli("task", "show", "synth-align", "--seed", "1")
    assert code == 0 and "w_helpful" in text and "helpful=helpful-synth" in text


@pytest.fixture(scope="module")
def align_runs():
    """Every built-in method, a couple of small rounds of RL on synth-align."""
    from pflbench import registry
    from pflbench.federation.resolve import resolve_spec
    from pflbench.federation.engine import run

    out = {}
    for method in registry.methods.names():
        spec = resolve_spec(method=method, task="synth-align", clients=4, clients_per_round=2, rounds=2, local_steps=2)
        out[method] = run(spec)
    return out


def test_every_method_runs_the_rl_objective_on_a_reward_card(align_runs):
    for method, record in align_runs.items():
        rounds = record["rounds"]
        assert record["spec"]["model"] == "tiny-chat"  # the card's starting policy
        if method == "local-only" or record["model"]["shared_parameters"] or record["model"]["private_parameters"]:
            assert all(r["train_reward"] is not None for r in rounds), method
        diag = record["summary"]["diagnostics"]
        assert {"helpful", "harmless", "refusal_conflict", "knowledge_unseen"} <= set(diag), method
        assert record["summary"]["rewards"] == {"helpful": diag["helpful"], "harmless": diag["harmless"]}
        weights = record["task"]["weights"]
        assert len(weights) == 4 and record["task"]["rewards"] == {"helpful": "helpful-synth", "harmless": "harmless-synth"}
    # the record names the reward models' builds: one per role, the same in every run, each model its own
    prints = {json.dumps(r["measured_on"]["weights"], sort_keys=True) for r in align_runs.values()}
    assert len(prints) == 1
    fp = next(iter(align_runs.values()))["measured_on"]["weights"]
    assert set(fp["rewards"]) == {"helpful", "harmless"} and len({fp["model"], *fp["rewards"].values()}) == 3


def test_the_score_is_each_clients_own_mixture_of_its_reward_points(align_runs):
    record = align_runs["pfit"]
    for c, w in zip(record["rounds"][-1]["eval"]["clients"], record["task"]["weights"]):
        d = c["diagnostics"]
        assert c["personal"] == pytest.approx(w["helpful"] * d["helpful"] + w["harmless"] * d["harmless"])


def test_the_table_shows_reward_columns(align_runs):
    from pflbench.results.table import render

    text = render(list(align_runs.values()))
    assert "synth-align" in text and "| helpful" in text and "harmless" in text and "refusal conflict" in text


def test_the_rewards_plot_has_a_panel_per_method_and_base(align_runs, tmp_path):
    from pflbench.results.plots import reward_points, reward_scatter

    records = list(align_runs.values())
    points = reward_points(records)
    assert set(points) == {"base", *align_runs}
    assert all(len(v) == 4 for v in points.values())  # 4 clients, one seed; base counted once
    weights = sorted(w["helpful"] for w in records[0]["task"]["weights"])
    assert sorted(p[2] for p in points["pfit"]) == pytest.approx(weights)
    reward_scatter(records, tmp_path / "rewards.png")
    assert (tmp_path / "rewards.png").read_bytes()[:4] == b"\x89PNG"


def test_the_refusal_split_probe_reads_each_methods_records(align_runs, tmp_path):
    """leaderboard/probes/refusal_split.py (the docs' refusal split by helpfulness weight) reads a
    results folder and prints, per method, the refusal rates above and below a weight of one half
    and their gap, as the records say."""
    import subprocess
    import sys

    for method, record in align_runs.items():
        (tmp_path / method).mkdir()
        (tmp_path / method / "record.json").write_text(json.dumps(record))
    script = Path(__file__).resolve().parents[1] / "leaderboard" / "probes" / "refusal_split.py"
    out = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, check=True).stdout
    for method, record in align_runs.items():
        high, low = [], []
        for c, w in zip(record["rounds"][-1]["eval"]["clients"], record["task"]["weights"]):
            (high if w["helpful"] > 0.5 else low).append(c["diagnostics"]["refusal_conflict"])
        line = next(line for line in out.splitlines() if line.split()[0] == method)
        if high and low:  # one seed: the gap's mean, no interval
            assert f"gap {sum(low) / len(low) - sum(high) / len(high):+.2f}" in line, line
    assert "pfit - local-only" in out


@pytest.mark.slow
def test_under_pfit_clients_who_value_helpfulness_comply_more_with_conflicting_requests():
    """Personalization shows in behaviour: over three seeds at the card's defaults, clients
    whose helpfulness weight is above one half refuse conflicting requests less often than
    those below."""
    from pflbench.federation.resolve import resolve_spec
    from pflbench.federation.engine import run

    high, low = [], []
    for seed in range(3):
        record = run(resolve_spec(method="pfit", task="synth-align", seed=seed))
        for c, w in zip(record["rounds"][-1]["eval"]["clients"], record["task"]["weights"]):
            (high if w["helpful"] > 0.5 else low).append(c["diagnostics"]["refusal_conflict"])
    assert high and low
    assert sum(high) / len(high) + 25 < sum(low) / len(low), (high, low)


@pytest.mark.slow
def test_smollm2_chat_answers_in_forms_the_reward_models_tell_apart():
    """synth-align's starting policy on a real model. Untuned, SmolLM2's greedy answers to the
    invented world's requests are fluent non-answers that helpful-synth scores within a few
    points of each other: RL would get no signal. After the central SFT (smollm2-135m-chat) the
    answers to the same 32 prompts stop where the demonstrations' answers stop, and their
    helpful points spread over five times as wide (a true fact scores far above a wrong one)."""
    from statistics import pstdev

    from pflbench.config import RunSpec
    from pflbench.evaluation.metrics import generate
    from pflbench.federation.resolve import resolve
    from pflbench.rewards import resolve_reward

    helpful = resolve_reward("helpful-synth")
    spread, length = {}, {}
    for name in ("smollm2-135m", "smollm2-135m-chat"):
        exp = resolve(RunSpec(method="local-only", task="synth-align", model=name, clients=4, clients_per_round=4,
                              rounds=1, local_steps=1))
        task, examples = exp.task, [e for c in exp.clients for e in c.test[:8]]
        out = generate(exp.loaded.model, [e.prompt for e in examples], task._pad_id, task._eos_id, task.max_new_tokens)
        prompts = [task._tokenizer.decode(e.prompt) for e in examples]
        answers = task._tokenizer.batch_decode(out, skip_special_tokens=True)
        spread[name] = pstdev(helpful.points(prompts, answers))
        length[name] = sum(len(o) < task.max_new_tokens for o in out) / len(out)
    assert spread["smollm2-135m-chat"] > 5 * spread["smollm2-135m"], spread
    from pflbench.models import load_model
    from pflbench.models.smollm2 import SmolLM2Chat  # what `list models` says of it (no adapters)

    assert sum(p.numel() for p in load_model("smollm2-135m-chat").model.parameters()) == SmolLM2Chat.parameters
    assert length["smollm2-135m-chat"] > 0.9 > length["smollm2-135m"], length  # its answers end, SmolLM2's run on


SHARED_HH = __import__("pathlib").Path(__file__).resolve().parents[2] / "shared" / "data" / "hh-rlhf-harmless-base-test.jsonl.gz"


@pytest.mark.slow
def test_hh_reward_trains_from_its_preference_card_and_hh_align_runs_offline(tmp_path, monkeypatch, cli):
    """hh-harmless trains on the hh-harmless-base card's --data-dir copy (the real harmless-base
    test file), is cached under a fingerprint of its pairs, and hh-align runs on the tiny model
    with it. There is no helpful-base file here, so a copy of hh-align's card weighs hh-harmless
    against helpful-synth: the pipeline is what is tested, not the pairing."""
    if not SHARED_HH.exists():
        pytest.skip("../shared/data is only present in development and CI")
    for name in ("hh-harmless-base", "hh-align"):
        (tmp_path / f"{name}.jsonl.gz").symlink_to(SHARED_HH)
    monkeypatch.setenv("PFLBENCH_DATA_DIR", str(tmp_path))
    code, out, _ = cli("reward", "show", "hh-harmless", "--json")
    info = json.loads(out)
    # the tiny backbone learns nothing of hh-rlhf harmlessness (about 50%: see docs/rewards.md); what is tested is the pipeline
    assert code == 0 and info["train_pairs"] + info["held_out_pairs"] == 2000 and 0 <= info["held_out_accuracy"] <= 100
    import re

    from pflbench.rewards.training import RECIPE

    assert re.search(rf"hh-harmless-v1-r{RECIPE}-tiny-seed0-[0-9a-f]{{10}}$", info["cache"])  # keyed by card, backbone, seed and data

    import yaml

    card = yaml.safe_load(open(resolve_task("hh-align").origin))
    card["rewards"] = {"helpful": "helpful-synth", "harmless": "hh-harmless"}
    path = tmp_path / "hh-align.yaml"
    path.write_text(yaml.safe_dump(card))
    code, out, err = cli("run", "--method", "pfit", "--task", str(path), "--model", "tiny", "--clients", "2",
                         "--clients-per-round", "2", "--rounds", "1", "--local-steps", "1", "--batch-size", "2",
                         "--results-dir", str(tmp_path / "results"), "--json")
    assert code == 0, err
    record = json.loads(out)
    assert record["task"]["kind"] == "reward" and {"helpful", "harmless"} <= set(record["summary"]["diagnostics"])
