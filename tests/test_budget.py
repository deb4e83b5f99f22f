"""The communication budget: leaderboard/budget.json (CI's guard on uplink cost) and the
``pflbench budget`` commands a third party runs in its own CI."""

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from pflbench import registry
from pflbench.methods import LoraOptions, Method, Parts
from pflbench.orchestration.budget import KEY, measure

# `make test` runs `pflbench budget check --budget leaderboard/budget.json` after the tests
BUDGET_FILE = Path(__file__).resolve().parents[1] / "leaderboard" / "budget.json"
LIMITS = json.loads(BUDGET_FILE.read_text())[KEY]


def _builtin_methods():
    return {n for n, e in registry.methods.entries().items() if e.origin.startswith(("pflbench.", "pflbench_baselines."))}


def test_every_builtin_method_has_a_budget():
    assert set(LIMITS) == _builtin_methods()


class Grows(Method):
    """A third party's method; its next version uploads a larger LoRA."""

    name = "grows"

    @dataclass(frozen=True)
    class Options(LoraOptions):
        rank: int = 4

    def prepare(self, model):
        return Parts(shared=self.options.lora(model, "global"))


def test_budget_update_then_check_guards_a_plugin_method(cli, register, tmp_path, monkeypatch):
    register(Grows)
    budget = tmp_path / "budget.json"
    code, out, err = cli("budget", "update", "--budget", str(budget), "--methods", "grows", "--codecs", "fp32,int8")
    assert code == 0, err
    figures = json.loads(budget.read_text())[KEY]["grows"]
    assert figures == {"fp32": 16 + 4 * 8 * 2 * 4 * 96, "int8": measure("grows", "int8")}  # 8 LoRA modules, A and B rank 4
    code, out, _ = cli("budget", "check", "--budget", str(budget))
    assert code == 0 and out.count("| ok") == 2

    @dataclass(frozen=True)
    class Bigger(LoraOptions):
        rank: int = 8

    monkeypatch.setattr(Grows, "Options", Bigger)  # the payload grew
    code, out, _ = cli("budget", "check", "--budget", str(budget))
    assert code == 1
    assert "| grows    | fp32    | 24,592   | 49,168     | 1.999   | ROSE |" in out
    assert "over budget" in out.splitlines()[-1]


def test_a_fall_is_reported_to_record_not_failed(cli, tmp_path):
    budget = tmp_path / "budget.json"
    budget.write_text(json.dumps({"model": "tiny", KEY: {"fedavg-lora": {"fp32": 60000}}}))
    code, out, _ = cli("budget", "check", "--budget", str(budget))
    assert code == 0 and "fell" in out and "pflbench budget update" in out


@pytest.mark.parametrize("args, needle", [
    (("check", "--budget", "nope.json"), "no budget file nope.json"),
    (("check", "--budget", "README.md"), "is not JSON"),
    (("check", "--budget", "leaderboard/budget.json", "--methods", "nope"), "method 'nope' is not installed"),
    (("check", "--budget", "leaderboard/budget.json", "--codecs", "zip"), "unknown codec 'zip'"),
    (("update", "--budget", "new.json"), "name the methods to budget with --methods"),
    (("check", "--budget", "tests"), "budget file tests is a folder"),
    (("check", "--budget", "missing-folder/budget.json"), "no budget file missing-folder/budget.json"),
])
def test_budget_mistakes_are_one_line(cli, args, needle, monkeypatch):
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    code, out, err = cli("budget", *args)
    assert code == 2 and needle in err and err.count("\n") == 1
    assert not Path("new.json").exists()


def test_a_budget_update_that_cannot_finish_leaves_the_old_budget_whole(tmp_path, monkeypatch):
    """A full disk in the middle of writing: the budget file keeps its old content (it is
    written beside and renamed over), and the failure is one line."""
    from pflbench.errors import UserError
    from pflbench.orchestration import budget

    path = tmp_path / "budget.json"
    old = {"about": "x", KEY: {"pftt": {"fp32": 26256}}}
    budget.write(path, old)
    before = path.read_text()
    real = Path.write_text

    def full_disk(self, text, *args, **kwargs):
        real(self, text[:10], *args, **kwargs)  # half written, then the disk is full
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full_disk)
    with pytest.raises(UserError, match="No space left on device; it is unchanged"):
        budget.write(path, {"about": "x", KEY: {"pftt": {"fp32": 1}}})
    monkeypatch.setattr(Path, "write_text", real)
    assert path.read_text() == before and budget.read(path)[KEY] == old[KEY]
    assert [p.name for p in tmp_path.iterdir()] == ["budget.json"]  # no temporary file left behind


@pytest.mark.parametrize("table, needle", [
    ({"pftt": {"fp32": True}}, "pftt / fp32 is True; a budget is a non-negative whole number"),
    ({"pftt": {"fp32": -1}}, "pftt / fp32 is -1"),
    ({"pftt": {"fp32": 2.5}}, "pftt / fp32 is 2.5"),
    ({}, "holds no figures"),
    ({"pftt": {}}, "holds no figures"),
])
def test_a_budget_that_cannot_guard_anything_is_refused(cli, tmp_path, table, needle):
    """Figures of true or -1 and an empty table were accepted, and a check against an empty
    table passed without checking anything."""
    path = tmp_path / "budget.json"
    path.write_text(json.dumps({KEY: table}))
    code, out, err = cli("budget", "check", "--budget", str(path))
    assert code == 2 and needle in err and err.count("\n") == 1, err


# ---- budget show: payloads on the meta device ------------------------------------------------
REAL = [("fedavg-lora", "fp32"), ("pftt", "int8"), ("scaffold-lora", "topk:0.1"), ("fedavg-full", "fp16"),
        ("central", "fp32"), ("local-only", "fp32"), ("ffa-lora", "topk:0.01"), ("fedsa-lora", "bf16")]


@pytest.fixture(scope="module")
def real_rounds():
    """One round of one client of each method on the tiny model, as `budget check` measures."""
    from pflbench.config import RunSpec
    from pflbench.federation.engine import run

    return {(m, c): run(RunSpec(method=m, codec=c, clients=2, clients_per_round=1, rounds=1, local_steps=1, batch_size=2), None)
            for m, c in REAL}


@pytest.mark.parametrize("method, codec", REAL)
def test_budget_show_on_the_meta_device_is_a_real_runs_payload_both_ways(real_rounds, method, codec):
    """No weights read, no training: the architecture on the meta device, the method's adapters,
    zeros of the real shapes through the codec. Exactly what the real run's round counted,
    uplink and downlink (scaffold's control variates in both, central's nothing)."""
    from pflbench.orchestration.budget import meta_payload

    rec = real_rounds[method, codec]
    shown = meta_payload("tiny", method, codec)
    r = rec["rounds"][0]
    assert shown.uplink_bytes == r["uplink_bytes"] and shown.downlink_bytes == r["downlink_bytes"]
    assert shown.encoded and shown.parameters == rec["model"]["parameters"]
    assert shown.shared_parameters == rec["model"]["shared_parameters"]


def test_budget_show_agrees_with_the_budget_file_for_every_method_and_codec():
    """leaderboard/budget.json's figures are real runs' (`budget check` measures them again at
    the end of `make test`); the meta device gives every one of them."""
    from pflbench.orchestration.budget import meta_payload

    shown = {(m, c): meta_payload("tiny", m, c).uplink_bytes for m, row in LIMITS.items() for c in row}
    assert shown == {(m, c): v for m, row in LIMITS.items() for c, v in row.items()}


def test_budget_show_reads_any_config_and_prints_both_directions(cli, tmp_path):
    """A folder holding a config.json (no weights), a shipped 8B config: uplink and downlink per
    client-round and the run's totals; the JSON keys the docs name; bad input one line."""
    cfg = tmp_path / "my-model"
    cfg.mkdir()
    (cfg / "config.json").write_text(json.dumps({
        "model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 3,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 500}))
    code, out, err = cli("budget", "show", "--model", str(cfg), "--method", "fedavg-lora", "--json",
                         "--rounds", "3", "--clients-per-round", "2", "--opt", "rank=4")
    row = json.loads(out)
    # q (64 -> 64) and v (64 -> 32, two KV heads of 16) in 3 blocks, rank 4: A 4 x 64 each, B 64 x 4 and 32 x 4
    values = 3 * (4 * 64 + 64 * 4 + 4 * 64 + 32 * 4)
    assert code == 0 and row["shared_parameters"] == values and row["encoded"]
    assert row["uplink_bytes_per_client_round"] == row["downlink_bytes_per_client_round"] == 16 + 4 * values
    assert row["uplink_bytes"] == 6 * row["uplink_bytes_per_client_round"]
    assert row["total_bytes"] == row["uplink_bytes"] + row["downlink_bytes"]

    code, out, _ = cli("budget", "show", "--model", "llama-3.1-8b", "--method", "fedavg-full,pftt", "--codec", "int8")
    assert code == 0 and "8,030,261,248 parameters" in out
    full = next(l for l in out.splitlines() if l.startswith("| fedavg-full"))
    assert "32,121,045,008" in full  # the fp32 broadcast of every weight: 16 + 4 x 8,030,261,248
    assert "length rule" in out  # 8B values are not encoded here

    for args, needle in ((("--model", "no/such-model"), "budget show needs an architecture"),
                         (("--method", "nope"), "unknown method 'nope'"),
                         (("--codec", "zip"), "unknown codec 'zip'"),
                         (("--model", str(tmp_path)), "budget show needs an architecture"),
                         (("--opt", "rank=x", "--method", "pftt"), "rank")):
        code, _, err = cli("budget", "show", *args)
        assert code == 2 and needle in err and err.count("\n") == 1, (args, err)
