"""Speed and memory of the engine. `make bench` times these (pytest-benchmark); `make test`
runs each once as a plain test."""

import pytest

from pflbench.federation.engine import Runner, resolve
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
    from pflbench.config import resolve_spec

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


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        import os

        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_200_lora_clients_cost_their_private_tensors_not_200_models():
    from pflbench_baselines.local_only import LocalOnly

    model = load_model("tiny").model
    parts = LocalOnly().prepare(model)
    params = dict(model.named_parameters())
    private = {n: params[n].detach() for n in parts.private}
    per_client = sum(t.numel() * t.element_size() for t in private.values())
    model_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    store = ClientStore(private)
    before = _rss_bytes()
    for c in range(200):
        store.put(c, {n: t + c for n, t in private.items()})
    grown = _rss_bytes() - before
    assert store.nbytes() == 200 * per_client
    assert grown < 1.5 * 200 * per_client + 8 * 2**20, (grown, per_client)
    assert 200 * per_client < 0.05 * 200 * model_bytes  # what 200 copies of the model would cost
