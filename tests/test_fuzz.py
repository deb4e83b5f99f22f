"""Property-based fuzzing (hypothesis): any task or channel card either loads or is one
UserError, never another exception; every codec round trip keeps its promise."""

import math
import os

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pflbench.errors import UserError
from pflbench.federation.codec import Schema, make_codec

# derandomized, so a CI run is reproducible; PFLBENCH_FUZZ_EXAMPLES=2000 searches longer (and randomly)
EXAMPLES = int(os.environ.get("PFLBENCH_FUZZ_EXAMPLES", "80"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=EXAMPLES <= 80, suppress_health_check=[HealthCheck.too_slow])

# any value a YAML card could hold
leaf = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True, allow_infinity=True),
                 st.text(max_size=12))
value = st.recursive(leaf, lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                     max_leaves=6)

TASK = {"name": "fuzz", "kind": "instruction", "description": "d", "source": {"generator": "synth-prefs", "clients": 4},
        "prompt": "{instruction}", "reference": " {response}", "partition": {"natural": {"key": "user"}}, "metric": "token-f1",
        "defaults": {"rounds": 2}, "max_length": 32}
TASK_FIELDS = sorted(set(TASK) | {"test_fraction", "labels", "min_examples", "split_field", "rewards", "mixture", "temperature",
                                  "group_size", "text", "rejected", "fields", "preprocess"})


@FUZZ
@given(st.sampled_from(TASK_FIELDS), value, st.sampled_from(["instruction", "task", "reward", "preference"]))
def test_any_task_card_loads_or_is_one_user_error(field, new, kind):
    from pflbench.data.cards import parse_card

    card = {**TASK, "kind": kind, field: new}
    try:
        task = parse_card(card, "task card fuzz.yaml")
    except UserError as exc:
        assert "\n" not in str(exc)
        return
    assert task.name and task.kind in ("instruction", "task", "reward", "preference")


@FUZZ
@given(st.sampled_from(["geometry", "path_loss", "shadowing_db", "p_tx_dbm", "bandwidth", "eta", "noise_figure_db", "margin_db",
                        "interference_w", "se_max", "gamma_th_db", "loss_mode", "deadline_s", "compute", "kind"]), value)
def test_any_channel_card_loads_or_is_one_user_error_and_then_simulates(field, new):
    import yaml

    from pflbench.channel.cards import KINDS, params_from_card, resolve_channel

    card = yaml.safe_load(open(resolve_channel("lte-cell-edge").card))
    card[field] = new
    try:
        params = params_from_card(card, "channel card fuzz.yaml")
    except UserError as exc:
        assert "\n" not in str(exc)
        return
    sim = KINDS[params.kind](params).simulate(10_000, 2, rounds=3)
    assert np.all(sim["airtime_s"] >= 0) and np.all((sim["delivery_prob"] >= 0) & (sim["delivery_prob"] <= 1))


shapes = st.lists(st.lists(st.integers(1, 6), min_size=1, max_size=2), min_size=1, max_size=3)
finite = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False, width=32)


def _tensors(draw_shapes, data):
    out = {}
    for i, shape in enumerate(draw_shapes):
        n = int(np.prod(shape))
        out[f"t{i}"] = torch.tensor(data.draw(st.lists(finite, min_size=n, max_size=n)), dtype=torch.float32).reshape(shape)
    return out


@FUZZ
@given(shapes, st.sampled_from(["fp32", "fp16", "bf16", "int8", "topk:0.3", "topk:1"]), st.data())
def test_codec_round_trips_keep_their_promise(draw_shapes, codec_name, data):
    tensors = _tensors(draw_shapes, data)
    schema = Schema.of(tensors)
    codec = make_codec(codec_name)
    memory: dict = {}
    payload = codec.encode(tensors, schema, memory)
    back = codec.decode(payload, schema)
    flat = torch.cat([t.reshape(-1) for t in tensors.values()])
    got = torch.cat([back[n].reshape(-1) for n in tensors])
    assert list(back) == list(tensors) and all(back[n].shape == tensors[n].shape for n in tensors)
    peak = float(flat.abs().max())
    if codec_name == "fp32":
        assert torch.equal(got, flat) and len(payload) == 16 + 4 * flat.numel()
    elif codec_name == "fp16":
        assert torch.allclose(got, flat, rtol=1e-3, atol=1e-4) and len(payload) == 16 + 2 * flat.numel()
    elif codec_name == "bf16":
        assert torch.allclose(got, flat, rtol=8e-3, atol=1e-30) and len(payload) == 16 + 2 * flat.numel()
    elif codec_name == "int8":
        assert float((got - flat).abs().max()) <= peak / 254 + 1e-4
    else:
        k = min(flat.numel(), max(1, math.ceil(codec.fraction * flat.numel())))
        sent = got != 0
        assert int(sent.sum()) <= k and torch.equal(got[sent], flat[sent])
        assert torch.allclose(got + memory["residual"], flat)  # error feedback keeps what was not sent


def test_a_damaged_payload_is_refused_not_misread():
    tensors = {"w": torch.arange(12, dtype=torch.float32).reshape(3, 4)}
    schema = Schema.of(tensors)
    for name in ("fp32", "int8", "topk:0.5"):
        payload = make_codec(name).encode(tensors, schema, {})
        with pytest.raises(ValueError):
            make_codec(name).decode(payload[:-1], schema)
