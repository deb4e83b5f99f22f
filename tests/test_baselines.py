"""The baselines in baselines/: what each uploads (contents and bytes by formula) and one
property of its own each."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from pflbench.evaluation.metrics import score
from pflbench.federation.codec import HEADER_BYTES, FP32Codec
from pflbench.federation.engine import Runner
from pflbench.federation.resolve import resolve
from pflbench.methods import LocalContext, RoundInfo, Update, use_adapters
from pflbench.models.adapters import weigh_adapters

LAYERS, PROJ, HIDDEN, RANK = 4, ("q_proj", "v_proj"), 96, 8  # the tiny model, LoRA rank 8 on q and v
LORA = LAYERS * len(PROJ)  # LoRA modules on tiny
A_NUMEL = B_NUMEL = RANK * HIDDEN  # per module (A: 8 x 96, B: 96 x 8)


def _names(names, adapter=None, matrix=None, layers=range(LAYERS)):
    return {n for n in names if (adapter is None or f".{adapter}." in n) and (matrix is None or f".{matrix}." in n)
            and any(f"layers.{i}." in n for i in layers)}


def _capture(exp):
    """Record every payload the run encodes."""
    payloads, encode = [], exp.codec.encode

    def spy(tensors, schema, memory=None):
        payloads.append(encode(tensors, schema, memory))
        return payloads[-1]

    exp.codec.encode = spy
    return payloads


# method -> (which shared tensor names the payload carries, values per payload, messages)
def _expected(method, shared):
    return {
        "fedprox": (_names(shared, "global"), LORA * (A_NUMEL + B_NUMEL), 0),
        "fedsa-lora": (_names(shared, "lora", "lora_A"), LORA * A_NUMEL, 0),
        "ffa-lora": (_names(shared, "global", "lora_B"), LORA * B_NUMEL, 0),
        "ditto": (_names(shared, "global"), LORA * (A_NUMEL + B_NUMEL), 0),
        "fedper-lora": (_names(shared, "body", layers=range(LAYERS - 1)), (LAYERS - 1) * 2 * (A_NUMEL + B_NUMEL), 0),
        "fedrep-lora": (_names(shared, "body", layers=range(LAYERS - 1)), (LAYERS - 1) * 2 * (A_NUMEL + B_NUMEL), 0),
        "feddpa": (_names(shared, "global"), LORA * (A_NUMEL + B_NUMEL), 0),
        "scaffold-lora": (_names(shared, "global"), 2 * LORA * (A_NUMEL + B_NUMEL), 2 * LORA),
    }[method]


@pytest.mark.parametrize("method", ["fedprox", "fedsa-lora", "ffa-lora", "ditto", "fedper-lora", "fedrep-lora",
                                    "feddpa", "scaffold-lora"])
def test_payload_carries_what_the_method_shares_and_its_bytes_follow_the_formula(method, small_spec):
    exp = resolve(small_spec(method=method, rounds=1))
    payloads = _capture(exp)
    runner = Runner(exp, None, None)
    rec = runner.run(0.0)
    names, values, n_messages = _expected(method, exp.parts.shared)
    assert set(exp.parts.shared) == names  # nothing else is shared, nothing shared is left out
    assert len(payloads) == 2 and rec["rounds"][0]["uplink_bytes"] == 2 * (HEADER_BYTES + 4 * values)
    for p in payloads:
        assert len(p) == HEADER_BYTES + 4 * values
        decoded = FP32Codec().decode(p, runner.schema)
        assert set(decoded) - set(exp.parts.messages) == names and len(set(decoded) & set(exp.parts.messages)) == n_messages
    private = set(exp.parts.private)
    assert not private & set(runner.schema.names)  # private tensors never enter a payload


def test_central_uploads_nothing_trains_on_pooled_data_and_moves_the_global_model(small_spec):
    exp = resolve(small_spec(method="central", rounds=2))
    seen, train_batch = [], exp.task.train_batch
    exp.task.train_batch = lambda client, *a: (seen.append(client.name), train_batch(client, *a))[1]
    runner = Runner(exp, None, None)
    start = {n: t.clone() for n, t in runner.global_shared.items()}
    rec = runner.run(0.0)
    assert rec["summary"]["uplink_bytes"] == 0 and rec["summary"]["delivered_updates"] == 0
    assert rec["summary"]["downlink_bytes"] == 0  # no network: nothing is broadcast either
    assert set(seen) == {"pooled"} and len(seen) == 2 * 2 * exp.spec.local_steps
    assert any(not torch.equal(start[n], runner.global_shared[n]) for n in start)
    assert rec["summary"]["personalization_gain"] == 0


def test_fedprox_with_mu_zero_is_fedavg_lora_exactly(small_spec):
    from pflbench.federation.engine import run
    from pflbench.results.record import strip_timing

    def core(rec):
        return {k: v for k, v in strip_timing(rec).items() if k not in ("run_id", "spec", "method")}

    fedavg = core(run(small_spec(method="fedavg-lora"), None))  # one client at a time, as fedprox
    assert core(run(small_spec(method="fedprox", method_options={"mu": "0"}), None)) == fedavg
    pulled = core(run(small_spec(method="fedprox", method_options={"mu": "100"}), None))
    assert pulled["rounds"][0]["train_loss"] == fedavg["rounds"][0]["train_loss"]  # round 1 starts at the global model
    assert pulled["rounds"][1]["train_loss"] != fedavg["rounds"][1]["train_loss"]


def test_ffa_lora_never_changes_a(small_spec):
    exp = resolve(small_spec(method="ffa-lora", rounds=2))
    params = dict(exp.loaded.model.named_parameters())
    a_names = _names(params, "global", "lora_A")
    before = {n: params[n].detach().clone() for n in a_names}
    runner = Runner(exp, None, None)
    start = {n: t.clone() for n, t in runner.global_shared.items()}
    runner.run(0.0)
    assert len(a_names) == LORA and all(torch.equal(before[n], params[n]) for n in a_names)
    assert not params[next(iter(a_names))].requires_grad
    assert all(not torch.equal(start[n], runner.global_shared[n]) for n in start)  # B trained


def test_ditto_deploys_its_personal_lora_and_its_shared_score_is_the_global_models(small_spec):
    exp = resolve(small_spec(method="ditto", rounds=2))
    runner = Runner(exp, None, None)
    rec = runner.run(0.0)
    model, task = exp.loaded.model, exp.task
    last = rec["rounds"][-1]["eval"]["clients"]
    trained = [c for c in last if c["trained"]]
    assert trained and any(c["personal"] != c["shared"] for c in trained)
    def load(tensors):
        with torch.no_grad():
            for name, value in tensors.items():
                runner.params[name].copy_(value)

    load(runner.global_shared)
    for c in last:
        client = exp.clients[c["client"]]
        load(runner.store.initial)
        with use_adapters(model, ["global"]):  # the global model alone
            assert score(task, model, client) == c["shared"]
        if c["trained"]:
            load(runner.store.get(c["client"]))
            with use_adapters(model, ["personal"]):
                assert score(task, model, client) == c["personal"]
            personal = runner.store.get(c["client"])
            assert any(not torch.equal(t, runner.global_shared[n.replace(".personal.", ".global.")]) for n, t in personal.items())
        else:  # a client that never trained is deployed with the global model
            assert c["personal"] == c["shared"]


def test_fedrep_trains_the_head_first_and_uploads_the_body(small_spec):
    exp = resolve(small_spec(method="fedrep-lora", rounds=1, method_options={"head_fraction": "1"}))
    runner = Runner(exp, None, None)
    start = {n: t.clone() for n, t in runner.global_shared.items()}
    runner.run(0.0)  # every step on the head: the shared body does not move
    assert all(torch.equal(start[n], runner.global_shared[n]) for n in start)
    assert any(not torch.equal(t, runner.store.initial[n]) for c in range(4) if runner.store.has(c) for n, t in runner.store.get(c).items())


def test_weigh_adapters_mixes_each_example_between_the_adapters(small_spec):
    exp = resolve(small_spec(method="feddpa"))
    model = exp.loaded.model
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    ids = torch.randint(3, 100, (2, 7), generator=torch.Generator().manual_seed(0))
    model.eval()
    with torch.no_grad():
        logits = {}
        for name, active in (("local", ["local"]), ("global", ["global"]), ("both", None)):
            with use_adapters(model, active):
                logits[name] = model(input_ids=ids).logits
        with weigh_adapters(model, lambda i, m: {"local": torch.tensor([1.0, 0.0]), "global": torch.tensor([0.0, 1.0])}):
            mixed = model(input_ids=ids).logits
        torch.testing.assert_close(mixed[0], logits["local"][0])
        torch.testing.assert_close(mixed[1], logits["global"][1])
        torch.testing.assert_close(model(input_ids=ids).logits, logits["both"])  # restored on exit
        assert not torch.allclose(logits["local"], logits["global"])


def test_feddpa_instance_mixing_runs_and_keeps_a_centroid_per_client(small_spec):
    exp = resolve(small_spec(method="feddpa", method_options={"mixing": "instance"}))
    runner = Runner(exp, None, None)
    rec = runner.run(0.0)
    trained = [c for c in range(4) if runner.store.has(c)]
    assert trained and all(runner.store.get_state(c)["centroid"].shape == (HIDDEN,) for c in trained)
    assert rec["summary"]["score"] == rec["summary"]["score"]


# ---- SCAFFOLD ------------------------------------------------------------------------------

class _Quadratic(torch.nn.Module):
    """Two attention-like projections to attach LoRA to; the loss of client i is
    0.5 * sum_n ||theta_n - T_i,n||^2 over the LoRA tensors, so its gradient is theta - T_i."""

    def __init__(self, targets):
        super().__init__()
        self.q_proj, self.v_proj = torch.nn.Linear(3, 3, bias=False), torch.nn.Linear(3, 3, bias=False)
        self.targets = targets

    def forward(self, client):
        i = int(client[0])
        return SimpleNamespace(loss=sum(0.5 * ((p - self.targets[i][n]) ** 2).sum()
                                        for n, p in self.named_parameters() if "lora_" in n))


def test_scaffold_follows_its_update_rule_on_a_toy_quadratic():
    from pflbench_baselines.scaffold_lora import CONTROL, ScaffoldLoRA

    n_clients, steps, lr, server_lr, rounds = 3, 4, 0.1, 0.7, 3
    method = ScaffoldLoRA({"rank": "2", "optimizer": "sgd", "server_lr": str(server_lr)})
    model = _Quadratic({})
    parts = method.prepare(model)
    for n, p in model.named_parameters():
        p.requires_grad_(n in parts.shared)
    params = dict(model.named_parameters())
    g = torch.Generator().manual_seed(0)
    model.targets = {i: {n: torch.randn(params[n].shape, generator=g) for n in parts.shared} for i in range(n_clients)}
    task = SimpleNamespace(kind="instruction", num_train=lambda c: 1,
                           train_batch=lambda c, b, gen: {"client": torch.tensor([c.id])})
    x = {n: params[n].detach().clone() for n in parts.shared}
    state = {i: {} for i in range(n_clients)}
    # the reference: SCAFFOLD written out on the same quadratic
    ref_x = {n: t.clone() for n, t in x.items()}
    ref_c = {n: torch.zeros_like(t) for n, t in x.items()}
    ref_ci = {i: {n: torch.zeros_like(t) for n, t in x.items()} for i in range(n_clients)}
    for r in range(1, rounds + 1):
        updates = []
        for i in range(n_clients):
            with torch.no_grad():
                for n in parts.shared:
                    params[n].copy_(x[n])
            ctx = LocalContext(model=model, client=SimpleNamespace(id=i), task=task, parts=parts, round=r, steps=steps,
                               batch_size=1, lr=lr, generator=torch.Generator(), global_shared=x, state=state[i],
                               server=dict(method.server), num_clients=n_clients, participation=r - 1,
                               delivered=True if r > 1 else None)
            up = method.local_update(ctx).upload
            updates.append(Update(i, 1, {n: up[n] for n in parts.shared}, {n: up[n] for n in up if n.startswith(CONTROL)}))
        x = method.aggregate(x, updates, RoundInfo(r, n_clients, list(range(n_clients)), list(range(n_clients)), [],
                                                   {i: r for i in range(n_clients)}))
        dys, dcs = [], []
        for i in range(n_clients):
            y = {n: t.clone() for n, t in ref_x.items()}
            for _ in range(steps):
                y = {n: y[n] - lr * ((y[n] - model.targets[i][n]) + ref_c[n] - ref_ci[i][n]) for n in y}
            new_ci = {n: ref_ci[i][n] - ref_c[n] + (ref_x[n] - y[n]) / (steps * lr) for n in y}
            dys.append({n: y[n] - ref_x[n] for n in y})
            dcs.append({n: new_ci[n] - ref_ci[i][n] for n in y})
            ref_ci[i] = new_ci
        ref_x = {n: ref_x[n] + server_lr * sum(d[n] for d in dys) / n_clients for n in ref_x}
        ref_c = {n: ref_c[n] + sum(d[n] for d in dcs) / n_clients for n in ref_c}
        for n in x:
            torch.testing.assert_close(x[n], ref_x[n], rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(method.server[n], ref_c[n], rtol=1e-5, atol=1e-6)
    for i in range(n_clients):  # committed c_i (+ the change sent last, delivered) is the reference's
        for n in parts.shared:
            torch.testing.assert_close(state[i]["c/" + n] + state[i]["sent/" + n], ref_ci[i][n], rtol=1e-5, atol=1e-6)


def test_scaffold_client_and_server_variates_stay_consistent_on_a_lossy_channel(small_spec):
    exp = resolve(small_spec(method="scaffold-lora", channel="lte-cell-edge", rounds=4, clients_per_round=3))
    runner = Runner(exp, None, None)
    rec = runner.run(0.0)
    lost = rec["summary"]["lost_updates"] + rec["summary"]["late_updates"]
    assert lost > 0 and rec["summary"]["delivered_updates"] > 0  # the channel did drop some uploads
    n = exp.spec.clients
    for name, c in exp.method.server.items():
        total = torch.zeros_like(c)
        for client in range(n):
            st = runner.store.get_state(client)
            if "c/" + name in st:
                total += st["c/" + name] + (st["sent/" + name] if runner.last_delivered.get(client) else 0)
        torch.testing.assert_close(c, total / n, rtol=1e-4, atol=1e-7)
    assert any(float(c.abs().sum()) > 0 for c in exp.method.server.values())


def test_fedsa_lora_keeps_b_on_each_client_so_the_shared_part_alone_is_the_base_model(small_spec):
    exp = resolve(small_spec(method="fedsa-lora", rounds=2, clients_per_round=4))
    runner = Runner(exp, None, None)
    rec = runner.run(0.0)
    bs = [runner.store.get(c) for c in range(4)]
    assert all(any(not torch.equal(bs[0][n], b[n]) for n in b) for b in bs[1:])  # each client its own B
    assert all(not torch.equal(t, torch.zeros_like(t)) for t in bs[0].values())
    evals = rec["rounds"][-1]["eval"]
    assert evals["shared_score"] == rec["reference"]["base"]["score"]  # A alone, with B = 0: the base model
