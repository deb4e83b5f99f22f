"""The communication budget in leaderboard/budget.json: CI's guard on uplink cost."""

import json
from pathlib import Path

import pytest

from pflbench import registry
from pflbench.config import RunSpec
from pflbench.federation.engine import run

BUDGET = json.loads((Path(__file__).resolve().parents[1] / "leaderboard" / "budget.json").read_text())
LIMITS = BUDGET["uplink_bytes_per_client_round"]


def _builtin_methods():
    return {n for n, e in registry.methods.entries().items() if e.origin.startswith(("pflbench.", "pflbench_baselines."))}


def test_every_builtin_method_has_a_budget():
    assert set(LIMITS) == _builtin_methods()


@pytest.mark.parametrize("method, codec", [(m, c) for m, codecs in LIMITS.items() for c in codecs])
def test_uplink_per_client_round_matches_the_budget(method, codec):
    spec = RunSpec(method=method, codec=codec, model=BUDGET["model"], clients=2, clients_per_round=1, rounds=1,
                   local_steps=1, batch_size=2)
    measured = run(spec, None)["rounds"][0]["uplink_bytes"]
    budget = LIMITS[method][codec]
    assert measured <= budget, f"{method}/{codec}: uplink rose from {budget} to {measured} bytes per client-round"
    assert measured == budget, f"{method}/{codec}: uplink fell from {budget} to {measured} bytes; record it in leaderboard/budget.json"
