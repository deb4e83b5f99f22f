import pytest
import torch

from pflbench.errors import UserError
from pflbench.models import cache_dir, load_model


def test_tiny_model_is_cached_as_safetensors_and_reloads_identically():
    a = load_model("tiny")
    b = load_model("tiny")
    assert (cache_dir() / "tiny-v1" / "model.safetensors").exists()
    assert not list((cache_dir() / "tiny-v1").glob("*.bin"))
    for (na, pa), (nb, pb) in zip(a.model.named_parameters(), b.model.named_parameters()):
        assert na == nb and torch.equal(pa, pb)
    assert a.tokenizer.pad_token_id is not None and a.tokenizer.eos_token_id is not None


def test_unknown_model_offline_fails_with_one_clear_error():
    with pytest.raises(UserError, match="cannot load model 'someone/not-cached'.*registered models: smollm2-135m, tiny"):
        load_model("someone/not-cached")


def test_a_local_model_directory_loads(tmp_path):
    tiny = load_model("tiny")
    tiny.model.save_pretrained(tmp_path)
    tiny.tokenizer.save_pretrained(tmp_path)
    loaded = load_model(str(tmp_path))
    assert sum(p.numel() for p in loaded.model.parameters()) == sum(p.numel() for p in tiny.model.parameters())


@pytest.mark.slow
def test_smollm2_converts_from_the_packaged_gguf_and_generates():
    loaded = load_model("smollm2-135m")
    assert (cache_dir() / "smollm2-135m" / "model.safetensors").exists()
    n = sum(p.numel() for p in loaded.model.parameters())
    assert 130e6 < n < 140e6
    ids = loaded.tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        out = loaded.model.generate(**ids, max_new_tokens=3, do_sample=False)
    assert "Paris" in loaded.tokenizer.decode(out[0])


@pytest.mark.slow
def test_a_round_of_pftt_on_smollm2(small_spec):
    """The packaged real model through the whole engine: 30 blocks of hidden size 576, so the
    adapters are 30 x (576 x 8 + 8 + 8 x 576 + 576) = 294,000 values."""
    from pflbench.federation.engine import run

    rec = run(small_spec(method="pftt", model="smollm2-135m", clients=2, clients_per_round=1, rounds=1,
                         local_steps=1, batch_size=2), None)
    assert rec["model"]["shared_parameters"] == 294_000
    assert rec["rounds"][0]["uplink_bytes"] == 16 + 4 * 294_000
    assert 0 < rec["summary"]["score"] < 100
