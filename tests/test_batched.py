"""Batched clients (--parallel-clients): the same mathematics as one client after another,
within floating-point tolerance, for every batchable built-in method; the rest untouched."""

from __future__ import annotations

import pytest
import torch

from pflbench import registry
from pflbench.federation.backends import LocalBackend
from pflbench.federation.batched import batchable
from pflbench.federation.engine import Runner, resolve

# README, "Batched clients": what the tolerance is, and why
LOSS_RTOL, TENSOR_ATOL = 1e-5, 1e-3


def _run(spec, parallel):
    exp = resolve(spec)
    runner = Runner(exp, None, None, LocalBackend(exp, parallel))
    return runner.run(0.0), runner


def _batchable_methods(small_spec):
    return [m for m in registry.methods.names() if batchable(resolve(small_spec(method=m, task="synth-world")))]


def test_which_builtin_methods_are_batchable(small_spec):
    # the default update on LoRA/adapter tensors; PFTT's joint schedule is that update too
    assert set(_batchable_methods(small_spec)) == {"fedavg-lora", "local-only", "fedsa-lora", "ffa-lora", "fedper-lora", "pftt"}
    assert not batchable(resolve(small_spec(method="pftt", task="synth-world", method_options={"schedule": "alternate"})))
    assert not batchable(resolve(small_spec(method="fedavg-full", task="synth-world")))  # full weights: not adapters


@pytest.mark.slow
@pytest.mark.parametrize("method", ["fedavg-lora", "local-only", "fedsa-lora", "ffa-lora", "fedper-lora", "pftt"])
def test_batched_clients_match_sequential_clients(small_spec, method):
    spec = small_spec(method=method, task="synth-world", clients=6, clients_per_round=4, rounds=2, local_steps=4,
                      batch_size=4, lr=0.01)
    (seq, rs), (bat, rb) = _run(spec, 1), _run(spec, 4)
    assert [r["uplink_bytes"] for r in bat["rounds"]] == [r["uplink_bytes"] for r in seq["rounds"]]
    assert [r["sampled"] for r in bat["rounds"]] == [r["sampled"] for r in seq["rounds"]]
    for a, b in zip(seq["rounds"], bat["rounds"]):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=LOSS_RTOL)
    for name, value in rs.global_shared.items():
        torch.testing.assert_close(rb.global_shared[name], value, rtol=0, atol=TENSOR_ATOL)
    assert rb.store.clients() == rs.store.clients()
    for c in rs.store.clients():
        for name, value in rs.store.get(c).items():
            torch.testing.assert_close(rb.store.get(c)[name], value, rtol=0, atol=TENSOR_ATOL)
    moved = any(not torch.equal(t, rs.store.initial[n]) for c in rs.store.clients() for n, t in rs.store.get(c).items())
    assert moved or rs.global_shared  # something trained, so the comparison means something
    assert bat["summary"]["score"] == pytest.approx(seq["summary"]["score"], abs=1e-9)


def test_a_method_with_its_own_update_is_trained_one_client_at_a_time(small_spec):
    """ditto overrides the local update: --parallel-clients leaves its record bit for bit."""
    spec = small_spec(method="ditto", task="synth-world", clients=4, clients_per_round=3, rounds=1, local_steps=2)
    (seq, _), (par, rp) = _run(spec, 1), _run(spec, 3)
    assert rp.backend.parallel == 1
    seq["summary"].pop("wall_s"), par["summary"].pop("wall_s")
    assert par["summary"] == seq["summary"]
