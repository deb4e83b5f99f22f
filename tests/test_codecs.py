"""Payload codecs: exact byte counts, round-trip error bounds, top-k with error feedback."""

import math

import pytest
import torch

from pflbench.federation.codec import HEADER_BYTES, Schema, make_codec
from pflbench.federation.engine import run


@pytest.fixture
def tensors():
    g = torch.Generator().manual_seed(0)
    return {"A": torch.randn(8, 96, generator=g), "B": torch.randn(96, 8, generator=g), "b": torch.randn(96, generator=g)}


def test_exact_byte_counts(tensors):
    schema = Schema.of(tensors)
    n = 8 * 96 + 96 * 8 + 96
    sizes = {c: len(make_codec(c).encode(tensors, schema)) for c in ("fp32", "fp16", "bf16", "int8", "topk:0.1", "topk:0.01")}
    assert sizes["fp32"] == HEADER_BYTES + 4 * n
    assert sizes["fp16"] == sizes["bf16"] == HEADER_BYTES + 2 * n
    # int8: a float32 scale per row along the long side (A: 8 rows, B: 8 columns, b: 1) + a byte a value
    assert sizes["int8"] == HEADER_BYTES + 4 * (8 + 8 + 1) + n
    k = math.ceil(0.1 * n)  # 164: bitmap (204 bytes) beats indices (656 bytes)
    assert sizes["topk:0.1"] == HEADER_BYTES + 4 + 4 * k + math.ceil(n / 8)
    k = math.ceil(0.01 * n)  # 17: indices (68 bytes) beat the bitmap
    assert sizes["topk:0.01"] == HEADER_BYTES + 4 + 4 * k + 4 * k


@pytest.mark.parametrize("codec", ["fp32", "fp16", "bf16", "int8", "topk:0.1", "topk:0.01", "topk:1", "topk:0.0001"])
def test_payload_length_is_what_encode_returns_for_any_values_and_shapes(codec):
    """The length rule ``budget show`` uses for payloads too large to encode, against the encoder
    on random schemas (scalars, vectors, tall and wide matrices, 3-d, a single value), random
    values, zeros and spikes."""
    c = make_codec(codec)
    g = torch.Generator().manual_seed(1)
    for trial in range(30):
        shapes = [tuple(int(d) for d in torch.randint(1, 40, (int(torch.randint(0, 4, (1,), generator=g)),), generator=g))
                  for _ in range(int(torch.randint(1, 6, (1,), generator=g)))]
        names = [f"t{i}" for i in range(len(shapes))]
        schema = Schema(tuple(names), tuple(shapes))
        for fill in (lambda s: torch.randn(s, generator=g), torch.zeros, lambda s: torch.randn(s, generator=g) * 1e6):
            values = {n: fill(s) for n, s in zip(names, shapes)}
            assert len(c.encode(values, schema)) == c.payload_length(schema), (codec, shapes)


def test_round_trip_error_bounds(tensors):
    schema = Schema.of(tensors)
    for name in ("fp16", "bf16", "int8"):
        back = make_codec(name).decode(make_codec(name).encode(tensors, schema), schema)
        assert list(back) == list(tensors)
        for key, t in tensors.items():
            err = (back[key] - t).abs()
            if name == "fp16":
                assert torch.all(err <= t.abs() * 2**-11 + 1e-7)
            elif name == "bf16":
                assert torch.all(err <= t.abs() * 2**-8 + 1e-7)
            else:  # half a quantization step of the row's scale
                rows = t.reshape(-1, t.shape[-1])
                rows = rows.t() if rows.shape[0] > rows.shape[1] else rows
                step = rows.abs().amax(dim=1, keepdim=True) / 127
                e = err.reshape(-1, t.shape[-1])
                e = e.t() if e.shape[0] > e.shape[1] else e
                assert torch.all(e <= step / 2 + 1e-6)


def test_topk_keeps_the_largest_values_exactly(tensors):
    schema = Schema.of(tensors)
    codec = make_codec("topk:0.05")
    back = codec.decode(codec.encode(tensors, schema), schema)
    flat = torch.cat([t.reshape(-1) for t in tensors.values()])
    got = torch.cat([t.reshape(-1) for t in back.values()])
    kept = got != 0
    assert int(kept.sum()) == math.ceil(0.05 * flat.numel())
    assert torch.equal(got[kept], flat[kept])
    assert flat[~kept].abs().max() <= flat[kept].abs().min()


def test_topk_with_error_feedback_converges_on_a_quadratic():
    """Gradient descent on f(x) = |x - x*|^2 / 2 where each step only sends the top 5% of the
    gradient. With error feedback (the client's residual carries the rest into later steps)
    it converges; without it, after the same steps, it is still far off."""
    g = torch.Generator().manual_seed(1)
    target = torch.randn(400, generator=g)
    schema = Schema.of({"x": target})

    def descend(memory):
        codec, x = make_codec("topk:0.05"), torch.zeros(400)
        for _ in range(300):
            sent = codec.decode(codec.encode({"x": x - target}, schema, memory), schema)["x"]
            x = x - 0.1 * sent
        return float((x - target).norm() / target.norm())

    with_feedback, without = descend({}), descend(None)
    assert with_feedback < 1e-4
    assert without > 0.05


def test_int8_cuts_uplink_about_4x_in_a_run(small_spec):
    fp32 = run(small_spec(method="fedavg-lora", rounds=1, local_steps=1), None)["summary"]
    int8 = run(small_spec(method="fedavg-lora", rounds=1, local_steps=1, codec="int8"), None)["summary"]
    assert int8["codec"] == "int8" and fp32["codec"] == "fp32"
    assert 3.7 < fp32["uplink_bytes"] / int8["uplink_bytes"] <= 4.0
    assert int8["downlink_bytes"] == fp32["downlink_bytes"]  # the broadcast stays fp32


@pytest.mark.parametrize("bad", ["fp64", "topk:0", "topk:1.5", "topk:abc"])
def test_bad_codec_is_a_one_line_error(cli, bad):
    code, _, err = cli("run", "--codec", bad)
    assert code == 2 and err.count("\n") == 1 and "codec" in err
