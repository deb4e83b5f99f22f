"""Tables over seeds: intervals, paired differences, reference rows, and `bench`/`table`
on a results folder."""

import json
import math

import pytest

from pflbench.federation.engine import run
from pflbench.results.record import load_records
from pflbench.results.stats import estimate, paired
from pflbench.results.table import group, render

SEEDS = (0, 1, 2)
METHODS = ("local-only", "fedavg-lora")


def test_interval_is_the_t_interval_over_seeds():
    e = estimate([1.0, 2.0, 3.0, 4.0, 5.0])
    # t(0.975, 4 df) = 2.7764; sd = sqrt(2.5); half width = 2.7764 * sqrt(2.5 / 5)
    assert e.n == 5 and e.mean == 3.0
    assert e.half_width == pytest.approx(2.7764 * math.sqrt(0.5), rel=1e-4)
    assert e.resolved  # [1.04, 4.96] excludes 0
    assert not estimate([-1.0, 1.0, 0.5]).resolved
    one = estimate([7.0])
    assert one.n == 1 and one.mean == 7.0 and math.isnan(one.half_width) and not one.resolved


def test_paired_difference_uses_common_seeds_and_counts_signs():
    p = paired({0: 10.0, 1: 12.0, 2: 11.0, 3: 50.0}, {0: 9.0, 1: 12.5, 2: 10.0})
    assert p.seeds == [0, 1, 2]  # seed 3 has no partner
    assert p.diff.mean == pytest.approx((1.0 - 0.5 + 1.0) / 3)
    assert (p.up, p.down) == (2, 1)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    from dataclasses import replace

    from conftest import SMALL

    out = tmp_path_factory.mktemp("seeds")
    for seed in SEEDS:
        for method in METHODS:
            run(replace(SMALL, method=method, seed=seed, lr=1e-3), out)
    return out


def test_runs_that_differ_in_seed_form_one_row(folder):
    records = load_records(folder)
    rows = group(records)["shakespeare-roles"]
    assert [r.method for r in rows] == sorted(METHODS)
    for r in rows:
        assert r.seeds == list(SEEDS)


def test_table_cells_are_means_and_intervals_over_seeds(folder):
    records = load_records(folder)
    text = render(records)
    by = {(r["spec"]["method"], r["spec"]["seed"]): r["summary"] for r in records}
    fed = [by["fedavg-lora", s]["score"] for s in SEEDS]
    loc = [by["local-only", s]["score"] for s in SEEDS]
    e = estimate(fed)
    line = next(l for l in text.splitlines() if l.startswith("| fedavg-lora"))
    assert f"{e.mean:.2f} ± {e.half_width:.2f}" in line
    d = estimate([f - l for f, l in zip(fed, loc)])
    up = sum(f > l for f, l in zip(fed, loc))
    assert f"{d.mean:+.2f} ± {d.half_width:.2f} ({up}/3 up)" in line  # Δ local-only: the collaboration gain
    # settings shared by every row are said once, above the table; seeds as a range
    assert "Shared by every row: model tiny, channel ideal, codec fp32, clients 4" in text and "seeds 0-2" in text
    assert "resolved" in text


def test_csv_and_json_carry_the_numbers_behind_the_table(folder, cli):
    import csv
    import io
    import json as json_

    records = load_records(folder)
    by = {(r["spec"]["method"], r["spec"]["seed"]): r["summary"] for r in records}
    fed = [by["fedavg-lora", s]["score"] for s in SEEDS]
    loc = [by["local-only", s]["score"] for s in SEEDS]
    code, out, _ = cli("table", str(folder), "--format", "json")
    rows = {r["method"]: r for r in json_.loads(out)}
    assert code == 0 and set(rows) == set(METHODS)
    e, d = estimate(fed), estimate([f - l for f, l in zip(fed, loc)])
    row = rows["fedavg-lora"]
    assert (row["n"], row["seeds"], row["task"]) == (3, "0 1 2", "shakespeare-roles")
    assert row["score"] == pytest.approx(e.mean) and row["score_low"] == pytest.approx(e.low) and row["score_high"] == pytest.approx(e.high)
    assert row["delta_local_only"] == pytest.approx(d.mean) and row["delta_local_only_resolved"] == (d.low > 0 or d.high < 0)
    assert rows["local-only"]["delta_local_only"] is None and rows["local-only"]["uplink_bytes"] == 0
    assert rows["local-only"]["downlink_bytes"] == 0  # nothing shared: nothing broadcast
    fed_bytes = [(by["fedavg-lora", s]["uplink_bytes"], by["fedavg-lora", s]["downlink_bytes"]) for s in SEEDS]
    assert row["total_bytes"] == pytest.approx(sum(u + d for u, d in fed_bytes) / len(SEEDS)) and row["downlink_bytes"] > 0
    code, text, _ = cli("table", str(folder))
    header = next(l for l in text.splitlines() if l.startswith("| method"))
    assert [h.strip() for h in header.split("|")][-6:-3] == ["uplink", "downlink", "up+down"]
    code, out, _ = cli("table", str(folder), "--format", "csv")
    table = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and len(table) == len(METHODS)
    assert float(next(r for r in table if r["method"] == "fedavg-lora")["score"]) == pytest.approx(e.mean)


def test_base_row_is_the_untrained_model_and_the_same_for_every_method(folder):
    records = load_records(folder)
    for seed in SEEDS:
        bases = {r["summary"]["base_score"] for r in records if r["spec"]["seed"] == seed}
        assert len(bases) == 1  # adapters start as the identity: every method starts from the base model
    # local-only's shared part is the untouched base model, so its shared score is the base
    for r in records:
        if r["spec"]["method"] == "local-only":
            assert r["summary"]["shared_score"] == pytest.approx(r["summary"]["base_score"])
    base = estimate([next(r["summary"]["base_score"] for r in records if r["spec"]["seed"] == s) for s in SEEDS])
    line = next(l for l in render(records).splitlines() if l.startswith("| base"))
    assert f"| 3 " in line and f"{base.mean:.2f} ± {base.half_width:.2f}" in line


def test_record_holds_each_clients_test_size(folder):
    rec = load_records(folder)[0]
    sizes, units = rec["task"]["test_examples"], rec["task"]["test_units"]
    assert len(sizes) == len(units) == len(rec["task"]["clients"])
    assert all(u > n > 0 for n, u in zip(sizes, units))  # next-token accuracy: many tokens per speech


def test_settings_that_differ_become_columns_and_rows_pair_by_settings(folder, tmp_path):
    import shutil

    from conftest import SMALL
    from dataclasses import replace

    shutil.copytree(folder, tmp_path / "f")
    run(replace(SMALL, method="fedavg-lora", seed=0, lr=3e-3), tmp_path / "f")
    text = render(load_records(tmp_path / "f"))
    header = next(l for l in text.splitlines() if l.startswith("| method"))
    assert "| lr " in header
    rows = [l for l in text.splitlines() if l.startswith("| fedavg-lora")]
    assert len(rows) == 2 and any("| 0.003 " in l and "| 1 " in l for l in rows)


def test_records_say_where_they_were_measured_and_the_table_warns_when_rows_mix_machines(folder, tmp_path):
    import shutil

    import torch

    from pflbench.models.precision import machine

    records = load_records(folder)
    on = records[0]["measured_on"]
    assert on["machine"] == machine(torch.device("cpu")) and on["torch"] == torch.__version__
    # every run started from the one cached build of the tiny model: one fingerprint
    assert len({r["measured_on"]["weights"]["model"] for r in records}) == 1
    text = render(records)
    assert f"Measured on {on['machine']}, torch {on['torch']}." in text and "more than one machine" not in text

    # one run copied in from another machine, whose tiny model was built there
    shutil.copytree(folder, tmp_path / "f")
    path = next((tmp_path / "f").rglob("record.json"))
    rec = json.loads(path.read_text())
    rec["measured_on"] = dict(rec["measured_on"], machine="Other CPU (family 6, model 143), amx_bf16",
                              weights={"model": "0123456789ab"})
    path.write_text(json.dumps(rec))
    text = render(load_records(tmp_path / "f"))
    assert "**The rows' runs come from more than one machine**" in text
    assert f"{on['machine']}, torch {on['torch']}: {len(records) - 1} runs" in text
    assert "Other CPU (family 6, model 143), amx_bf16, torch" in text and ": 1 run;" not in text
    assert "**rows mix builds of tiny (2)**" in text and "compare rows measured on one machine" in text


def test_weights_fingerprint_sees_one_changed_bit_and_nothing_else():
    import copy

    import torch

    from pflbench.models import weights_fingerprint

    torch.manual_seed(0)
    a = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    b = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    b.load_state_dict(a.state_dict())
    assert weights_fingerprint(a) == weights_fingerprint(b)
    with torch.no_grad():
        b[1].bias[0] = torch.nextafter(b[1].bias[0], torch.tensor(1.0))  # one ulp
    assert weights_fingerprint(a) != weights_fingerprint(b)
    assert weights_fingerprint(a) != weights_fingerprint(copy.deepcopy(a).to(torch.bfloat16))  # the dtype counts


def test_label_tasks_get_a_majority_label_row(tmp_path, small_spec):
    rec = run(small_spec(method="local-only", task="synth-classify"), tmp_path)
    maj = rec["reference"]["majority_label"]
    # by hand: each client's most common training label, scored on its test split
    assert 0 <= maj["score"] <= 100 and len(maj["clients"]) == len(rec["task"]["clients"])
    assert rec["summary"]["majority_label_score"] == maj["score"]
    assert any(l.startswith("| majority label") for l in render([rec]).splitlines())


@pytest.mark.parametrize("text, seeds", [("0-4", [0, 1, 2, 3, 4]), ("0,2,5", [0, 2, 5]), ("3-4,0", [0, 3, 4]), ("7", [7])])
def test_seed_lists_and_ranges(text, seeds):
    from pflbench.config import parse_seeds

    assert parse_seeds(text) == seeds


@pytest.mark.parametrize("seeds", ["a-b", "4-2", "-1", ""])
def test_bad_seeds_are_one_line(cli, seeds):
    code, out, err = cli("bench", "--seeds", seeds)
    assert code == 2 and out == "" and err.startswith("error: --seeds") and err.count("\n") == 1


def test_bench_over_seeds_keeps_earlier_runs_and_tables_the_whole_folder(cli, tmp_path):
    flags = ["--clients", "4", "--clients-per-round", "2", "--rounds", "1", "--local-steps", "2", "--batch-size", "4",
             "--results-dir", str(tmp_path)]
    code, out, _ = cli("bench", "--methods", "local-only", "--seeds", "0-1", *flags)
    assert code == 0 and "| local-only " in out and "seeds 0,1" in out
    code, out, err = cli("bench", "--methods", "fedavg-lora,local-only", "--seeds", "0-1", "--opt", "rank=4", *flags)
    assert code == 0
    assert err.count("finished earlier, kept") == 0  # rank=4 is a new spec for both methods
    code, out, err = cli("bench", "--methods", "local-only", "--seeds", "0-1", *flags)
    assert err.count("finished earlier, kept") == 2  # the first invocation's runs are not run again
    board = (tmp_path / "leaderboard.md").read_text()
    assert len(load_records(tmp_path)) == 6
    code, table, _ = cli("table", str(tmp_path))
    assert table.strip() == board.strip()
    assert "rank=4" in board and board.count("| local-only") == 2  # two settings of local-only, one row each


def test_bench_options_go_to_the_methods_that_have_them(cli):
    code, _, err = cli("bench", "--methods", "fedavg-full", "--opt", "rank=4")
    assert code == 2 and "no benchmarked method has an option 'rank'" in err
    code, _, err = cli("bench", "--methods", "fedavg-lora", "--opt", "pftt:rank=4")
    assert code == 2 and "method 'pftt' is not among those benchmarked" in err


def test_across_models_sets_each_comparison_side_by_side_and_marks_a_flip(folder, cli):
    """The same comparison on two models, paired within each: resolved one way on one model
    and the other way on the other is a flip; the CLI prints it with --across-models."""
    import copy

    from pflbench.results.table import across_models

    records = []
    for sign, model in ((1, "model-a"), (-1, "model-b")):
        for rec in load_records(folder):
            rec = copy.deepcopy(rec)
            rec["spec"]["model"] = model
            if rec["spec"]["method"] == "local-only":  # local-only = fedavg-lora + sign * (10, 11, 12)
                rec["summary"]["score"] = 50.0 + sign * (10 + rec["spec"]["seed"])
            else:
                rec["summary"]["score"] = 50.0
            records.append(rec)
    text = across_models(records)
    line = next(l for l in text.splitlines() if l.startswith("| fedavg-lora - local-only"))
    assert "-11.00 ± 2.48 (0/3 up) * [below]" in line and "+11.00 ± 2.48 (3/3 up) * [above]" in line
    assert line.rstrip(" |").endswith("FLIPS")
    code, out, _ = cli("table", str(folder), "--across-models")
    assert code == 0 and "fedavg-lora - local-only" in out and "| tiny " in out.splitlines()[2]


def test_across_one_setting_keeps_the_others_apart(folder):
    """Two models, each in fp32 and bf16: --across-precisions gives one table per model, each
    pairing that model's rows only (it once took the first model's rows for every column)."""
    import copy

    from pflbench.results.table import across_models

    records = []
    for model, gap in (("model-a", 10.0), ("model-b", -20.0)):
        for precision in ("fp32", "bf16"):
            for rec in load_records(folder):
                rec = copy.deepcopy(rec)
                rec["spec"].update(model=model, precision=precision)
                local = rec["spec"]["method"] == "local-only"
                rec["summary"]["score"] = 50.0 + (gap + rec["spec"]["seed"] if local else 0.0)
                records.append(rec)
    text = across_models(records, by="precision")
    tables = text.split("### ")[1:]
    assert [t.splitlines()[0] for t in tables] == [f"shakespeare-roles, model {m}: each comparison on each precision"
                                                  for m in ("model-a", "model-b")]
    a, b = (next(l for l in t.splitlines() if l.startswith("| fedavg-lora - local-only")) for t in tables)
    assert a.count("-11.00 ± 2.48 (0/3 up) * [below]") == 2 and "FLIPS" not in a
    assert b.count("+19.00 ± 2.48 (3/3 up) * [above]") == 2
