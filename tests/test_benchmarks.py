"""Speed and memory of the engine. `make bench` times these (pytest-benchmark); `make test`
runs each once as a plain test."""

import pytest
import torch

from pflbench.federation.engine import Runner
from pflbench.federation.resolve import resolve
from pflbench.federation.store import ClientStore
from pflbench.models import load_model

METHODS = ["local-only", "fedavg-lora", "fedavg-full", "pftt"]


@pytest.mark.parametrize("method", METHODS)
def test_one_round_and_engine_overhead(benchmark, small_spec, method):
    """One training round (4 clients x 10 steps, no evaluation) on the tiny model. The
    engine's overhead is the round time not spent in forward/backward/optimizer steps
    (loading tensors, deltas, encoding, the store); target: at most 5% of the round."""
    exp = resolve(small_spec(method=method, clients=8, clients_per_round=4, local_steps=10, batch_size=8, rounds=2))
    runner = Runner(exp, None, None)
    shares = []

    def one_round():
        rec = runner.round(1)
        shares.append(1 - rec["timing"]["compute_s"] / rec["timing"]["train_s"])
        return rec

    rec = benchmark.pedantic(one_round, rounds=3, iterations=1)  # runs once under --benchmark-disable
    benchmark.extra_info["engine_overhead_share"] = min(shares)
    benchmark.extra_info["uplink_bytes"] = rec["uplink_bytes"]
    assert rec["eval"] is None and len(rec["sampled"]) == 4
    assert 0 <= min(shares) < 1


def test_one_rl_round_and_engine_overhead(benchmark, small_spec):
    """One round of the RL update (pfit on synth-align: 4 clients x 4 GRPO steps of 4 prompts x
    4 responses) on tiny-chat. Compute here is generation, reward scoring, forward, backward
    and optimizer; the rest (decoding text, advantages, tensor plumbing) is overhead, target
    at most 5% of the round."""
    from pflbench.federation.resolve import resolve_spec

    spec = resolve_spec(method="pfit", task="synth-align", clients=8, clients_per_round=4, local_steps=4, rounds=2)
    runner = Runner(resolve(spec), None, None)
    shares = []

    def one_round():
        rec = runner.round(1)
        shares.append(1 - rec["timing"]["compute_s"] / rec["timing"]["train_s"])
        return rec

    rec = benchmark.pedantic(one_round, rounds=3, iterations=1)
    benchmark.extra_info["engine_overhead_share"] = min(shares)
    assert rec["train_reward"] is not None and len(rec["sampled"]) == 4
    assert 0 <= min(shares) < 1


# run in a fresh interpreter: in the test process, memory freed by earlier tests is reused and
# the growth reads 0 (seen), which would pass the bound without measuring anything
_FILL_1000 = """
import json, os, torch
from pflbench.federation.store import ClientStore
from pflbench.methods.pftt import PFTT
from pflbench.models import load_model

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

model = load_model("tiny").model
parts = PFTT().prepare(model)
params = dict(model.named_parameters())
private = {n: params[n].detach() for n in parts.private}
store = ClientStore(private)
before = rss()
for c in range(1000):
    store.put(c, {n: t + c for n, t in private.items()})
grown = rss() - before
ok = all(torch.equal(store.get(417)[n], private[n] + 417) for n in private)
print(json.dumps({"grown": grown, "nbytes": store.nbytes(), "clients": len(store), "roundtrip": ok}))
"""


def test_1000_lora_clients_cost_the_base_model_plus_their_private_tensors(benchmark):
    """A thousand PFTT clients' private LoRA tensors in the store: the process grows by at
    most 1.2 times their bytes, and by at least half of them (so something was measured; the
    base model exists once, a client is one packed buffer). Timed: filling the store."""
    import json
    import subprocess
    import sys

    from pflbench.methods.pftt import PFTT

    model = load_model("tiny").model
    parts = PFTT().prepare(model)
    params = dict(model.named_parameters())
    private = {n: params[n].detach() for n in parts.private}
    per_client = sum(t.numel() * t.element_size() for t in private.values())
    model_bytes = sum(p.numel() * p.element_size() for p in model.parameters())

    def fill():
        store = ClientStore(private)
        for c in range(1000):
            store.put(c, {n: t + c for n, t in private.items()})
        return store

    store = benchmark.pedantic(fill, rounds=1, iterations=1)
    assert store.nbytes() == 1000 * per_client and len(store) == 1000
    proc = subprocess.run([sys.executable, "-c", _FILL_1000], capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-2000:]
    fresh = json.loads(proc.stdout.strip().splitlines()[-1])
    benchmark.extra_info.update(clients=1000, private_bytes_per_client=per_client, base_model_bytes=model_bytes,
                                store_growth_bytes=fresh["grown"], growth_over_private=fresh["grown"] / (1000 * per_client))
    assert fresh["nbytes"] == 1000 * per_client and fresh["clients"] == 1000 and fresh["roundtrip"]
    assert 0.5 * 1000 * per_client <= fresh["grown"] <= 1.2 * 1000 * per_client, (fresh["grown"], 1000 * per_client)


@pytest.mark.slow
@pytest.mark.parametrize("parallel", [1, "auto"], ids=["one-by-one", "batched"])
@pytest.mark.parametrize("workers", [0, 1, 2], ids=["local", "ray-1", "ray-2"])
def test_one_round_on_ray_workers(benchmark, ray_session, small_spec, workers, parallel):
    """One PFTT round of 4 clients x 10 steps on the tiny model with --backend ray on 1 and 2
    workers (0: the local backend), each training its share one client at a time or in one
    pass (docs/scaling.md gives these and projects N workers from the per-client time)."""
    from pflbench.federation.backends import LocalBackend, RayBackend

    exp = resolve(small_spec(method="pftt", clients=8, clients_per_round=4, local_steps=10, batch_size=8, rounds=2,
                             parallel_clients=parallel))
    backend = RayBackend(exp, workers) if workers else LocalBackend(exp)
    runner = Runner(exp, None, None, backend)
    try:
        runner.round(1)  # warm-up: the actors load the model
        rec = benchmark.pedantic(lambda: runner.round(1), rounds=3, iterations=1)
    finally:
        backend.close()
    benchmark.extra_info.update(workers=workers, parallel_clients=parallel, per_client_compute_s=rec["timing"]["compute_s"] / 4)
    assert len(rec["sampled"]) == 4 and rec["uplink_bytes"] > 0


@pytest.mark.parametrize("per_round", [4, 8, 16])
@pytest.mark.parametrize("parallel", [1, "auto"], ids=["sequential", "batched"])
def test_one_round_batched_against_sequential(benchmark, small_spec, per_round, parallel):
    """One fedavg-lora round of ``per_round`` clients x 10 steps (batch 8) on the tiny model,
    one client after another or all in one pass (--parallel-clients); docs/performance.md, "Batched
    clients", gives the ratios."""

    exp = resolve(small_spec(method="fedavg-lora", clients=16, clients_per_round=per_round, local_steps=10,
                             batch_size=8, rounds=2, parallel_clients=parallel))
    runner = Runner(exp, None, None)
    runner.round(1)  # warm-up
    rec = benchmark.pedantic(lambda: runner.round(1), rounds=3, iterations=1)
    benchmark.extra_info.update(clients_per_round=per_round, clients_per_pass=rec["timing"]["clients_per_pass"])
    assert rec["timing"]["clients_per_pass"] == (1 if parallel == 1 else per_round)
    assert len(rec["sampled"]) == per_round and rec["uplink_bytes"] == per_round * 49_168  # fp32 tiny LoRA payload


PEER_ROUND_S = 3.87  # OpenFedLLM's per-client trl loop, compute-matched, on this machine (issue 14)


@pytest.mark.parametrize("parallel", [1, "auto"], ids=["sequential", "batched"])
def test_the_default_round_against_the_peer(benchmark, parallel):
    """A round of the default setting (fedavg-lora, shakespeare-roles, 4 clients x 20 steps of
    batch 8, tiny model), the setting of the peer's 3.87 s compute-matched round."""
    from pflbench.config import RunSpec

    exp = resolve(RunSpec(parallel_clients=parallel))
    runner = Runner(exp, None, None)
    runner.round(1)
    rec = benchmark.pedantic(lambda: runner.round(1), rounds=3, iterations=1)
    benchmark.extra_info.update(peer_round_s=PEER_ROUND_S, clients_per_pass=rec["timing"]["clients_per_pass"])
    assert len(rec["sampled"]) == 4 and rec["uplink_bytes"] == 4 * 49_168


@pytest.mark.parametrize("parallel", [1, "auto"], ids=["sequential", "batched"])
def test_one_rl_round_batched_against_sequential(benchmark, small_spec, parallel):
    """A fedavg-lora round of the RL update on synth-align (tiny-chat): 4 clients x 4 GRPO
    steps of 4 prompts x 4 responses; each client samples alone either way, the objective's
    forward and backward are shared when batched."""
    exp = resolve(small_spec(method="fedavg-lora", task="synth-align", clients=8, clients_per_round=4, local_steps=4,
                             rounds=2, parallel_clients=parallel))
    runner = Runner(exp, None, None)
    runner.round(1)
    rec = benchmark.pedantic(lambda: runner.round(1), rounds=3, iterations=1)
    assert rec["timing"]["clients_per_pass"] == (1 if parallel == 1 else 4) and rec["train_reward"] is not None


@pytest.mark.parametrize("parallel", [1, "auto"], ids=["sequential", "batched"])
def test_scoring_clients_with_their_own_adapters(benchmark, small_spec, parallel):
    """Evaluation of 8 PFTT clients that all hold a local LoRA of their own (shakespeare-roles,
    next-token accuracy): one by one, or all 8 through their stacked adapters in one pass."""

    exp = resolve(small_spec(method="pftt", clients=8, clients_per_round=8, local_steps=1, rounds=1,
                             parallel_clients=parallel))
    runner = Runner(exp, None, None)
    runner.round(1)  # every client trains once: each has its own local LoRA
    scores = benchmark.pedantic(runner.evaluate, rounds=3, iterations=1)
    assert [c["trained"] for c in scores["clients"]] == [True] * 8


def _count_examples(task):
    """Wrap ``task.train_prompts`` (what both training paths draw from) to count the steps'
    real tokens and learnt positions (the next token of every position from the prompt's end on)."""
    seen = {"tokens": 0, "learnt": 0}
    draw = task.train_prompts

    def counting(*args, **kwargs):
        examples = draw(*args, **kwargs)
        seen["tokens"] += sum(len(e.ids) for e in examples)
        seen["learnt"] += sum(len(e.ids) - max(e.prompt_len, 1) for e in examples)
        return examples

    task.train_prompts = counting
    return seen


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("per_round,parallel", [(1, 1), (4, 1), (4, 4)], ids=["client-step", "round-sequential", "round-batched"])
def test_smollm2_training_against_the_matmul_limit(benchmark, small_spec, per_round, parallel, precision, monkeypatch):
    """SmolLM2-135M, fedavg-lora, shakespeare-roles, batch 8: one client's step (2 steps,
    timed per step) and a round of 4 clients x 2 steps one after another or in one pass, in
    fp32 and in bf16 (frozen base in bf16 under autocast). Reports tokens/s, the FLOPs done
    (``pflbench.models.throughput``: 4 per frozen weight per token, the output layer on learnt
    positions) and that rate as a fraction of this machine's matrix-product throughput in fp32
    and bf16, measured in the same test: the distance to the physical limit (docs/performance.md,
    "Real models on a CPU"). Where ``--precision bf16`` is refused (no bf16 instructions, or
    bf16 products measured slower than fp32), the bf16 case says why and times it anyway."""
    from pflbench.errors import UserError
    from pflbench.models import precision as prec
    from pflbench.models.precision import bf16_supported
    from pflbench.models.throughput import matmul_throughput, step_flops

    refused = None
    if precision == "bf16":
        try:
            prec.check_precision("bf16", torch.device("cpu"))
        except UserError as e:
            if not bf16_supported(torch.device("cpu")):  # one emulated step would take about 15 minutes
                pytest.skip(f"not timed: {e}")
            refused = str(e)
            monkeypatch.setenv(prec.ALLOW_EMULATED, "1")
    exp = resolve(small_spec(method="fedavg-lora", model="smollm2-135m", clients=8, clients_per_round=per_round,
                             local_steps=2, batch_size=8, rounds=2, parallel_clients=parallel, precision=precision))
    runner = Runner(exp, None, None)
    runner.round(1)  # warm-up
    seen = _count_examples(exp.task)
    rec = benchmark.pedantic(lambda: runner.round(1), rounds=1, iterations=1)
    compute_s = rec["timing"]["compute_s"]
    flops = step_flops(exp.loaded.model, seen["tokens"], seen["learnt"])
    fp32 = matmul_throughput(torch.float32)
    has_bf16 = bf16_supported(torch.device("cpu"))
    bf16 = matmul_throughput(torch.bfloat16, size=2048 if has_bf16 else 256, repeats=3 if has_bf16 else 1)
    info = {"clients_per_pass": rec["timing"]["clients_per_pass"], "tokens": seen["tokens"],
            "compute_s": compute_s,
            "tokens_per_s": seen["tokens"] / compute_s, "achieved_gflops": flops / compute_s / 1e9,
            "matmul_fp32_gflops": fp32 / 1e9, "matmul_bf16_gflops": bf16 / 1e9, "bf16_instructions": has_bf16,
            "fraction_of_fp32_limit": flops / compute_s / fp32, "fraction_of_bf16_limit": flops / compute_s / bf16}
    info.update(precision=precision, refused=refused)
    benchmark.extra_info.update(info)
    print(f"\nSmolLM2 {precision} {per_round} client(s) x 2 steps, {info['clients_per_pass']} per pass: "
          f"{info['tokens_per_s']:.0f} tokens/s, {info['achieved_gflops']:.1f} GFLOP/s = "
          f"{info['fraction_of_fp32_limit']:.0%} of this machine's fp32 matmul ({info['matmul_fp32_gflops']:.0f} GFLOP/s); "
          + (f"{info['fraction_of_bf16_limit']:.0%} of its bf16 matmul ({info['matmul_bf16_gflops']:.0f} GFLOP/s)" if has_bf16 else
             f"no bf16 instructions (bf16 matmul emulated at {info['matmul_bf16_gflops']:.1f} GFLOP/s): fp32 is the limit")
          + (f"\n  (a run would be refused: {refused})" if refused else ""))
    assert rec["timing"]["clients_per_pass"] == parallel and len(rec["sampled"]) == per_round
    assert seen["tokens"] > 0 and 0 < info["fraction_of_fp32_limit"]
