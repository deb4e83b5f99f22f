"""PFIT's structure: the shared LoRA of the last blocks' attention, the private local LoRA,
the proximal pull toward the global model."""

import pytest
import torch

from pflbench.federation.codec import HEADER_BYTES
from pflbench.federation.engine import run
from pflbench.federation.resolve import resolve


def test_payload_holds_exactly_the_last_blocks_shared_lora_never_the_private_one(small_spec):
    rec = run(small_spec(method="pfit"), None)
    shared, private = rec["model"]["shared_tensors"], rec["model"]["private_tensors"]
    # tiny has 4 blocks: the last half (2, 3) share their q and v LoRA (A and B each)
    assert sorted({n.split(".")[2] for n in shared}) == ["2", "3"] and len(shared) == 2 * 2 * 2
    assert all(".global." in n for n in shared) and all(".local." in n for n in private)
    assert not set(shared) & set(private)
    per_client_round = rec["rounds"][0]["uplink_bytes"] // len(rec["rounds"][0]["sampled"])
    assert per_client_round == 4 * rec["model"]["shared_parameters"] + HEADER_BYTES


def test_uplink_is_below_fedavg_lora(small_spec):
    pfit = run(small_spec(method="pfit"), None)["summary"]["uplink_bytes"]
    lora = run(small_spec(method="fedavg-lora"), None)["summary"]["uplink_bytes"]
    assert 0 < pfit < lora


def test_layers_option_chooses_how_many_blocks_share(small_spec):
    rec = run(small_spec(method="pfit", method_options={"layers": "1", "private": "none"}), None)
    assert {n.split(".")[2] for n in rec["model"]["shared_tensors"]} == {"3"}
    assert rec["model"]["private_tensors"] == []


def test_the_proximal_term_pulls_the_shared_part_toward_the_global_model(small_spec):
    """Same data, same steps: a large mu leaves the shared LoRA closer to where the round
    started than mu = 0 does."""
    def drift(mu):
        spec = small_spec(method="pfit", lr=1e-2, local_steps=10, method_options={"mu": str(mu)})
        exp = resolve(spec)
        from pflbench.federation.engine import Runner

        runner = Runner(exp, None, None)
        start = {n: t.clone() for n, t in runner.global_shared.items()}
        runner.round(1)
        # the aggregate moved by the delivered deltas; compare how far
        return sum(float((runner.global_shared[n] - start[n]).norm()) for n in start)

    assert drift(100.0) < 0.5 * drift(0.0)


def test_bad_pfit_options_are_one_line(cli):
    code, _, err = cli("run", "--method", "pfit", "--opt", "private=maybe")
    assert code == 2 and "private must be one of lora, none" in err
    code, _, err = cli("run", "--method", "pfit", "--opt", "layers=9")
    assert code == 2 and err.startswith("error: pfit: layers=9, but the model has 4 blocks")
