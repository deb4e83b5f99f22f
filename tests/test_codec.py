import pytest
import torch

from pflbench.errors import UserError
from pflbench.federation.codec import HEADER_BYTES, FP32Codec, Schema, make_codec


def tensors():
    g = torch.Generator().manual_seed(0)
    return {"a.weight": torch.randn(3, 5, generator=g), "b.bias": torch.randn(7, generator=g)}


def test_fp32_payload_is_header_plus_four_bytes_per_value_and_round_trips_exactly():
    t = tensors()
    schema = Schema.of(t)
    payload = FP32Codec().encode(t, schema)
    assert HEADER_BYTES == 16
    assert len(payload) == HEADER_BYTES + 4 * (15 + 7)
    back = FP32Codec().decode(payload, schema)
    assert list(back) == ["a.weight", "b.bias"]
    for name in t:
        assert torch.equal(back[name], t[name])


def test_decoding_against_another_schema_fails_loudly():
    t = tensors()
    payload = FP32Codec().encode(t, Schema.of(t))
    other = Schema.of({"a.weight": t["a.weight"], "c.bias": t["b.bias"]})
    with pytest.raises(ValueError, match="schema"):
        FP32Codec().decode(payload, other)
    with pytest.raises(ValueError, match="magic"):
        FP32Codec().decode(b"XXXX" + payload[4:], Schema.of(t))


def test_unknown_codec_is_a_user_error():
    with pytest.raises(UserError, match="fp32"):
        make_codec("fp64")
