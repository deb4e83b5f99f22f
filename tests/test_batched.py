"""Batched clients (--parallel-clients): the same mathematics as one client after another,
within floating-point tolerance, for every batchable built-in method; the rest untouched."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from pflbench import registry
from pflbench.federation import batched
from pflbench.federation.batched import batchable, clients_per_pass
from pflbench.federation.engine import Runner
from pflbench.federation.resolve import resolve

# docs/performance.md, "Batched clients": what the tolerance is, and why
LOSS_RTOL, TENSOR_ATOL, TENSOR_OUTLIERS = 1e-5, 1e-3, 0.005


def assert_tensors_close(got: torch.Tensor, want: torch.Tensor, lr: float) -> None:
    """Within TENSOR_ATOL but for at most TENSOR_OUTLIERS of the elements, and those within one
    AdamW step (lr): an element whose gradient is near zero can take a step the other way when
    the order of a float sum changes (seen once on an Intel Xeon: 1 of 768 elements of a PFTT
    LoRA off by 1.8e-3 after 8 steps at lr 0.01), while a batched path that mixed clients up
    would move many elements by several steps."""
    diff = (got - want).abs()
    assert float(diff.max()) <= lr, float(diff.max())
    assert float((diff > TENSOR_ATOL).float().mean()) <= TENSOR_OUTLIERS, int((diff > TENSOR_ATOL).sum())


def _run(spec, parallel):
    runner = Runner(resolve(replace(spec, parallel_clients=parallel)), None, None)
    return runner.run(0.0), runner


def _batchable_methods(small_spec):
    return [m for m in registry.methods.names() if batchable(resolve(small_spec(method=m, task="synth-world")))]


def test_which_builtin_methods_are_batchable(small_spec):
    # the default update on LoRA/adapter tensors; PFTT's joint schedule is that update too
    # (reward cards included: tests/test_batched.py::test_batched_rl_updates_match_sequential_ones)
    assert set(_batchable_methods(small_spec)) == {"fedavg-lora", "local-only", "fedsa-lora", "ffa-lora", "fedper-lora", "pftt"}
    assert not batchable(resolve(small_spec(method="pftt", task="synth-world", method_options={"schedule": "alternate"})))
    assert not batchable(resolve(small_spec(method="fedavg-full", task="synth-world")))  # full weights: not adapters


@pytest.mark.parametrize("method,task", [(m, "synth-world") for m in
                                         ("fedavg-lora", "local-only", "fedsa-lora", "ffa-lora", "fedper-lora", "pftt")]
                         + [("fedavg-lora", "shakespeare-roles")])  # prompts masked out / every token learnt
def test_batched_clients_match_sequential_clients(small_spec, method, task):
    spec = small_spec(method=method, task=task, clients=6, clients_per_round=4, rounds=2, local_steps=4,
                      batch_size=4, lr=0.01)
    (seq, rs), (bat, rb) = _run(spec, 1), _run(spec, 4)
    assert [r["uplink_bytes"] for r in bat["rounds"]] == [r["uplink_bytes"] for r in seq["rounds"]]
    assert [r["sampled"] for r in bat["rounds"]] == [r["sampled"] for r in seq["rounds"]]
    for a, b in zip(seq["rounds"], bat["rounds"]):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=LOSS_RTOL)
    for name, value in rs.global_shared.items():
        assert_tensors_close(rb.global_shared[name], value, spec.lr)
    assert rb.store.clients() == rs.store.clients()
    for c in rs.store.clients():
        for name, value in rs.store.get(c).items():
            assert_tensors_close(rb.store.get(c)[name], value, spec.lr)
    moved = any(not torch.equal(t, rs.store.initial[n]) for c in rs.store.clients() for n, t in rs.store.get(c).items())
    assert moved or rs.global_shared  # something trained, so the comparison means something
    assert bat["summary"]["score"] == pytest.approx(seq["summary"]["score"], abs=1e-9)


@pytest.mark.parametrize("method", ["fedavg-lora", "pftt"])
def test_batched_rl_updates_match_sequential_ones(small_spec, method):
    """On a reward card each client samples its responses with its own tensors and seed, as
    alone; only the GRPO objective's forward and backward are shared. The sampled rewards and
    scores are those of one client at a time; the losses (near 0: advantages are centred, the
    probability ratio 1) agree to 1e-8."""
    spec = small_spec(method=method, task="synth-align", clients=4, clients_per_round=3, rounds=2, local_steps=2,
                      batch_size=2)
    (seq, rs), (bat, rb) = _run(spec, 1), _run(spec, 3)
    assert [r["timing"]["clients_per_pass"] for r in bat["rounds"]] == [3, 3]
    assert [r["uplink_bytes"] for r in bat["rounds"]] == [r["uplink_bytes"] for r in seq["rounds"]]
    assert [r["train_reward"] for r in bat["rounds"]] == pytest.approx([r["train_reward"] for r in seq["rounds"]], abs=1e-9)
    assert [r["train_loss"] for r in bat["rounds"]] == pytest.approx([r["train_loss"] for r in seq["rounds"]], abs=1e-8)
    for name, value in rs.global_shared.items():
        torch.testing.assert_close(rb.global_shared[name], value, rtol=0, atol=TENSOR_ATOL)
    for c in rs.store.clients():
        for name, value in rs.store.get(c).items():
            torch.testing.assert_close(rb.store.get(c)[name], value, rtol=0, atol=TENSOR_ATOL)
    assert bat["summary"]["score"] == pytest.approx(seq["summary"]["score"], abs=1e-9)


def test_a_method_with_its_own_update_is_trained_one_client_at_a_time(small_spec):
    """ditto overrides the local update: --parallel-clients leaves its record bit for bit."""
    spec = small_spec(method="ditto", task="synth-world", clients=4, clients_per_round=3, rounds=1, local_steps=2)
    (seq, _), (par, rp) = _run(spec, 1), _run(spec, 3)
    assert rp.backend.parallel == 1
    seq["summary"].pop("wall_s"), par["summary"].pop("wall_s")
    assert par["summary"] == seq["summary"]


def test_packed_rows_hold_one_client_each_and_learn_the_tokens_the_padded_batch_learns(small_spec):
    from pflbench.data.task import lm_batch
    from pflbench.federation.client import client_generator

    exp = resolve(small_spec(method="fedavg-lora", task="shakespeare-roles", clients=4))  # lines of many lengths
    per_client = [exp.task.train_prompts(c, 8, client_generator(0, 1, c.id)) for c in exp.clients]
    batch = batched._packed(per_client, exp.task._pad_id)
    width = max(len(e.ids) for ex in per_client for e in ex)
    assert batch["input_ids"].shape[1] == width and batch["rows"].tolist() == sorted(batch["rows"].tolist())
    for i, examples in enumerate(per_client):
        mine = batch["rows"] == i
        # every example's tokens are in the client's own rows, once; what is learnt is what the
        # padded batch's shifted labels learn
        assert int((batch["input_ids"][mine] != exp.task._pad_id).sum()) == sum(len(e.ids) for e in examples)
        assert int((batch["labels"][mine] != -100).sum()) == int((lm_batch(examples, exp.task._pad_id)["labels"][:, 1:] != -100).sum())
        # a row starts at position 0 and each example restarts it
        starts = int((batch["position_ids"][mine] == 0).sum()) - int((batch["input_ids"][mine] == exp.task._pad_id).any(1).sum())
        assert starts == len(examples)
    assert batch["input_ids"].shape[0] < sum(len(ex) for ex in per_client)  # several examples share a row


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_model_that_does_not_read_packed_examples_trains_one_client_at_a_time(small_spec, monkeypatch, precision):
    """In bf16 too: its rounding must not pass for a model that misreads packing, nor a model
    that reads it faithfully be taken for one that does not (CI's bf16 batched round once
    trained one client a pass: the check's fp32 tolerance refused bf16's rounding)."""
    from pflbench.models.precision import ALLOW_EMULATED

    monkeypatch.setenv(ALLOW_EMULATED, "1")
    exp = resolve(small_spec(method="fedavg-lora", task="synth-world", precision=precision))
    assert batchable(exp) and clients_per_pass(exp, 4) == 4
    decoder = exp.loaded.model.get_decoder()
    # a model that ignores position_ids: packed examples would attend to each other
    monkeypatch.setattr(decoder, "forward", lambda input_ids=None, position_ids=None, **kw: type(decoder).forward(decoder, input_ids=input_ids, **kw))
    assert not batchable(exp) and clients_per_pass(exp, 4) == 1


def test_auto_trains_every_sampled_client_in_one_pass_as_far_as_the_memory_estimate_allows(small_spec, monkeypatch):
    exp = resolve(small_spec(method="fedavg-lora", task="synth-world", clients=8, clients_per_round=6))
    assert clients_per_pass(exp, "auto") == 6 and clients_per_pass(exp, 4) == 4 and clients_per_pass(exp, 1) == 1
    config = exp.loaded.model.config
    examples = [e for c in exp.clients for e in c.train]
    longest = max(len(e.ids) for e in examples)
    learnt = max(len(e.ids) - max(e.prompt_len, 1) for e in examples)
    per_client = exp.spec.batch_size * (longest * config.hidden_size * config.num_hidden_layers * batched.BYTES_PER_UNIT
                                        + learnt * config.vocab_size * batched.BYTES_PER_LOGIT)
    monkeypatch.setitem(batched.AUTO_BUDGET, "cpu", 2 * per_client + 1)
    assert clients_per_pass(exp, "auto") == 2
    monkeypatch.setitem(batched.AUTO_BUDGET, "cpu", per_client // 2)
    assert clients_per_pass(exp, "auto") == 1
    ditto = resolve(small_spec(method="ditto", task="synth-world", clients=8, clients_per_round=6))
    assert clients_per_pass(ditto, "auto") == 1
    # the output layer counts: a model whose vocabulary is 200x larger fits fewer clients in a pass
    monkeypatch.setitem(batched.AUTO_BUDGET, "cpu", 2 * per_client + 1)
    monkeypatch.setattr(config, "vocab_size", config.vocab_size * 200)
    assert clients_per_pass(exp, "auto") == 1


def test_the_record_says_how_many_clients_trained_in_one_pass(small_spec):
    from pflbench.federation.engine import run

    spec = small_spec(method="fedavg-lora", task="synth-world", clients=4, clients_per_round=3, rounds=1, local_steps=1)
    assert run(replace(spec, parallel_clients="auto"))["rounds"][0]["timing"]["clients_per_pass"] == 3
    assert run(spec)["rounds"][0]["timing"]["clients_per_pass"] == 1  # a RunSpec's default: one at a time
    ditto = replace(spec, method="ditto", parallel_clients="auto")
    assert run(ditto)["rounds"][0]["timing"]["clients_per_pass"] == 1


@pytest.mark.parametrize("value", ["0", "-2", "two", "1.5"])
def test_a_bad_parallel_clients_is_one_line(cli, tmp_path, value):
    code, _, err = cli("run", "--results-dir", str(tmp_path), "--parallel-clients", value)
    assert code == 2 and "--parallel-clients must be a positive integer or auto" in err
    assert len(err.strip().splitlines()) == 1 and not any(tmp_path.iterdir())


@pytest.mark.parametrize("method,task,membership", [("pftt", "synth-world", False),  # generation: knowledge and style
                                                    ("fedsa-lora", "shakespeare-roles", False),  # next-token accuracy
                                                    ("pftt", "synth-world", True)])  # and the attack's AUCs
def test_clients_scored_together_get_the_scores_they_get_one_by_one(small_spec, method, task, membership):
    from pflbench.federation.client import evaluate_client

    exp = resolve(small_spec(method=method, task=task, clients=4, membership=membership))
    assert batchable(exp) and batched.evaluates_batched(exp)
    store = Runner(exp, None, None).store
    gen = torch.Generator().manual_seed(0)
    # every client's private tensors made different, so a wrong routing would show
    private = [{n: t + 0.3 * torch.randn(t.shape, generator=gen) for n, t in store.initial.items()} for _ in exp.clients]
    shared = {n: dict(exp.loaded.model.named_parameters())[n].detach().clone() for n in exp.parts.shared}
    together = batched.evaluate_batched(exp, exp.clients, shared, private, store.initial, {0: 1}, k=3)
    alone = [evaluate_client(exp, c, shared, p, {}, store.initial, c.id == 0) for c, p in zip(exp.clients, private)]
    assert together == alone
    assert len({round(s["personal"], 6) for s in alone}) > 1  # the clients do differ
    if membership:  # scored on each client's own deployed model, not one model for all
        assert len({s["membership"]["personal"] for s in together}) > 1
        assert all(s["membership"]["shared"] is not None for s in together)


def test_how_many_clients_train_together_is_part_of_the_run_id(small_spec):
    from pflbench.config import RunSpec
    from pflbench.federation.resolve import resolve_spec

    one = small_spec()
    assert "parallel_clients" not in one.to_dict()  # at 1, the spec's JSON (and run id) is the one from before the field
    assert RunSpec.from_dict(one.to_dict()) == one
    ids = {replace(one, parallel_clients=k).run_id for k in (1, 2, "auto")}
    assert len(ids) == 3
    assert RunSpec.from_dict(replace(one, parallel_clients="auto").to_dict()).parallel_clients == "auto"
    assert resolve_spec(method="fedavg-lora").parallel_clients == "auto"  # the CLI's and suites' default
    with pytest.raises(Exception, match="positive integer or auto"):
        replace(one, parallel_clients=0)


def test_the_ray_backend_keeps_auto_so_each_worker_batches_its_share(cli, tmp_path, monkeypatch):
    from pflbench.federation import engine

    seen = []
    monkeypatch.setattr(engine, "run", lambda spec, *a, **k: seen.append(spec) or (_ for _ in ()).throw(SystemExit(0)))
    cli("run", "--results-dir", str(tmp_path), "--backend", "ray", "--rounds", "1")
    cli("run", "--results-dir", str(tmp_path), "--rounds", "1")
    assert [s.parallel_clients for s in seen] == ["auto", "auto"]
