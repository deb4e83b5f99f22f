"""Client-level differential privacy on the uplink (--dp): clipping bounds every upload, the
noise has the stated scale (each client's under local DP, the aggregate's under central DP),
private tensors are untouched, epsilon comes from dp-accounting, grows with the rounds run and
resumes, tables show it, and bad settings are one line."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from pflbench.config import RunSpec, parse_dp
from pflbench.errors import UserError
from pflbench.federation import privacy
from pflbench.federation.engine import Runner
from pflbench.federation.resolve import resolve

pytest.importorskip("dp_accounting", reason="pflbench[privacy] is installed by make setup")


def test_clipping_bounds_the_norm_of_the_whole_upload_and_leaves_small_ones_alone():
    g = torch.Generator().manual_seed(0)
    upload = {"a": torch.randn(30, 7, generator=g), "b": torch.randn(50, generator=g) * 3}
    clipped, norm = privacy.clip(upload, 1.5)
    after = math.sqrt(sum(float(t.pow(2).sum()) for t in clipped.values()))
    assert norm > 1.5 and after == pytest.approx(1.5, rel=1e-6)
    # one scale for every tensor: the direction is kept
    assert torch.allclose(clipped["a"] / upload["a"], torch.full_like(upload["a"], 1.5 / norm))
    small, _ = privacy.clip({"a": torch.full((4,), 0.1)}, 1.5)
    assert torch.equal(small["a"], torch.full((4,), 0.1))


def test_local_noise_has_standard_deviation_noise_times_clip_and_is_seeded():
    dp = parse_dp("clip=0.5,noise=1.3")
    zeros = {"w": torch.zeros(200_000)}
    out = privacy.local_upload(dp, zeros, seed=0, round_idx=1, client=2)["w"]
    assert float(out.std()) == pytest.approx(1.3 * 0.5, rel=0.02) and abs(float(out.mean())) < 0.01
    assert torch.equal(out, privacy.local_upload(dp, zeros, seed=0, round_idx=1, client=2)["w"])
    assert not torch.equal(out, privacy.local_upload(dp, zeros, seed=0, round_idx=1, client=3)["w"])


@pytest.fixture(scope="module")
def dp_spec():
    return RunSpec(method="fedavg-lora", task="synth-world", clients=4, clients_per_round=2, rounds=2, local_steps=2,
                   batch_size=4)


def _run(spec, rounds_seen=None):
    exp = resolve(spec)
    if rounds_seen is not None:
        aggregate = exp.method.aggregate
        exp.method.aggregate = lambda shared, updates, info: rounds_seen.append(updates) or aggregate(shared, updates, info)
    runner = Runner(exp, None, None)
    return runner, runner.run(0.0)


def test_every_update_the_server_aggregates_is_clipped(dp_spec):
    """noise 0 isolates the clipping: under local DP the client clipped what the server
    decodes; under central DP the server clips it before aggregating."""
    for mode in ("local", "central"):
        seen: list = []
        _run(replace(dp_spec, dp={"clip": 1e-3, "noise": 0.0, "mode": mode}), seen)
        norms = [math.sqrt(sum(float(t.pow(2).sum()) for t in u.delta.values())) for updates in seen for u in updates]
        assert len(norms) == 4 and max(norms) <= 1e-3 * (1 + 1e-5), (mode, norms)
    seen = []
    _run(dp_spec, seen)  # without --dp the same updates are far larger: the clipping did something
    assert min(math.sqrt(sum(float(t.pow(2).sum()) for t in u.delta.values())) for us in seen for u in us) > 1e-2


def test_central_noise_is_noise_times_clip_over_the_updates_and_local_noise_leaves_private_tensors_alone(dp_spec):
    """Round 1 of two runs that differ only in the noise: the global shared tensors differ by
    the server's noise alone, of standard deviation Z*C/K (K = 2 updates); PFTT's private
    LoRA after round 1 is the same with and without local noise (it never leaves the client)."""
    one = replace(dp_spec, rounds=1)
    quiet, _ = _run(replace(one, dp={"clip": 0.05, "noise": 0.0, "mode": "central"}))
    noisy, _ = _run(replace(one, dp={"clip": 0.05, "noise": 2.0, "mode": "central"}))
    diff = torch.cat([(noisy.global_shared[n] - quiet.global_shared[n]).flatten() for n in quiet.global_shared])
    assert diff.numel() > 10_000 and float(diff.std()) == pytest.approx(2.0 * 0.05 / 2, rel=0.05)

    pftt = replace(one, method="pftt")
    plain, _ = _run(replace(pftt, dp={"clip": 0.05, "noise": 0.0, "mode": "local"}))
    noised, _ = _run(replace(pftt, dp={"clip": 0.05, "noise": 2.0, "mode": "local"}))
    assert plain.store.clients() == noised.store.clients() and plain.store.clients()
    for c in plain.store.clients():
        for name, t in plain.store.get(c).items():
            assert torch.equal(t, noised.store.get(c)[name])
    assert any(not torch.equal(plain.global_shared[n], noised.global_shared[n]) for n in plain.global_shared)


def test_epsilon_follows_the_accountant_over_the_rounds_run():
    dp = parse_dp("clip=1,noise=1.1")
    eps = [privacy.epsilon(dp, 16, 4, r) for r in range(0, 6)]
    assert eps[0] == 0 and all(a < b for a, b in zip(eps, eps[1:]))  # each round spends more
    assert privacy.epsilon(parse_dp("clip=1,noise=2.2"), 16, 4, 5) < eps[5]  # more noise, less spent
    assert privacy.epsilon(dp, 16, 16, 5) > eps[5]  # everyone every round: no amplification by sampling
    assert privacy.epsilon(dp, 16, 4, 5, uniform=False) == privacy.epsilon(dp, 16, 16, 5)
    assert privacy.epsilon(parse_dp("clip=1,noise=0"), 16, 4, 1) == math.inf
    # delta: 1/clients by default; a smaller delta costs more epsilon
    assert privacy.delta_of(dp, 16) == 1 / 16
    assert privacy.epsilon(parse_dp("clip=1,noise=1.1,delta=1e-5"), 16, 4, 5) > eps[5]


def test_a_dp_run_records_epsilon_every_round_and_a_resumed_run_the_same(dp_spec, tmp_path):
    from pflbench.federation.engine import run

    spec = replace(dp_spec, rounds=3, dp={"clip": 0.5, "noise": 1.0, "mode": "local"})
    whole = run(spec)
    assert [r["dp"]["epsilon"] for r in whole["rounds"]] == [privacy.epsilon(spec.dp, 4, 2, r) for r in (1, 2, 3)]
    assert whole["summary"]["epsilon"] == whole["rounds"][-1]["dp"]["epsilon"] and whole["summary"]["dp_delta"] == 0.25
    assert "epsilon" not in run(replace(spec, dp={}, rounds=1))["summary"]  # no --dp, no epsilon

    # stopped after round 2 (a failure in round 3), then resumed from the checkpoint
    import pflbench.federation.engine as engine

    original = engine.Runner.round

    def failing(self, r):
        if r == 3:
            raise KeyboardInterrupt
        return original(self, r)

    engine.Runner.round = failing
    try:
        with pytest.raises(KeyboardInterrupt):
            run(spec, tmp_path)
    finally:
        engine.Runner.round = original
    resumed = run(spec, tmp_path)
    assert [r["dp"] for r in resumed["rounds"]] == [r["dp"] for r in whole["rounds"]]
    assert local_only_spends_nothing(dp_spec)


def local_only_spends_nothing(dp_spec) -> bool:
    from pflbench.federation.engine import run

    record = run(replace(dp_spec, method="local-only", rounds=1, dp={"clip": 0.5, "noise": 1.0, "mode": "local"}))
    return record["summary"]["epsilon"] == 0.0 and record["summary"]["uplink_bytes"] == 0


def test_the_spec_without_dp_keeps_its_run_id():
    assert "dp" not in RunSpec().to_dict()
    with_dp = RunSpec(dp="clip=1,noise=1")
    assert with_dp.dp == {"clip": 1.0, "noise": 1.0, "mode": "local", "delta": None} and with_dp.run_id != RunSpec().run_id
    assert RunSpec.from_dict(with_dp.to_dict()) == with_dp


@pytest.mark.parametrize("value,message", [
    ("clip=1", "--dp needs clip and noise"),
    ("noise=1,clip=1,sigma=2", "--dp needs clip and noise"),
    ("clip=0,noise=1", "--dp clip must be a finite number > 0"),
    ("clip=1,noise=-1", "--dp noise must be a finite number >= 0"),
    ("clip=1,noise=nan", "--dp noise must be a finite number"),
    ("clip=1,noise=1,mode=shuffle", "--dp mode must be local"),
    ("clip=1,noise=1,delta=2", "--dp delta must be below 1"),
    ("clip 1", "--dp expects clip=C,noise=Z"),
])
def test_bad_dp_settings_are_one_line(cli, tmp_path, value, message):
    with pytest.raises(UserError):
        parse_dp(value)
    code, _, err = cli("run", "--results-dir", str(tmp_path), "--dp", value)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not any(tmp_path.iterdir())


def test_central_dp_refuses_a_method_whose_messages_it_would_not_cover(cli, tmp_path):
    code, _, err = cli("run", "--results-dir", str(tmp_path), "--method", "scaffold-lora", "--task", "synth-world",
                       "--clients", "2", "--clients-per-round", "1", "--rounds", "1", "--local-steps", "1",
                       "--dp", "clip=1,noise=1,mode=central")
    assert code == 2 and "use mode=local" in err and len(err.strip().splitlines()) == 1


def test_the_table_of_dp_runs_has_epsilon_and_the_dp_setting(cli, tmp_path):
    base = ["--task", "synth-world", "--clients", "4", "--clients-per-round", "2", "--rounds", "1", "--local-steps", "1",
            "--results-dir", str(tmp_path)]
    for dp in ("clip=0.5,noise=1", "clip=0.5,noise=4"):
        code, _, err = cli("run", "--method", "fedavg-lora", "--dp", dp, *base)
        assert code == 0, err
    code, out, _ = cli("table", str(tmp_path))
    assert code == 0 and "| ε" in out and "clip=0.5,mode=local,noise=4" in out
    lines = [l for l in out.splitlines() if l.startswith("| fedavg-lora")]
    eps = sorted(float(l.split("(δ")[0].split("|")[-1]) for l in lines)
    assert len(eps) == 2 and eps[0] < eps[1]  # noise 4 spends less than noise 1
    code, csv_text, _ = cli("table", str(tmp_path), "--format", "csv")
    assert code == 0 and "epsilon" in csv_text.splitlines()[0]


def test_the_table_pairs_methods_at_equal_epsilon_across_dp_settings(cli, tmp_path):
    """PFTT under local DP and FedAvg-LoRA under central DP with another clip spend the same ε
    (it depends on the noise, the sampling and the rounds): --at-epsilon pairs them seed by
    seed; FedAvg-LoRA at a higher noise (a smaller ε) is not paired; local-only, which uploads
    nothing, is the reference at every level."""
    from pflbench.results.record import load_records
    from pflbench.results.stats import paired
    from pflbench.results.table import group

    base = ["--task", "synth-world", "--clients", "4", "--clients-per-round", "2", "--rounds", "1", "--local-steps", "2",
            "--results-dir", str(tmp_path)]
    for method, dp in (("pftt", "clip=0.5,noise=1"), ("fedavg-lora", "clip=2,noise=1,mode=central"),
                       ("fedavg-lora", "clip=0.5,noise=4"), ("local-only", None)):
        for seed in ("0", "1"):
            code, _, err = cli("run", "--method", method, "--seed", seed, *base, *(["--dp", dp] if dp else []))
            assert code == 0, err
    code, out, err = cli("table", str(tmp_path), "--at-epsilon")
    assert code == 0, err
    lines = [[c.strip() for c in line.strip("|").split("|")] for line in out.splitlines() if line.startswith("| ")][1:]
    pftt = [l for l in lines if l[1] == "pftt"]
    assert [(l[3], l[4]) for l in pftt] == [("local-only", "(uploads nothing)"), ("fedavg-lora", "clip=2,mode=central,noise=1")]
    rows = {(r.method, r.settings["dp"].get("noise"), r.settings["dp"].get("mode")): r
            for r in group(load_records(tmp_path))["synth-world"]}
    want = paired(rows[("pftt", 1.0, "local")].per_seed("score"), rows[("fedavg-lora", 1.0, "central")].per_seed("score"))
    assert pftt[1][5] == "2" and pftt[1][6].startswith(f"{want.diff.mean:+.2f} ± {want.diff.half_width:.2f}"), pftt
    assert not any("noise=4" in l[4] for l in lines)  # another ε: never paired with noise 1
    noisy = [l for l in lines if l[2] == "clip=0.5,mode=local,noise=4"]
    assert [l[3] for l in noisy] == ["local-only"] and float(noisy[0][0].split()[0]) < float(pftt[0][0].split()[0])
    code, out, _ = cli("table", str(tmp_path / "none"), "--at-epsilon")
    assert code == 2


def test_a_suite_sweeps_dp_settings_as_an_axis(tmp_path):
    from pflbench.orchestration.sweep import expand, load_suite

    card = tmp_path / "suite.yaml"
    card.write_text('methods: [fedavg-lora, local-only]\ntasks: [synth-world]\ndps: [none, "clip=5,noise=1", '
                    '"clip=5,noise=1,mode=central"]\nseeds: 0-1\n')
    specs = expand(load_suite(card))
    assert len(specs) == 2 * 3 * 2
    assert [s.dp.get("mode") for s in specs if s.method == "fedavg-lora" and s.seed == 0] == [None, "local", "central"]
    assert len({s.run_id for s in specs}) == len(specs)
    card.write_text('methods: [fedavg-lora]\ntasks: [synth-world]\ndps: ["clip=5"]\n')
    with pytest.raises(UserError, match="--dp needs clip and noise"):
        expand(load_suite(card))


def test_the_membership_auc_is_the_probability_a_member_scores_higher():
    from pflbench.evaluation.membership import auc

    assert auc([3.0, 4.0], [1.0, 2.0]) == 1.0 and auc([1.0, 2.0], [3.0, 4.0]) == 0.0
    assert auc([1.0, 2.0], [1.0, 2.0]) == 0.5 and auc([2.0, 2.0], [1.0, 2.0]) == 0.75  # ties count half
    assert auc([], [1.0]) is None


@pytest.fixture(scope="module")
def audited():
    """local-only and PFTT on synth-world with --membership, trained hard enough to memorise
    (20 steps at lr 0.05 a round): their records."""
    from pflbench.federation.engine import run

    spec = RunSpec(task="synth-world", clients=4, clients_per_round=4, rounds=3, local_steps=20, batch_size=8, lr=0.05,
                   membership=True)
    return {m: run(replace(spec, method=m)) for m in ("local-only", "pftt", "fedavg-lora")}


def test_the_attack_finds_what_a_local_model_memorised_and_the_shared_part_alone_does_not_tell(audited):
    """local-only's deployed models tell their clients' training examples from held-out ones
    far better than the untrained model does; its shared part is the untrained model, so the
    attack on it is the base model's exactly. PFTT's private LoRA leaks through the deployed
    model more than its shared part alone does."""
    local = audited["local-only"]["summary"]
    assert local["membership_auc_shared"] == local["base_membership_auc"]
    assert local["membership_auc"] > local["base_membership_auc"] + 0.1, local
    pftt = audited["pftt"]["summary"]
    assert pftt["membership_auc"] > pftt["membership_auc_shared"], pftt
    clients = audited["pftt"]["rounds"][-1]["eval"]["clients"]
    assert all(0 <= c["membership"]["personal"] <= 1 and 0 <= c["membership"]["shared"] <= 1 for c in clients)
    assert "membership" not in RunSpec().to_dict()


def test_the_attack_on_one_upload_finds_what_the_aggregate_hides(audited):
    """The model the server rebuilds from one FedAvg-LoRA upload is that client's locally
    trained model: it gives the client's members away far more than the aggregate of four
    uploads does. Every client that sent an upload in the evaluated round is attacked; a
    method that uploads nothing has no upload to attack."""
    lora = audited["fedavg-lora"]
    s = lora["summary"]
    assert s["membership_auc_upload"] > s["membership_auc_shared"] + 0.1, s
    last = lora["rounds"][-1]
    attacked = {c["client"] for c in last["eval"]["clients"] if c["membership"].get("upload") is not None}
    assert attacked == set(last["delivered"]) and attacked
    assert audited["local-only"]["summary"]["membership_auc_upload"] is None
    assert audited["pftt"]["summary"]["membership_auc_upload"] is not None


def test_no_one_holds_a_single_upload_under_secure_aggregation():
    from pflbench.federation.engine import run

    pytest.importorskip("cryptography")
    spec = RunSpec(task="synth-world", method="fedavg-lora", clients=3, clients_per_round=3, rounds=1, local_steps=2,
                   membership=True, secagg=True)
    s = run(spec)["summary"]
    assert s["membership_auc_upload"] is None and s["membership_auc_shared"] is not None


def test_the_table_shows_the_attack_beside_the_score(audited):
    from pflbench.results.table import render, render_csv

    text = render(list(audited.values()))
    assert "member AUC" in text and "member AUC shared" in text and "member AUC upload" in text and "membership-inference" in text
    assert "membership_auc_low" in render_csv(list(audited.values())).splitlines()[0]


# ---- secure aggregation ----------------------------------------------------------------
SA_NAMES, SA_SHAPES = ["a", "b"], [(30, 4), (50,)]


def _uploads(clients, scale=0.1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {c: {"a": torch.randn(30, 4, generator=g) * scale, "b": torch.randn(50, generator=g) * scale} for c in clients}


@pytest.mark.parametrize("dropped", [[], [5], [0, 5]])
def test_masked_uploads_sum_to_the_weighted_mean_of_the_survivors(dropped):
    """Five clients, a third of them dropped or none: the server's unmasked sum is the
    weighted mean of the survivors' uploads to float tolerance; the dropped clients' pairwise
    masks are rebuilt from the survivors' shares."""
    from pflbench.federation.secagg import SecAgg

    clients, weights = [0, 2, 3, 5, 7], {0: 10.0, 2: 25.0, 3: 5.0, 5: 40.0, 7: 20.0}
    ups = _uploads(clients)
    sa = SecAgg(clients, weights, SA_NAMES, SA_SHAPES, seed=3, round_idx=2)
    masked = {c: sa.setup(c).mask(ups[c], 3, SA_NAMES, SA_SHAPES) for c in clients}
    result = sa.unmask({c: m for c, m in masked.items() if c not in dropped}, set())
    survivors = [c for c in clients if c not in dropped]
    total = sum(weights[c] for c in survivors)
    for n in SA_NAMES:
        want = sum(ups[c][n] * weights[c] / total for c in survivors)
        torch.testing.assert_close(result.delta[n], want, rtol=0, atol=1e-6)
    assert result.survivors == survivors and result.dropped == dropped


def test_too_few_survivors_lose_the_round_and_nothing_is_revealed():
    from pflbench.federation.secagg import SecAgg

    clients = [0, 1, 2, 3]
    sa = SecAgg(clients, {c: 1.0 for c in clients}, SA_NAMES, SA_SHAPES, seed=0, round_idx=1)
    masked = {c: sa.setup(c).mask(u, 0, SA_NAMES, SA_SHAPES) for c, u in _uploads(clients).items()}
    result = sa.unmask({c: masked[c] for c in (0, 1)}, set())  # 2 of 4, threshold 3
    assert sa.t == 3 and result.delta is None and result.dropped == [2, 3]


def test_a_masked_upload_is_uniform_and_uncorrelated_with_its_delta():
    """One client's masked vector looks like uniform noise whatever it carries: a
    Kolmogorov-Smirnov test against the uniform distribution over the 32-bit ring does not
    reject it, for an all-zero upload and for a large one; the masked words are uncorrelated
    with the upload's values; and two different uploads' masked vectors are indistinguishable by
    their distribution."""
    import numpy as np
    from scipy import stats

    from pflbench.federation.secagg import MASKED_HEADER, SecAgg

    names, shapes = ["w"], [(20_000,)]
    clients = [0, 1, 2]
    signal = torch.linspace(-1, 1, 20_000)
    seen = {}
    for label, value in (("zeros", torch.zeros(20_000)), ("signal", signal)):
        sa = SecAgg(clients, {c: 1.0 for c in clients}, names, shapes, seed=9, round_idx=4)
        words = np.frombuffer(sa.setup(1).mask({"w": value}, 9, names, shapes), dtype="<u4", offset=MASKED_HEADER).astype(np.float64)
        assert stats.kstest(words / 2**32, "uniform").pvalue > 0.01, label
        seen[label] = words
    assert abs(np.corrcoef(seen["signal"], signal.numpy())[0, 1]) < 0.05
    assert stats.ks_2samp(seen["zeros"], seen["signal"]).pvalue > 0.01


def test_secure_aggregation_in_a_run_gives_the_plain_aggregate_and_counts_the_protocol_bytes(dp_spec):
    """fedavg-lora on the ideal channel with and without --secagg: the same global tensors to
    float tolerance (one round's aggregate within 1e-6; after two rounds 1e-4). The uplink grows by exactly what the protocol sends (two public keys,
    k-1 routed ciphertexts and k shares a client, the masked vector's 8-byte header in place
    of the fp32 payload's), the downlink by the key list and the routed ciphertexts."""
    from pflbench.federation.secagg import CIPHERTEXT_BYTES, ID_BYTES, KEY_BYTES, MASKED_HEADER, protocol_bytes

    plain, plain_rec = _run(dp_spec)
    masked, masked_rec = _run(replace(dp_spec, secagg=True))
    for n, t in plain.global_shared.items():  # fixed point (2^-24) differences, trained on for a round
        torch.testing.assert_close(masked.global_shared[n], t, rtol=0, atol=1e-4)
    one, _ = _run(replace(dp_spec, rounds=1))
    one_masked, _ = _run(replace(dp_spec, rounds=1, secagg=True))
    for n, t in one.global_shared.items():  # one aggregate: within the ring's resolution
        torch.testing.assert_close(one_masked.global_shared[n], t, rtol=0, atol=1e-6)
    k = dp_spec.clients_per_round
    header = len(plain.exp.codec.encode({n: torch.zeros(s) for n, s in zip(plain.schema.names, plain.schema.shapes)},
                                        plain.schema, {})) - 4 * plain.schema.numel
    for a, b in zip(plain_rec["rounds"], masked_rec["rounds"]):
        assert b["secagg"]["survivors"] == a["delivered"] and not b["secagg"]["aborted"]
        assert b["uplink_bytes"] - a["uplink_bytes"] == k * (protocol_bytes(k) + MASKED_HEADER - header)
        assert protocol_bytes(k) == 2 * KEY_BYTES + (k - 1) * CIPHERTEXT_BYTES + k * (ID_BYTES + 68)
        assert b["downlink_bytes"] - a["downlink_bytes"] == k * k * (ID_BYTES + 2 * KEY_BYTES) + k * (k - 1) * CIPHERTEXT_BYTES
    assert "secagg" not in RunSpec().to_dict()


def test_each_client_masks_its_own_upload_and_the_server_never_decodes_one(dp_spec, monkeypatch):
    """Under --secagg what comes back from a client's job (what a Flower node puts on the wire)
    is already its masked vector: a header naming the round and the client, 4 bytes a value,
    and not the fp32 codec's bytes of the same upload; the server's codec decodes no upload;
    the job's Setup (the bytes a Flower train message carries) holds public keys only; and a
    client in the round whose upload never comes back is a dropped client, its masks removed."""
    import struct

    from pflbench.federation.backends import LocalBackend
    from pflbench.federation.client import ClientOutcome
    from pflbench.federation.secagg import MASKED_HEADER, Setup, _secrets

    spec = replace(dp_spec, clients=3, clients_per_round=3, rounds=1, secagg=True)
    exp = resolve(spec)
    seen: dict = {}

    class Spy(LocalBackend):  # client 2's device dies: nothing of it comes back
        def train(self, jobs):
            for job, out in zip(jobs, super().train(jobs)):
                seen[job.client] = (job, out)
                yield ClientOutcome.lost(2, "its device died") if job.client == 2 else out

    runner = Runner(exp, None, None, Spy(exp))
    monkeypatch.setattr(type(exp.codec), "decode", lambda *a, **k: pytest.fail("the server decoded an upload"))
    rec = runner.run(0.0)["rounds"][0]
    assert rec["secagg"]["dropped"] == [2] and rec["secagg"]["survivors"] == [0, 1] and not rec["secagg"]["aborted"]
    for c, (job, out) in seen.items():
        assert struct.unpack("<II", out.payload[:MASKED_HEADER]) == (1, c)
        assert len(out.payload) == MASKED_HEADER + 4 * runner.schema.numel
        wire = job.secagg.to_bytes()
        assert Setup.from_bytes(wire) == job.secagg
        c_key, s_key, b_seed = _secrets(spec.seed, 1, c)
        assert s_key.private_bytes_raw().hex() not in wire.decode() and b_seed.hex() not in wire.decode()
    monkeypatch.undo()
    plain_exp = resolve(replace(spec, secagg=False))  # the same fault without secure aggregation
    plain = Runner(plain_exp, None, None, Spy(plain_exp))
    plain.run(0.0)
    for n, t in plain.global_shared.items():  # the survivors' mean, client 2's masks removed
        torch.testing.assert_close(runner.global_shared[n], t, rtol=0, atol=1e-6)


@pytest.mark.parametrize("flags,message", [
    (["--codec", "topk:0.25"], "--codec topk:0.25 does not compose"),
    (["--codec", "int8"], "--codec int8 does not compose"),
    (["--channel", "aircomp-noisy"], "does not compose with over-the-air aggregation"),
    (["--dp", "clip=1,noise=1,mode=central"], "use --dp mode=local"),
])
def test_secure_aggregation_refuses_what_it_does_not_compose_with(cli, tmp_path, flags, message):
    code, _, err = cli("run", "--results-dir", str(tmp_path), "--method", "fedavg-lora", "--task", "synth-world",
                       "--clients", "2", "--clients-per-round", "2", "--rounds", "1", "--local-steps", "1", "--secagg", *flags)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
