"""End-to-end runs of the three baselines on the tiny model: accounting, determinism,
the record on disk."""

import json

import pytest

from pflbench.federation.codec import HEADER_BYTES
from pflbench.federation.engine import run
from pflbench.results.record import SCHEMA, strip_timing

BASELINES = ["local-only", "fedavg-lora", "fedavg-full"]


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    from conftest import SMALL

    from dataclasses import replace

    out = tmp_path_factory.mktemp("runs")
    return {m: run(replace(SMALL, method=m), out) for m in BASELINES}, out


def expected_payload(record):
    n = record["model"]["shared_parameters"]
    return 0 if n == 0 else 4 * n + HEADER_BYTES


@pytest.mark.parametrize("method", BASELINES)
def test_uplink_and_downlink_bytes_follow_the_formula_exactly(records, method):
    rec = records[0][method]
    per_client = expected_payload(rec)
    for r in rec["rounds"]:
        assert r["uplink_bytes"] == per_client * len(r["sampled"])
        assert r["downlink_bytes"] == per_client * len(r["sampled"])
        assert [l["bytes"] for l in r["links"]] == ([per_client] * len(r["sampled"]) if per_client else [])
    assert rec["summary"]["uplink_bytes"] == per_client * 2 * 2


def test_parameter_counts_match_the_methods(records):
    recs = records[0]
    lora = recs["fedavg-lora"]["model"]
    # tiny: 4 layers x (q, v) x (A: 8x96 + B: 96x8)
    assert lora["shared_parameters"] == 4 * 2 * (8 * 96 + 96 * 8)
    assert all(".lora_" in n for n in lora["shared_tensors"])
    assert recs["local-only"]["model"]["shared_parameters"] == 0
    assert recs["local-only"]["model"]["private_parameters"] == lora["shared_parameters"]
    full = recs["fedavg-full"]["model"]
    assert full["shared_parameters"] == full["parameters"]
    assert recs["local-only"]["summary"]["uplink_bytes"] == 0


def test_gain_is_zero_without_private_state_and_measured_with_it(records):
    recs = records[0]
    for m in ("fedavg-lora", "fedavg-full"):
        assert recs[m]["summary"]["personalization_gain"] == 0.0
    ev = recs["local-only"]["rounds"][-1]["eval"]
    trained = [c for c in ev["clients"] if c["trained"]]
    assert trained and any(c["personal"] != c["shared"] for c in trained)
    assert all(c["personal"] == c["shared"] for c in ev["clients"] if not c["trained"])


def test_record_schema_and_files_on_disk(records):
    recs, out = records
    rec = recs["fedavg-lora"]
    assert rec["schema"] == SCHEMA
    for key in ("metric", "score", "personalization_gain", "worst_client_score", "uplink_bytes", "downlink_bytes",
                "airtime_s", "energy_j", "delivered_updates", "lost_updates", "wall_s"):
        assert key in rec["summary"], key
    assert rec["summary"]["metric"] == "next-token-accuracy"
    assert 0 < rec["summary"]["score"] < 100
    for r in rec["rounds"]:
        assert set(r) >= {"train_loss", "uplink_bytes", "downlink_bytes", "sampled", "delivered"}
    run_dir = out / rec["run_id"]
    lines = (run_dir / "rounds.jsonl").read_text().splitlines()
    assert [json.loads(l)["round"] for l in lines] == [1, 2]
    assert json.loads((run_dir / "record.json").read_text()) == rec
    assert json.loads((run_dir / "spec.json").read_text())["method"] == "fedavg-lora"


def test_same_spec_gives_identical_records_but_wall_time(records, small_spec, tmp_path):
    first = records[0]["fedavg-lora"]
    again = run(small_spec(method="fedavg-lora"), tmp_path)
    assert strip_timing(again) == strip_timing(first)
    other_seed = run(small_spec(method="fedavg-lora", seed=1), None)
    assert strip_timing(other_seed)["rounds"] != strip_timing(first)["rounds"]
