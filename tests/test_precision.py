"""--precision: bf16 where the hardware has it (frozen base in bf16 under autocast, trained
tensors in fp32), one clear line where it does not; part of the run id, fp32 left out."""

import pytest
import torch

from pflbench.config import RunSpec
from pflbench.errors import UserError
from pflbench.models import precision


def test_precision_is_in_the_run_id_but_fp32_keeps_earlier_ids():
    assert "precision" not in RunSpec().to_dict()
    assert RunSpec(precision="fp32").run_id == RunSpec().run_id
    assert RunSpec(precision="bf16").run_id != RunSpec().run_id
    with pytest.raises(UserError, match="--precision must be one of fp32, bf16, got 'fp8'"):
        RunSpec(precision="fp8")


def test_a_cpu_without_bf16_instructions_is_refused_in_one_line(cli, monkeypatch):
    monkeypatch.delenv(precision.ALLOW_EMULATED, raising=False)
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx2", "fma"})
    code, out, err = cli("run", "--precision", "bf16", "--rounds", "1", "--results-dir", "unused")
    assert code == 2 and out == ""
    assert err.strip().count("\n") == 0 and "no bf16 matrix instructions" in err and "--precision fp32" in err
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx2", "avx512_bf16"})
    monkeypatch.setattr(precision, "cpu_matmul_speeds", lambda: (300e9, 1100e9))
    precision.check_precision("bf16", torch.device("cpu"))  # passes where bf16 measures faster (Zen 5: 3.8x)


def test_a_cpu_whose_bf16_measures_slower_than_fp32_is_refused_with_the_figures(cli, monkeypatch):
    """The flag is not enough: a Xeon with AVX-512 BF16 but no AMX ran bf16 products at half
    its fp32 rate. The measurement itself is real and cached for the process."""
    monkeypatch.delenv(precision.ALLOW_EMULATED, raising=False)
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx512f", "avx512_bf16"})
    monkeypatch.setattr(precision, "cpu_matmul_speeds", lambda: (310e9, 163e9))
    code, out, err = cli("run", "--precision", "bf16", "--rounds", "1", "--results-dir", "unused")
    assert code == 2 and out == "" and err.strip().count("\n") == 0, err
    assert "measured 163 GFLOP/s against 310 in fp32" in err and "--precision fp32" in err
    monkeypatch.setenv(precision.ALLOW_EMULATED, "1")
    precision.check_precision("bf16", torch.device("cpu"))  # asked for anyway
    monkeypatch.undo()
    fp32, bf16 = precision.cpu_matmul_speeds()
    assert fp32 > 1e9 and bf16 > 0 and precision.cpu_matmul_speeds() == (fp32, bf16)


def test_bf16_casts_the_frozen_base_and_keeps_trained_tensors_fp32():
    from pflbench.data.cards import resolve_task
    from pflbench.methods.pftt import PFTT
    from pflbench.models import load_model

    loaded = load_model("tiny")
    model = loaded.model
    parts = PFTT().prepare(model)
    trainable = set(parts.shared) | set(parts.private)
    for name, p in model.named_parameters():
        p.requires_grad_(name in trainable)
    task = resolve_task("shakespeare-roles")
    client = task.clients(loaded.tokenizer, 2, 0)[0]
    batch = task.train_batch(client, 4, torch.Generator().manual_seed(0))
    fp32_loss = model(**batch).loss.item()
    precision.apply_precision(model, "bf16", torch.device("cpu"))
    params = dict(model.named_parameters())
    assert all(params[n].dtype == torch.float32 for n in trainable)
    frozen = [n for n in params if n not in trainable]
    assert frozen and all(params[n].dtype == torch.bfloat16 for n in frozen)
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight  # still tied
    loss = model(**batch).loss
    loss.backward()
    assert loss.dtype == torch.float32 and abs(loss.item() - fp32_loss) < 0.02 * fp32_loss
    assert all(params[n].grad is not None and params[n].grad.dtype == torch.float32 for n in trainable)


@pytest.mark.parametrize("parallel", [1, 2])
def test_a_bf16_run_trains_and_uploads_what_fp32_does(monkeypatch, small_spec, parallel):
    """Through the engine, one client at a time and batched: the same bytes (the trained
    tensors are fp32), a loss close to fp32's, the precision in the record's spec."""
    from pflbench.federation.engine import run

    monkeypatch.setenv(precision.ALLOW_EMULATED, "1")  # this CPU may emulate bf16: slow, same numerics
    spec = small_spec(method="pftt", rounds=1, parallel_clients=parallel)
    a, b = run(spec, None), run(small_spec(method="pftt", rounds=1, parallel_clients=parallel, precision="bf16"), None)
    assert b["spec"]["precision"] == "bf16" and "precision" not in a["spec"]
    assert b["rounds"][0]["uplink_bytes"] == a["rounds"][0]["uplink_bytes"]
    assert b["rounds"][0]["train_loss"] == pytest.approx(a["rounds"][0]["train_loss"], rel=0.02)
    assert abs(b["summary"]["score"] - a["summary"]["score"]) < 5
