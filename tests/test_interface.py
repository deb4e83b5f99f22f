"""The Method interface as docs/methods/adding.md documents it: the reference names every field; what a
method may declare, read and upload works as described, and is checkpointed."""

from __future__ import annotations

import dataclasses
import json
import re
from importlib.metadata import version
from pathlib import Path

import pytest
import torch

from pflbench import registry
from pflbench.config import RunSpec
from pflbench.federation.codec import HEADER_BYTES, CODECS, Schema, make_codec
from pflbench.federation.engine import Runner, run
from pflbench.federation.resolve import resolve
from pflbench.methods import (LocalContext, LocalResult, LoraOptions, Method, Parts, RoundInfo, Update, fedavg,
                              train_steps)
from pflbench.results.record import strip_timing

SECTION = (Path(__file__).resolve().parents[1] / "docs" / "methods" / "adding.md").read_text()


@pytest.mark.parametrize("cls", [Parts, LocalContext, LocalResult, Update, RoundInfo])
def test_readme_reference_names_every_field(cls):
    missing = [f.name for f in dataclasses.fields(cls) if f"`{f.name}`" not in SECTION]
    assert not missing, f"docs/methods/adding.md does not document {cls.__name__}.{missing}"


def test_readme_reference_names_every_context_method_and_the_method_hooks():
    public = [n for n, v in vars(LocalContext).items() if not n.startswith("_") and (callable(v) or isinstance(v, property))]
    assert public and all(f"ctx.{n}" in SECTION for n in public), public
    hooks = [n for n, v in vars(Method).items() if callable(v) and not n.startswith("_") and not isinstance(v, type)]
    assert all(f"`{n}(" in SECTION for n in hooks), hooks


def test_a_batch_is_what_readme_says(small_spec):
    exp = resolve(small_spec())
    batch = exp.task.train_batch(exp.clients[0], 3, torch.Generator().manual_seed(0))
    documented = set(re.findall(r"`(\w+)`", SECTION[SECTION.index("A **batch**"):SECTION.index("**`LocalResult`**")]))
    assert set(batch) <= documented and {"input_ids", "attention_mask", "labels"} == set(batch)
    assert all(t.shape == (3, batch["input_ids"].shape[1]) and t.dtype == torch.long for t in batch.values())
    assert (batch["labels"][batch["attention_mask"] == 0] == -100).all()


class Probe(Method):
    """Records what ctx and aggregate see; counts in client and server state; uploads every
    shared delta in odd rounds, the A matrices only in even ones, nothing for client 0."""

    name = "probe"
    seen: list = []
    infos: list = []
    Options = LoraOptions

    def prepare(self, model):
        self.server = {"rounds": torch.zeros(1)}
        return Parts(shared=self.options.lora(model, "global"), private=self.options.lora(model, "local"))

    def local_update(self, ctx):
        params = dict(ctx.model.named_parameters())
        loaded = all(torch.equal(params[n], ctx.global_shared[n]) for n in ctx.parts.shared)
        self.seen.append({"round": ctx.round, "client": ctx.client.id, "n": ctx.num_clients, "part": ctx.participation,
                          "delivered": ctx.delivered, "count": float(ctx.state.get("count", torch.zeros(1))),
                          "server": float(ctx.server["rounds"]), "loaded": loaded})
        ctx.state["count"] = ctx.state.get("count", torch.zeros(1)) + 1
        loss = train_steps(ctx, ctx.parameters(), ctx.steps)
        if ctx.client.id == 0:
            return LocalResult(ctx.num_samples, loss, upload={})
        if ctx.round % 2 == 0:
            return LocalResult(ctx.num_samples, loss, upload=ctx.delta([n for n in ctx.parts.shared if "lora_A" in n]))
        return LocalResult(ctx.num_samples, loss)

    def aggregate(self, shared, updates, info):
        self.infos.append((info, sorted(set(n for u in updates for n in u.delta))))
        self.server = {"rounds": self.server["rounds"] + 1}
        return fedavg(shared, updates)


def test_context_facts_client_state_server_state_and_partial_uploads(register, small_spec):
    register(Probe)
    Probe.seen, Probe.infos = [], []
    spec = small_spec(method="probe", clients=3, clients_per_round=3, rounds=3)
    exp = resolve(spec)
    runner = Runner(exp, None, None)
    rec = runner.run(0.0)
    shared = exp.parts.shared
    a_names = [n for n in shared if "lora_A" in n]
    numel = lambda names: sum(runner.params[n].numel() for n in names)  # noqa: E731
    full, subset = HEADER_BYTES + 4 * numel(shared), HEADER_BYTES + (len(shared) + 7) // 8 + 4 * numel(a_names)
    # client 0 sends nothing; clients 1, 2 send everything (odd rounds) or the A matrices (even rounds)
    assert [r["uplink_bytes"] for r in rec["rounds"]] == [2 * full, 2 * subset, 2 * full]
    assert [len(r["links"]) for r in rec["rounds"]] == [2, 2, 2]  # nothing sent, nothing transmitted
    assert Probe.infos[1][1] == sorted(a_names) and Probe.infos[0][1] == sorted(shared)
    for r, (info, _) in enumerate(Probe.infos, start=1):
        assert info.round == r and info.num_clients == 3 and info.sampled == [0, 1, 2] and info.delivered == [1, 2]
        assert info.participation == {0: r, 1: r, 2: r}
    for s in Probe.seen:
        assert s["n"] == 3 and s["part"] == s["round"] - 1 and s["count"] == s["round"] - 1 and s["loaded"]
        assert s["server"] == s["round"] - 1
        assert s["delivered"] == (None if s["round"] == 1 or s["client"] == 0 else True)
    assert {k: rec["method"][k] for k in ("name", "options", "package", "version")} == {
        "name": "probe", "options": {}, "package": "tests", "version": "?"}
    assert len(rec["method"]["code"]) == 12


def test_the_record_names_the_methods_package_and_version(small_spec):
    rec = run(small_spec(method="ditto", rounds=1), None)
    assert rec["method"]["name"] == "ditto" and rec["method"]["package"] == "pflbench"
    assert rec["method"]["version"] == version("pflbench") and len(rec["method"]["code"]) == 12


def test_client_and_server_state_come_back_on_resume(small_spec, tmp_path):
    """SCAFFOLD keeps control variates in client state and server state: a run stopped after
    round 1 and resumed ends with the uninterrupted record."""
    spec = small_spec(method="scaffold-lora", rounds=3, clients_per_round=3)
    record = run(spec, tmp_path / "whole")

    def stop(rec):
        if rec["round"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(spec, tmp_path / "stopped", on_round=stop)
    assert strip_timing(run(spec, tmp_path / "stopped")) == strip_timing(record)


@pytest.mark.parametrize("codec", [*CODECS, "topk:0.25"])
def test_a_subset_payload_round_trips_and_names_its_tensors(codec):
    g = torch.Generator().manual_seed(0)
    tensors = {n: torch.randn(s, generator=g) for n, s in (("a", (4, 3)), ("b", (5,)), ("c", (2, 2)), ("d", (3, 1)))}
    schema = Schema.of(tensors)
    c = make_codec(codec)
    memory: dict = {}
    part = {"b": tensors["b"], "d": tensors["d"]}
    payload = c.encode(part, schema, memory)
    full = c.encode(tensors, schema)
    decoded = c.decode(payload, schema)
    assert set(decoded) == {"b", "d"} and set(c.decode(full, schema)) == set(tensors)
    if codec == "fp32":
        assert len(payload) == HEADER_BYTES + 1 + 4 * 8 and len(full) == HEADER_BYTES + 4 * 24
        assert all(torch.equal(decoded[n], part[n]) for n in part)
    if c.error_feedback:  # the subset's residual is kept apart from the full payload's
        assert any(k.startswith("residual:") for k in memory)
    with pytest.raises(ValueError, match="outside the agreed schema"):
        c.encode({"zzz": torch.zeros(1)}, schema)


def test_an_upload_outside_the_schema_is_refused(register, small_spec):
    class Bad(Method):
        name = "bad-upload"

        def prepare(self, model):
            return Parts(shared=LoraOptions().lora(model, "global"))

        def local_update(self, ctx):
            return LocalResult(ctx.num_samples, 0.0, upload={"not-a-tensor-of-mine": torch.zeros(1)})

    register(Bad)
    with pytest.raises(ValueError, match="neither a shared tensor nor one of its messages"):
        run(small_spec(method="bad-upload", rounds=1), None)


PY_BLOCKS = re.findall(r"```python\n(.*?)```", SECTION, re.S)


@pytest.mark.parametrize("block", PY_BLOCKS, ids=lambda b: re.search(r"class (\w+)\(Method\)", b).group(1))
def test_the_readmes_method_code_runs_as_written(block, register):
    """Each Python block of "Adding a method", executed as written (its own imports, nothing
    added), defines a method that runs; where it mirrors a built-in (fedprox, ditto), it trains
    to the built-in's losses and score, so the snippet is the method, not a sketch of it."""
    namespace: dict = {}
    exec(compile(block, "docs/methods/adding.md", "exec"), namespace)
    cls = next(v for v in namespace.values() if isinstance(v, type) and issubclass(v, Method) and v is not Method)
    snippet = register(type(f"Readme{cls.__name__}", (cls,), {"name": f"readme-{cls.name}", "__module__": "readme"}))
    from pflbench.methods.base import check_interface

    check_interface(snippet, snippet.name, "readme")
    spec = dict(clients=3, clients_per_round=2, rounds=2, local_steps=2, batch_size=4, lr=0.01, task="synth-world")
    got = run(RunSpec(method=snippet.name, **spec), None)
    assert got["summary"]["score"] == got["summary"]["score"] and got["rounds"][0]["uplink_bytes"] > 0
    if cls.name in registry.methods.names() and registry.methods.entries()[cls.name].package == "pflbench":
        ref = run(RunSpec(method=cls.name, **spec), None)
        assert [r["train_loss"] for r in got["rounds"]] == [r["train_loss"] for r in ref["rounds"]]
        assert got["summary"]["score"] == ref["summary"]["score"]
