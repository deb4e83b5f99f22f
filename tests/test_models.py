import pytest
import torch

from pflbench.config import RunSpec
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
    with pytest.raises(UserError, match="cannot load model 'someone/not-cached'.*registered models: gemma3-270m, smollm2-135m, smollm2-135m-chat, tiny, tiny-chat"):
        load_model("someone/not-cached")


def test_a_local_model_directory_loads(tmp_path):
    tiny = load_model("tiny")
    tiny.model.save_pretrained(tmp_path)
    tiny.tokenizer.save_pretrained(tmp_path)
    loaded = load_model(str(tmp_path))
    assert sum(p.numel() for p in loaded.model.parameters()) == sum(p.numel() for p in tiny.model.parameters())


def test_smollm2_converts_from_the_packaged_gguf_and_generates():
    loaded = load_model("smollm2-135m")
    assert (cache_dir() / "smollm2-135m" / "model.safetensors").exists()
    from pflbench.models.smollm2 import SmolLM2

    assert sum(p.numel() for p in loaded.model.parameters()) == SmolLM2.parameters  # what `list models` says
    ids = loaded.tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        out = loaded.model.generate(**ids, max_new_tokens=3, do_sample=False)
    assert "Paris" in loaded.tokenizer.decode(out[0])


def test_a_round_of_pftt_on_smollm2(small_spec):
    """The packaged real model through the whole engine: 30 blocks of hidden size 576, so the
    adapters are 30 x (576 x 8 + 8 + 8 x 576 + 576) = 294,000 values."""
    from pflbench.federation.engine import run

    rec = run(small_spec(method="pftt", model="smollm2-135m", clients=2, clients_per_round=1, rounds=1,
                         local_steps=1, batch_size=2), None)
    assert rec["model"]["shared_parameters"] == 294_000
    assert rec["rounds"][0]["uplink_bytes"] == 16 + 4 * 294_000
    assert 0 < rec["summary"]["score"] < 100
    from pflbench.orchestration.budget import meta_payload  # budget show: the same bytes, no weights read

    shown = meta_payload("smollm2-135m", "pftt")
    assert (shown.uplink_bytes, shown.downlink_bytes) == (rec["rounds"][0]["uplink_bytes"], rec["rounds"][0]["downlink_bytes"])
    assert shown.parameters == rec["model"]["parameters"]


def test_list_models_gives_size_licence_and_whether_it_runs_offline(cli):
    import json

    from pflbench.models.tiny import TinyModel

    code, out, _ = cli("list", "models", "--json")
    rows = {r["name"]: r for r in json.loads(out)}
    assert code == 0 and set(rows) >= {"tiny", "tiny-chat", "smollm2-135m", "smollm2-135m-chat", "gemma3-270m"}
    assert rows["smollm2-135m-chat"]["parameters"] == "134.5M" and rows["smollm2-135m-chat"]["offline"] == "yes"
    assert rows["smollm2-135m"]["parameters"] == "134.5M" and rows["smollm2-135m"]["licence"] == "Apache-2.0"
    assert rows["gemma3-270m"]["parameters"] == "268.1M" and rows["gemma3-270m"]["licence"] == "Gemma Terms of Use"
    assert rows["tiny"]["offline"] == "yes"
    assert sum(p.numel() for p in load_model("tiny").model.parameters()) == TinyModel.parameters


def test_a_missing_model_package_is_one_line_naming_the_install(monkeypatch, tmp_path):
    """Neither the cache nor the package: listed as not offline, and loading says what to install."""
    import importlib.util

    from pflbench.models.gemma3 import Gemma3

    monkeypatch.setenv("PFLBENCH_CACHE", str(tmp_path))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name.startswith("gemma3_270m") else real(name, *a))
    assert not Gemma3().offline()
    with pytest.raises(UserError, match=r"needs its four chunk packages: pip install 'pflbench\[gemma\]'"):
        load_model("gemma3-270m")


def test_lora_targets_follow_the_architecture():
    """The query and value projections, whatever the architecture calls them: no --opt targets
    for the registered models or GPT-2."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from pflbench.models.adapters import add_lora, default_targets

    assert default_targets(load_model("tiny").model) == ("q_proj", "v_proj")
    gpt2 = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=64, n_positions=32))
    assert default_targets(gpt2) == ("c_attn",)
    names = add_lora(gpt2, "lora", rank=2)
    assert len(names) == 4 and all(".attn.c_attn." in n for n in names)
    with pytest.raises(UserError, match="no known attention projections.*--opt targets="):
        default_targets(torch.nn.Sequential(torch.nn.Linear(4, 4)))


def test_gemma3_joins_its_chunks_converts_once_and_knows_english():
    """The four chunk packages joined (sha256 checked), dequantized and cached; the real
    weights predict English text far better than chance (ln 262,144 = 12.5 nats a token), and
    LoRA lands on its query and value projections: 18 blocks x (640 x 8 + 8 x 1024 + 640 x 8
    + 8 x 256) = 368,640 values, uploaded as 16 + 4 x 368,640 bytes."""
    from pflbench.federation.engine import run
    from pflbench.models.gemma3 import Gemma3

    loaded = load_model("gemma3-270m")
    assert (cache_dir() / "gemma3-270m" / "model.safetensors").exists()
    assert not list((cache_dir() / "gemma3-270m").glob("*.gguf"))  # the joined file is not kept
    assert sum(p.numel() for p in loaded.model.parameters()) == Gemma3.parameters
    ids = loaded.tokenizer("The cat sat on the mat. The dog slept in the sun all afternoon.", return_tensors="pt")
    with torch.no_grad():
        nll = loaded.model(**ids, labels=ids["input_ids"]).loss.item()
    assert nll < 5.0
    rec = run(RunSpec(method="fedavg-lora", task="synth-world", model="gemma3-270m", clients=2, clients_per_round=1,
                      rounds=1, local_steps=1, batch_size=2), None)
    assert rec["model"]["shared_parameters"] == 368_640
    assert rec["rounds"][0]["uplink_bytes"] == 16 + 4 * 368_640


def test_a_random_init_builds_the_architecture_without_weights_and_stays_out_of_tables(tmp_path):
    """--init random: the shipped config of a registered model (no weights read), or any
    config.json; the run trains and is recorded, and tables leave it out."""
    import json

    from pflbench.federation.engine import run
    from pflbench.results.table import group

    big = load_model("smollm2-135m", init="random")
    assert sum(p.numel() for p in big.model.parameters()) == 134_515_008 and big.source.startswith("random init")
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                                  "num_attention_heads": 2, "num_key_value_heads": 2, "vocab_size": 2048}))
    spec = RunSpec(method="fedavg-lora", model=str(config), init="random", clients=2, clients_per_round=2, rounds=1,
                   local_steps=1, batch_size=2)
    rec = run(spec, tmp_path / "results")
    assert rec["spec"]["init"] == "random" and rec["model"]["parameters"] > 2048 * 32
    assert rec["rounds"][0]["uplink_bytes"] == 2 * (16 + 4 * 2 * (32 * 8 + 8 * 32 + 32 * 8 + 8 * 32))
    assert group([rec]) == {}
    assert "init" not in RunSpec().to_dict() and RunSpec(init="random").run_id != RunSpec().run_id
    with pytest.raises(UserError, match="--init random needs an architecture"):
        load_model("no-such-config", init="random")
