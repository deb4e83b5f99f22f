"""Wireless channel: path loss against hand-computed values, presets against the sanity
bands, delivery and determinism, over-the-air aggregation, cards and the CLI."""

import math

import numpy as np
import pytest
import torch

from pflbench.channel import pathloss as pl
from pflbench.channel.base import DELIVERED, LATE, LOST
from pflbench.channel.cards import resolve_channel
from pflbench.federation.engine import run
from pflbench.methods.base import Update

MBIT67 = 67_000_000 // 8


# ---- path loss, by hand from the standards ---------------------------------------------------
def test_inh_office_tr38901():
    # d3D = sqrt(10^2 + (3 - 1)^2) = 10.198 m, fc = 5.5 GHz
    # LOS: 32.4 + 17.3 * 1.008515 + 20 * 0.740363 = 64.655
    # NLOS: max(LOS, 17.3 + 38.3 * 1.008515 + 24.9 * 0.740363) = 74.361
    assert pl.inh_office(10, 5.5, 3, 1, los=True) == pytest.approx(64.655, abs=0.01)
    assert pl.inh_office(10, 5.5, 3, 1, los=False) == pytest.approx(74.361, abs=0.01)
    # LOS probability, mixed office: exp(-(3 - 1.2) / 4.7) = 0.6818; 0.32 exp(-(20 - 6.5) / 32.6) = 0.2115
    assert pl.inh_mixed_los_probability([1.0, 3.0, 20.0]) == pytest.approx([1.0, 0.6818, 0.2115], abs=1e-3)


def test_uma_tr38901():
    # d3D = sqrt(100^2 + 23.5^2) = 102.724 m; 20 log10(3.5) = 10.881
    # LOS (before d'BP = 4 * 24 * 0.5 * 3.5e9 / c = 560.4 m): 28 + 22 * 2.011673 + 10.881 = 83.138
    # NLOS: 13.54 + 39.08 * 2.011673 + 10.881 = 103.038
    assert pl.uma(100, 3.5, 25, 1.5, los=True) == pytest.approx(83.138, abs=0.01)
    assert pl.uma(100, 3.5, 25, 1.5, los=False) == pytest.approx(103.038, abs=0.01)
    # beyond the breakpoint, d = 1000 m: 28 + 40 * 3.000120 + 10.881 - 9 * log10(560.4^2 + 23.5^2) = 109.406
    assert pl.uma(1000, 3.5, 25, 1.5, los=True) == pytest.approx(109.406, abs=0.01)
    # LOS probability at 50 m: 18/50 + exp(-50/63) * (1 - 18/50) = 0.6494
    assert pl.uma_los_probability(50.0) == pytest.approx(0.6494, abs=1e-3)


def test_rma_nlos_tr38901():
    # d = 1000 m, hBS 35, hUT 1.5, fc 0.7 GHz, W 20, h 5: d3D = 1000.561, log10 = 3.000244
    # 161.04 - 7.1*1.30103 + 7.5*0.69897 - (24.37 - 3.7*(5/35)^2)*1.544068
    #   + (43.42 - 3.1*1.544068)*0.000244 + 20*log10(0.7) - (3.2*log10(17.625)^2 - 4.97) = 116.445
    assert pl.rma_nlos(1000, 0.7, 35, 1.5) == pytest.approx(116.445, abs=0.01)


def test_tr36814_macro_and_power_law():
    # 128.1 + 37.6 log10(0.85) = 125.446
    assert pl.tr36814_macro(850) == pytest.approx(125.446, abs=0.01)
    # d^-2 path gain at 250 m: 20 log10(250) = 47.959 dB
    assert pl.power_law(250, 2) == pytest.approx(47.959, abs=0.01)


# ---- presets ------------------------------------------------------------------------------
@pytest.mark.parametrize("name, clients, low, high", [
    ("wifi-indoor", 8, 45, 55),       # the sanity bands: about 50, 11, 1.2 and 2.2 Mbit/s
    ("5g-uma", 8, 9, 13),
    ("lte-cell-edge", 10, 1.0, 1.45),
    ("rural-rma", 10, 1.8, 2.6),
])
def test_preset_median_rates_fall_in_the_sanity_bands(name, clients, low, high):
    sim = resolve_channel(name).simulate(MBIT67, clients, rounds=400)
    assert low <= np.median(sim["rate_bps"]) / 1e6 <= high


@pytest.mark.parametrize("name", ["wifi-indoor", "5g-uma", "lte-cell-edge", "rural-rma", "chen2020"])
def test_more_bytes_never_raise_delivery_under_a_deadline(name):
    sims = [resolve_channel(name).simulate(size, 8, rounds=100) for size in (50_000, 500_000, MBIT67)]
    for small, big in zip(sims, sims[1:]):
        assert np.all(big["delivered"] <= small["delivered"])  # same draws: delivered with more bytes => with fewer
        assert big["delivery_prob"].mean() <= small["delivery_prob"].mean()
    assert sims[-1]["delivered"].mean() < sims[0]["delivered"].mean()


def test_same_seed_same_links_and_placement():
    a, b, c = (resolve_channel("5g-uma") for _ in range(3))
    a.setup(20, 7, 10, 1000)
    b.setup(20, 7, 10, 1000)
    c.setup(20, 8, 10, 1000)
    assert np.array_equal(a.distance, b.distance) and not np.array_equal(a.distance, c.distance)
    la = a.realize(1, [0, 3, 5], np.random.default_rng([7, 1, 2]))
    lb = b.realize(1, [0, 3, 5], np.random.default_rng([7, 1, 2]))
    assert la == lb
    assert all(35 <= d <= 289 for d in a.distance)


def test_retransmit_mode_stretches_airtime_instead_of_losing(tmp_path):
    card = tmp_path / "rt.yaml"
    text = open(resolve_channel("lte-cell-edge").card).read().replace("loss_mode: drop", "loss_mode: retransmit")
    card.write_text(text.replace("name: lte-cell-edge", "name: lte-rt").replace("deadline_s: 300", "deadline_s: 100000"))
    ch = resolve_channel(str(card))
    ch.setup(10, 0, 1, 100)
    links = ch.realize(1, list(range(10)), np.random.default_rng(0))
    outcomes, _ = ch.transmit([10_000] * 10, links, np.random.default_rng(1))
    assert LOST not in {o.status for o in outcomes}  # retransmission never drops...
    for link, o in zip(links, outcomes):
        assert o.airtime_s == pytest.approx(8 * 10_000 / link.rate_bps / max(1 - link.loss_prob, 1e-12))
        assert o.energy_j == pytest.approx(0.1995 * o.airtime_s, rel=1e-3)  # 23 dBm
        # ...but a client in a deep shadow (q near 1) retransmits past the deadline: late
        assert (o.status == LATE) == (o.airtime_s > 100_000)
    assert DELIVERED in {o.status for o in outcomes}


# ---- over-the-air aggregation ---------------------------------------------------------------
def test_aircomp_received_mean_error_variance_matches_the_snr():
    ch = resolve_channel("aircomp-noisy")
    g = torch.Generator().manual_seed(0)
    updates = [Update(client=i, num_samples=i + 1, delta={"w": torch.randn(200_000, generator=g)}) for i in range(4)]
    exact = sum(u.delta["w"] * (u.num_samples / 10) for u in updates)
    (received,) = ch.combine(updates, np.random.default_rng(0))
    error = received.delta["w"] - exact
    signal_power = float((exact.double() ** 2).mean())
    assert float(error.double().var()) == pytest.approx(signal_power / 10 ** (10 / 10), rel=0.02)
    assert received.num_samples == 10


def test_aircomp_truncates_weak_fades_and_airtime_does_not_grow_with_clients():
    ch = resolve_channel("aircomp-noisy")
    ch.setup(400, 0, 1, 50_000)
    links = ch.realize(1, list(range(400)), np.random.default_rng(3))
    silent = [l for l in links if l.loss_prob >= 1]
    assert 0.05 < len(silent) / 400 < 0.15  # 10% truncation
    assert all(l.fading < -math.log(0.9) for l in silent)
    _, t_few = ch.transmit([1000] * 4, links[:4], np.random.default_rng(0))
    outcomes, t_many = ch.transmit([1000] * 100, links[:100], np.random.default_rng(0))
    assert t_few == t_many == pytest.approx(50_000 / 25e6)
    assert {o.status for o in outcomes} == {DELIVERED, LOST}


# ---- whole runs ------------------------------------------------------------------------------
def test_a_lossy_channel_loses_updates_that_ideal_delivers(small_spec):
    spec = small_spec(method="fedavg-lora", clients=6, clients_per_round=4, rounds=3, local_steps=1)
    ideal = run(spec, None)["summary"]
    edge = run(small_spec(**{**spec.to_dict(), "channel": "lte-cell-edge"}), None)["summary"]
    assert ideal["lost_updates"] == 0 and ideal["airtime_s"] == 0 and ideal["delivered_updates"] == 12
    assert edge["lost_updates"] > 0 and edge["delivered_updates"] + edge["lost_updates"] + edge["late_updates"] == 12
    assert edge["airtime_s"] > 0 and edge["energy_j"] > 0 and edge["latency_s"] > 0
    assert edge["uplink_bytes"] == ideal["uplink_bytes"]  # bytes produced, delivered or not


def test_aircomp_runs_through_an_unchanged_method(small_spec):
    rec = run(small_spec(method="fedavg-lora", channel="aircomp-noisy", rounds=2, local_steps=1), None)
    assert rec["summary"]["delivered_updates"] + rec["summary"]["lost_updates"] == 4
    assert rec["rounds"][0]["latency_s"] == pytest.approx(12288 / 25e6)


@pytest.mark.parametrize("args, needle", [
    (["channel", "show", "moon"], "unknown channel 'moon'; choose one of: 5g-uma, aircomp-noisy, chen2020, ideal"),
    (["run", "--channel", "/nonexistent/card.yaml"], "channel card /nonexistent/card.yaml does not exist"),
])
def test_unknown_preset_or_missing_card_exits_2(cli, args, needle):
    code, out, err = cli(*args)
    assert code == 2 and err.count("\n") == 1 and needle in err


@pytest.mark.parametrize("edit, needle", [
    (lambda t: t.replace("kind: ofdma", "kind: smoke-signals"), "kind must be one of ofdma, aircomp"),
    (lambda t: t.replace("model: uma,", "model: moon,"), "path_loss.model must be one of"),
    (lambda t: t.replace("p_tx_dbm: 23", "p_tx_dbm: loud"), "p_tx_dbm must be a number"),
    (lambda t: t + "colour: red\n", "unknown field(s) colour"),
    (lambda t: t + "  - [", "not valid YAML"),
])
def test_malformed_channel_card_is_one_line_exit_2(cli, tmp_path, edit, needle):
    card = tmp_path / "bad.yaml"
    card.write_text(edit(open(resolve_channel("5g-uma").card).read()))
    code, out, err = cli("channel", "show", str(card))
    assert code == 2 and err.count("\n") == 1 and needle in err, err


def test_channel_show_and_list_report_rates(cli, tmp_path):
    code, out, _ = cli("channel", "show", "wifi-indoor", "--plot", str(tmp_path / "w.png"), "--rounds", "50")
    assert code == 0 and "rate (Mbit/s)" in out and "delivery probability" in out
    assert (tmp_path / "w.png").stat().st_size > 10_000
    import json

    code, out, _ = cli("list", "channels", "--json")
    rows = {r["name"]: r for r in json.loads(out)}
    assert set(rows) >= {"ideal", "wifi-indoor", "5g-uma", "lte-cell-edge", "rural-rma", "chen2020", "aircomp-noisy"}
    assert 45 < rows["wifi-indoor"]["median rate Mbit/s"] < 55


def test_list_channels_sizes_the_payload_from_a_method(cli):
    code, _, err = cli("list", "channels", "--method", "pftt", "--json")
    assert code == 0 and "payload: 26256 bytes per client" in err  # the budget's pftt fp32 figure
    code, _, err = cli("list", "channels", "--method", "fedavg-lora", "--codec", "int8", "--json")
    assert code == 0 and "payload: 12816 bytes per client" in err
    code, _, err = cli("list", "channels", "--method", "local-only")
    assert code == 2 and "uploads nothing" in err


def test_a_channel_sizes_the_payload_of_a_model_too_large_to_load(cli):
    """--model takes any architecture budget show reads: an 8B model's PFTT payload (counted on
    the meta device, no weights) over LTE cell-edge, in seconds."""
    code, out, err = cli("list", "channels", "--method", "pftt", "--model", "llama-3.1-8b", "--json")
    assert code == 0 and "payload: 8913936 bytes per client" in err, err
